"""A tiny asynccore service for the SIGTERM drain test, run as a real process by path.

``GET /slow?s=1.5`` answers after ``s`` seconds; ``POST /jobs?s=1`` starts a supervised background job
that runs ``s`` seconds. Both log when they start and end, so the test reads what happened from the
process output.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from asynccore.app import TASKS, add_routes, create_app, run
from asynccore.settings import ServiceSettings, load_settings

log = logging.getLogger("drain_service")


class DrainSettings(ServiceSettings):
    drain_port: int


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


def main() -> None:
    settings = load_settings(DrainSettings)
    app = create_app("drain", settings)
    add_routes(app, [web.get("/slow", slow)])
    add_routes(app, [web.post("/jobs", start_job)])
    run(app, settings.drain_port, host="127.0.0.1")


if __name__ == "__main__":
    main()
