"""What clients send, validated into typed values — or a 422 that names the field.

Request bodies are RealWorld envelopes (``{"user": {...}}``, ``{"article": {...}}``); unknown fields are
ignored, wrong types are rejected (strict: ``"1"`` is not a number, ``1`` is not a string), and the
error says which field and why in the RealWorld wording (``"can't be blank"``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from asynccore.errors import ApiError
from asynccore.params import int_param
from asynccore.web import invalid

__all__ = [
    "ArticleFilters",
    "LoginUser",
    "NewArticle",
    "NewComment",
    "NewUser",
    "UpdateArticle",
    "UpdateUser",
    "article_filters",
    "normal_email",
    "page_param",
    "read_body",
    "strip_not_text",
    "text_problem",
    "username_key",
]

MAX_LIMIT = 100
SQLITE_INT_MAX = 2**63 - 1  # a larger integer cannot be bound as an SQLite parameter
BLANK = "can't be blank"
PASSWORD_MIN = 8

# Characters no text of ours may hold: C0 controls but tab, newline and carriage return; DEL and the
# C1 controls; surrogates; Unicode's non-characters (U+FDD0..U+FDEF and the last two code points of
# every plane). XML 1.0 refuses most of them outright (one in a title would break /feed.atom for every
# subscriber) and the rest are never text a person meant to write.
_NOT_TEXT = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
    + "]"
)
# Usernames are names people tell apart by eye, and path segments (/profile/{username}): no control,
# format (bidi overrides, zero-width), private-use or unassigned characters, no spaces, no "/".
_NAME_CATEGORIES_REFUSED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"}
_IMAGE_SCHEMES = {"http", "https"}


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or ``None`` when it can."""
    found = _NOT_TEXT.search(value)
    if found is None:
        return None
    return f"must not contain control characters or non-characters (found U+{ord(found.group()):04X})"


def strip_not_text(value: str) -> str:
    """``value`` without the characters :func:`text_problem` refuses (for rows older than the rule)."""
    return _NOT_TEXT.sub("", value)


def _text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError(BLANK)
    return value


def _email(value: str) -> str:
    """Syntax per RFC 5321/6531 (email-validator, no DNS): no quoted local parts, no IP literals, no
    invisible or direction characters; the domain normalised (lower case, IDNA), the local part NFC."""
    try:
        return validate_email(value, check_deliverability=False, test_environment=True).normalized
    except EmailNotValidError:
        raise ValueError("is invalid") from None


def normal_email(value: str) -> str:
    """The address as stored, for a login: normalised when it is valid, else as typed (it finds nobody)."""
    try:
        return _email(value)
    except ValueError:
        return value


def _username(value: str) -> str:
    value = unicodedata.normalize("NFC", value)
    if "/" in value or any(unicodedata.category(c) in _NAME_CATEGORIES_REFUSED for c in value):
        raise ValueError("must not contain spaces, '/', or invisible, control or direction characters")
    return value


