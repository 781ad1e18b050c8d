"""The RealWorld API (``/api/...``): thin handlers over the logic modules."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from aiohttp import hdrs, web

from asynccore.app import add_routes
from asynccore.auth import optional_caller, require_caller
from asynccore.errors import ApiError
from asynccore.revocation import REVOCATIONS
from asynccore.web import add_openapi_routes, json_headers, json_response
from blog import articles, comments, credentials, profiles, tags, users
from blog.cache import Entry
from blog.cors import CORS_HEADERS
from blog.inputs import (
    SQLITE_INT_MAX,
    LoginUser,
    NewArticle,
    NewComment,
    NewUser,
    UpdateArticle,
    UpdateUser,
    article_filters,
    read_body,
)
from blog.pages import SITE_NAME
from blog.resources import CACHE, DB, PASSWORDS, SETTINGS
from blog.responses import JSON, Shape, send_cached

__all__ = ["add_api_routes"]

OPENAPI = Path(__file__).parent / "openapi.json"
# Answers for one reader (built once; aiohttp copies them into each response).
JSON_HEADERS = json_headers(CORS_HEADERS)
# Shared (anonymous) cached answers may be stored but must be revalidated (ETag): a write shows on
# the next read.
SHARED = Shape(JSON, "no-cache", CORS_HEADERS)


_json = partial(json_response, headers=JSON_HEADERS)  # every API answer carries the CORS headers


def _cached(request: web.Request, entry: Entry) -> web.Response:
    return send_cached(request, entry, SHARED)


def anonymous(request: web.Request) -> bool:
    """No credential sent: the shared cached bytes are the answer (no token to parse or check)."""
    return hdrs.AUTHORIZATION not in request.headers


def _secret(request: web.Request) -> str:
    return request.app[SETTINGS].jwt_secret.get_secret_value()


def _checked_header(request: web.Request) -> None:
    """A token is ASCII (base64url and dots): anything else is a client's mistake, a 401 — never a
    500 from the JWT library choking on it."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is not None and not header.isascii():
        raise ApiError(401, "token", "invalid token: not ASCII", headers={"WWW-Authenticate": "Token"})


async def viewer(request: web.Request) -> int | None:
    """The signed-in reader, if a token was sent (401 if it is bad or revoked); ``None`` if not."""
    _checked_header(request)
    caller = optional_caller(request, _secret(request))
    if caller is None:
        return None
    return await credentials.current_user_id(request.app[DB], request.app[CACHE], caller)


async def signed_in(request: web.Request) -> int:
    """The signed-in caller; 401 when no token was sent, or it is bad or revoked."""
    _checked_header(request)
    caller = require_caller(request, _secret(request))
    return await credentials.current_user_id(request.app[DB], request.app[CACHE], caller)


def _user_response(request: web.Request, account: users.Account, status: int = 200) -> web.Response:
    settings = request.app[SETTINGS]
    token = credentials.issue(
        _secret(request), account.id, account.username, account.token_version, settings.jwt_ttl_s
    )
    return _json(users.user_json(account, token), status)


# ---------------------------------------------------------------------------- users


async def register(request: web.Request) -> web.Response:
    new = await read_body(request, "user", NewUser)
    account = await users.register(request.app[DB], request.app[PASSWORDS], new)
    return _user_response(request, account, 201)


async def login(request: web.Request) -> web.Response:
    credentials = await read_body(request, "user", LoginUser)
    account = await users.login(request.app[DB], request.app[PASSWORDS], credentials)
    return _user_response(request, account)


async def current_user(request: web.Request) -> web.Response:
    return _user_response(request, await users.account(request.app[DB], await signed_in(request)))


async def update_user(request: web.Request) -> web.Response:
    user_id = await signed_in(request)
    changes = await read_body(request, "user", UpdateUser)
    app = request.app
    account = await users.update(app[DB], app[CACHE], app[PASSWORDS], user_id, changes)
    if changes.password is not None:  # the other services refuse the older tokens too
        await app[REVOCATIONS].publish(str(user_id), account.token_version, app[SETTINGS].jwt_ttl_s)
    return _user_response(request, account)


# ---------------------------------------------------------------------------- profiles


