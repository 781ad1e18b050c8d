"""Migrations on a real SQLite file and a real MariaDB database: once, idempotent, replica-safe."""

from __future__ import annotations

import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from asynccore.migrations import apply_migrations
from asynccore.pools.mysql import close_mysql, ensure_database, open_mysql
from asynccore.testing import ServiceProcess

CREATE_ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL);\n"
ADD_PRICE = "-- depends: 0001.create-items\nALTER TABLE items ADD COLUMN price INTEGER NOT NULL DEFAULT 0;\n"


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001.create-items.sql").write_text(CREATE_ITEMS)
    (folder / "0002.add-price.sql").write_text(ADD_PRICE)
    return folder


def sqlite_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.parametrize("as_url", [True, False], ids=["sqlite-url", "plain-path"])
async def test_sqlite_migrations_apply_once(tmp_path: Path, migrations_dir: Path, as_url: bool) -> None:
    path = tmp_path / "app.db"
    target = f"sqlite:///{path}" if as_url else str(path)

    await apply_migrations(target, migrations_dir)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO items (id, name, price) VALUES (1, 'pen', 3)")

    # Applying again is a no-op: data survives, nothing is recorded twice.
    await apply_migrations(target, migrations_dir)
    assert sqlite_rows(path, "SELECT id, name, price FROM items") == [(1, "pen", 3)]
    assert sqlite_rows(path, "SELECT migration_id FROM _yoyo_migration ORDER BY migration_id") == [
        ("0001.create-items",),
        ("0002.add-price",),
    ]

    # A new migration is picked up on the next start.
    (migrations_dir / "0003.add-stock.sql").write_text("ALTER TABLE items ADD COLUMN stock INTEGER;\n")
    await apply_migrations(target, migrations_dir)
    assert sqlite_rows(path, "SELECT stock FROM items") == [(None,)]


async def test_a_failing_sqlite_migration_is_rolled_back_and_reported(
    tmp_path: Path, migrations_dir: Path
) -> None:
    (migrations_dir / "0003.broken.sql").write_text("CREATE TABLE extra (id INTEGER);\nNOT SQL AT ALL;\n")
    path = tmp_path / "app.db"
    with pytest.raises(sqlite3.OperationalError):
        await apply_migrations(str(path), migrations_dir)
    assert sqlite_rows(path, "SELECT COUNT(*) FROM _yoyo_migration") == [(2,)]
    assert sqlite_rows(path, "SELECT name FROM sqlite_master WHERE name = 'extra'") == []


async def test_a_missing_folder_is_an_error_not_an_empty_schema(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        await apply_migrations(str(tmp_path / "app.db"), tmp_path / "nope")


async def mysql_rows(url: str, sql: str) -> list[tuple[object, ...]]:
    pool = await open_mysql(url, maxsize=1, create_database=False)
    try:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql)
            rows = list(await cur.fetchall())
            await conn.rollback()
            return rows
    finally:
        await close_mysql(pool)


async def test_mysql_migrations_apply_once(mysql_url: str, migrations_dir: Path) -> None:
    await ensure_database(mysql_url)
    await apply_migrations(mysql_url, migrations_dir)
    await apply_migrations(mysql_url, migrations_dir)
    columns = await mysql_rows(
        mysql_url,
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = DATABASE() AND table_name = 'items' ORDER BY ordinal_position",
    )
    assert columns == [("id",), ("name",), ("price",)]
    assert await mysql_rows(mysql_url, "SELECT migration_id FROM _yoyo_migration ORDER BY migration_id") == [
        ("0001.create-items",),
        ("0002.add-price",),
    ]


async def test_two_replicas_starting_together_migrate_once(mysql_url: str, migrations_dir: Path) -> None:
    """Two processes race to migrate one database; yoyo's lock lets one apply and the other skip."""
    await ensure_database(mysql_url)
    script = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from asynccore.migrations import apply_migrations
        asyncio.run(apply_migrations({mysql_url!r}, Path({str(migrations_dir)!r})))
        print("migrated", flush=True)
        """
    )
    replicas = [ServiceProcess([sys.executable, "-c", script], name=f"replica-{i}") for i in range(2)]
    for replica in replicas:
        await replica.start()
    try:
        for replica in replicas:
            assert await replica.wait(timeout=60) == 0, replica.output
            assert "migrated" in replica.output
    finally:
        for replica in replicas:
            await replica.stop()
    assert await mysql_rows(mysql_url, "SELECT COUNT(*) FROM _yoyo_migration") == [(2,)]
    assert await mysql_rows(mysql_url, "SELECT COUNT(*) FROM yoyo_lock") == [(0,)]