def username_key(username: str) -> str:
    """What two usernames that look alike have in common: NFKC, case-folded (``Alice``, its full-width
    form and ``alice`` are one name). Unique in the database, so a look-alike cannot register."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


def _image(value: str) -> str:
    """An absolute http(s) URL, or "" (none): a profile image is put in pages and front-ends as a link."""
    if value == "":
        return value
    try:
        parts = urlsplit(value)
        absolute = parts.scheme.lower() in _IMAGE_SCHEMES and bool(parts.hostname)
    except ValueError:  # a malformed host ("http://[::1")
        absolute = False
    if not absolute or any(c.isspace() or unicodedata.category(c) in _NAME_CATEGORIES_REFUSED for c in value):
        raise ValueError("must be an http(s) URL")
    return value


def _tags(values: list[str]) -> list[str]:
    """Trimmed, without blanks or duplicates, sorted (tagList order is stable across writes)."""
    return sorted({tag.strip() for tag in values if tag.strip()})


# Every string a client sends is checked for characters that are not text (``_IsText``) and, unless
# it may be empty, for blankness; length limits come first, so an oversized value is not scanned.
_IsText = AfterValidator(_text)
_NotBlank = AfterValidator(_not_blank)
Email = Annotated[str, Field(max_length=254), _NotBlank, AfterValidator(_email)]
Username = Annotated[str, Field(max_length=64), _IsText, _NotBlank, AfterValidator(_username)]
Password = Annotated[str, Field(min_length=PASSWORD_MIN, max_length=1024), _IsText, _NotBlank]
Title = Annotated[str, Field(max_length=256), _IsText, _NotBlank]
Description = Annotated[str, Field(max_length=1024), _IsText, _NotBlank]
Body = Annotated[str, Field(max_length=1024 * 1024), _IsText, _NotBlank]
Bio = Annotated[str, Field(max_length=4096), _IsText]
Image = Annotated[str, Field(max_length=2048), _IsText, AfterValidator(_image)]
Tag = Annotated[str, Field(max_length=64), _IsText]
Tags = Annotated[list[Tag], Field(max_length=50), AfterValidator(_tags)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class NewUser(_Input):
    username: Username
    email: Email
    password: Password


class LoginUser(_Input):
    """Checked against what is stored, so only its presence is validated (a login stores nothing)."""

    email: Annotated[str, AfterValidator(_not_blank)]
    password: Annotated[str, AfterValidator(_not_blank)]


class UpdateUser(_Input):
    email: Email | None = None
    username: Username | None = None
    password: Password | None = None
    bio: Bio | None = None
    image: Image | None = None


class NewArticle(_Input):
    title: Title
    description: Description
    body: Body
    tag_list: Tags = Field(default_factory=list, alias="tagList")


class UpdateArticle(_Input):
    title: Title | None = None
    description: Description | None = None
    body: Body | None = None
    tag_list: Tags | None = Field(default=None, alias="tagList")


class NewComment(_Input):
    body: Body


M = TypeVar("M", bound=_Input)

# Required fields that may not be sent as null; UpdateUser's bio/image may (it clears them).
_NOT_NULL = {"email", "username", "password", "title", "description", "body", "tagList"}


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return BLANK
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "string_type":
        return "must be a string"
    if kind == "list_type":
        return "must be a list"
    if kind == "string_too_short":
        return f"is too short (minimum is {error['ctx']['min_length']} characters)"
    if kind == "string_too_long":
        return f"is too long (maximum is {error['ctx']['max_length']} characters)"
    if kind == "too_long":
        return f"has too many items (maximum is {error['ctx']['max_length']})"
    return str(error["msg"])


def _field(error: Any) -> str:
    names = [part for part in error["loc"] if isinstance(part, str)]
    return names[0] if names else "body"


async def read_body(request: web.Request, envelope: str, model: type[M]) -> M:
    """``request``'s JSON body as ``{envelope: model}``; 422 naming the first bad field otherwise."""
    try:
        payload = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ApiError(422, "body", "must be valid JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "body", "must be a JSON object")
    inner = payload.get(envelope)
    if not isinstance(inner, dict):
        raise ApiError(422, envelope, BLANK if inner is None else "must be an object")
    for name in _NOT_NULL:
        if name in inner and inner[name] is None and name in _aliases(model):
            raise ApiError(422, name, BLANK)
    try:
        return model.model_validate(inner)
    except ValidationError as exc:
        raise invalid(exc, field=_field, message=_message) from None


def _aliases(model: type[_Input]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


@dataclass(frozen=True, slots=True)
class ArticleFilters:
    """The query of ``GET /api/articles`` (it is part of the cache key, so it must be canonical)."""

    tag: str | None = None
    author: str | None = None
    favorited: str | None = None
    limit: int = 20
    offset: int = 0
    key: str = field(init=False, repr=False, compare=False)  # the canonical cache key

    def __post_init__(self) -> None:
        key = orjson.dumps([self.tag, self.author, self.favorited, self.limit, self.offset]).decode()
        object.__setattr__(self, "key", key)


def _str_param(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and len(value) > 256:
        raise ApiError(422, name, "is too long (maximum is 256 characters)")
    return value or None


# Readers send a handful of distinct list queries over and over; parsing one again costs more than
# the cache hit it leads to. Valid ones are kept by their raw query string, bounded in number and
# length (clients choose them).
_KNOWN_FILTERS: dict[tuple[str, bool], ArticleFilters] = {}
KNOWN_FILTERS_MAX = 1024
KNOWN_QUERY_MAX_CHARS = 512


def article_filters(request: web.Request, *, with_filters: bool = True) -> ArticleFilters:
    """``tag``/``author``/``favorited``/``limit``/``offset`` from the query; 422 names a bad one."""
    seen = (request.rel_url.raw_query_string, with_filters)
    filters = _KNOWN_FILTERS.get(seen)
    if filters is None:
        filters = ArticleFilters(
            tag=_str_param(request, "tag") if with_filters else None,
            author=_str_param(request, "author") if with_filters else None,
            favorited=_str_param(request, "favorited") if with_filters else None,
            limit=int_param(request, "limit", 20, lo=1, hi=MAX_LIMIT),
            offset=int_param(request, "offset", 0, lo=0, hi=SQLITE_INT_MAX),
        )
        if len(seen[0]) <= KNOWN_QUERY_MAX_CHARS:
            if len(_KNOWN_FILTERS) >= KNOWN_FILTERS_MAX:
                _KNOWN_FILTERS.clear()
            _KNOWN_FILTERS[seen] = filters
    return filters


def page_param(request: web.Request) -> int:
    """``?page=N`` of the HTML pages (1-based)."""
    return int_param(request, "page", 1, lo=1, hi=100_000)
