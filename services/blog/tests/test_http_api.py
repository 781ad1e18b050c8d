"""The RealWorld API over HTTP: status codes, error bodies, auth, headers — the wiring."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientResponse
from blog_testing import Client, auth, post_article, register

from asynccore.auth import issue_token
from blog.settings import BlogSettings

SPEC = Path(__file__).parents[1] / "src" / "blog" / "openapi.json"


async def errors_of(resp: ClientResponse) -> dict[str, list[str]]:
    body = await resp.json()
    return dict(body["errors"])


async def test_register_login_and_current_user(client: Client) -> None:
    name = f"jake{uuid.uuid4().hex[:6]}"
    user = {"username": name, "email": f"{name}@jake.jake", "password": "jakejake"}
    resp = await client.post("/api/users", json={"user": user})
    assert resp.status == 201
    registered = (await resp.json())["user"]
    assert registered | {"token": "t"} == {
        "username": name,
        "email": user["email"],
        "bio": "",
        "image": "",
        "token": "t",
    }

    resp = await client.post(
        "/api/users/login", json={"user": {"email": user["email"], "password": "jakejake"}}
    )
    assert resp.status == 200
    token = (await resp.json())["user"]["token"]
    resp = await client.get("/api/user", headers=auth(token))
    assert resp.status == 200 and (await resp.json())["user"]["username"] == name
    resp = await client.get("/api/user", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200

    resp = await client.post("/api/users/login", json={"user": {"email": user["email"], "password": "wrong"}})
    assert resp.status == 401 and await errors_of(resp) == {"credentials": ["invalid"]}
    resp = await client.post("/api/users/login", json={"user": {"email": "nobody@x.io", "password": "wrong"}})
    assert resp.status == 401


async def test_duplicates_and_validation_name_the_field(client: Client) -> None:
    name = f"dup{uuid.uuid4().hex[:6]}"
    await register(client, name)
    resp = await client.post(
        "/api/users",
        json={"user": {"username": name, "email": f"{name}@example.com", "password": "password"}},
    )
    assert resp.status == 422
    assert await errors_of(resp) == {
        "email": ["has already been taken"],
        "username": ["has already been taken"],
    }

    cases = [
        (
            {"user": {"username": "", "email": "a@b.co", "password": "password"}},
            {"username": ["can't be blank"]},
        ),
        ({"user": {"username": "x", "email": "a@b.co"}}, {"password": ["can't be blank"]}),
        (
            {"user": {"username": "x", "email": "not-an-email", "password": "password"}},
            {"email": ["is invalid"]},
        ),
        (
            {"user": {"username": 7, "email": "a@b.co", "password": "password"}},
            {"username": ["must be a string"]},
        ),
        ({"user": "jake"}, {"user": ["must be an object"]}),
        ({}, {"user": ["can't be blank"]}),
        ([], {"body": ["must be a JSON object"]}),
    ]
    for payload, expected in cases:
        resp = await client.post("/api/users", json=payload)
        assert resp.status == 422, payload
        assert await errors_of(resp) == expected, payload
    resp = await client.post("/api/users", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 422 and await errors_of(resp) == {"body": ["must be valid JSON"]}


async def test_unknown_fields_are_ignored_and_bodies_are_size_limited(client: Client) -> None:
    name = f"extra{uuid.uuid4().hex[:6]}"
    user = {"username": name, "email": f"{name}@example.com", "password": "password", "admin": True, "id": 1}
    resp = await client.post("/api/users", json={"user": user, "also": "ignored"})
    assert resp.status == 201
    token = (await resp.json())["user"]["token"]
    huge = {"article": {"title": "t", "description": "d", "body": "x" * (2 * 1024 * 1024)}}
    resp = await client.post("/api/articles", json=huge, headers=auth(token))
    assert resp.status == 413


async def test_auth_is_required_and_checked(client: Client) -> None:
    for method, path in [("GET", "/api/user"), ("POST", "/api/articles"), ("GET", "/api/articles/feed")]:
        resp = await client.request(method, path)
        assert resp.status == 401, path
        assert "token" in await errors_of(resp)
    resp = await client.get("/api/user", headers=auth("not.a.jwt"))
    assert resp.status == 401
    resp = await client.get("/api/articles", headers=auth("not.a.jwt"))  # optional auth still verifies
    assert resp.status == 401


async def test_update_user(client: Client) -> None:
    token = await register(client)
    other = f"taken{uuid.uuid4().hex[:6]}"
    await register(client, other)
    resp = await client.put("/api/user", json={"user": {"bio": "I like to skateboard"}}, headers=auth(token))
    assert resp.status == 200 and (await resp.json())["user"]["bio"] == "I like to skateboard"
    resp = await client.put("/api/user", json={"user": {"username": other}}, headers=auth(token))
    assert resp.status == 422 and await errors_of(resp) == {"username": ["has already been taken"]}
    resp = await client.put("/api/user", json={"user": {"email": None}}, headers=auth(token))
    assert resp.status == 422 and await errors_of(resp) == {"email": ["can't be blank"]}
    resp = await client.put("/api/user", json={"user": {"image": None}}, headers=auth(token))
    assert (
        resp.status == 200 and (await resp.json())["user"]["image"] == ""
    )  # cleared; the spec types it as a string


async def test_article_lifecycle_and_permissions(client: Client) -> None:
    token, other = await register(client), await register(client)
    article = await post_article(client, token, "Lifecycle", tagList=["a"])
    url = f"/api/articles/{article['slug']}"
    resp = await client.get(url)
    assert resp.status == 200 and (await resp.json())["article"]["title"] == "Lifecycle"

    resp = await client.put(url, json={"article": {"body": "hacked"}}, headers=auth(other))
    assert resp.status == 403
    resp = await client.delete(url, headers=auth(other))
    assert resp.status == 403
    resp = await client.put(url, json={"article": {"tagList": None}}, headers=auth(token))
    assert resp.status == 422 and await errors_of(resp) == {"tagList": ["can't be blank"]}
    resp = await client.put(url, json={"article": {"body": "edited"}}, headers=auth(token))
    assert resp.status == 200 and (await resp.json())["article"]["body"] == "edited"
    resp = await client.get(url)  # read-your-write through the API
    assert (await resp.json())["article"]["body"] == "edited"

    resp = await client.delete(url, headers=auth(token))
    assert resp.status == 204
    resp = await client.get(url)
    assert resp.status == 404 and await errors_of(resp) == {"article": ["not found"]}
    resp = await client.post("/api/articles", json={"article": {"title": "t"}}, headers=auth(token))
    assert resp.status == 422 and set(await errors_of(resp)) == {"description", "body"}


async def test_list_query_is_validated(client: Client) -> None:
    for query, field in [
        ("limit=101", "limit"),
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        (f"offset={2**63}", "offset"),  # beyond what SQLite can bind: a 422, not a 500
    ]:
        resp = await client.get(f"/api/articles?{query}")
        assert resp.status == 422, query
        assert list(await errors_of(resp)) == [field]
    resp = await client.get("/api/articles?limit=100&offset=0")
    assert resp.status == 200


async def test_anonymous_reads_revalidate_with_etag(client: Client) -> None:
    token = await register(client)
    await post_article(client, token, "Etagged")
    resp = await client.get("/api/articles")
    etag = resp.headers["ETag"]
    assert resp.headers["Cache-Control"] == "no-cache"
    resp = await client.get("/api/articles", headers={"If-None-Match": etag})
    assert resp.status == 304 and await resp.read() == b""
    await post_article(client, token, "Changes the list")
    resp = await client.get("/api/articles", headers={"If-None-Match": etag})
    assert resp.status == 200 and resp.headers["ETag"] != etag


async def test_favorites_profiles_comments_and_tags(client: Client) -> None:
    author_name = f"author{uuid.uuid4().hex[:6]}"
    author, reader = await register(client, author_name), await register(client)
    article = await post_article(client, author, "Social", tagList=["social"])
    base = f"/api/articles/{article['slug']}"

    resp = await client.post(f"{base}/favorite", headers=auth(reader))
    assert resp.status == 200
    liked = (await resp.json())["article"]
    assert (liked["favorited"], liked["favoritesCount"]) == (True, 1)
    resp = await client.get(f"/api/articles?favorited={author_name}")
    assert (await resp.json())["articlesCount"] == 0

    resp = await client.post(f"/api/profiles/{author_name}/follow", headers=auth(reader))
    assert resp.status == 200 and (await resp.json())["profile"]["following"] is True
    resp = await client.get(f"/api/profiles/{author_name}")
    assert (await resp.json())["profile"]["following"] is False  # anonymous
    resp = await client.get("/api/articles/feed", headers=auth(reader))
    assert [a["slug"] for a in (await resp.json())["articles"]] == [article["slug"]]
    resp = await client.delete(f"/api/profiles/{author_name}/follow", headers=auth(reader))
    assert (await resp.json())["profile"]["following"] is False
    resp = await client.get("/api/profiles/no-such-user")
    assert resp.status == 404

    resp = await client.post(f"{base}/comments", json={"comment": {"body": "Thanks"}}, headers=auth(reader))
    assert resp.status == 200
    comment = (await resp.json())["comment"]
    resp = await client.get(f"{base}/comments")
    assert [c["body"] for c in (await resp.json())["comments"]] == ["Thanks"]
    resp = await client.delete(f"{base}/comments/{comment['id']}", headers=auth(author))
    assert resp.status == 403
    resp = await client.delete(f"{base}/comments/abc", headers=auth(reader))
    assert resp.status == 422 and list(await errors_of(resp)) == ["id"]
    resp = await client.delete(f"{base}/comments/{2**63}", headers=auth(reader))
    assert resp.status == 404 and list(await errors_of(resp)) == ["comment"]
    resp = await client.delete(f"{base}/comments/{comment['id']}", headers=auth(reader))
    assert resp.status == 204

    resp = await client.get("/api/tags")
    assert "social" in (await resp.json())["tags"]


# What RealWorld front-ends parse: ISO 8601 with a fraction of a second and a zone.
TIMESTAMP = re.compile(r"^\d{4}-[01]\d-[0-3]\dT[0-2]\d:[0-5]\d:[0-5]\d\.\d+(?:Z|[+-][0-2]\d:[0-5]\d)$")
LISTED_FIELDS = {
    "slug", "title", "description", "tagList", "createdAt", "updatedAt", "favorited", "favoritesCount",
    "author",
}  # fmt: skip  # lists leave the body out (the spec's MultipleArticlesResponse)


def assert_article(article: dict[str, Any], *, listed: bool = False) -> None:
    assert set(article) == (LISTED_FIELDS if listed else LISTED_FIELDS | {"body"})
    assert TIMESTAMP.match(article["createdAt"]) and TIMESTAMP.match(article["updatedAt"])
    assert isinstance(article["tagList"], list) and isinstance(article["favoritesCount"], int)
    assert set(article["author"]) >= {"username", "bio", "image", "following"}


async def test_a_reference_client_session_from_sign_up_to_delete(client: Client) -> None:
    """The walk the RealWorld reference API suite takes, with the shapes front-ends rely on:
    timestamps with a fraction, tags sorted, favorites and comments reflected at once."""
    name = f"ref{uuid.uuid4().hex[:6]}"
    token = await register(client, name)
    resp = await client.put("/api/user", json={"user": {"email": f"{name}@new.example"}}, headers=auth(token))
    assert resp.status == 200
    assert set((await resp.json())["user"]) == {"email", "username", "bio", "image", "token"}

    resp = await client.post(
        "/api/articles",
        json={"article": {"title": f"Train {name}", "description": "how?", "body": "Very carefully.",
                          "tagList": ["training", "dragons"]}},
        headers=auth(token),
    )  # fmt: skip
    assert resp.status == 201
    created = (await resp.json())["article"]
    assert_article(created)
    assert created["tagList"] == ["dragons", "training"]
    slug = created["slug"]

    for path, headers in [
        (f"/api/articles?author={name}", {}),
        (f"/api/articles?author={name}", auth(token)),
        (f"/api/articles?tag=dragons&author={name}", {}),
        ("/api/articles/feed", auth(token)),
    ]:
        resp = await client.get(path, headers=headers)
        assert resp.status == 200, path
        page = await resp.json()
        assert page["articlesCount"] == len(page["articles"]), path
        for article in page["articles"]:
            assert_article(article, listed=True)
        assert [a["slug"] for a in page["articles"]] == ([] if path.endswith("feed") else [slug]), path

    resp = await client.put(
        f"/api/articles/{slug}", json={"article": {"body": "With two hands"}}, headers=auth(token)
    )
    updated = (await resp.json())["article"]
    assert_article(updated)
    assert (updated["body"], updated["title"], updated["tagList"]) == (
        "With two hands",
        created["title"],
        ["dragons", "training"],
    )

    resp = await client.post(f"/api/articles/{slug}/favorite", headers=auth(token))
    assert ((a := (await resp.json())["article"])["favorited"], a["favoritesCount"]) == (True, 1)
    resp = await client.get(f"/api/articles?favorited={name}", headers=auth(token))
    assert [(a["slug"], a["favoritesCount"]) for a in (await resp.json())["articles"]] == [(slug, 1)]
    resp = await client.delete(f"/api/articles/{slug}/favorite", headers=auth(token))
    assert ((a := (await resp.json())["article"])["favorited"], a["favoritesCount"]) == (False, 0)

    resp = await client.post(
        f"/api/articles/{slug}/comments",
        json={"comment": {"body": "Thank you so much!"}},
        headers=auth(token),
    )
    comment = (await resp.json())["comment"]
    assert set(comment) >= {"id", "body", "createdAt", "updatedAt", "author"} and isinstance(
        comment["id"], int
    )
    assert TIMESTAMP.match(comment["createdAt"]) and TIMESTAMP.match(comment["updatedAt"])
    resp = await client.get(f"/api/articles/{slug}/comments", headers=auth(token))
    assert [c["id"] for c in (await resp.json())["comments"]] == [comment["id"]]
    resp = await client.delete(f"/api/articles/{slug}/comments/{comment['id']}", headers=auth(token))
    assert resp.status == 204

    resp = await client.get(f"/api/profiles/{name}", headers=auth(token))
    assert set((await resp.json())["profile"]) == {"username", "bio", "image", "following"}
    resp = await client.get("/api/tags")
    assert {"dragons", "training"} <= set((await resp.json())["tags"])
    resp = await client.delete(f"/api/articles/{slug}", headers=auth(token))
    assert resp.status == 204
    resp = await client.get(f"/api/articles/{slug}")
    assert resp.status == 404


async def test_the_spec_is_served(client: Client) -> None:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    assert spec == orjson.loads(SPEC.read_bytes())
    assert "/articles/{slug}/comments/{id}" in spec["paths"]


async def test_browsers_on_other_origins_may_call_the_api(client: Client) -> None:
    resp = await client.options(
        "/api/articles",
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert resp.status == 204
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    resp = await client.get("/api/no-such-thing", headers={"Origin": "http://app.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    resp = await client.get("/")
    assert "Access-Control-Allow-Origin" not in resp.headers  # pages are same-origin only


async def test_every_api_route_in_the_route_table_answers_other_origins(client: Client) -> None:
    """Each method of each ``/api`` route, signed in and not: its answer or its error carries CORS.

    Not ``/api/docs``: Swagger UI is a page for people on this origin (with its own CSP), not API.
    """
    name = f"cors{uuid.uuid4().hex[:6]}"
    token = await register(client, name)
    article = await post_article(client, token, "Cross origin")
    values = {"slug": article["slug"], "username": name, "id": "1", "tail": "articles"}
    origin = {"Origin": "http://app.example", "Access-Control-Request-Method": "GET"}
    checked = []
    for resource in client.app.router.resources():
        if not resource.canonical.startswith("/api/") or resource.canonical.startswith("/api/docs"):
            continue
        params = {key: values.get(key, "x") for key in re.findall(r"\{(\w+)", resource.canonical)}
        path = resource.canonical.format(**params)
        for route in resource:
            for headers in (origin, {**origin, **auth(token)}):
                resp = await client.request(route.method, path, headers=headers)
                assert resp.headers.get("Access-Control-Allow-Origin") == "*", (
                    route.method,
                    path,
                    resp.status,
                )
                checked.append((route.method, resource.canonical))
    # The table, not a sample: writes, reads, the preflight route, and the spec among them.
    expected = {("DELETE", "/api/articles/{slug}/comments/{id}"), ("PUT", "/api/user"), ("GET", "/api/tags")}
    expected |= {
        ("OPTIONS", "/api/{tail}"),
        ("POST", "/api/articles/{slug}/favorite"),
        ("GET", "/api/openapi.json"),
    }
    assert expected <= set(checked) and len(checked) > 50


async def test_a_token_for_an_unknown_user_is_a_401_not_a_500(client: Client, settings: BlogSettings) -> None:
    token = issue_token(settings.jwt_secret.get_secret_value(), "999999", "ghost", 60)
    name = f"host{uuid.uuid4().hex[:6]}"
    author = await register(client, name)
    article = await post_article(client, author, "Haunted")
    for method, path, body in [
        ("POST", "/api/articles", {"article": {"title": "t", "description": "d", "body": "b"}}),
        ("POST", f"/api/articles/{article['slug']}/favorite", None),
        ("POST", f"/api/articles/{article['slug']}/comments", {"comment": {"body": "boo"}}),
        ("POST", f"/api/profiles/{name}/follow", None),
        ("GET", "/api/user", None),
    ]:
        resp = await client.request(method, path, json=body, headers=auth(token))
        assert resp.status == 401, (method, path, await resp.text())
