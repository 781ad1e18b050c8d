"""Quix Streams 3.x: a tumbling one-minute count per event type, in the library's documented idiom.

``python quix_count.py BOOTSTRAP TOPIC GROUP EXPECTED STATE_DIR``: consume TOPIC from the start, re-key
by type (``group_by``: Quix windows are per message key), take event time from the value
(``set_timestamp``), count in ``tumbling_window(1 min).count().current()`` with RocksDB state and
changelog topics (the defaults), and stop once EXPECTED events have been counted; prints
:func:`counting.report`'s line (and :func:`counting.progress` lines on the way). The grace period covers
the generator's late events (up to 10 min), so every valid event is counted.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

from counting import PROGRESS_EVERY, countable, now, progress, report
from quixstreams import Application


def main() -> None:
    bootstrap, topic_name, group, expected_s, state_dir = sys.argv[1:6]
    expected = int(expected_s)
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(topic_name, value_deserializer="bytes", key_deserializer="bytes")
    counts: dict[tuple[str, int], int] = {}
    seen = {"counted": 0, "first_at": 0.0}

    def record(window: dict[str, Any], key: Any, timestamp: int, headers: Any) -> None:
        # current() emits each window's running count once per event added to it.
        if not seen["counted"]:
            seen["first_at"] = now()
        counts[(key, window["start"])] = window["value"]
        seen["counted"] += 1
        if seen["counted"] % PROGRESS_EVERY == 0:
            progress(seen["counted"], seen["first_at"])
        if seen["counted"] >= expected:
            app.stop()

    sdf = app.dataframe(topic)
    sdf = sdf.apply(countable).filter(lambda event: event is not None)
    sdf = sdf.group_by("type")
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: value["ts"])
    sdf = sdf.tumbling_window(timedelta(minutes=1), grace_ms=timedelta(minutes=15)).count().current()
    sdf = sdf.update(record, metadata=True)
    app.run()  # runs every dataframe defined on the app
    report(counts, seen["counted"], seen["first_at"], now())


if __name__ == "__main__":
    main()
