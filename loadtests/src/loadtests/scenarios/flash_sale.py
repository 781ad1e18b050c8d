"""Flash sale: many buyers, one hot product, idempotency keys — and nobody gets an order beyond stock.

``test_start`` creates the hot product (admin token) with ``FLASH_STOCK`` units; ``test_stop`` checks
the inventory invariant through the API (stock never below zero, units sold + stock left = initial
stock, every replayed key returned its original order), then cancels the orders so the stock is back.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import requests
from locust import FastHttpUser, between, events, task
from locust.env import Environment

from loadtests.scenarios.common import env, fail_run, member_token, stack_secret, unique, unwrap

STOCK = int(env("FLASH_STOCK", "100"))
ADMIN = {"Authorization": f"Bearer {stack_secret('ORDERS_ADMIN_TOKEN')}"}

sale: dict[str, Any] = {"product_id": None, "orders": {}, "replay_mismatches": 0}


@events.test_start.add_listener
def seed(environment: Environment, **_: Any) -> None:
    product: dict[str, Any] = {
        "sku": unique("flash"),
        "name": "Flash sale item",
        "price_cents": 1999,
        "stock": STOCK,
    }
    resp = requests.post(f"{environment.host}/api/products", json=product, headers=ADMIN, timeout=10)
    resp.raise_for_status()
    sale["product_id"] = unwrap(resp.json(), "product")["id"]


@events.test_stop.add_listener
def check_invariant(environment: Environment, **_: Any) -> None:
    host = environment.host
    resp = requests.get(f"{host}/api/products/{sale['product_id']}", timeout=10)
    resp.raise_for_status()
    left = unwrap(resp.json(), "product")["stock"]
    sold = sum(quantity for _, quantity in sale["orders"].values())
    if left < 0 or left + sold != STOCK:
        fail_run(environment, f"oversell: stock {STOCK}, sold {sold}, left {left}")
    if sale["replay_mismatches"]:
        fail_run(environment, f"{sale['replay_mismatches']} idempotent replays returned another order")
    print(f"flash sale: stock {STOCK}, sold {sold} in {len(sale['orders'])} orders, left {left}")
    for order_id, (token, _) in sale["orders"].items():
        requests.post(
            f"{host}/api/orders/{order_id}/cancel", headers={"Authorization": f"Token {token}"}, timeout=10
        )
    sale["orders"].clear()


class Buyer(FastHttpUser):
    """Hammers the hot product; a 409 (sold out) is the expected answer once stock is gone."""

    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        self.token = member_token("buyer")
        self.auth = {"Authorization": f"Token {self.token}"}

    @task
    def buy(self) -> None:
        body = {"items": [{"product_id": sale["product_id"], "quantity": random.choice((1, 1, 1, 2))}]}
        headers = self.auth | {"Idempotency-Key": uuid.uuid4().hex}
        with self.client.post("/api/orders", json=body, headers=headers, catch_response=True) as resp:
            if resp.status_code == 409:
                resp.success()
                return
            if resp.status_code != 201:
                resp.failure(f"status {resp.status_code}")
                return
            order_id = unwrap(resp.json(), "order")["id"]
            sale["orders"][order_id] = (self.token, body["items"][0]["quantity"])
        # A client retry with the same key must get the very same order back.
        if random.random() < 0.1:
            with self.client.post(
                "/api/orders", json=body, headers=headers, name="/api/orders [replay]", catch_response=True
            ) as again:
                if again.status_code != 201 or unwrap(again.json(), "order")["id"] != order_id:
                    sale["replay_mismatches"] += 1
                    again.failure(f"replay gave {again.status_code}")
