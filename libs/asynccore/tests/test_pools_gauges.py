"""The shared pool gauges: many apps in one process, closed pools vanish, a broken pool is contained."""

from __future__ import annotations

import gc
from pathlib import Path

from aiohttp import web
from prometheus_client import REGISTRY, generate_latest

from asynccore.app import SERVICE, create_app
from asynccore.pools import PoolStats, track_pool
from asynccore.pools.sqlite import SQLiteDB, sqlite_db
from asynccore.settings import ServiceSettings
from asynccore.testing import metric_value

DB = web.AppKey("db", SQLiteDB)


def scrape() -> str:
    return generate_latest(REGISTRY).decode()


class Pool:
    """Something with a size, standing in for a pool only to exercise the registry's bookkeeping."""

    def __init__(self, size: int) -> None:
        self.size = size


def stats(pool: Pool) -> PoolStats:
    return PoolStats(size=pool.size, in_use=1, waiting=0)


def app_for(service: str) -> web.Application:
    app = web.Application()
    app[SERVICE] = service
    return app


def test_pools_with_the_same_labels_are_summed_and_vanish_when_collected(service: str) -> None:
    first, second = Pool(3), Pool(4)
    track_pool(app_for(service), "db", first, stats)
    track_pool(app_for(service), "db", second, stats)
    text = scrape()
    assert metric_value(text, "db_pool_size", service=service, pool="db") == 7
    assert metric_value(text, "db_pool_in_use", service=service, pool="db") == 2

    del first
    gc.collect()
    assert metric_value(scrape(), "db_pool_size", service=service, pool="db") == 4
    del second
    gc.collect()
    assert metric_value(scrape(), "db_pool_size", service=service, pool="db") is None


def test_a_failing_stats_function_does_not_break_the_scrape(service: str) -> None:
    def broken(pool: Pool) -> PoolStats:
        raise AttributeError("internals moved")

    bad, good = Pool(1), Pool(2)
    track_pool(app_for(service), "bad", bad, broken)
    track_pool(app_for(service), "good", good, stats)
    text = scrape()
    assert metric_value(text, "db_pool_size", service=service, pool="good") == 2
    assert metric_value(text, "db_pool_size", service=service, pool="bad") is None


async def test_two_apps_of_one_service_run_side_by_side(tmp_path: Path, service: str) -> None:
    """Registering gauges per app would fail the second time; the shared collector does not."""
    runners = []
    for i in range(2):
        app = create_app(
            service, ServiceSettings(), resources=[sqlite_db(DB, str(tmp_path / f"{i}.db"), readers=1)]
        )
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
    try:
        assert metric_value(scrape(), "db_pool_size", service=service, pool="sqlite") == 4
    finally:
        for runner in runners:
            await runner.cleanup()
    assert metric_value(scrape(), "db_pool_size", service=service, pool="sqlite") is None
