"""The one app factory and runner every service uses.

``create_app`` makes the app's :class:`Edge` — request id → errors → deadline, RED metrics and the
in-flight count — which :func:`add_routes` wraps around every route handler as it is registered;
it adds ``/healthz``, ``/readyz`` and ``/metrics``, and registers resources as ``cleanup_ctx``
generators in the order given (open top to bottom, close bottom to top). ``run`` installs uvloop and
serves on ``bind_host`` until SIGTERM/SIGINT, then drains in-flight requests and supervised tasks
within ``shutdown_timeout_s`` (one bound for both), closes the resources and exits; repeated signals
change nothing, and a close that hangs is cut off :data:`STOP_GRACE_S` after the drain bound.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from time import perf_counter

import orjson
import uvloop
from aiohttp import web

from asynccore import client_errors
from asynccore.errors import ApiError, error_response
from asynccore.limits import DeadlineSweeper
from asynccore.logs import (
    REQUEST_ID_HEADER,
    configure_logging,
    incoming_request_id,
    set_request_id,
)
from asynccore.metrics import UNMATCHED, RouteRed, loop_lag_ctx, metrics_handler, red_recorder
from asynccore.settings import ServiceSettings, settings_key
from asynccore.tasks import Supervisor

__all__ = [
    "EDGE",
    "READINESS",
    "SERVICE",
    "SETTINGS",
    "SHUTDOWN",
    "STOP_GRACE_S",
    "TASKS",
    "CleanupCtx",
    "Edge",
    "ReadinessCheck",
    "Shutdown",
    "add_readiness_check",
    "add_routes",
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
READINESS_LOG_EVERY_S = 10.0
# aiohttp's default of 128 overflows when a flash crowd opens a thousand connections at once.
LISTEN_BACKLOG = 2048
# Idle keepalive connections: nginx closes its own (60 s) before the service would (75 s).
KEEPALIVE_TIMEOUT_S = 75.0
# After the drain bound (shutdown_timeout_s), the time resources get to close - and cancelled
# background tasks to unwind - before the process is ended whatever still runs.
STOP_GRACE_S = 3.0
# Cancelled background tasks get at least this long to unwind, even when requests used up the drain.
TASK_UNWIND_MIN_S = 0.5
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """The app's stop: when it began, so in-flight requests and background tasks share one bound."""

    def __init__(self, drain_s: float) -> None:
        self.drain_s = drain_s
        self.deadline: float | None = None  # time.monotonic() by which the drain must be over

    @property
    def begun(self) -> bool:
        return self.deadline is not None

    def begin(self) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.drain_s

    def remaining_s(self) -> float:
        """What is left of the drain bound (all of it while no stop has begun, as under a test client)."""
        if self.deadline is None:
            return self.drain_s
        return max(self.deadline - time.monotonic(), 0.0)


SHUTDOWN = web.AppKey("shutdown", Shutdown)
_READINESS_LOGGED = web.AppKey("readiness_logged", dict[str, float])  # dependency -> last WARNING


def add_readiness_check(app: web.Application, name: str, check: ReadinessCheck) -> None:
    """Register a dependency probe; ``/readyz`` is 503 naming ``name`` while it raises or hangs."""
    app[READINESS][name] = check


def no_deadline(handler: Handler) -> Handler:
    """Exempt a long-lived handler (SSE, websocket) from the per-request deadline."""
    # A marker on the function object (read with getattr): mypy knows no such attribute on a Callable.
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


