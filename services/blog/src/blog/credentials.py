"""Sign-in tokens the blog issues, and which of them still count.

A token carries asynccore's claims (``sub``, ``username``, ``iat``, ``exp``: every service verifies
those) plus the account's *token version* (``ver``). Changing the password increments the version in
the same UPDATE, so every token issued before is refused with a 401 from then on, on every replica;
the new version is then published to Redis so orders and stream refuse them too
(``asynccore.revocation``).

The check is cheap: the current version of a user is a cached entry (family ``credentials``, one per
user) that depends on the version name ``u:<id>``, which a password change bumps. A hit is a dict
lookup in process memory; a change reaches the other replicas through Redis's invalidation push like
any cached article. Anonymous requests never come here.
"""

from __future__ import annotations

from asynccore.auth import VERSION_CLAIM, Caller, issue_token, unauthorized
from blog.cache import Cache
from blog.db import Database, fetch_one

__all__ = ["CLAIM", "FAMILY", "current_user_id", "issue", "user_version"]

CLAIM = VERSION_CLAIM
FAMILY = "credentials"


def user_version(user_id: int) -> str:
    """The version a password change of ``user_id`` bumps (a per-row version: only writes create it)."""
    return f"u:{user_id}"


def issue(secret: str, user_id: int, username: str, token_version: int, ttl_s: int) -> str:
    """asynccore's token with the account's token version (the ``ver`` claim)."""
    return issue_token(secret, str(user_id), username, ttl_s, version=token_version)


def _user_id(subject: str) -> int:
    try:
        return int(subject)
    except ValueError:
        raise unauthorized("invalid subject") from None


async def _load_version(db: Database, user_id: int) -> bytes:
    async with db.read() as conn:
        row = await fetch_one(
            conn, "token_version", "SELECT token_version FROM users WHERE id = ?", (user_id,)
        )
    if row is None:
        raise unauthorized("user no longer exists")
    return str(row["token_version"]).encode()


async def current_user_id(db: Database, cache: Cache, caller: Caller) -> int:
    """The id of the user ``caller``'s token names, if that token still counts; 401 otherwise."""
    user_id = _user_id(caller.user_id)
    claimed = caller.version
    key = str(user_id)
    entry = cache.peek(FAMILY, key) or await cache.get(
        FAMILY, key, (user_version(user_id),), lambda: _load_version(db, user_id)
    )
    if int(entry.body) != claimed:
        raise unauthorized("token revoked: the password changed since it was issued")
    return user_id
