"""What the attack review (issue 16) found, each as the attack that now fails.

Cheap misses, memory that counts what it holds, text every reader can parse, passwords and tokens,
browser headers, profile images, look-alike accounts, and a malformed request logged as what it is.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import sqlite3
import tracemalloc
import uuid
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from blog_testing import Client, MakeCache, MakeClient, auth, post_article, register
from redis.asyncio import Redis

from asynccore.auth import verify_token
from asynccore.errors import ApiError
from asynccore.migrations import apply_migrations
from asynccore.revocation import TokenRevocations
from asynccore.testing import wait_until
from blog.api import SHARED
from blog.db import Database, execute
from blog.db_sqlite import MIGRATIONS
from blog.resources import CACHE
from blog.responses import send_cached
from blog.settings import BlogSettings


async def errors_of(resp: Any) -> dict[str, list[str]]:
    return dict((await resp.json())["errors"])


async def keys_under(redis: Redis, prefix: str) -> set[bytes]:
    return {key async for key in redis.scan_iter(match=f"{prefix}:*", count=1000)}


def user_body(name: str | None = None, **fields: Any) -> dict[str, Any]:
    name = name or f"u{uuid.uuid4().hex[:10]}"
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    return {"user": {"username": name, "email": email, "password": "long-enough", **fields}}


# ---------------------------------------------------------------------------- 4: misses leave nothing


async def test_reads_of_rows_that_do_not_exist_write_nothing_shared(
    client: Client, redis: Redis, prefix: str
) -> None:
    token = await register(client)
    article = await post_article(client, token, "Present", tagList=["here"])
    for path in ("/api/articles", f"/api/articles/{article['slug']}", f"/article/{article['slug']}"):
        assert (await client.get(path)).status == 200  # what exists is cached as usual
    cache = client.app[CACHE]
    before_keys = await keys_under(redis, prefix)
    before_local = (set(cache.local.entries), cache.local.bytes)
    for _ in range(100):
        missing = secrets.token_hex(1024)  # 2 KB names, as the attack used 8 KB
        assert (await client.get(f"/api/articles/{missing}")).status == 404
        assert (await client.get(f"/article/{missing}")).status == 404
        assert (await client.get(f"/api/articles/{missing}/comments")).status == 404
        resp = await client.get(f"/api/articles?tag={missing[:200]}&author={missing[:200]}")
        assert resp.status == 200 and (await resp.json())["articlesCount"] == 0
    assert await keys_under(redis, prefix) == before_keys  # not one key, short-lived or not
    # Nor anything kept in the process: no entry, no version of a row that is not there.
    assert (set(cache.local.entries), cache.local.bytes) == before_local
    assert {name for name in cache.versions._local if ":" in name} <= {f"a:{article['slug']}"}
    # And what exists is still served from the cache.
    assert (await client.get(f"/api/articles/{article['slug']}")).status == 200


# ---------------------------------------------------------------------------- 6: text every reader parses

BAD_CHARACTERS = ["\x00", "\x01", "\x1b", "\x7f", "\ufffe", "\uffff", "\ufdd0", "\U0010ffff"]


async def test_control_and_non_characters_are_refused_in_every_text_field(client: Client) -> None:
    token = await register(client)
    article = await post_article(client, token, "Target")
    url = f"/api/articles/{article['slug']}"
    for bad in BAD_CHARACTERS:
        article = {"title": "t", "description": "d", "body": "b"}
        attempts: list[tuple[str, str, dict[str, Any], str]] = [
            ("POST", "/api/users", user_body(f"x{uuid.uuid4().hex[:6]}{bad}"), "username"),
            ("POST", "/api/users", user_body(password=f"long-enough{bad}"), "password"),
            ("PUT", "/api/user", {"user": {"bio": f"bio {bad}"}}, "bio"),
            ("PUT", "/api/user", {"user": {"username": f"y{uuid.uuid4().hex[:6]}{bad}"}}, "username"),
            ("POST", "/api/articles", {"article": {**article, "title": f"t{bad}"}}, "title"),
            ("POST", "/api/articles", {"article": {**article, "description": f"d{bad}"}}, "description"),
            ("POST", "/api/articles", {"article": {**article, "body": f"b{bad}"}}, "body"),
            ("POST", "/api/articles", {"article": {**article, "tagList": ["ok", f"g{bad}"]}}, "tagList"),
            ("PUT", url, {"article": {"body": f"b{bad}"}}, "body"),
            ("POST", f"{url}/comments", {"comment": {"body": f"c{bad}"}}, "body"),
        ]
        for method, path, body, field in attempts:
            resp = await client.request(method, path, json=body, headers=auth(token))
            assert resp.status == 422, (method, path, repr(bad), await resp.text())
            errors = await errors_of(resp)
            assert list(errors) == [field], (path, repr(bad), errors)
    # Tab, newline and carriage return are text, and so is everything printable.
    await post_article(client, token, "Fine", body="a\tb\r\nc — é 😀 \u200f", tagList=["ok"])


async def test_feed_and_sitemap_parse_even_over_rows_written_before_validation(
    client: Client, db: Database
) -> None:
    token = await register(client, "legacy")
    await post_article(client, token, "Clean", tagList=["clean"])
    async with db.write() as conn:  # rows from before the validation existed
        await execute(
            conn,
            "test",
            "UPDATE articles SET title = ?, description = ?, body = ?",
            ("bad\x01title\ufffe", "d\x00", "b\x1bdy \U0001ffff"),
        )
        await execute(conn, "test", "INSERT INTO article_tags SELECT id, ? FROM articles", ("tag\x02",))
        await execute(conn, "test", "UPDATE users SET bio = ?", ("bio\x0b",))
    await client.put("/api/user", json={"user": {"bio": "new"}}, headers=auth(token))  # bumps users
    for path in ("/feed.atom", "/sitemap.xml"):
        resp = await client.get(path)
        assert resp.status == 200
        root = ET.fromstring(await resp.read())  # raises on a character XML does not allow
        assert len(root) > 0
    feed = ET.fromstring(await (await client.get("/feed.atom")).read())
    atom = {"a": "http://www.w3.org/2005/Atom"}
    assert feed.findtext("a:entry/a:title", namespaces=atom) == "badtitle"


# ---------------------------------------------------------------------------- 7: the budget is real memory


async def test_process_memory_tier_holds_its_budget_in_real_bytes(make_cache: MakeCache) -> None:
    """Many distinct small answers (distinct anonymous queries): what the tier really holds — keys,
    bytes objects, entries, ETags, prepared headers, the dict — stays within 110 % of its budget."""
    budget = 256 * 1024
    cache = await make_cache(local_max_bytes=budget)
    request = make_mocked_request("GET", "/api/articles")

    async def fill(i: int) -> None:
        key = f"[null,null,null,20,{i}]-{'x' * 40}"
        entry = await cache.get("list", key, ("articles",), lambda: _small_body(i))
        send_cached(request, entry, SHARED)  # as every served entry: its headers prepared once

    await fill(-1)  # versions, scripts, metric children: made before measuring
    gc.collect()
    tracemalloc.start()
    try:
        for start in range(0, 3000, 100):
            await asyncio.gather(*(fill(i) for i in range(start, start + 100)))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        cache.local.clear()
        gc.collect()
        freed = held - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert freed <= budget * 1.10, f"the tier held {freed} bytes for a budget of {budget}"
    assert freed >= budget * 0.5, f"the tier held only {freed} bytes: is it used at all?"


async def _small_body(i: int) -> bytes:
    return b'{"articles":[],"articlesCount":%d}' % i


# ---------------------------------------------------------------------------- 8: passwords


async def test_passwords_have_at_least_eight_characters(client: Client) -> None:
    for short in ("x", "1234567", "seven77"):
        resp = await client.post("/api/users", json=user_body(password=short))
        assert resp.status == 422 and list(await errors_of(resp)) == ["password"], short
    resp = await client.post("/api/users", json=user_body(password="12345678"))
    assert resp.status == 201
    token = (await resp.json())["user"]["token"]
    resp = await client.put("/api/user", json={"user": {"password": "short"}}, headers=auth(token))
    assert resp.status == 422 and list(await errors_of(resp)) == ["password"]


# ---------------------------------------------------------------------------- 11: a password change revokes


async def test_a_password_change_revokes_every_older_token(
    make_client: MakeClient, settings: BlogSettings
) -> None:
    a, b = await make_client(settings), await make_client(settings)  # two replicas
    body = user_body()
    resp = await a.post("/api/users", json=body)
    first = (await resp.json())["user"]["token"]
    login = {"user": {"email": body["user"]["email"], "password": "long-enough"}}
    second = (await (await b.post("/api/users/login", json=login)).json())["user"]["token"]
    for token in (first, second):  # both good, on both replicas (and cached there)
        for replica in (a, b):
            assert (await replica.get("/api/user", headers=auth(token))).status == 200
            assert (await replica.get("/api/articles", headers=auth(token))).status == 200

    resp = await a.put("/api/user", json={"user": {"password": "a-new-password"}}, headers=auth(first))
    assert resp.status == 200
    fresh = (await resp.json())["user"]["token"]

    async def refused_everywhere() -> bool:
        answers = [
            (await replica.request(method, path, headers=auth(token))).status
            for replica in (a, b)
            for token in (first, second)
            for method, path in (("GET", "/api/user"), ("GET", "/api/articles"), ("POST", "/api/articles"))
        ]
        return set(answers) == {401}

    await wait_until(refused_everywhere, timeout=2, message="old tokens refused on both replicas")
    for replica in (a, b):
        assert (await replica.get("/api/user", headers=auth(fresh))).status == 200
    # Published for orders and stream, which check tokens through asynccore.revocation.
    redis = Redis.from_url(settings.revocation_url)
    try:
        elsewhere = TokenRevocations(redis, settings.revocation_prefix, cache_s=0)
        secret = settings.jwt_secret.get_secret_value()
        for token in (first, second):
            with pytest.raises(ApiError, match="401"):
                await elsewhere.check(verify_token(secret, token))
        await elsewhere.check(verify_token(secret, fresh))
    finally:
        await redis.aclose()
    resp = await b.post("/api/users/login", json={"user": {**login["user"], "password": "a-new-password"}})
    assert resp.status == 200
    # A change of anything else keeps the tokens.
    assert (await a.put("/api/user", json={"user": {"bio": "hi"}}, headers=auth(fresh))).status == 200
    assert (await b.get("/api/user", headers=auth(fresh))).status == 200


# ---------------------------------------------------------------------------- 12: browser headers


class _Inline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack.append(tag)
        names = {name for name, _ in attrs}
        if tag == "style" or "style" in names or any(name.startswith("on") for name in names):
            self.inline.append(f"<{tag} {sorted(names)}>")

    def handle_endtag(self, tag: str) -> None:
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "script" and data.strip():
            self.inline.append(f"<script>{data[:40]}")


async def test_pages_carry_browser_security_headers_and_no_inline_code(client: Client) -> None:
    token = await register(client, "headers")
    article = await post_article(client, token, "Headers", tagList=["h"])
    pages = ["/", f"/article/{article['slug']}", "/tag/h", "/profile/headers", "/article/missing"]
    for path in pages:
        resp = await client.get(path)
        assert resp.headers["Content-Type"].startswith("text/html"), path
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp
        assert "unsafe-inline" not in csp and "script-src" not in csp, csp  # no script at all
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
        parsed = _Inline()
        parsed.feed(await resp.text())
        assert parsed.inline == [], (path, parsed.inline)
        etag = resp.headers.get("ETag")
        if etag:  # a revalidation carries them too
            again = await client.get(path, headers={"If-None-Match": etag})
            assert again.status == 304 and again.headers["X-Frame-Options"] == "DENY"
    for path in ("/sitemap.xml", "/feed.atom", "/robots.txt", "/static/site.css"):
        resp = await client.get(path)
        assert resp.status == 200 and resp.headers["X-Content-Type-Options"] == "nosniff", path
    resp = await client.get("/static/site.css")
    assert resp.headers["Content-Type"].startswith("text/css") and "body{" in await resp.text()
    page = await (await client.get("/")).text()
    assert '<link rel="stylesheet" href="/static/site.css' in page


# ---------------------------------------------------------------------------- 13: profile images


async def test_profile_images_are_http_urls_only(client: Client) -> None:
    token = await register(client)
    for image in (
        "javascript:alert(1)",
        " JaVaScRiPt:alert(1)",
        "data:image/svg+xml;base64,PHN2Zz4=",
        "vbscript:x",
        "//evil.example/x.png",
        "ftp://example.com/x.png",
        "https://",
        "https://exa mple.com/x.png",
        "http://example.com/\x01.png",
        "/relative.png",
    ):
        resp = await client.put("/api/user", json={"user": {"image": image}}, headers=auth(token))
        assert resp.status == 422, image
        assert list(await errors_of(resp)) == ["image"], image
    for image, shown in (("https://example.com/a.png", "https://example.com/a.png"), ("", ""), (None, "")):
        resp = await client.put("/api/user", json={"user": {"image": image}}, headers=auth(token))
        assert resp.status == 200 and (await resp.json())["user"]["image"] == shown, image


# ---------------------------------------------------------------------------- 14: look-alike accounts


async def test_usernames_are_unique_ignoring_case_and_width(client: Client) -> None:
    base = f"alice{uuid.uuid4().hex[:6]}"
    assert (await client.post("/api/users", json=user_body(base, email=f"{base}@example.com"))).status == 201
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in base)
    for look_alike in (base.upper(), base.capitalize(), fullwidth):
        resp = await client.post(
            "/api/users", json=user_body(look_alike, email=f"{uuid.uuid4().hex}@example.com")
        )
        assert resp.status == 422 and await errors_of(resp) == {"username": ["has already been taken"]}, (
            look_alike
        )
    other = await register(client)
    resp = await client.put("/api/user", json={"user": {"username": base.upper()}}, headers=auth(other))
    assert resp.status == 422 and await errors_of(resp) == {"username": ["has already been taken"]}
    login = {"user": {"email": f"{base}@example.com", "password": "long-enough"}}
    token = (await (await client.post("/api/users/login", json=login)).json())["user"]["token"]
    resp = await client.put("/api/user", json={"user": {"username": base.upper()}}, headers=auth(token))
    assert resp.status == 200 and (await resp.json())["user"]["username"] == base.upper()  # one's own


async def test_invisible_and_direction_characters_are_refused_in_names_and_emails(client: Client) -> None:
    tail = uuid.uuid4().hex[:6]
    for username in (f"\u202eevil{tail}", f"ev\u200bil{tail}", f"evil{tail}\u2066", f"e\u00advil{tail}",
                     f"evil {tail}", f"evil\u00a0{tail}", f"a/b{tail}"):  # fmt: skip
        resp = await client.post("/api/users", json=user_body(username, email=f"{tail}@example.com"))
        assert resp.status == 422 and list(await errors_of(resp)) == ["username"], repr(username)
    for email in (f"a\u202e{tail}@example.com", f"a{tail}@exa\u200bmple.com", f"a\x01{tail}@example.com",
                  f"a{tail}@example", f"a{tail}@@example.com", f'"a b"{tail}@example.com',
                  f"a{tail}@localhost", f"a{tail}@[127.0.0.1]"):  # fmt: skip
        resp = await client.post("/api/users", json=user_body(f"n{uuid.uuid4().hex[:8]}", email=email))
        assert resp.status == 422 and list(await errors_of(resp)) == ["email"], repr(email)
    name = f"mail{tail}"
    resp = await client.post("/api/users", json=user_body(name, email=f"{name}@EXAMPLE.com"))
    assert resp.status == 201 and (await resp.json())["user"]["email"] == f"{name}@example.com"
    resp = await client.post("/api/users/login", json={"user": {"email": f"{name}@Example.COM",
                                                               "password": "long-enough"}})  # fmt: skip
    assert resp.status == 200


FULL_WIDTH_BOB = "\uff22\uff2f\uff22"


async def test_the_migration_keeps_accounts_that_already_look_alike(tmp_path: Path) -> None:
    # SQLite only: its 0002 changed a live schema; MariaDB's history starts with username_key in place.
    first = tmp_path / "only-first"
    first.mkdir()
    (first / "0001.create-schema.sql").write_text((MIGRATIONS / "0001.create-schema.sql").read_text())
    path = tmp_path / "old.db"
    await apply_migrations(str(path), first)
    with sqlite3.connect(path) as conn:
        for i, name in enumerate(("Bob", "bob", FULL_WIDTH_BOB, "Zoë")):
            conn.execute(
                "INSERT INTO users (username, email, password_hash, created_at, updated_at)"
                " VALUES (?, ?, 'h', 't', 't')",
                (name, f"{i}@example.com"),
            )
    await apply_migrations(str(path), MIGRATIONS)  # must not fail over the duplicates
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT username, username_key FROM users ORDER BY id").fetchall()
        assert [row[0] for row in rows] == ["Bob", "bob", FULL_WIDTH_BOB, "Zoë"]  # nobody renamed or lost
        assert rows[0][1] == "bob" and rows[3][1] == "zoë"
        assert len({row[1] for row in rows}) == 4
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO users (username, username_key, email, password_hash, created_at, updated_at)"
                " VALUES ('BOB', 'bob', 'x@example.com', 'h', 't', 't')"
            )


# ---------------------------------------------------------------------------- 15: client errors are not ours


async def test_malformed_requests_are_client_errors_logged_in_one_line(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    garbage = [
        b"GARBAGE\r\n\r\n",  # aiohttp logs this one (not HTTP at all) at DEBUG
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
        b"POST /api/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /api/user HTTP/1.1\r\nHost: x\r\nAuthorization: Token \xff\xfe.a.b\r\n\r\n",
        b"GET /api/articles HTTP/1.1\r\nHost: x\r\nAuthorization: Token \xc3\xa9.\xc3\xa9.\xc3\xa9\r\n\r\n",
    ]
    statuses = []
    for data in garbage:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(data)
        await writer.drain()
        statuses.append((await asyncio.wait_for(reader.readline(), 5)).split(b" ")[1])
        writer.close()
        await writer.wait_closed()
    assert all(status.startswith(b"4") for status in statuses), statuses
    for record in caplog.records:
        assert record.levelno < logging.ERROR, record.getMessage()
        assert record.exc_info is None and not record.exc_text, record.getMessage()
    bad = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(bad) >= 4 and all("\n" not in r.getMessage() for r in bad)
