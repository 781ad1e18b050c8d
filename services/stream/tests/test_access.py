"""Who may write what, and who may read the alerts (README, "What is protected, and how").

Ingest takes the service token (a trusted producer: every type, any user) or a signed-in user's JWT
(their own behavioural events only); the risk alerts, which name users, take the admin token; the
aggregates stay public. Against a real Kafka broker and real Redis, through real HTTP.
"""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from redis.asyncio import Redis
from stream_testkit import Topics, admin_auth, ingest_auth, member_auth, now_ms, topic_size

from asynccore.revocation import publish_token_version
from asynccore.settings import load_settings
from devservers.kafka_broker import KafkaBroker
from stream.settings import StreamSettings

Body = dict[str, list[dict[str, object]]]


def batch(*kinds: str, user: str = "u-1") -> Body:
    ts = now_ms() - 1_000
    events: list[dict[str, object]] = []
    for i, kind in enumerate(kinds):
        event: dict[str, object] = {"event_id": f"acc-{i}", "type": kind, "user_id": user, "ts": ts}
        if kind in ("page_view", "click", "add_to_cart"):
            event["product_id"] = "p1"
        if kind in ("order_placed", "payment"):
            event["price"] = 1e9
        events.append(event)
    return {"events": events}


async def answer(
    api: aiohttp.ClientSession, method: str, path: str, headers: dict[str, str], body: object = None
) -> tuple[int, dict[str, object], CIMultiDictProxy[str]]:
    async with api.request(method, path, json=body, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


# ---------------------------------------------------------------------------- ingest


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no credential"),
        ({"Authorization": "Bearer not-the-ingest-token-but-just-as-long-as-one"}, "an unknown bearer token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "another scheme"),
        ({"Authorization": "Bearer "}, "an empty token"),
        (member_auth("u-1", ttl_s=-60), "an expired JWT"),
        ({"Authorization": "Token " + "x" * 40}, "a token that is not a JWT"),
    ],
)
async def test_ingest_without_a_valid_credential_is_401_and_produces_nothing(
    api: aiohttp.ClientSession, kafka: KafkaBroker, topics: Topics, headers: dict[str, str], why: str
) -> None:
    status, body, sent = await answer(api, "POST", "/api/events", headers, batch("order_placed"))
    assert status == 401, why
    # Why the ignore below: the JSON body is typed as an object; here it is the error document.
    assert list(body) == ["errors"] and list(body["errors"]) == ["token"], body  # type: ignore[call-overload]
    assert "Bearer" in sent["WWW-Authenticate"], why
    # A batch that is invalid too: still 401 (the credential is checked before the body is read).
    status, _, _ = await answer(api, "POST", "/api/events", headers, {"events": "nope"})
    assert status == 401
    assert await _topic_is_empty(kafka, topics)


async def test_the_service_token_may_post_every_type_for_any_user(api: aiohttp.ClientSession) -> None:
    kinds = ("page_view", "click", "add_to_cart", "order_placed", "payment")
    status, body, _ = await answer(api, "POST", "/api/events", ingest_auth(), batch(*kinds, user="42"))
    assert (status, body) == (202, {"accepted": 5})


@pytest.mark.parametrize("scheme", ["Token", "Bearer"])
async def test_a_member_may_post_their_own_behavioural_events(
    api: aiohttp.ClientSession, scheme: str
) -> None:
    own = batch("page_view", "click", "add_to_cart", user="member-7")
    status, body, _ = await answer(api, "POST", "/api/events", member_auth("member-7", scheme=scheme), own)
    assert (status, body) == (202, {"accepted": 3})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (batch("page_view", "order_placed", user="member-7"), "events[1].type"),
        (batch("payment", user="member-7"), "events[0].type"),
        (batch("page_view", "add_to_cart", user="42"), "events[0].user_id"),
        (
            {"events": [*batch("click", user="member-7")["events"], *batch("click", user="42")["events"]]},
            "events[1].user_id",
        ),
    ],
)
async def test_a_member_may_not_post_business_events_or_for_someone_else(
    api: aiohttp.ClientSession, kafka: KafkaBroker, topics: Topics, body: Body, field: str
) -> None:
    status, answered, _ = await answer(api, "POST", "/api/events", member_auth("member-7"), body)
    assert status == 403
    # Why the ignore below: the JSON body is typed as an object; here it is the error document.
    assert list(answered["errors"]) == [field], answered  # type: ignore[call-overload]
    assert await _topic_is_empty(kafka, topics), "nothing of a refused batch is produced"


async def test_a_member_id_sent_as_a_number_is_the_same_id(api: aiohttp.ClientSession) -> None:
    own = batch("page_view", user="42")
    own["events"][0]["user_id"] = 42
    status, _, _ = await answer(api, "POST", "/api/events", member_auth("42"), own)
    assert status == 202


