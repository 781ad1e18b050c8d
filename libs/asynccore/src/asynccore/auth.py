"""JWTs of the contract (docs/architecture.md): HS256, claims ``sub`` (user id), ``username``, ``exp``.

The blog issues them; every service verifies them here. Verification is lazy and cached per request:
a handler asks for the caller with :func:`optional_caller` or :func:`require_caller`, so endpoints that
take other credentials (an admin bearer token) never trip over JWT parsing. A token that verified is
remembered until its ``exp`` (:mod:`asynccore.token_memo`): the next request with it skips the HMAC and
the claims' parsing; a bad one is never remembered, and revocation is checked after this, every time.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import jwt
from aiohttp import web

from asynccore.errors import ApiError
from asynccore.token_memo import TokenMemo

__all__ = [
    "VERSION_CLAIM",
    "Caller",
    "issue_token",
    "optional_caller",
    "require_caller",
    "unauthorized",
    "verify_token",
]

ALGORITHM = "HS256"
VERSION_CLAIM = "ver"
SCHEMES = ("Token", "Bearer")


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    username: str
    token: str
    version: int = 0  # ``ver``: password changes before the token was issued (asynccore.revocation)


# One decoder with the contract's options, and the secret prepared once as a key (PyJWK): each call
# to jwt.decode merges its options and prepares the key anew, ~9 of its ~35 µs (timeit).
_DECODER = jwt.PyJWT(options={"require": ["sub", "exp", "username"]})
_CACHE: web.RequestKey[Caller | None] = web.RequestKey("asynccore_caller")
# Shared by every service in the process (the key holds the secret, so they cannot mix).
VERIFIED: TokenMemo[Caller] = TokenMemo()


def issue_token(secret: str, user_id: str, username: str, ttl_s: int, version: int = 0) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "username": username, "iat": now, "exp": now + ttl_s, VERSION_CLAIM: version}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Caller:
    """The caller a token names; 401 when it is expired, tampered, or signed another way.

    Remembered in :data:`VERIFIED` until the token's ``exp`` once it verified (only then).
    """
    caller = VERIFIED.get(secret, token)
    if caller is None:
        caller, exp = _verified(secret, token)
        VERIFIED.put(secret, token, caller, exp)
    return caller


def _verified(secret: str, token: str) -> tuple[Caller, float]:
    """The full check (PyJWT): the caller and the token's ``exp``, or asynccore's 401."""
    try:
        claims = _DECODER.decode(token, _key(secret), algorithms=[ALGORITHM])
    except jwt.ExpiredSignatureError:
        raise unauthorized("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise unauthorized(f"invalid token: {exc}") from None
    except UnicodeError:  # a header with non-ASCII bytes is a bad credential, not a server error
        raise unauthorized("invalid token: not ASCII") from None
    version = claims.get(VERSION_CLAIM, 0)
    if type(version) is not int:
        raise unauthorized(f"invalid token: {VERSION_CLAIM} must be an integer")
    user_id, username = str(claims["sub"]), str(claims["username"])
    return Caller(user_id=user_id, username=username, token=token, version=version), float(claims["exp"])


@functools.lru_cache(maxsize=8)  # a process knows one secret, two while it rotates
def _key(secret: str) -> jwt.PyJWK:
    encoded = jwt.utils.base64url_encode(secret.encode()).decode()
    return jwt.PyJWK({"kty": "oct", "k": encoded, "alg": ALGORITHM})


def unauthorized(message: str) -> ApiError:
    """asynccore's 401 for a bad credential (``errors.token``, with a ``WWW-Authenticate`` challenge)."""
    return ApiError(401, "token", message, headers={"WWW-Authenticate": "Token"})


def bearer_token(request: web.Request) -> str | None:
    """The credential from ``Authorization: Token <x>`` or ``Bearer <x>``; ``None`` when absent."""
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme not in SCHEMES or not token.strip():
        raise unauthorized("Authorization must be 'Token <jwt>' or 'Bearer <jwt>'")
    return token.strip()


def optional_caller(request: web.Request, secret: str) -> Caller | None:
    """The caller if a token was sent (401 if it is bad), else ``None`` (anonymous)."""
    if _CACHE in request:
        cached: Caller | None = request[_CACHE]
        return cached
    token = bearer_token(request)
    caller = verify_token(secret, token) if token is not None else None
    request[_CACHE] = caller
    return caller


def require_caller(request: web.Request, secret: str) -> Caller:
    """The caller; 401 when no token was sent or it does not verify."""
    caller = optional_caller(request, secret)
    if caller is None:
        raise unauthorized("authentication required")
    return caller
