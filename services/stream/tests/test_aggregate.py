"""Per-batch judging and aggregation, without I/O: the same stream gives the same totals however
it is cut into batches, and those totals are the independently computed ground truth."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from stream_truth import judge, scenario

from stream.aggregate import aggregate
from stream.batch import Checkpoint, JudgedEvent, prepare
from stream.keys import Keys
from stream.metrics import LATENESS
from stream.recommend import co_views
from stream.settings import StreamSettings
from stream.windows import LATENESS_BOUNDS_MS, LATENESS_LABELS
from stream.writes import Found, NotStored, Plan, Totals, WriteSet, build_writes, draft_writes, plan

KEYS = Keys("t:")
SETTINGS = StreamSettings(stream_allowed_lateness_s=60)


@dataclass
class Rec:
    partition: int
    offset: int
    value: bytes
    timestamp: int = 1_700_000_000_000
    key: bytes | None = None


def ev(event_id: str, ts: int, kind: str = "page_view", user: str = "u1", product: str = "p1") -> bytes:
    event: dict[str, object] = {
        "event_id": event_id,
        "type": kind,
        "user_id": user,
        "product_id": product,
        "ts": ts,
    }
    if kind == "order_placed":
        event["price"] = 10
    return orjson.dumps(event)


def test_watermark_is_per_partition_and_lateness_is_allowed() -> None:
    t = 1_700_000_000_000
    batch = {
        0: [Rec(0, 0, ev("a", t)), Rec(0, 1, ev("b", t - 59_000)), Rec(0, 2, ev("c", t - 61_000))],
        1: [Rec(1, 0, ev("d", t - 3_600_000))],  # old, but partition 1 has seen nothing newer
    }
    out = prepare(batch, {0: Checkpoint(0), 1: Checkpoint(0)}, now_ms=t, lateness_ms=60_000, max_future_ms=0)
    assert [e.event_id for e in out.candidates] == ["a", "b", "d"]
    assert [(r.reason, r.offset) for r in out.rejected] == [("late", 2)]
    assert out.checkpoints == {0: Checkpoint(3, t), 1: Checkpoint(1, t - 3_600_000)}


def test_in_batch_duplicates_and_replayed_offsets_and_unassigned_partitions() -> None:
    t = 1_700_000_000_000
    batch = {
        0: [Rec(0, 4, ev("old", t)), Rec(0, 5, ev("a", t)), Rec(0, 6, ev("a", t)), Rec(0, 7, b"{")],
        3: [Rec(3, 0, ev("x", t))],  # not assigned (revoked while in flight)
    }
    out = prepare(batch, {0: Checkpoint(5, t)}, now_ms=t, lateness_ms=60_000, max_future_ms=0)
    assert [e.event_id for e in out.candidates] == ["a"]
    assert [e.event_id for e in out.duplicates] == ["a"]
    assert [r.reason for r in out.rejected] == ["bad_json"]
    assert out.checkpoints == {0: Checkpoint(8, t)}


class FakeStore:
    """Just enough of what Redis holds between batches (seen ids, sessions) to drive build_writes."""

    def __init__(self) -> None:
        self.sets: dict[str, set[str]] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        self.counters: dict[str, Counter[str]] = {}

    def read(self, the_plan: Plan) -> Found:
        seen = [
            "".join("1" if i in self.sets.get(g.key, ()) else "0" for i in g.members) for g in the_plan.seen
        ]
        sessions: dict[str, str | None] = {}
        for group in the_plan.sessions:
            for user in group.members:
                sessions[user] = sessions.get(user) or self.hashes.get(group.key, {}).get(user)
        return Found(seen, sessions)

    def apply(self, writes: WriteSet) -> None:
        for inc in writes.hashes:
            counts = self.counters.setdefault(inc.key, Counter())
            for name, n in zip(inc.deltas[::2], inc.deltas[1::2], strict=True):
                assert isinstance(name, str) and isinstance(n, int)
                counts[name] += n
        for group in writes.seen:
            self.sets.setdefault(group.key, set()).update(group.members)
        for group in writes.sessions:
            flat = group.members
            self.hashes.setdefault(group.key, {}).update(zip(flat[::2], flat[1::2], strict=True))

    def minute_totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for key, counts in self.counters.items():
            if key.startswith(KEYS.minute(0)[:-1]):
                total.update(counts)
        return total


@dataclass
class Run:
    store: FakeStore
    written: list[tuple[WriteSet, Totals]]  # per batch
    counted_before: int = 0  # candidates the reads found counted by an earlier batch
    taken_before: int = 0  # … that the drafts took out before the read (stored by the batch before)


def run_batches(parts: dict[int, list[bytes]], now: int, batch_size: int, *, drafted: bool = False) -> Run:
    """Every partition cut into batches of ``batch_size`` records, each judged, aggregated and
    written to a :class:`FakeStore`; with ``drafted``, most of the write set is built before the
    read, knowing the ids the batch before stores, as the consumer does."""
    run = Run(FakeStore(), [])
    store, progress = run.store, {p: Checkpoint(0) for p in parts}
    stored_before: dict[str, set[str]] | None = None
    cursor = dict.fromkeys(parts, 0)
    while any(cursor[p] < len(v) for p, v in parts.items()):
        batch = {}
        for p, values in parts.items():
            chunk = values[cursor[p] : cursor[p] + batch_size]
            batch[p] = [Rec(p, cursor[p] + i, v) for i, v in enumerate(chunk)]
            cursor[p] += len(chunk)
        prepared = prepare(batch, progress, now_ms=now, lateness_ms=60_000, max_future_ms=60_000)
        deltas = aggregate(prepared, SETTINGS.stream_dedup_horizon_s * 1000)
        the_plan = plan(deltas, KEYS, 1_800_000)
        draft = None
        if drafted:
            draft = draft_writes(
                prepared, deltas, the_plan, KEYS, "events", SETTINGS, stored_before=stored_before
            )
            run.taken_before += len(draft.counted)
        found = store.read(the_plan)
        run.counted_before += sum(flags.count("1") for flags in found.seen)
        writes, totals = build_writes(
            prepared, deltas, the_plan, found, KEYS, "events", SETTINGS, draft=draft
        )
        store.apply(writes)
        run.written.append((writes, totals))
        stored_before = {group.key: set(group.members) for group in the_plan.seen}
        progress = prepared.checkpoints
    return run


@pytest.mark.parametrize("batch_size", [1, 7, 250, 100_000])
def test_totals_do_not_depend_on_batching_and_match_ground_truth(batch_size: int) -> None:
    now = 1_800_000_000_000
    parts = scenario(4, 400, t0=now - 3_600_000)
    truth = judge(parts, now)
    run = run_batches(parts, now, batch_size)
    lateness: Counter[int] = Counter()
    for _, totals in run.written:
        lateness.update(totals.lateness)
    total = run.store.minute_totals()
    assert [lateness[i] for i in range(len(LATENESS_LABELS))] == [total[label] for label in LATENESS_LABELS]
    assert {t: total[t] for t in truth.counts} == truth.counts
    assert (total["rev"], total["late"], total["invalid"], total["dup"]) == (
        truth.revenue_cents,
        truth.late,
        truth.invalid,
        truth.duplicates,
    )
    assert sum(total[k] for k in total if k.startswith("le_") or k == "gt") == truth.total()


@pytest.mark.parametrize("batch_size", [7, 250])
def test_a_write_set_drafted_before_the_read_is_the_one_built_after_it(batch_size: int) -> None:
    """Building most of the write set before the read (the consumer does, while the previous batch
    is in Redis) changes nothing written, whether a duplicate's original is in the batch just
    before (taken out by the draft) or in an older one (found by the read: built again)."""
    now = 1_800_000_000_000
    parts = scenario(4, 400, t0=now - 3_600_000)
    built_after = run_batches(parts, now, batch_size)
    drafted = run_batches(parts, now, batch_size, drafted=True)
    assert 0 < drafted.taken_before <= drafted.counted_before == built_after.counted_before
    if batch_size == 7:  # duplicates of batches older than the one before: built again
        assert drafted.taken_before < drafted.counted_before
    assert [(canonical(w), t) for w, t in drafted.written] == [
        (canonical(w), t) for w, t in built_after.written
    ]


def canonical(writes: WriteSet) -> dict[str, object]:
    """A write set as what it writes, whatever the order of its keys and members."""

    def pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
        return sorted(zip(flat[::2], flat[1::2], strict=True))

    return {
        "hashes": sorted((inc.key, inc.ttl, pairs(inc.deltas)) for inc in writes.hashes),
        "sorted_sets": sorted((inc.key, inc.ttl, pairs(inc.deltas)) for inc in writes.sorted_sets),
        "hyperloglogs": sorted((m.key, m.ttl, sorted(m.members)) for m in writes.hyperloglogs),
        "seen": sorted((m.key, m.ttl, sorted(m.members)) for m in writes.seen),
        "sessions": sorted((m.key, m.ttl, pairs(m.members)) for m in writes.sessions),
        "rest": (
            writes.newest,
            writes.order_velocity,
            writes.cart_spree,
            writes.checkpoints,
            writes.dead_letters,
        ),
    }


def test_a_draft_on_ids_the_batch_before_did_not_store_is_refused() -> None:
    """Should the batch before not have committed, a batch drafted on its ids must not be written."""
    now = 1_800_000_000_000
    first = prepare(
        {0: [Rec(0, 0, ev("a", now))]}, {0: Checkpoint(0)}, now_ms=now, lateness_ms=0, max_future_ms=0
    )
    the_plan = plan(aggregate(first, 600_000), KEYS, 1_800_000)
    again = prepare(
        {1: [Rec(1, 0, ev("a", now))]}, {1: Checkpoint(0)}, now_ms=now, lateness_ms=0, max_future_ms=0
    )
    deltas = aggregate(again, 600_000)
    plan_again = plan(deltas, KEYS, 1_800_000)
    stored = {group.key: set(group.members) for group in the_plan.seen}
    draft = draft_writes(again, deltas, plan_again, KEYS, "events", SETTINGS, stored_before=stored)
    assert draft.counted == {(0, 0)}
    with pytest.raises(NotStored):  # the read finds "a" not counted: the first batch did not commit
        build_writes(
            again, deltas, plan_again, FakeStore().read(plan_again), KEYS, "events", SETTINGS, draft=draft
        )


def view(product: str, ts: int) -> JudgedEvent:
    return JudgedEvent(f"{product}{ts}", "page_view", "u", ts, product, 0.0)


def test_co_views_pair_once_per_session_and_keep_the_last_items() -> None:
    hour = 3_600_000
    views = {
        "u": [
            view("a", 10 * hour),
            view("b", 10 * hour + 1),
            view("a", 10 * hour + 2),
            view("c", 10 * hour + 3),
        ]
    }
    pairs, sessions = co_views(views, {"u": None}, gap_ms=60_000, items=2)
    # b joins a session holding a; re-viewing a adds nothing; c joins a session of (b, a).
    assert pairs == {(10, "a", "b"): 1, (10, "b", "c"): 1, (10, "a", "c"): 1}
    assert orjson.loads(sessions["u"]) == [["a", 10 * hour + 2], ["c", 10 * hour + 3]]
    # The next view, beyond the session gap, pairs with nothing.
    later, _ = co_views({"u": [view("d", 11 * hour)]}, sessions, gap_ms=60_000, items=2)
    assert not any(later.values())


def test_the_lateness_histogram_is_cumulative_by_class_with_the_sum_in_seconds() -> None:
    def sample(suffix: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(f"stream_event_lateness_seconds{suffix}", labels) or 0.0

    le_1s, le_5s = (f"{b / 1000:.1f}" for b in LATENESS_BOUNDS_MS[1:3])
    before = [sample("_bucket", le=le_1s), sample("_bucket", le=le_5s), sample("_count"), sample("_sum")]
    LATENESS.add({0: 3, 2: 1}, 4_500)  # three on time, one 4.5 s behind
    after = [sample("_bucket", le=le_1s), sample("_bucket", le=le_5s), sample("_count"), sample("_sum")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 4, 4, 4.5]


def test_the_write_set_is_built_without_redis() -> None:
    """The flush's pure half (judge, aggregate, plan, write set) imports neither redis nor the state
    store's module: it runs, and is tested, with no I/O at all."""
    code = (
        "import sys, stream.batch, stream.aggregate, stream.writes; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'redis' or m == 'stream.state'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
