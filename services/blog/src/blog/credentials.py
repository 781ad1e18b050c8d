"""Sign-in tokens the blog issues, and which of them still count.

A token carries asynccore's claims (``sub``, ``username``, ``iat``, ``exp``: every service verifies
those) plus the account's *token version* (``ver``). Changing the password increments the version in
the same UPDATE, so every token issued before is refused with a 401 from then on, on every replica.

The check is cheap: the current version of a user is a cached entry (family ``credentials``, one per
user) that depends on the version name ``u:<id>``, which a password change bumps. A hit is a dict
lookup in process memory; a change reaches the other replicas through Redis's invalidation push like
any cached article. Anonymous requests never come here.
"""

from __future__ import annotations

import base64
import binascii
import time

import jwt
import orjson

from asynccore.auth import ALGORITHM, Caller
from asynccore.errors import ApiError
from asynccore.pools.sqlite import SQLiteDB
from blog.cache import Cache
from blog.db import fetch_one

__all__ = ["CLAIM", "FAMILY", "current_user_id", "issue", "user_version"]

CLAIM = "ver"
FAMILY = "credentials"


def user_version(user_id: int) -> str:
    """The version a password change of ``user_id`` bumps (a per-row version: only writes create it)."""
    return f"u:{user_id}"


def issue(secret: str, user_id: int, username: str, token_version: int, ttl_s: int) -> str:
    """asynccore's token (see ``asynccore.auth.issue_token``) with the account's token version."""
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "username": username,
        "iat": now,
        "exp": now + ttl_s,
        CLAIM: token_version,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "token", message, headers={"WWW-Authenticate": "Token"})


def _claimed_version(token: str) -> int:
    """The ``ver`` claim of a token asynccore already verified (0 for tokens issued before it existed)."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        version = claims.get(CLAIM, 0)
    except (IndexError, ValueError, binascii.Error, AttributeError):
        raise _unauthorized("invalid token") from None
    if type(version) is not int:
        raise _unauthorized("invalid token")
    return version


def _user_id(subject: str) -> int:
    try:
        return int(subject)
    except ValueError:
        raise _unauthorized("invalid subject") from None


async def _load_version(db: SQLiteDB, user_id: int) -> bytes:
    async with db.read() as conn:
        row = await fetch_one(
            conn, "token_version", "SELECT token_version FROM users WHERE id = ?", (user_id,)
        )
    if row is None:
        raise _unauthorized("user no longer exists")
    return str(row[0]).encode()


async def current_user_id(cache: Cache, db: SQLiteDB, caller: Caller) -> int:
    """The id of the user ``caller``'s token names, if that token still counts; 401 otherwise."""
    user_id = _user_id(caller.user_id)
    claimed = _claimed_version(caller.token)
    key = str(user_id)
    entry = cache.peek(FAMILY, key) or await cache.get(
        FAMILY, key, (user_version(user_id),), lambda: _load_version(db, user_id)
    )
    if int(entry.body) != claimed:
        raise _unauthorized("token revoked: the password changed since it was issued")
    return user_id
