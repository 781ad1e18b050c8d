"""Who may post which events, and who may read the risk alerts (README, "What is protected, and how").

* ``POST /api/events``: a trusted producer with ``Authorization: Bearer $STREAM_INGEST_TOKEN`` posts
  any event for any user; a signed-in user (their JWT, ``Token`` or ``Bearer``) posts only behavioural
  events (:data:`MEMBER_TYPES`), and only their own: each event's ``user_id`` must be the token's
  ``sub``. ``order_placed`` and ``payment`` come from the orders outbox (through Kafka) or a trusted
  producer, never from a browser.
* ``GET /api/risk/alerts`` names users: ``Authorization: Bearer $STREAM_ADMIN_TOKEN`` only.

Tokens are compared in constant time. The credential is checked once per request, before the body is
read; a member's batch is then checked event by event in one pass over what was decoded anyway.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from asynccore.auth import Caller, verify_token
from asynccore.errors import ApiError
from stream.events import Event
from stream.settings import StreamSettings

__all__ = ["MEMBER_TYPES", "check_member_events", "ingest_caller", "require_admin"]

MEMBER_TYPES = frozenset({"page_view", "click", "add_to_cart"})
_INGEST_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="stream ingest", Token'}
_ADMIN_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="stream admin"'}


def ingest_caller(request: web.Request, settings: StreamSettings) -> Caller | None:
    """Who posts: ``None`` for a trusted producer (the service token), else the member the JWT names.

    401 (with ``WWW-Authenticate``) without a credential or with one that is neither.
    """
    scheme, token = _credential(request)
    if scheme is None:
        raise ApiError(401, "token", "authentication required", headers=_INGEST_CHALLENGE)
    if scheme == "Bearer" and _same(token, settings.stream_ingest_token.get_secret_value()):
        return None
    if scheme not in ("Token", "Bearer") or not token:
        raise ApiError(
            401, "token", "Authorization must be 'Bearer <token>' or 'Token <jwt>'", headers=_INGEST_CHALLENGE
        )
    try:
        return verify_token(settings.jwt_secret.get_secret_value(), token)
    except ApiError as exc:  # asynccore's 401, with this endpoint's challenge
        raise ApiError(exc.status, "token", exc.errors["token"][0], headers=_INGEST_CHALLENGE) from None


def check_member_events(events: list[Event], user_id: str) -> None:
    """403 naming ``events[i].type`` or ``events[i].user_id`` unless every event is the member's own
    behaviour. Numeric ids were made strings when the batch was decoded, so ``42`` is ``"42"``."""
    for i, event in enumerate(events):
        if event.type not in MEMBER_TYPES:
            raise ApiError(
                403,
                f"events[{i}].type",
                f"{event.type} events come from the orders service; a signed-in user may post "
                + ", ".join(sorted(MEMBER_TYPES)),
            )
        if event.user_id != user_id:
            raise ApiError(403, f"events[{i}].user_id", "must be the signed-in user's id (the token's sub)")


def require_admin(request: web.Request, settings: StreamSettings) -> None:
    """``Authorization: Bearer $STREAM_ADMIN_TOKEN``: 401 without a credential, 403 with another one."""
    scheme, token = _credential(request)
    if scheme is None:
        raise ApiError(401, "token", "admin bearer token required", headers=_ADMIN_CHALLENGE)
    if scheme != "Bearer" or not _same(token, settings.stream_admin_token.get_secret_value()):
        raise ApiError(403, "token", "not the admin token")


def _credential(request: web.Request) -> tuple[str | None, str]:
    """The ``Authorization`` header's scheme and credential; ``(None, "")`` when there is none."""
    header = request.headers.get("Authorization", "")
    if not header.strip():
        return None, ""
    scheme, _, token = header.strip().partition(" ")
    return scheme, token.strip()


def _same(given: str, expected: str) -> bool:
    # Header bytes that are not UTF-8 arrive as surrogates: encoded back, they are just unequal.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())
