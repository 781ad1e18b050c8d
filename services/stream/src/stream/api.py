"""HTTP handlers: thin — parse parameters, call the plain function, send JSON."""

from __future__ import annotations

import time

from aiohttp import web

from asynccore.app import add_routes, no_deadline
from asynccore.errors import ApiError
from asynccore.params import int_param
from asynccore.revocation import REVOCATIONS
from asynccore.web import add_openapi_routes, json_response
from stream import queries
from stream.access import check_member_events, ingest_caller, require_admin
from stream.ingest import produce_events, validate_events
from stream.live import client_address, stream_live
from stream.openapi import openapi_document
from stream.params import choice_param, time_range
from stream.resources import KEYS, LIVE, LIVE_LIMITS, PRODUCER, REDIS, SETTINGS
from stream.risk import RULES

__all__ = ["add_api_routes"]

DEFAULT_RANGE_S = 3600


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def post_events(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    member = ingest_caller(request, s)  # 401 before the body is read; None: a trusted producer
    if member is not None:  # a member's token a password change revoked is a 401 too
        await request.app[REVOCATIONS].check(member)
    events = validate_events(await request.read(), int(s.stream_max_future_s * 1000))
    if member is not None:
        check_member_events(events, member.user_id)
    await produce_events(request.app[PRODUCER], s.stream_topic, events, s.request_timeout_s / 2)
    return json_response({"accepted": len(events)}, status=202)


async def get_summary(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    start, end = time_range(request, _now_ms(), default_s=DEFAULT_RANGE_S, max_s=s.stream_max_query_range_s)
    return json_response(await queries.summary(request.app[REDIS], request.app[KEYS], start, end))


async def get_funnel(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    start, end = time_range(request, _now_ms(), default_s=DEFAULT_RANGE_S, max_s=s.stream_max_query_range_s)
    return json_response(await queries.funnel(request.app[REDIS], request.app[KEYS], start, end))


async def get_top_products(request: web.Request) -> web.Response:
    by = choice_param(request, "by", "views", queries.BY)
    n = int_param(request, "n", 10, lo=1, hi=100)
    at = int_param(request, "at", _now_ms(), lo=0, hi=2**53)
    return json_response(await queries.top_products(request.app[REDIS], request.app[KEYS], by, n, at))


async def get_recommendations(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    product = request.match_info["product_id"]
    if not 1 <= len(product) <= 128:
        raise ApiError(422, "product_id", "must be 1 to 128 characters")
    k = int_param(request, "k", 10, lo=1, hi=50)
    redis, keys = request.app[REDIS], request.app[KEYS]
    now_ms = await queries.newest_event_ts(redis, keys) or _now_ms()
    recs = await queries.top_co_viewed(
        redis,
        keys,
        product,
        k=k,
        now_ms=now_ms,
        half_life_s=s.stream_rec_half_life_s,
        horizon_h=s.stream_rec_horizon_h,
    )
    return json_response({"product_id": product, "recommendations": recs})


async def get_alerts(request: web.Request) -> web.Response:
    require_admin(request, request.app[SETTINGS])
    limit = int_param(request, "limit", 50, lo=1, hi=1000)
    rule = request.query.get("rule") or None
    if rule is not None and rule not in RULES:
        raise ApiError(422, "rule", f"must be one of {', '.join(RULES)}")
    user_id = request.query.get("user_id") or None
    alerts = await queries.list_alerts(
        request.app[REDIS], request.app[KEYS], limit=limit, rule=rule, user_id=user_id
    )
    return json_response({"alerts": alerts})


@no_deadline
async def get_live(request: web.Request) -> web.StreamResponse:
    client = client_address(request, request.app[SETTINGS].stream_trusted_proxies)
    return await stream_live(request, request.app[LIVE], request.app[LIVE_LIMITS], client)


def add_api_routes(app: web.Application) -> None:
    add_routes(
        app,
        [
            web.post("/api/events", post_events),
            web.get("/api/analytics/summary", get_summary),
            web.get("/api/analytics/funnel", get_funnel),
            web.get("/api/analytics/top-products", get_top_products),
            web.get("/api/recommendations/{product_id}", get_recommendations),
            web.get("/api/risk/alerts", get_alerts),
            web.get("/api/live", get_live),
        ],
    )
    add_openapi_routes(app, "/api/analytics/openapi.json", openapi_document())  # and /api/analytics/docs
