"""Where a partition resumes: its checkpoint (the offset stored with the state) checked against the
log, and the reset policy for one outside it.

A stored offset is the next one to process, so it is valid from the log's start (the oldest record
retained) to its end (the next record to be written), both included. Outside that range the stored
state and the log disagree:

- **past the log end** (``ahead_of_log_end``): the topic was deleted and recreated, or this is
  another cluster. Records below the stored offset are new ones, not records already counted;
  resuming at the stored offset would drop them as "already seen".
- **before the log start** (``behind_log_start``): retention (or a delete-records call) removed
  records this state never read.

``STREAM_OFFSET_RESET`` decides: ``earliest`` resumes at the log start, ``latest`` at the log end,
``fail`` does not consume the partition. Records a reset leaves unprocessed are reported, never
silently skipped. A partition's watermark base (its newest event time) is kept across a reset: the
aggregates it belongs to are still there, so an event older than it is still late.

Not detectable from offsets: a topic recreated and refilled past the stored offset before the
consumer looks again (the stored offset is then inside the new log).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stream.batch import Checkpoint

__all__ = ["Policy", "Resume", "resume_at"]

Policy = Literal["earliest", "latest", "fail"]


@dataclass(frozen=True, slots=True)
class Resume:
    checkpoint: Checkpoint  # where processing resumes (for a halted partition: the stored one)
    reason: str | None = None  # ahead_of_log_end | behind_log_start: the stored offset was outside the log
    skipped: int = 0  # records the reset leaves unprocessed (deleted before being read, or jumped over)
    halted: bool = False  # policy "fail": the partition is not consumed


def resume_at(stored: Checkpoint | None, log_start: int, log_end: int, policy: Policy) -> Resume:
    """Where a partition with the ``stored`` checkpoint resumes in a log spanning ``[log_start, log_end]``.

    No stored checkpoint is a state that never read the partition: it starts at the log start, and
    records deleted before that were never part of it (not a reset).
    """
    if stored is None:
        return Resume(Checkpoint(log_start))
    offset = stored.offset
    if log_start <= offset <= log_end:
        return Resume(stored)
    reason = "ahead_of_log_end" if offset > log_end else "behind_log_start"
    if policy == "fail":
        return Resume(stored, reason, halted=True)
    # Ahead: every record of the (new) log is unread. Behind: those from the stored offset are.
    first_unread = log_start if offset > log_end else offset
    if policy == "earliest":
        return Resume(Checkpoint(log_start, stored.max_ts), reason, skipped=log_start - first_unread)
    return Resume(Checkpoint(log_end, stored.max_ts), reason, skipped=log_end - first_unread)