async def test_a_member_token_revoked_by_a_password_change_is_a_401(
    api: aiohttp.ClientSession, redis: Redis, prefix: str
) -> None:
    """The blog publishes the account's token version on a password change (asynccore.revocation)."""
    await publish_token_version(redis, f"{prefix}auth:", "member-8", 1, ttl_s=600)
    own = batch("page_view", user="member-8")
    status, body, _ = await answer(api, "POST", "/api/events", member_auth("member-8"), own)
    # Why the ignore below: the JSON body is typed as an object; here it is the error document.
    assert status == 401 and "revoked" in body["errors"]["token"][0], body  # type: ignore[index]
    status, _, _ = await answer(api, "POST", "/api/events", member_auth("member-8", version=1), own)
    assert status == 202


async def _topic_is_empty(kafka: KafkaBroker, topics: Topics) -> bool:
    return await asyncio.to_thread(topic_size, kafka.bootstrap, topics.events, topics.partitions) == 0


# ---------------------------------------------------------------------------- reads


async def test_risk_alerts_are_for_the_admin_token_only(api: aiohttp.ClientSession) -> None:
    status, body, sent = await answer(api, "GET", "/api/risk/alerts", {})
    # Why the ignore below: the JSON body is typed as an object; here it is the error document.
    assert (status, list(body["errors"])) == (401, ["token"])  # type: ignore[call-overload]
    assert sent["WWW-Authenticate"].startswith("Bearer")
    for refused in (member_auth("42"), member_auth("42", scheme="Bearer"), ingest_auth()):
        status, body, _ = await answer(api, "GET", "/api/risk/alerts", refused)
        # Why the ignore below: the JSON body is typed as an object; here it is the error document.
        assert (status, list(body["errors"])) == (403, ["token"]), refused  # type: ignore[call-overload]
    status, body, _ = await answer(api, "GET", "/api/risk/alerts?rule=cart_spree", admin_auth())
    assert (status, body) == (200, {"alerts": []})


async def test_aggregates_stay_public(api: aiohttp.ClientSession) -> None:
    for path in (
        "/api/analytics/summary",
        "/api/analytics/funnel",
        "/api/analytics/top-products",
        "/api/recommendations/p1",
        "/api/analytics/openapi.json",
    ):
        async with api.get(path) as resp:
            assert resp.status == 200, path


async def test_the_document_names_the_credentials(api: aiohttp.ClientSession) -> None:
    async with api.get("/api/analytics/openapi.json") as resp:
        doc = await resp.json()
    schemes = doc["components"]["securitySchemes"]
    post = doc["paths"]["/api/events"]["post"]
    alerts = doc["paths"]["/api/risk/alerts"]["get"]
    assert {"ingest", "jwt", "admin"} <= set(schemes)
    assert post["security"] == [{"ingest": []}, {"jwt": []}]
    assert alerts["security"] == [{"admin": []}]
    assert {"401", "403"} <= set(post["responses"]) and {"401", "403"} <= set(alerts["responses"])
    assert "security" not in doc["paths"]["/api/analytics/summary"]["get"]


# ---------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"STREAM_INGEST_TOKEN": None}, "STREAM_INGEST_TOKEN"),
        ({"STREAM_INGEST_TOKEN": "x" * 31}, "STREAM_INGEST_TOKEN"),
        ({"STREAM_ADMIN_TOKEN": None}, "STREAM_ADMIN_TOKEN"),
        ({"STREAM_ADMIN_TOKEN": "é" * 15}, "STREAM_ADMIN_TOKEN"),  # 30 bytes, 15 characters
        ({"STREAM_ADMIN_TOKEN": os.environ["STREAM_INGEST_TOKEN"]}, "STREAM_ADMIN_TOKEN"),
    ],
)
def test_a_missing_or_weak_token_stops_start_up_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str | None],
    variable: str,
) -> None:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(StreamSettings)
    assert stopped.value.code == 2
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and line.startswith(f"config error: {variable}:"), line
    for secret in (os.environ.get("STREAM_INGEST_TOKEN"), os.environ.get("STREAM_ADMIN_TOKEN")):
        assert not secret or secret not in line, "a secret is never echoed"


async def test_loadgen_needs_none_of_the_services_secrets(kafka: KafkaBroker, prefix: str) -> None:
    """``stream-loadgen`` writes to Kafka directly: no token of the HTTP API, no JWT secret."""
    secrets = ("STREAM_INGEST_TOKEN", "STREAM_ADMIN_TOKEN", "JWT_SECRET")
    env = {k: v for k, v in os.environ.items() if k not in secrets}
    topic = f"loadgen-{prefix[-13:-1]}"
    argv = ["-m", "stream.loadgen", "--count", "50", "--rate", "0", "--topic", topic, "--partitions", "2"]
    gen = await asyncio.create_subprocess_exec(
        sys.executable, *argv, env={**env, "KAFKA_BOOTSTRAP": kafka.bootstrap}, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(gen.communicate(), 60)
    assert gen.returncode == 0, err.decode()
    assert await asyncio.to_thread(topic_size, kafka.bootstrap, topic, 2) == 50
