"""Usernames are unique the way people read them: ``Alice``, ``alice`` and their full-width forms are
one name. ``username_key`` holds each name NFKC case-folded, under a unique index; the app fills it on
every write (``blog.inputs.username_key``, which this copies: a migration never changes).

Accounts that already look alike keep their names, their profiles and their sign-in: the oldest keeps
the plain key, each later one gets its key suffixed with its id, so the index can exist. Nobody can
register or rename to any of those names from now on.
"""

import unicodedata
from typing import Any

from yoyo import step


def _key(username: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


def apply(conn: Any) -> None:
    cursor = conn.cursor()
    cursor.execute("ALTER TABLE users ADD COLUMN username_key TEXT NOT NULL DEFAULT ''")
    cursor.execute("SELECT id, username FROM users ORDER BY id")
    taken: set[str] = set()
    for user_id, username in cursor.fetchall():
        key = _key(username)
        if key in taken:
            key = f"{key}#{user_id}"
        taken.add(key)
        cursor.execute("UPDATE users SET username_key = ? WHERE id = ?", (key, user_id))
    cursor.execute("CREATE UNIQUE INDEX users_by_username_key ON users (username_key)")


def rollback(conn: Any) -> None:
    cursor = conn.cursor()
    cursor.execute("DROP INDEX users_by_username_key")
    cursor.execute("ALTER TABLE users DROP COLUMN username_key")


steps = [step(apply, rollback)]
