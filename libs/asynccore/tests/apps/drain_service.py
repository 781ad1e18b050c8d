"""A tiny asynccore service for the shutdown tests, run as a real process by path.

``GET /slow?s=1.5`` answers after ``s`` seconds; ``POST /jobs?s=1`` starts a supervised background job
that runs ``s`` seconds. Both log when they start and end, so the test reads what happened from the
process output.

Optionally (``DRAIN_THREADED_RESOURCE=1``) it holds a resource like an aiosqlite connection: a
non-daemon thread that only the resource's close ends, so a close cut short leaves the process
unable to exit. ``DRAIN_OPEN_S`` / ``DRAIN_CLOSE_S`` is how long opening / closing it takes, and
``DRAIN_CLOSE_HANGS=1`` makes the close never finish. It binds where ``run`` binds by default
(``BIND_HOST``), so the tests see the default.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator

from aiohttp import web

from asynccore.app import TASKS, CleanupCtx, add_routes, create_app, run
from asynccore.settings import ServiceSettings, load_settings

log = logging.getLogger("drain_service")


class DrainSettings(ServiceSettings):
    drain_port: int
    drain_threaded_resource: bool = False
    drain_open_s: float = 0.0
    drain_close_s: float = 0.0
    drain_close_hangs: bool = False


async def slow(request: web.Request) -> web.Response:
    seconds = float(request.query.get("s", "1.5"))
    log.info("slow request started")
    await asyncio.sleep(seconds)
    log.info("slow request finished")
    return web.json_response({"slept_s": seconds})


async def job(seconds: float) -> None:
    log.info("job started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        log.warning("job cancelled")
        raise
    log.info("job finished")


async def start_job(request: web.Request) -> web.Response:
    request.app[TASKS].spawn(job(float(request.query["s"])), name="drain-job")
    return web.json_response({"started": True}, status=202)


def threaded_resource(settings: DrainSettings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        log.info("resource opening")
        await asyncio.sleep(settings.drain_open_s)
        closed = threading.Event()
        worker = threading.Thread(target=closed.wait, name="drain-resource")  # not a daemon
        worker.start()
        log.info("resource open")
        yield
        log.info("resource closing")
        if settings.drain_close_hangs:
            await asyncio.Event().wait()
        await asyncio.sleep(settings.drain_close_s)
        closed.set()
        await asyncio.to_thread(worker.join)
        log.info("resource closed")

    return ctx


def main() -> None:
    settings = load_settings(DrainSettings)
    resources = [threaded_resource(settings)] if settings.drain_threaded_resource else []
    app = create_app("drain", settings, resources=resources)
    add_routes(app, [web.get("/slow", slow)])
    add_routes(app, [web.post("/jobs", start_job)])
    run(app, settings.drain_port)


if __name__ == "__main__":
    main()
