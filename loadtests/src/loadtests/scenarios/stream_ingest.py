"""Event ingestion into the stream service (``POST /api/events``), by its two kinds of client.

* :class:`Ingestor`: a trusted producer (a backend service) posting batches of 100 events of every
  type for many users, with the service token ``STREAM_INGEST_TOKEN`` (the stack's; ``make run``
  prints it and keeps it in its run dir's ``secrets.env``).
* :class:`Shopper`: a signed-in user's browser posting small batches of its own behavioural events
  (page views, clicks, carts) with the user's JWT; orders and payments never come from a browser.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from locust import FastHttpUser, between, task
from locust.exception import StopUser

from loadtests.scenarios.common import RUN_ID, fail_run, member, stack_secret

BATCH = 100
SHOPPER_BATCH = 10
TYPES = ("page_view", "page_view", "page_view", "click", "add_to_cart", "order_placed")
SHOPPER_TYPES = ("page_view", "page_view", "page_view", "click", "add_to_cart")


def event(kind: str, user_id: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "type": kind,
        "user_id": user_id,
        "product_id": f"p{random.randrange(200)}",
        "ts": int(time.time() * 1000),
    }
    if kind == "order_placed":
        item["price"] = round(random.uniform(5, 200), 2)
    return item


class _Poster(FastHttpUser):
    abstract = True
    auth: dict[str, str]
    name = "/api/events"  # the stats row (and SLO) this client's requests count under

    def post_events(self, events: list[dict[str, Any]]) -> None:
        with self.client.post(
            "/api/events", json={"events": events}, headers=self.auth, name=self.name, catch_response=True
        ) as resp:
            if resp.status_code != 202:
                resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")


class Ingestor(_Poster):
    """A trusted producer: any type, any user, with the service token."""

    wait_time = between(0.05, 0.2)
    weight = 3

    def on_start(self) -> None:
        token = stack_secret("STREAM_INGEST_TOKEN")
        if not token:
            fail_run(
                self.environment, "STREAM_INGEST_TOKEN is not set: the stream refuses producers without it"
            )
            raise StopUser()
        self.auth = {"Authorization": f"Bearer {token}"}

    @task
    def post_batch(self) -> None:
        users = [f"load-{RUN_ID}-{i}" for i in range(500)]
        self.post_events([event(random.choice(TYPES), random.choice(users)) for _ in range(BATCH)])


class Shopper(_Poster):
    """A signed-in user's browser: its own page views, clicks and carts, with its JWT."""

    wait_time = between(0.2, 0.5)
    weight = 1
    name = "/api/events (member)"

    def on_start(self) -> None:
        self.user_id, token = member("shopper")
        self.auth = {"Authorization": f"Token {token}"}

    @task
    def post_batch(self) -> None:
        self.post_events([event(random.choice(SHOPPER_TYPES), self.user_id) for _ in range(SHOPPER_BATCH)])