class Edge:
    """What every route of a service runs inside: request id → errors → deadline, RED, in-flight.

    It wraps each route handler once, at registration (:func:`add_routes`), rather than being an
    aiohttp middleware: aiohttp builds a middleware chain per request (a cached lookup, a partial and a
    coroutine per layer, plus its own ``_fix_request_current_app`` layer), which cost a fast endpoint
    more than everything the edge does; ``python -m loadtests.bench.asynccore_red`` measures it. The
    order holds as before: the request id is set before anything logs, the 504 or 500 made here is
    what RED records, and the deadline covers the handler only. Unmatched requests (404/405) reach
    the edge through a catch-all route registered last, so they too are JSON with a request id.
    """

    def __init__(self, service: str, timeout_s: float) -> None:
        self.red = red_recorder(service)
        self.deadlines = DeadlineSweeper(timeout_s)
        self.expired = {"request": [f"deadline of {timeout_s:g}s exceeded"]}
        self.wrapped: set[Handler] = set()
        self._error_headers: dict[str, Mapping[str, str]] = {}
        self._unavailable: dict[
            str, tuple[tuple[type[Exception], ...], Callable[[Exception], bool] | None]
        ] = {}
        self._unavailable_logged: dict[str, float] = {}

    def add_error_headers(self, path_prefix: str, headers: Mapping[str, str]) -> None:
        """Headers every error answer under ``path_prefix`` carries (CORS, say), 404s included.

        Only answers made from errors pay for this, so a service need not hook every response.
        """
        self._error_headers[path_prefix] = headers

    def add_unavailable(
        self, field: str, *errors: type[Exception], when: Callable[[Exception], bool] | None = None
    ) -> None:
        """Errors of these types (those ``when`` accepts) mean the dependency ``field`` is out of reach.

        The answer is then a 503 naming ``field``, with ``Retry-After``: an outage the client may retry
        (with its idempotency key, where a write may have landed just before the connection went),
        where a 500 says "bug". Logged as a warning at most once a second per dependency, with no
        traceback, so an outage under load does not flood the log. Registering ``field`` again
        replaces what it maps.
        """
        self._unavailable[field] = (errors, when)

    def _error_answer(self, request: web.Request, exc: Exception) -> web.Response:
        for field, (errors, when) in self._unavailable.items():
            if isinstance(exc, errors) and (when is None or when(exc)):
                now = perf_counter()
                if now - self._unavailable_logged.get(field, -1.0) >= 1.0:
                    self._unavailable_logged[field] = now
                    log.warning(
                        "%s unavailable: %s: %s", field, type(exc).__name__, exc, extra={"path": request.path}
                    )
                message = f"unavailable ({type(exc).__name__}); retry"
                return error_response(503, {field: [message]}, {"Retry-After": "1"})
        return _error_response(request, exc)

    def _error_headers_for(self, request: web.Request, headers: MutableMapping[str, str]) -> None:
        for prefix, extra in self._error_headers.items():
            if request.path.startswith(prefix):
                headers.update(extra)

    def wrap(self, handler: Handler, method: str | None = None, route: str | None = None) -> Handler:
        """``handler`` inside the edge, for requests in ``method`` mostly (RED finds their series
        fastest); ``route`` overrides the RED route label (default: the matched route's template)."""
        if inspect.isclass(handler):
            raise TypeError(f"{handler!r}: class-based views are not supported; register a function")
        red, deadlines, expired = self.red, self.deadlines, self.expired
        route_red = RouteRed(red, route, method)
        timed = not getattr(handler, "__no_deadline__", False)

        @functools.wraps(handler)
        async def edge(request: web.Request) -> web.StreamResponse:
            started = perf_counter()
            rid = incoming_request_id(request)
            set_request_id(rid)  # the request runs in a task of its own, with its own context: no reset
            red.in_flight += 1
            # The loop named, so no asyncio.get_running_loop() (a getpid() system call on CPython 3.11).
            task = asyncio.current_task(request.task.get_loop())
            assert task is not None  # aiohttp serves every request in a task
            generation = deadlines.enter(task) if timed else None
            timed_out = False
            try:
                try:
                    try:
                        response = await handler(request)
                    finally:
                        timed_out = generation is not None and deadlines.leave(task, generation)
                except asyncio.CancelledError:
                    if not timed_out:
                        raise  # the client left or the server is stopping: nobody to answer
                    response = error_response(504, expired)
                    self._error_headers_for(request, response.headers)
                except Exception as exc:
                    response = self._error_answer(request, exc)
                    self._error_headers_for(request, response.headers)
            except web.HTTPException as exc:  # a redirect or a handler's own JSON error: sent as it is
                exc.headers[REQUEST_ID_HEADER] = rid
                self._error_headers_for(request, exc.headers)
                route_red.observe(request, exc.status, perf_counter() - started)
                raise
            except asyncio.CancelledError:
                route_red.unanswered(request)
                raise
            finally:
                red.in_flight -= 1
            response.headers[REQUEST_ID_HEADER] = rid
            route_red.observe(request, response.status, perf_counter() - started)
            return response

        self.wrapped.add(edge)
        return edge


