"""Two blog app instances on one SQLite file and one cache prefix, writing and reading at once."""

from __future__ import annotations

import asyncio

from blog_testing import Client, MakeClient, auth, post_article, register

from asynccore.testing import wait_until
from blog.settings import BlogSettings

ROUNDS = 15


async def titles(client: Client) -> list[str]:
    resp = await client.get("/api/articles?limit=100")
    assert resp.status == 200
    return [a["title"] for a in (await resp.json())["articles"]]


async def writer(client: Client, reader: Client, name: str) -> None:
    """Create, read back (same replica: never stale), comment and favorite, round after round."""
    token = await register(client)
    for i in range(ROUNDS):
        title = f"{name} {i}"
        article = await post_article(client, token, title, tagList=[name])
        assert title in await titles(client), "read-your-write on the writing replica"
        resp = await reader.post(
            f"/api/articles/{article['slug']}/comments", json={"comment": {"body": "hi"}}, headers=auth(token)
        )
        assert resp.status == 200
        resp = await client.post(f"/api/articles/{article['slug']}/favorite", headers=auth(token))
        assert resp.status == 200 and (await resp.json())["article"]["favoritesCount"] == 1


async def browser(client: Client, done: asyncio.Event) -> int:
    reads = 0
    while not done.is_set():
        for path in ("/api/articles", "/api/tags", "/"):
            resp = await client.get(path)
            assert resp.status == 200, path
            reads += 1
    return reads


async def test_two_instances_share_one_database(make_client: MakeClient, settings: BlogSettings) -> None:
    a, b = await make_client(settings), await make_client(settings)
    done = asyncio.Event()
    browsers = [asyncio.create_task(browser(client, done)) for client in (a, b)]
    try:
        await asyncio.gather(writer(a, b, "alpha"), writer(b, a, "beta"), writer(a, b, "gamma"))
    finally:
        done.set()
    assert all(await asyncio.gather(*browsers))

    expected = {f"{name} {i}" for name in ("alpha", "beta", "gamma") for i in range(ROUNDS)}
    for client in (a, b):
        assert set(await titles(client)) == expected
        resp = await client.get("/api/tags")
        assert set((await resp.json())["tags"]) == {"alpha", "beta", "gamma"}


async def test_a_write_on_one_instance_shows_on_the_other(
    make_client: MakeClient, settings: BlogSettings
) -> None:
    a, b = await make_client(settings), await make_client(settings)
    token = await register(a)
    article = await post_article(a, token, "Shared")
    assert await titles(b) == ["Shared"]  # b had nothing cached for the new version
    resp = await b.get(f"/api/articles/{article['slug']}")
    assert (await resp.json())["article"]["body"] != "changed"

    resp = await a.put(
        f"/api/articles/{article['slug']}", json={"article": {"body": "changed"}}, headers=auth(token)
    )
    assert resp.status == 200

    async def b_sees_it() -> bool:
        resp = await b.get(f"/api/articles/{article['slug']}")
        return bool((await resp.json())["article"]["body"] == "changed")

    # Redis queued b's invalidation before it answered a's write; b applies it on its next loop turn.
    await wait_until(b_sees_it, timeout=1, message="the other instance serves the write")


async def test_a_readers_favourite_and_follow_show_in_their_signed_in_reads_on_both(
    make_client: MakeClient, settings: BlogSettings
) -> None:
    a, b = await make_client(settings), await make_client(settings)
    author, reader = await register(a), await register(a)
    article = await post_article(a, author, "Flags")
    path = f"/api/articles/{article['slug']}"

    async def flags(client: Client) -> tuple[bool, bool, int]:
        resp = await client.get(path, headers=auth(reader))
        assert resp.status == 200
        seen = (await resp.json())["article"]
        return seen["favorited"], seen["author"]["following"], seen["favoritesCount"]

    assert await flags(b) == (False, False, 0)  # b now holds the reader's (empty) flags
    assert (await a.post(f"{path}/favorite", headers=auth(reader))).status == 200
    username = article["author"]["username"]
    assert (await a.post(f"/api/profiles/{username}/follow", headers=auth(reader))).status == 200
    assert await flags(a) == (True, True, 1)  # the writing replica: at once

    async def b_sees_them() -> bool:
        return await flags(b) == (True, True, 1)

    # As for every cached answer: b drops its copy when Redis's push arrives (queued before the write's
    # answer left Redis), on its next loop turn.
    await wait_until(b_sees_them, timeout=1, message="the other instance shows the reader's flags")