async def get_profile(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    return _json(await profiles.profile_for(request.app[DB], await viewer(request), username))


async def follow(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    return _json(
        await profiles.follow(request.app[DB], request.app[CACHE], await signed_in(request), username)
    )


async def unfollow(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    return _json(
        await profiles.unfollow(request.app[DB], request.app[CACHE], await signed_in(request), username)
    )


# ---------------------------------------------------------------------------- articles


async def list_articles(request: web.Request) -> web.Response:
    filters = article_filters(request)
    cache = request.app[CACHE]
    reader = None if anonymous(request) else await viewer(request)
    if reader is None:  # the hot path: a local hit is served with no await, on prepared headers
        entry = cache.peek(articles.LIST, filters.key) or await articles.list_cached(
            request.app[DB], cache, filters
        )
        return _cached(request, entry)
    return _json(await articles.list_for(request.app[DB], cache, reader, filters))


async def feed(request: web.Request) -> web.Response:
    user_id = await signed_in(request)
    filters = article_filters(request, with_filters=False)
    return _json(await articles.feed_for(request.app[DB], user_id, filters))


async def get_article(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    cache = request.app[CACHE]
    reader = None if anonymous(request) else await viewer(request)
    if reader is None:  # the hot path: a local hit is served with no await, on prepared headers
        entry = cache.peek(articles.ARTICLE, slug) or await articles.article_cached(
            request.app[DB], cache, slug
        )
        return _cached(request, entry)
    return _json(await articles.article_for(request.app[DB], cache, reader, slug))


async def create_article(request: web.Request) -> web.Response:
    user_id = await signed_in(request)
    new = await read_body(request, "article", NewArticle)
    return _json(await articles.create(request.app[DB], request.app[CACHE], user_id, new), 201)


async def update_article(request: web.Request) -> web.Response:
    user_id = await signed_in(request)
    changes = await read_body(request, "article", UpdateArticle)
    slug = request.match_info["slug"]
    return _json(await articles.update(request.app[DB], request.app[CACHE], user_id, slug, changes))


async def delete_article(request: web.Request) -> web.Response:
    user_id = await signed_in(request)
    await articles.delete(request.app[DB], request.app[CACHE], user_id, request.match_info["slug"])
    return web.Response(status=204, headers=CORS_HEADERS)


async def favorite(request: web.Request) -> web.Response:
    user_id = await signed_in(request)
    slug = request.match_info["slug"]
    return _json(await articles.favorite(request.app[DB], request.app[CACHE], user_id, slug))


async def unfavorite(request: web.Request) -> web.Response:
    user_id = await signed_in(request)
    slug = request.match_info["slug"]
    return _json(await articles.unfavorite(request.app[DB], request.app[CACHE], user_id, slug))


# ---------------------------------------------------------------------------- comments


async def list_comments(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    return _json(await comments.comments_for(request.app[DB], await viewer(request), slug))


async def add_comment(request: web.Request) -> web.Response:
    user_id = await signed_in(request)
    new = await read_body(request, "comment", NewComment)
    slug = request.match_info["slug"]
    return _json(await comments.add(request.app[DB], request.app[CACHE], user_id, slug, new))


async def delete_comment(request: web.Request) -> web.Response:
    user_id = await signed_in(request)
    try:
        comment_id = int(request.match_info["id"])
    except ValueError:
        raise ApiError(422, "id", "must be an integer") from None
    if not 0 < comment_id <= SQLITE_INT_MAX:
        raise ApiError(404, "comment", "not found")  # no comment can have such an id
    slug = request.match_info["slug"]
    await comments.delete(request.app[DB], request.app[CACHE], user_id, slug, comment_id)
    return web.Response(status=204, headers=CORS_HEADERS)


# ---------------------------------------------------------------------------- tags, spec


async def list_tags(request: web.Request) -> web.Response:
    return _cached(request, await tags.tags_cached(request.app[DB], request.app[CACHE]))


def add_api_routes(app: web.Application) -> None:
    add_routes(
        app,
        [
            web.post("/api/users", register),
            web.post("/api/users/login", login),
            web.get("/api/user", current_user),
            web.put("/api/user", update_user),
            web.get("/api/profiles/{username}", get_profile),
            web.post("/api/profiles/{username}/follow", follow),
            web.delete("/api/profiles/{username}/follow", unfollow),
            web.get("/api/articles", list_articles),
            web.post("/api/articles", create_article),
            web.get("/api/articles/feed", feed),  # before {slug}, which would match "feed"
            web.get("/api/articles/{slug}", get_article),
            web.put("/api/articles/{slug}", update_article),
            web.delete("/api/articles/{slug}", delete_article),
            web.get("/api/articles/{slug}/comments", list_comments),
            web.post("/api/articles/{slug}/comments", add_comment),
            web.delete("/api/articles/{slug}/comments/{id}", delete_comment),
            web.post("/api/articles/{slug}/favorite", favorite),
            web.delete("/api/articles/{slug}/favorite", unfavorite),
            web.get("/api/tags", list_tags),
        ],
    )
    add_openapi_routes(  # and /api/docs
        app, "/api/openapi.json", OPENAPI.read_bytes(), headers=CORS_HEADERS, title=f"{SITE_NAME} (blog) API"
    )
