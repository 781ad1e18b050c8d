"""The one app factory and runner every service uses.

``create_app`` wires the shared edge middleware (request id → errors → deadline, plus the in-flight
count), RED metrics through aiohttp's per-request access-log hook (:mod:`asynccore.metrics`),
``/healthz``, ``/readyz`` and ``/metrics``, and registers resources as ``cleanup_ctx`` generators in the
order given (open top to bottom, close bottom to top). ``run`` installs uvloop and serves until
SIGTERM/SIGINT, then drains in-flight requests and supervised tasks within ``shutdown_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

import orjson
import uvloop
from aiohttp import web
from aiohttp.typedefs import Middleware

from asynccore.errors import ApiError, error_response
from asynccore.limits import DeadlineSweeper
from asynccore.logs import (
    REQUEST_ID_HEADER,
    configure_logging,
    incoming_request_id,
    reset_request_id,
    set_request_id,
)
from asynccore.metrics import (
    CLIENT_GONE,
    loop_lag_ctx,
    metrics_handler,
    red_handler_args,
    red_recorder,
    route_template,
)
from asynccore.settings import ServiceSettings
from asynccore.tasks import Supervisor

__all__ = [
    "READINESS",
    "SERVICE",
    "SETTINGS",
    "TASKS",
    "CleanupCtx",
    "ReadinessCheck",
    "add_readiness_check",
    "create_app",
    "no_deadline",
    "run",
]

log = logging.getLogger("asynccore.app")

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
ReadinessCheck = Callable[[], Awaitable[object]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICE = web.AppKey("service", str)
SETTINGS = web.AppKey("settings", ServiceSettings)
TASKS = web.AppKey("tasks", Supervisor)
READINESS = web.AppKey("readiness", dict[str, ReadinessCheck])

READINESS_TIMEOUT_S = 2.0
# aiohttp's default of 128 overflows when a flash crowd opens a thousand connections at once.
LISTEN_BACKLOG = 2048


def add_readiness_check(app: web.Application, name: str, check: ReadinessCheck) -> None:
    """Register a dependency probe; ``/readyz`` is 503 naming ``name`` while it raises or hangs."""
    app[READINESS][name] = check


def no_deadline(handler: Handler) -> Handler:
    """Exempt a long-lived handler (SSE, websocket) from the per-request deadline."""
    handler.__no_deadline__ = True  # type: ignore[attr-defined]
    return handler


def _error_response(request: web.Request, exc: Exception) -> web.Response:
    """Every error leaves as the JSON error shape; an unexpected one is logged and is a 500."""
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, web.HTTPException):
        if exc.status < 400 or exc.content_type == "application/json":
            raise exc  # a redirect, or a handler's own JSON error: it leaves as it is
        field = "body" if exc.status != 404 else "path"
        kept = {k: v for k, v in exc.headers.items() if k not in ("Content-Type", "Content-Length")}
        return error_response(exc.status, {field: [exc.reason]}, kept)
    log.error("unhandled error", exc_info=exc, extra={"path": request.path})
    return error_response(500, {"server": ["internal error"]})


def edge_middleware(service: str, timeout_s: float) -> Middleware:
    """Request id → errors → deadline, outermost first, as one middleware; it also counts in-flight.

    One layer rather than three because each aiohttp middleware layer costs a few µs per request (a
    partial, a coroutine, its frame), which on a fast endpoint is most of what this stack costs;
    ``python -m loadtests.bench.asynccore_red`` measures it. The order still holds: the request id
    is set before anything logs, a 504 or 500 made here is what RED records (it reads the status the
    client got), and the deadline covers the handler only.
    """
    red = red_recorder(service)
    deadlines = DeadlineSweeper(timeout_s)
    expired = [f"deadline of {timeout_s:g}s exceeded"]

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = incoming_request_id(request)
        token = set_request_id(rid)
        red.in_flight += 1
        # The loop named, so no asyncio.get_running_loop() (a getpid() system call on CPython 3.11).
        task = asyncio.current_task(request.task.get_loop())
        assert task is not None  # aiohttp serves every request in a task
        timed = not getattr(request.match_info.handler, "__no_deadline__", False)
        cancelling = deadlines.enter(task) if timed else 0
        timed_out = False
        try:
            try:
                try:
                    response = await handler(request)
                finally:
                    timed_out = timed and deadlines.leave(task, cancelling)
            except asyncio.CancelledError:
                if not timed_out:
                    raise  # the client left or the server is stopping: nobody to answer
                response = error_response(504, {"request": expired})
            except Exception as exc:
                response = _error_response(request, exc)
            response.headers[REQUEST_ID_HEADER] = rid
            return response
        except web.HTTPException as exc:
            exc.headers[REQUEST_ID_HEADER] = rid
            raise
        except asyncio.CancelledError:
            red.count(route_template(request), request.method, CLIENT_GONE)  # never answered: not timed
            raise
        finally:
            red.in_flight -= 1
            reset_request_id(token)

    return middleware


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": request.app[SERVICE]})


async def readyz(request: web.Request) -> web.Response:
    checks = request.app[READINESS]

    async def probe(check: ReadinessCheck) -> str | None:
        try:
            async with asyncio.timeout(READINESS_TIMEOUT_S):
                await check()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None

    results = await asyncio.gather(*(probe(check) for check in checks.values()))
    failing = {name: err for name, err in zip(checks, results, strict=True) if err is not None}
    body = {"status": "unavailable" if failing else "ready", "service": request.app[SERVICE]}
    if failing:
        body["failing"] = failing  # type: ignore[assignment]
    return web.Response(
        status=503 if failing else 200, body=orjson.dumps(body), content_type="application/json"
    )


def _drain_tasks_ctx(drain_timeout_s: float) -> CleanupCtx:
    """Registered last, so it is torn down first: tasks drain while the resources they use are open.

    aiohttp tears ``cleanup_ctx`` down only after in-flight requests finished, so a task a handler
    spawned just before shutdown is drained too.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[TASKS].close(drain_timeout_s)

    return ctx


