"""bench.harness: the rounds, folds, tables and memory verdicts every benchmark reports with."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from loadtests.bench.harness import (
    Memory,
    cpu_seconds,
    interleaved,
    load_cpus,
    median,
    pinned,
    rss_mib,
    sample_rss,
    server_cpus,
    spread,
    table,
)


def test_rounds_take_the_variants_in_turn() -> None:
    assert list(interleaved(2, "AB")) == [(1, "A"), (1, "B"), (2, "A"), (2, "B")]


def test_alternating_rounds_let_no_variant_always_go_first() -> None:
    order = list(interleaved(3, ["plain", "service"], alternate=True))
    assert order == [
        (1, "plain"),
        (1, "service"),
        (2, "service"),
        (2, "plain"),
        (3, "plain"),
        (3, "service"),
    ]


def test_median_and_spread_fold_rounds() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert spread([1_500.0, 1_000.0, 2_000.0]) == "1,500 (1,000-2,000)"
    assert spread([0.5], "{:.2f}") == "0.50"


def test_a_table_aligns_numbers_right_unless_told() -> None:
    assert table(["what", "n"], [["a", 1]]) == ["| what | n |", "|---|---:|", "| a | 1 |"]
    assert table(["a", "b", "c"], [], align="llr")[1] == "|---|---|---:|"
    with pytest.raises(ValueError):
        table(["a", "b"], [], align="l")


def test_memory_is_flat_when_the_end_stays_near_the_level_after_warm_up() -> None:
    steady = Memory([100.0] * 10 + [80.0] * 10 + [90.0] * 70 + [98.0] * 10)
    assert steady.warm == 80.0
    assert steady.end == 98.0
    assert steady.growth == pytest.approx(0.225)
    assert not steady.flat
    assert Memory([50.0] * 20).flat
    assert not Memory([50.0] * 9).flat  # too few samples to say
    assert Memory([50.0] * 9).summary() == "n/a (too few samples)"


async def test_rss_and_cpu_are_read_from_proc() -> None:
    memory, stop = Memory(), asyncio.Event()
    sampler = asyncio.create_task(sample_rss(os.getpid(), memory, stop, interval_s=0.01))
    await asyncio.sleep(0.05)
    stop.set()
    await sampler
    assert memory.samples and all(sample > 1 for sample in memory.samples)
    assert rss_mib(os.getpid()) > 1
    assert cpu_seconds(os.getpid()) > 0


def test_servers_and_load_never_share_a_cpu() -> None:
    servers, load = server_cpus(), load_cpus()
    if len(os.sched_getaffinity(0)) < 2:
        assert servers is None and load is None
    else:
        assert servers and load and not servers & load
    assert server_cpus(pin=False) is None and load_cpus(pin=False) is None
    assert pinned([sys.executable], {0, 1}) == ["taskset", "-c", "0,1", sys.executable]
    assert pinned([sys.executable], None) == [sys.executable]
