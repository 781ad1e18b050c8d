"""What every service's HTTP layer does the same way, so none writes it again.

- typed settings: ``SETTINGS = settings_key(BlogSettings)`` in the service's ``resources.py`` (beside
  its other ``AppKey``s), read as ``request.app[SETTINGS]``; ``create_app`` stores it.
- JSON answers: :func:`json_response` (a value is encoded with orjson; ``bytes`` are sent as they are).
- JSON request bodies: :func:`read_json` validates into a pydantic model or raises a 422
  :class:`~asynccore.errors.ApiError` naming each bad field (``items[0].quantity``); :func:`invalid`
  maps a ``ValidationError`` raised elsewhere the same way.
- the OpenAPI document: :func:`add_openapi_routes` serves it (encoded once) and its Swagger UI page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson
from aiohttp import hdrs, web
from multidict import CIMultiDict
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from asynccore.apidocs import add_docs_routes
from asynccore.app import add_routes
from asynccore.errors import ApiError
from asynccore.settings import settings_key

__all__ = [
    "JSON",
    "add_openapi_routes",
    "field_name",
    "invalid",
    "json_headers",
    "json_response",
    "read_json",
    "settings_key",
]

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
FieldNamer = Callable[[ErrorDetails], str]
Messenger = Callable[[ErrorDetails], str]


def json_headers(extra: Mapping[str, str] | None = None) -> CIMultiDict[str]:
    """``Content-Type: application/json`` and ``extra``: build once, pass to :func:`json_response`."""
    return CIMultiDict({hdrs.CONTENT_TYPE: JSON, **(extra or {})})


_JSON_HEADERS = json_headers()


def json_response(
    data: object, status: int = 200, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``data`` as a JSON answer; ``bytes`` are taken as JSON already encoded (a cached body).

    ``headers`` are sent as given, with ``Content-Type: application/json`` added when they lack one;
    a constant from :func:`json_headers` saves the per-response merge on a hot path.
    """
    body = data if isinstance(data, bytes) else orjson.dumps(data)
    if headers is None:
        headers = _JSON_HEADERS
    elif hdrs.CONTENT_TYPE not in headers:
        headers = json_headers(headers)
    return web.Response(body=body, status=status, headers=headers)


def field_name(loc: tuple[int | str, ...]) -> str:
    """``('items', 0, 'quantity')`` → ``items[0].quantity``: how a client would point at the field;
    ``body`` when the error is about the whole body (not JSON, not an object)."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _loc_name(error: ErrorDetails) -> str:
    return field_name(error["loc"])


def _msg(error: ErrorDetails) -> str:
    return error["msg"]


def invalid(exc: ValidationError, *, field: FieldNamer = _loc_name, message: Messenger = _msg) -> ApiError:
    """A 422 listing every error of ``exc`` under its field: ``{"errors": {field: [message, …]}}``.

    ``field`` and ``message`` name and word one pydantic error (defaults: :func:`field_name` of its
    location, pydantic's own message), for a service whose API prescribes its wording.
    """
    errors: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        errors.setdefault(field(error), []).append(message(error))
    return ApiError(422, next(iter(errors), "body"), "invalid", errors=errors)


async def read_json(
    request: web.Request, model: type[M], *, field: FieldNamer = _loc_name, message: Messenger = _msg
) -> M:
    """The request's JSON body as ``model`` (validated in JSON mode, so a strict model takes JSON's
    own types); a 422 from :func:`invalid` otherwise — ``body`` names a body that is not JSON.
    The size is bounded by the app's ``client_max_size``."""
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        raise invalid(exc, field=field, message=message) from None


def add_openapi_routes(
    app: web.Application,
    path: str,
    document: Mapping[str, Any] | bytes,
    *,
    headers: Mapping[str, str] | None = None,
    title: str | None = None,
) -> str:
    """Serve ``document`` (encoded once, now) at ``GET path`` and its Swagger UI page beside it
    (:func:`~asynccore.apidocs.add_docs_routes`); return the docs page's path.

    ``headers`` go with the document (e.g. CORS); the docs routes stay out of the document.
    """
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    sent = json_headers(headers)

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, headers=sent)

    add_routes(app, [web.get(path, openapi)])
    return add_docs_routes(app, path, title=title)
