"""Batched ingestion into the stream service: ``POST /api/events`` with 100 events a request."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from locust import FastHttpUser, between, task

from loadtests.scenarios.common import RUN_ID, member_token

BATCH = 100
TYPES = ("page_view", "page_view", "page_view", "click", "add_to_cart", "order_placed")


def event() -> dict[str, Any]:
    kind = random.choice(TYPES)
    item: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "type": kind,
        "user_id": f"load-{RUN_ID}-{random.randrange(500)}",
        "product_id": f"p{random.randrange(200)}",
        "ts": int(time.time() * 1000),
    }
    if kind == "order_placed":
        item["price"] = round(random.uniform(5, 200), 2)
    return item


class Ingestor(FastHttpUser):
    """One producer (its own credential) posting batches."""

    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.auth = {"Authorization": f"Token {member_token('producer')}"}

    @task
    def post_batch(self) -> None:
        with self.client.post(
            "/api/events",
            json={"events": [event() for _ in range(BATCH)]},
            headers=self.auth,
            catch_response=True,
        ) as resp:
            if resp.status_code != 202:
                resp.failure(f"status {resp.status_code}: {resp.text[:200]}")
