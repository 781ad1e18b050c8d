"""faust-streaming: a tumbling one-minute count per event type, in the library's documented idiom.

``python faust_count.py BOOTSTRAP TOPIC GROUP EXPECTED PARTITIONS DATA_DIR``: an agent on TOPIC re-keys
the stream by type (``group_by``, as faust's windowed page-view count does, through a repartition
topic of this run's own), counts into a
``Table(...).tumbling(60 s)`` relative to the event's own ``ts`` (in-memory store, changelog topic:
faust's defaults; windows kept a day), and exits once EXPECTED events have been counted, printing
:func:`counting.report`'s line (and :func:`counting.progress` lines on the way). Values are read raw
and parsed in the agent: a malformed one would otherwise crash the agent (faust rethrows a value
decode error into it).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any

import faust
from counting import MINUTE_MS, PROGRESS_EVERY, countable, now, progress, report


def kind(raw: bytes) -> str:
    event = countable(raw)
    return event["type"] if event is not None else ""


def event_seconds(event: Any) -> float:
    parsed = countable(event.value)
    return parsed["ts"] / 1000 if parsed is not None else 0.0


def main() -> None:
    bootstrap, topic_name, group, expected_s, partitions_s, data_dir = sys.argv[1:7]
    expected, partitions = int(expected_s), int(partitions_s)
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=partitions,
        consumer_auto_offset_reset="earliest",
        datadir=data_dir,
        web_enabled=False,
    )
    events = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    # faust expires a window by the wall clock, not by stream time (its table cleanup, every 30 s:
    # ``window.stale(range_end, time.time())``): with 30 minutes, a backlog read more than 30 minutes
    # after it was produced lost its windows mid-run and each late event started its cell again at 1
    # (100,000 events 60 minutes old: 3 of 43 cells wrong). A day keeps every window the bench reads.
    counts = (
        app.Table("counts", default=int).tumbling(60, expires=timedelta(days=1)).relative_to(event_seconds)
    )
    seen = {"counted": 0, "first_at": 0.0}
    totals: dict[tuple[str, int], int] = {}

    @app.agent(events)
    async def count(stream: Any) -> None:
        # The repartition topic is named by the agent, the source topic and this name, not by the app:
        # with a fixed name, every run over one backlog shared it and a run read what the runs
        # stopped before it had forwarded (31 of 50 cells wrong after one stopped run, 60,000 events).
        async for raw in stream.group_by(kind, name=f"by-type-{group}"):
            event = countable(raw)
            if event is None:
                continue
            if not seen["counted"]:
                seen["first_at"] = now()
            counts[event["type"]] += 1
            # What the table now holds for the event's window, read back through its documented API.
            minute = event["ts"] - event["ts"] % MINUTE_MS
            totals[(event["type"], minute)] = counts[event["type"]].value()
            seen["counted"] += 1
            if seen["counted"] % PROGRESS_EVERY == 0:
                progress(seen["counted"], seen["first_at"])
            if seen["counted"] >= expected:
                report(totals, seen["counted"], seen["first_at"], now())
                os._exit(0)  # faust's orderly stop takes many seconds and measures nothing

    # The result line goes to stdout as is: a worker otherwise turns prints into log records.
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
