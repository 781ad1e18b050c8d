"""The one app factory and runner every service uses.

``create_app`` wires the shared middlewares (request id → RED metrics → errors → deadline),
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
from asynccore.logs import configure_logging, request_id_middleware
from asynccore.metrics import loop_lag_ctx, metrics_handler, red_middleware
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


def add_readiness_check(app: web.Application, name: str, check: ReadinessCheck) -> None:
    """Register a dependency probe; ``/readyz`` is 503 naming ``name`` while it raises or hangs."""
    app[READINESS][name] = check


def no_deadline(handler: Handler) -> Handler:
    """Exempt a long-lived handler (SSE, websocket) from the per-request deadline."""
    handler.__no_deadline__ = True  # type: ignore[attr-defined]
    return handler


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as the JSON error shape; an unexpected one is logged and is a 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        field = "body" if exc.status != 404 else "path"
        kept = {k: v for k, v in exc.headers.items() if k not in ("Content-Type", "Content-Length")}
        return error_response(exc.status, {field: [exc.reason]}, kept)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(500, {"server": ["internal error"]})


def deadline_middleware(timeout_s: float) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if getattr(request.match_info.handler, "__no_deadline__", False):
            return await handler(request)
        try:
            async with asyncio.timeout(timeout_s):
                return await handler(request)
        except TimeoutError:
            return error_response(504, {"request": [f"deadline of {timeout_s:g}s exceeded"]})

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


def _supervisor_ctx(service: str, drain_timeout_s: float) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        supervisor = Supervisor(service)
        app[TASKS] = supervisor
        yield
        await supervisor.close(drain_timeout_s)

    return ctx


def create_app(
    service: str,
    settings: ServiceSettings,
    *,
    resources: Sequence[CleanupCtx] = (),
    middlewares: Iterable[Middleware] = (),
) -> web.Application:
    """An app with the shared middlewares, health routes, a task supervisor and ``resources``."""
    app = web.Application(
        client_max_size=settings.client_max_size,
        middlewares=[
            request_id_middleware,
            red_middleware(service),
            error_middleware,
            deadline_middleware(settings.request_timeout_s),
            *middlewares,
        ],
    )
    app[SERVICE] = service
    app[SETTINGS] = settings
    app[READINESS] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.cleanup_ctx.extend(
        [
            _supervisor_ctx(service, settings.shutdown_timeout_s),
            loop_lag_ctx(service, warn_after_s=settings.slow_callback_s),
            *resources,
        ]
    )
    return app


def run(app: web.Application, port: int, host: str = "0.0.0.0") -> None:
    """Serve ``app`` on uvloop until SIGTERM/SIGINT, then drain within the shutdown timeout."""
    settings = app[SETTINGS]
    configure_logging(app[SERVICE], settings.log_level, json=settings.log_json)

    web.run_app(
        app,
        host=host,
        port=port,
        shutdown_timeout=settings.shutdown_timeout_s,
        access_log=None,
        loop=uvloop.new_event_loop(),
        print=lambda *_: log.info("%s listening on %s:%d", app[SERVICE], host, port),
    )
