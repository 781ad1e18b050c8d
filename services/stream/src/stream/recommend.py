"""Recommendations ("viewed this, also viewed"): products co-viewed in users' sessions, decayed.

A user's session is the last few distinct products they viewed within ``session gap`` of event time.
A view of a product new to the session pairs it once with each product already there (a re-view
only refreshes it), so a pair counts the sessions in which both were seen, not how often a user
flipped between them. A pair counts in the hour of the view, in a hash per product and hour. A query
(:func:`stream.queries.top_co_viewed`) sums the last ``horizon`` hours weighted by
``0.5 ** (age / half-life)`` — exponential decay without ever rewriting old scores, and the hourly
hashes simply expire. Pure: no I/O here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import orjson

from stream.batch import JudgedEvent
from stream.windows import HOUR_MS

__all__ = ["co_views"]

CoViews = Counter[tuple[int, str, str]]  # (hour, product, other) → times co-viewed (count both ways)


def co_views(
    views: Mapping[str, list[JudgedEvent]],
    sessions: dict[str, str | None],
    *,
    gap_ms: int,
    items: int,
) -> tuple[CoViews, dict[str, str]]:
    """Pairs from this batch's ``views`` (user → page views, in order) given the stored sessions.

    Returns each pair once, as ``(hour, lesser product, greater product)`` — the apply script counts
    it under both, so one entry per unordered pair is half the increments — and each user's new
    session (``[[product, ts], …]``, oldest first).
    """
    triples: list[tuple[int, str, str]] = []
    pair = triples.append
    new_sessions: dict[str, str] = {}
    for user, seq in views.items():
        raw = sessions.get(user)
        session: dict[str, int] = dict(orjson.loads(raw)) if raw else {}
        for view in seq:
            product, ts = view.product_id, view.ts
            # Entries are oldest first; a user's views arrive at most the allowed lateness out of
            # order, far less than the gap, so only the old end can leave the session.
            while session and ts - next(iter(session.values())) > gap_ms:
                del session[next(iter(session))]
            if product in session:
                del session[product]  # re-viewed: refreshed below, no new pairs
            elif session:
                hour = ts // HOUR_MS
                for other in session:
                    pair((hour, product, other) if product < other else (hour, other, product))
            session[product] = ts
            if len(session) > items:
                del session[next(iter(session))]  # the least recently viewed
        new_sessions[user] = orjson.dumps(list(session.items())).decode()
    return Counter(triples), new_sessions
