"""Accounts: register, log in, read and update the current user."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import orjson

from asynccore.errors import ApiError
from blog.cache import Cache
from blog.credentials import user_version
from blog.db import Database, Duplicate, MissingReference, Row, execute, fetch_one, utc_now
from blog.inputs import LoginUser, NewUser, UpdateUser, normal_email, username_key
from blog.passwords import Passwords

__all__ = ["Account", "account", "existing_user", "login", "register", "update", "user_json"]

TAKEN = "has already been taken"
# A profile change shows in every cached article of its author: one version covers them all.
USERS_VERSION = "users"


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    username: str
    email: str
    bio: str | None
    image: str | None
    token_version: int = 0  # tokens carry it; a password change increments it (see blog.credentials)


_COLUMNS = "id, username, email, bio, image, token_version"


def _account(row: Row) -> Account:
    return Account(
        int(row["id"]), row["username"], row["email"], row["bio"], row["image"], int(row["token_version"])
    )


def user_json(user: Account, token: str) -> bytes:
    body = {
        "email": user.email,
        "token": token,
        "username": user.username,
        "bio": user.bio or "",  # strings in the spec: unset is "", never null
        "image": user.image or "",
    }
    return orjson.dumps({"user": body})


@contextmanager
def existing_user() -> Iterator[None]:
    """Around a write that references the caller: a token for a user this database does not have
    (a database reset under a still-valid token) is a 401, not a foreign-key 500."""
    try:
        yield
    except MissingReference:
        raise ApiError(401, "token", "user no longer exists") from None


def _unique_violation(exc: Duplicate) -> ApiError:
    """A UNIQUE race lost to a concurrent writer (another replica) says which field, like the pre-check."""
    field = "username" if "username" in exc.key else "email"
    return ApiError(422, field, TAKEN)


async def _check_free(db: Database, email: str | None, username: str | None, user_id: int = 0) -> None:
    """422 naming each of ``email``/``username`` another account already has (a username that differs
    only in case or width from another's is taken too)."""
    key = username_key(username) if username is not None else None
    async with db.read() as conn:
        row = await fetch_one(
            conn,
            "users_taken",
            "SELECT EXISTS(SELECT 1 FROM users WHERE email = ? AND id != ?) AS email,"
            " EXISTS(SELECT 1 FROM users WHERE username_key = ? AND id != ?) AS username",
            (email, user_id, key, user_id),
        )
    assert row is not None
    errors = {field: [TAKEN] for field in ("email", "username") if row[field]}
    if errors:
        raise ApiError(422, "user", TAKEN, errors=errors)


async def register(db: Database, passwords: Passwords, new: NewUser) -> Account:
    await _check_free(db, new.email, new.username)
    password_hash = await passwords.hash(new.password)  # slow: never inside the write transaction
    now = utc_now()
    try:
        async with db.write() as conn:
            user_id, _ = await execute(
                conn,
                "user_insert",
                "INSERT INTO users (username, username_key, email, password_hash, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (new.username, username_key(new.username), new.email, password_hash, now, now),
            )
    except Duplicate as exc:
        raise _unique_violation(exc) from None
    return Account(user_id, new.username, new.email, None, None)


async def login(db: Database, passwords: Passwords, credentials: LoginUser) -> Account:
    async with db.read() as conn:
        row = await fetch_one(
            conn,
            "user_by_email",
            f"SELECT {_COLUMNS}, password_hash FROM users WHERE email = ?",  # noqa: S608 (constant columns)
            (normal_email(credentials.email),),
        )
    if not await passwords.verify(row["password_hash"] if row else None, credentials.password) or row is None:
        raise ApiError(401, "credentials", "invalid")
    return _account(row)


async def account(db: Database, user_id: int) -> Account:
    """The caller's account; 401 if the token names a user that does not exist (any more)."""
    async with db.read() as conn:
        row = await fetch_one(
            conn,
            "user_by_id",
            f"SELECT {_COLUMNS} FROM users WHERE id = ?",  # noqa: S608 (constant columns)
            (user_id,),
        )
    if row is None:
        raise ApiError(401, "token", "user no longer exists")
    return _account(row)


async def update(
    db: Database, cache: Cache, passwords: Passwords, user_id: int, changes: UpdateUser
) -> Account:
    """Apply the fields sent (``bio``/``image`` may be null: cleared); public ones bump ``users``."""
    current = await account(db, user_id)
    sent = changes.model_fields_set
    if "email" in sent or "username" in sent:
        await _check_free(db, changes.email, changes.username, user_id)
    password_hash = await passwords.hash(changes.password) if changes.password is not None else None
    updated = replace(
        current,
        username=changes.username if changes.username is not None else current.username,
        email=changes.email if changes.email is not None else current.email,
        bio=changes.bio if "bio" in sent else current.bio,
        image=changes.image if "image" in sent else current.image,
    )
    renamed = updated.username != current.username
    try:
        async with db.write() as conn:
            # A new password increments the token version in the same statement: from its commit on,
            # every token issued before is refused (blog.credentials).
            await execute(
                conn,
                "user_update",
                "UPDATE users SET username = ?, username_key = COALESCE(?, username_key), email = ?,"
                " bio = ?, image = ?, password_hash = COALESCE(?, password_hash),"
                " token_version = token_version + ?, updated_at = ? WHERE id = ?",
                (
                    updated.username,
                    username_key(updated.username) if renamed else None,
                    updated.email,
                    updated.bio,
                    updated.image,
                    password_hash,
                    0 if password_hash is None else 1,
                    utc_now(),
                    user_id,
                ),
            )
            # MariaDB has no UPDATE … RETURNING; in the same transaction this reads what it wrote.
            row = await fetch_one(
                conn, "user_token_version", "SELECT token_version FROM users WHERE id = ?", (user_id,)
            )
    except Duplicate as exc:
        raise _unique_violation(exc) from None
    if row is None:  # deleted since it was read
        raise ApiError(401, "token", "user no longer exists")
    updated = replace(updated, token_version=int(row["token_version"]))
    stale = []
    if (current.username, current.bio, current.image) != (updated.username, updated.bio, updated.image):
        stale.append(USERS_VERSION)  # shown in every cached article of theirs; readers' flags hold names
    if password_hash is not None:
        stale.append(user_version(user_id))  # their older tokens
    if stale:
        await cache.invalidate(*stale)
    return updated
