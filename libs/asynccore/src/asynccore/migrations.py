"""Versioned SQL migrations, applied at start-up with yoyo-migrations, for SQLite and MySQL.

Migrations are ``.sql`` files in one folder, applied in name order (``0001.create-users.sql``,
``0002.add-bio.sql`` …); yoyo records what ran, so applying again is a no-op. Its lock table makes
replicas that start together safe: one applies, the others wait for it and then find nothing to do.
yoyo is synchronous (sqlite3 / PyMySQL), so it runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from yoyo import get_backend, read_migrations

__all__ = ["apply_migrations", "yoyo_url"]

log = logging.getLogger("asynccore.migrations")

LOCK_TIMEOUT_S = 60


def yoyo_url(url: str) -> str:
    """Our database URL as yoyo wants it; a bare file path means a SQLite file."""
    if "://" not in url:
        return f"sqlite:///{Path(url).resolve()}"
    return url


def _apply(url: str, migrations_dir: Path, lock_timeout_s: int) -> list[str]:
    if not migrations_dir.is_dir():  # yoyo would silently find no migrations
        raise FileNotFoundError(f"migrations folder {migrations_dir} does not exist")
    migrations = read_migrations(str(migrations_dir))
    with get_backend(yoyo_url(url)) as backend, backend.lock(timeout=lock_timeout_s):
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
        return [migration.id for migration in pending]


async def apply_migrations(url: str, migrations_dir: Path, *, lock_timeout_s: int = LOCK_TIMEOUT_S) -> None:
    """Apply the migrations in ``migrations_dir`` not yet applied to ``url``.

    ``url`` is ``sqlite:////abs/path.db``, a plain SQLite file path, or ``mysql://user@host:port/db``
    (the database must exist: :func:`asynccore.pools.mysql.open_mysql` creates it). Waits at most
    ``lock_timeout_s`` for another process that is migrating the same database.
    """
    applied = await asyncio.to_thread(_apply, url, migrations_dir, lock_timeout_s)
    if applied:
        log.info("applied %d migrations: %s", len(applied), ", ".join(applied))