EDGE = web.AppKey("edge", Edge)


def add_routes(app: web.Application, routes: Iterable[web.RouteDef]) -> None:
    """Register ``routes`` (``web.get(...)`` and friends) behind the app's :class:`Edge`.

    Every route of an app made by :func:`create_app` must come through here: at start-up the app
    refuses routes added to ``app.router`` directly, which would answer without the edge.
    """
    edge = app[EDGE]
    app.router.add_routes(
        [web.RouteDef(r.method, r.path, edge.wrap(r.handler, r.method), r.kwargs) for r in routes]
    )


async def _unmatched(request: web.Request) -> web.StreamResponse:
    """The catch-all route: 405 naming the methods the path allows, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


async def _seal_routes(app: web.Application) -> None:
    """At start-up, before the router freezes: the catch-all goes last, and no route skips the edge."""
    edge = app[EDGE]
    app.router.add_route("*", "/{unmatched:.*}", edge.wrap(_unmatched, route=UNMATCHED))
    around = [
        f"{route.method} {route.resource.canonical if route.resource else '?'}"
        for route in app.router.routes()
        if route.handler not in edge.wrapped
    ]
    if around:
        raise RuntimeError(f"routes added around the edge: {', '.join(around)}; use asynccore.app.add_routes")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": request.app[SERVICE]})


async def readyz(request: web.Request) -> web.Response:
    """200, or 503 naming each failing dependency - ``"unavailable"`` or ``"timed out"``, never the
    driver's error text (addresses, versions, paths), which goes to the log instead: a WARNING per
    dependency at most every :data:`READINESS_LOG_EVERY_S`, without a traceback."""
    checks = request.app[READINESS]
    logged = request.app[_READINESS_LOGGED]

    async def probe(name: str, check: ReadinessCheck) -> str | None:
        try:
            async with asyncio.timeout(READINESS_TIMEOUT_S):
                await check()
        except Exception as exc:
            now = time.monotonic()
            if now - logged.get(name, -READINESS_LOG_EVERY_S) >= READINESS_LOG_EVERY_S:
                logged[name] = now
                log.warning("not ready: %s: %s: %s", name, type(exc).__name__, exc)
            return "timed out" if isinstance(exc, TimeoutError) else "unavailable"
        return None

    results = await asyncio.gather(*(probe(name, check) for name, check in checks.items()))
    failing = {name: err for name, err in zip(checks, results, strict=True) if err is not None}
    body: dict[str, object] = {"status": "unavailable" if failing else "ready"}
    body["service"] = request.app[SERVICE]
    if failing:
        body["failing"] = failing
    return web.Response(
        status=503 if failing else 200, body=orjson.dumps(body), content_type="application/json"
    )


def _drain_tasks_ctx(shutdown: Shutdown) -> CleanupCtx:
    """Registered last, so it is torn down first: tasks drain while the resources they use are open.

    aiohttp tears ``cleanup_ctx`` down only after in-flight requests finished, so a task a handler
    spawned just before shutdown is drained too - within what the requests left of the drain bound.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[TASKS].close(max(shutdown.remaining_s(), TASK_UNWIND_MIN_S))

    return ctx


def create_app(
    service: str,
    settings: ServiceSettings,
    *,
    resources: Sequence[CleanupCtx] = (),
) -> web.Application:
    """An app with the shared edge, health routes, a task supervisor and ``resources``.

    Give every resource that background tasks use through ``resources``: they open in order, and
    close (in reverse) only after supervised tasks have drained.
    """
    client_errors.install()  # a request aiohttp cannot parse is logged as the client's error
    app = web.Application(client_max_size=settings.client_max_size)
    app[EDGE] = Edge(service, settings.request_timeout_s)
    app[SERVICE] = service
    app[SETTINGS] = settings
    for cls in type(settings).__mro__:  # app[settings_key(BlogSettings)]: typed, no isinstance per request
        if isinstance(cls, type) and issubclass(cls, ServiceSettings):
            app[settings_key(cls)] = settings
    app[READINESS] = {}
    app[_READINESS_LOGGED] = {}
    app[TASKS] = Supervisor(service)
    app[SHUTDOWN] = Shutdown(settings.shutdown_timeout_s)
    health = [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics_handler)]
    add_routes(app, health)
    app.on_startup.append(_seal_routes)
    app.cleanup_ctx.extend(
        [
            loop_lag_ctx(service, warn_after_s=settings.slow_callback_s),
            *resources,
            _drain_tasks_ctx(app[SHUTDOWN]),
        ]
    )
    return app


