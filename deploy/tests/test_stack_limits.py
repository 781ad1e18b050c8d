"""nginx's limits, per client address: nothing a client chooses buys it a fresh allowance.

The session stack runs with low limits (see the ``stack`` fixture): writes 5/s (burst 10), sign-in
and registration 1/s (burst 3), event ingest 2/s (burst 4) instead of the write limit, and at most
2 open /api/live streams per address and 3 in all. Each test sends from a loopback address of its
own (127.77.0.n), so it starts with a full allowance whatever ran before it.

``make run``'s default spares this machine's own clients (a load generator next to the stack reaches
the services' loopback ports anyway); that is checked on nginx alone, with the runner's config.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import HEX_ID, RUNNER, Stack, answers, stack_env

from asynccore.testing import ServiceProcess, wait_until

pytestmark = pytest.mark.stack

TIMEOUT = aiohttp.ClientTimeout(total=10)
_addresses = (f"127.77.0.{n}" for n in itertools.count(1))


@asynccontextmanager
async def client_at() -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose requests come from an address no other test uses."""
    connector = aiohttp.TCPConnector(local_addr=(next(_addresses), 0))
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as session:
        yield session


async def send(
    session: aiohttp.ClientSession, stack: Stack, method: str, path: str, **kwargs: Any
) -> tuple[int, dict[str, str], bytes]:
    async with session.request(method, stack.front + path, **kwargs) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def burst(
    session: aiohttp.ClientSession, stack: Stack, count: int, method: str, path: str, body: object
) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` requests at once, each with an Authorization header of its own (junk, never valid)."""
    return await asyncio.gather(
        *(
            send(session, stack, method, path, json=body, headers={"Authorization": f"Token junk-{i}"})
            for i in range(count)
        )
    )


def limited(answers: list[tuple[int, dict[str, str], bytes]]) -> list[tuple[int, dict[str, str], bytes]]:
    return [answer for answer in answers if answer[0] == 429]


def assert_json_429(answer: tuple[int, dict[str, str], bytes], what: str) -> None:
    status, headers, body = answer
    assert status == 429
    assert headers["Content-Type"] == "application/json"
    assert headers["Retry-After"] == "1"
    assert HEX_ID.match(headers["X-Request-ID"])
    # A RealWorld front-end on another origin reads this answer too (else: "Failed to fetch").
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Retry-After" in headers["Access-Control-Expose-Headers"]
    assert body == f'{{"errors":{{"request":["too many {what} from this address; retry later"]}}}}'.encode()


async def test_a_fresh_authorization_header_per_request_does_not_bypass_the_write_limit(
    stack: Stack,
) -> None:
    async with client_at() as session:
        writes = await burst(session, stack, 30, "POST", "/api/articles", {"article": {}})
        # 5/s and a burst of 10 let ~11 of 30 through, however each one is signed.
        assert len(limited(writes)) >= 15, [w[0] for w in writes]
        assert_json_429(limited(writes)[0], "write requests")
    async with client_at() as elsewhere:
        # Another address has an allowance of its own.
        status, _, _ = await send(elsewhere, stack, "POST", "/api/articles", json={"article": {}})
        assert status != 429


async def test_sign_in_attempts_are_limited_more_strictly_than_writes(stack: Stack) -> None:
    attempt = {"user": {"email": "nobody@example.com", "password": "not-the-password"}}
    async with client_at() as session:
        logins = await burst(session, stack, 10, "POST", "/api/users/login", attempt)
    # The write limit alone would let all 10 through; 1/s with a burst of 3 lets ~4.
    assert len(limited(logins)) >= 5, [w[0] for w in logins]
    assert_json_429(limited(logins)[0], "sign-in and registration attempts")


async def test_registration_shares_the_sign_in_limit(stack: Stack) -> None:
    invalid = {"user": {"username": "", "email": "not-an-email", "password": ""}}  # never creates a user
    async with client_at() as session:
        registrations = await burst(session, stack, 10, "POST", "/api/users", invalid)
        assert len(limited(registrations)) >= 5, [w[0] for w in registrations]
        assert_json_429(limited(registrations)[0], "sign-in and registration attempts")
        attempt = {"user": {"email": "nobody@example.com", "password": "not-the-password"}}
        status, _, _ = await send(session, stack, "POST", "/api/users/login", json=attempt)
        assert status == 429


async def test_event_ingest_has_a_limit_of_its_own(stack: Stack) -> None:
    async with client_at() as session:
        ingest = await burst(session, stack, 20, "POST", "/api/events", {"events": []})
        # 2/s with a burst of 4 lets ~5 of 20 through (the write limit would let 11).
        assert len(limited(ingest)) >= 12, [w[0] for w in ingest]
        assert_json_429(limited(ingest)[0], "events")
        # Ingest spent its own allowance, not the address's writes.
        status, _, _ = await send(session, stack, "POST", "/api/articles", json={"article": {}})
        assert status != 429


async def open_live(session: aiohttp.ClientSession, stack: Stack) -> aiohttp.ClientResponse:
    """A live stream, left open (its body never ends); a refusal is read and released."""
    resp = await session.get(stack.front + "/api/live")
    if resp.status != 200:
        await resp.read()
        resp.release()
    return resp


async def open_live_eventually(session: aiohttp.ClientSession, stack: Stack) -> aiohttp.ClientResponse:
    """A stream, once a place is free (nginx frees a closed stream's place when it sees the close)."""
    opened: list[aiohttp.ClientResponse] = []

    async def opens() -> bool:
        resp = await open_live(session, stack)
        if resp.status == 200:
            opened.append(resp)
        return resp.status == 200

    await wait_until(opens, timeout=10, interval=0.2, message="a live stream opens")
    return opened[0]


async def test_open_live_streams_are_capped_per_address_and_in_all(stack: Stack) -> None:
    streams: list[aiohttp.ClientResponse] = []
    try:
        async with client_at() as first, client_at() as second:
            streams.append(await open_live_eventually(first, stack))
            streams.append(await open_live_eventually(first, stack))
            refused = await open_live(first, stack)
            assert refused.status == 503
            assert refused.content_type == "application/json"
            assert (await refused.json())["errors"]["request"] == ["too many live streams open; retry later"]
            assert HEX_ID.match(refused.headers["X-Request-ID"])

            # The other address gets a place at once: the first was refused for its own two.
            streams.append(await open_live(second, stack))
            assert streams[-1].status == 200
            # Three are open: the total is reached, though this address holds only one of its two.
            assert (await open_live(second, stack)).status == 503

            streams.pop(0).close()
            streams.append(await open_live_eventually(second, stack))
    finally:
        for stream in streams:
            stream.close()


async def test_this_machines_clients_skip_the_per_address_limits_when_exempt(tmp_path: Path) -> None:
    env = stack_env(
        tmp_path,
        NGINX_WRITE_RATE="1r/m",
        NGINX_WRITE_BURST="1",
        NGINX_LOGIN_RATE="1r/m",
        NGINX_LOGIN_BURST="1",
        NGINX_INGEST_RATE="1r/m",
        NGINX_INGEST_BURST="1",
        NGINX_EXEMPT_LOOPBACK="1",
    )
    configure = await asyncio.create_subprocess_exec(
        "bash",
        str(RUNNER),
        "configure",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await asyncio.wait_for(configure.communicate(), timeout=60)
    assert configure.returncode == 0, errors.decode()
    prefix = tmp_path / "nginx"
    nginx = ServiceProcess(
        ["nginx", "-e", "stderr", "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        name="nginx",
    )
    await nginx.start()
    front = f"http://127.0.0.1:{env['NGINX_PORT']}"
    try:
        await wait_until(lambda: answers(int(env["NGINX_PORT"])), timeout=15, message="nginx answers")
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:

            async def status(path: str) -> int:
                async with session.post(front + path, json={}) as resp:
                    return resp.status

            paths = ["/api/articles", "/api/users/login", "/api/users", "/api/events"] * 5
            statuses = await asyncio.gather(*(status(path) for path in paths))
        # No service runs: every request is proxied and fails upstream (502), none is limited.
        assert 429 not in statuses, statuses
    finally:
        await nginx.stop()