def create_app(
    service: str,
    settings: ServiceSettings,
    *,
    resources: Sequence[CleanupCtx] = (),
    middlewares: Iterable[Middleware] = (),
) -> web.Application:
    """An app with the shared middlewares, health routes, a task supervisor and ``resources``.

    Give every resource that background tasks use through ``resources``: they open in order, and
    close (in reverse) only after supervised tasks have drained.
    """
    app = web.Application(
        client_max_size=settings.client_max_size,
        handler_args=red_handler_args(service),
        middlewares=[edge_middleware(service, settings.request_timeout_s), *middlewares],
    )
    app[SERVICE] = service
    app[SETTINGS] = settings
    app[READINESS] = {}
    app[TASKS] = Supervisor(service)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.cleanup_ctx.extend(
        [
            loop_lag_ctx(service, warn_after_s=settings.slow_callback_s),
            *resources,
            _drain_tasks_ctx(settings.shutdown_timeout_s),
        ]
    )
    return app


def run(app: web.Application, port: int, host: str = "0.0.0.0") -> None:
    """Serve ``app`` on uvloop (``EVENT_LOOP=asyncio``: the stdlib loop) until SIGTERM/SIGINT, then drain."""
    settings = app[SETTINGS]
    configure_logging(app[SERVICE], settings.log_level, json=settings.log_json)

    web.run_app(
        app,
        host=host,
        port=port,
        shutdown_timeout=settings.shutdown_timeout_s,
        access_log=None,  # no text access log (nginx writes one); RED comes from handler_args
        backlog=LISTEN_BACKLOG,
        loop=uvloop.new_event_loop() if settings.event_loop == "uvloop" else asyncio.new_event_loop(),
        print=lambda *_: log.info("%s listening on %s:%d", app[SERVICE], host, port),
    )