async def _freeze_startup_heap(app: web.Application) -> None:
    """Measured in the orders flash-sale benchmark: full collections of the cyclic GC took 60-170 ms
    each, every few hundred requests, stalling every request in the process; nearly all they scanned
    was what start-up made (modules, pools, the app), which lives as long as the process. Freeze
    that (this runs after the resources started) and collect young objects less eagerly: a request,
    or a stream batch, allocates thousands of short-lived containers, and the default threshold
    would rescan the young heap every 700 of them."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run(app: web.Application, port: int, host: str | None = None) -> None:
    """Serve ``app`` on ``host`` (default: the ``bind_host`` setting) on uvloop (``EVENT_LOOP=asyncio``:
    the stdlib loop) until SIGTERM/SIGINT, then drain, close and return.

    A process's main: once a stop has begun the process has ``shutdown_timeout_s`` +
    :data:`STOP_GRACE_S` to be gone, or it is ended (exit status 1) with a log line naming the threads
    still running.
    """
    settings = app[SETTINGS]
    configure_logging(app[SERVICE], settings.log_level, json=settings.log_json)
    app.on_startup.append(_freeze_startup_heap)
    loop = uvloop.new_event_loop() if settings.event_loop == "uvloop" else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(app, settings.bind_host if host is None else host, port))
    finally:
        try:
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # restores the signals' default action (the end of the process) ...
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)  # ... which one more signal must not take now


async def _serve(app: web.Application, host: str, port: int) -> None:
    """Start, serve until a stop signal, then drain and close: the one place a service stops.

    The first SIGTERM/SIGINT begins the stop; any later one is only logged. aiohttp's own handler
    would raise again out of the loop while ``cleanup_ctx`` closes, cutting the close short (the
    blog's aiosqlite threads then kept the process alive forever). A signal during start-up cancels
    the start-up, and what had opened is closed.
    """
    loop = asyncio.get_running_loop()
    service, shutdown = app[SERVICE], app[SHUTDOWN]
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,  # no text access log: nginx writes one, and the edge records RED
        shutdown_timeout=shutdown.drain_s,
        keepalive_timeout=KEEPALIVE_TIMEOUT_S,
    )
    starting = loop.create_task(runner.setup(), name=f"{service}-start-up")
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.info("%s again: already stopping", sig.name)
            return
        log.info("%s: stopping (drain within %gs)", sig.name, shutdown.drain_s)
        _begin_stop(service, shutdown)
        stop.set()
        starting.cancel()  # nothing once start-up is over

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        try:
            await starting
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            log.info("%s stopped during start-up", service)
            return
        site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG)
        await site.start()
        log.info("%s listening on %s:%d", service, host, port)
        await stop.wait()
    finally:
        _begin_stop(service, shutdown)  # also when start-up or serving failed: close what opened
        await runner.cleanup()


def _begin_stop(service: str, shutdown: Shutdown) -> None:
    """Start the drain's clock and a watchdog that ends the process if stopping outlasts it."""
    if shutdown.begun:
        return
    shutdown.begin()
    bound_s = shutdown.drain_s + STOP_GRACE_S

    def give_up() -> None:
        running = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
        log.error(
            "%s still running %gs after the stop began (threads: %s): exiting anyway",
            service,
            bound_s,
            ", ".join(running),
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    # A daemon: it never keeps the process alive itself, and it fires even while the interpreter's
    # exit waits for a thread that will never end.
    watchdog = threading.Timer(bound_s, give_up)
    watchdog.name = "stop-watchdog"
    watchdog.daemon = True
    watchdog.start()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel tasks nobody owned (the app's own were drained) and wait for them, as asyncio.run does."""
    leftovers = asyncio.all_tasks(loop)
    if not leftovers:
        return
    for task in leftovers:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
    for task in leftovers:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {"message": "unhandled exception at shutdown", "exception": task.exception(), "task": task}
            )
