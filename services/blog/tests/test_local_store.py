"""The in-process tier on its own: a byte budget counted in real entry costs, oldest dropped first."""

from __future__ import annotations

from blog.local_store import ENTRY_OVERHEAD, Entry, LocalStore, entry_cost, etag_of


def entry(body: bytes) -> Entry:
    return Entry(body, etag_of(body), ("t",), 0.0)


def test_the_budget_counts_what_an_entry_costs_not_its_length() -> None:
    cost = entry_cost("k", bytes(100))
    assert cost > 100 + ENTRY_OVERHEAD  # the bytes object's and the key's headers count too
    store = LocalStore(max_bytes=10 * cost)
    store.put(("f", "k"), entry(bytes(100)))
    assert (len(store), store.bytes) == (1, cost)


def test_the_oldest_entries_go_first_and_the_bytes_stay_within_the_budget() -> None:
    cost = entry_cost("0", bytes(300))
    store = LocalStore(max_bytes=3 * cost + 100)
    for i in range(10):
        store.put(("f", str(i)), entry(bytes(300)))
        assert store.bytes <= store.max_bytes
    assert list(store.entries) == [("f", "7"), ("f", "8"), ("f", "9")]


def test_a_refreshed_entry_replaces_the_old_one_and_counts_once() -> None:
    store = LocalStore(max_bytes=1 << 20)
    store.put(("f", "k"), entry(b"old"))
    store.put(("f", "other"), entry(b"x"))
    new = store.put(("f", "k"), entry(b"newer"))
    assert store.get(("f", "k")) is new
    assert list(store.entries) == [("f", "other"), ("f", "k")]  # moved to the end: dropped last
    assert store.bytes == entry_cost("k", b"newer") + entry_cost("other", b"x")


def test_an_entry_bigger_than_the_whole_budget_is_returned_but_not_kept() -> None:
    store = LocalStore(max_bytes=entry_cost("k", bytes(10)))
    big = store.put(("f", "k"), entry(bytes(1000)))
    assert big.body == bytes(1000)
    assert (len(store), store.bytes, store.get(("f", "k"))) == (0, 0, None)


def test_clear_empties_the_store_and_its_count() -> None:
    store = LocalStore(max_bytes=1 << 20)
    for i in range(5):
        store.put(("f", str(i)), entry(b"x"))
    store.clear()
    assert (len(store), store.bytes) == (0, 0)


def test_etags_are_strong_and_depend_on_the_bytes_only() -> None:
    assert etag_of(b"a") == etag_of(b"a") != etag_of(b"b")
    assert etag_of(b"a").startswith('"') and etag_of(b"a").endswith('"')
