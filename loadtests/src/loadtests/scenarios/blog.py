"""Read-heavy blog traffic: 90 % anonymous list/article/tag reads, 10 % signed-in writes.

Seeding (``test_start``) registers an author and publishes articles through the API; ``test_stop``
deletes them again, so a run leaves the blog as it found it (bar the author account).
"""

from __future__ import annotations

import random
from typing import Any

import requests
from locust import FastHttpUser, between, events, task
from locust.env import Environment

from loadtests.scenarios.common import unique

SEED_ARTICLES = 20
TAGS = ["asyncio", "python", "redis", "sqlite", "nginx"]
seeded: dict[str, Any] = {"slugs": [], "token": None, "email": None, "password": None}


def _register(host: str) -> tuple[str, str, str]:
    name = unique("author")
    email, password = f"{name}@example.test", unique("pw")
    user = {"username": name, "email": email, "password": password}
    resp = requests.post(f"{host}/api/users", json={"user": user}, timeout=10)
    resp.raise_for_status()
    return resp.json()["user"]["token"], email, password


@events.test_start.add_listener
def seed(environment: Environment, **_: Any) -> None:
    """An author and their articles, made through the API with a plain client (not measured)."""
    host = environment.host or ""
    token, seeded["email"], seeded["password"] = _register(host)
    seeded["token"] = token
    for i in range(SEED_ARTICLES):
        article = {
            "title": unique(f"load article {i}"),
            "description": "seeded by the blog load scenario",
            "body": f"# Article {i}\n\n" + "Some *markdown* text. " * 50,
            "tagList": random.sample(TAGS, 2),
        }
        resp = requests.post(
            f"{host}/api/articles",
            json={"article": article},
            headers={"Authorization": f"Token {token}"},
            timeout=10,
        )
        resp.raise_for_status()
        seeded["slugs"].append(resp.json()["article"]["slug"])


@events.test_stop.add_listener
def clean_up(environment: Environment, **_: Any) -> None:
    for slug in seeded["slugs"]:
        requests.delete(
            f"{environment.host}/api/articles/{slug}",
            headers={"Authorization": f"Token {seeded['token']}"},
            timeout=10,
        )
    seeded["slugs"].clear()


class Reader(FastHttpUser):
    """Anonymous visitor: lists, articles, tags."""

    weight = 9
    wait_time = between(0.1, 0.5)

    @task(4)
    def list_articles(self) -> None:
        self.client.get("/api/articles?limit=20", name="/api/articles")

    @task(4)
    def read_article(self) -> None:
        self.client.get(f"/api/articles/{random.choice(seeded['slugs'])}", name="/api/articles/{slug}")

    @task(1)
    def tags(self) -> None:
        self.client.get("/api/tags")

    @task(1)
    def by_tag(self) -> None:
        self.client.get(f"/api/articles?tag={random.choice(TAGS)}", name="/api/articles?tag")


class Writer(FastHttpUser):
    """Signed-in member: comments and favourites on seeded articles."""

    weight = 1
    wait_time = between(0.5, 2)

    def on_start(self) -> None:
        with self.client.post(
            "/api/users/login",
            json={"user": {"email": seeded["email"], "password": seeded["password"]}},
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"login {resp.status_code}")
                self.auth = {}
                return
            self.auth = {"Authorization": f"Token {resp.json()['user']['token']}"}

    @task(3)
    def comment(self) -> None:
        slug = random.choice(seeded["slugs"])
        self.client.post(
            f"/api/articles/{slug}/comments",
            json={"comment": {"body": "load comment"}},
            headers=self.auth,
            name="/api/articles/{slug}/comments",
        )

    @task(2)
    def favorite(self) -> None:
        slug = random.choice(seeded["slugs"])
        self.client.post(
            f"/api/articles/{slug}/favorite", headers=self.auth, name="/api/articles/{slug}/favorite"
        )
        self.client.delete(
            f"/api/articles/{slug}/favorite", headers=self.auth, name="/api/articles/{slug}/favorite"
        )
