"""The shared HTTP layer: typed settings, JSON answers, JSON bodies as 422s naming the field, OpenAPI."""

from __future__ import annotations

from typing import Annotated

import orjson
import pytest
from aiohttp import web
from conftest import Serve
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from asynccore.app import SETTINGS, add_routes, create_app
from asynccore.settings import ServiceSettings
from asynccore.web import (
    add_openapi_routes,
    field_name,
    invalid,
    json_headers,
    json_response,
    read_json,
    settings_key,
)


class ThingSettings(ServiceSettings):
    thing_size: int = 3


class LocalThingSettings(ThingSettings):
    pass


THINGS = settings_key(ThingSettings)


class Line(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)
    quantity: Annotated[int, Field(gt=0)]


class Order(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)
    items: Annotated[list[Line], Field(min_length=1)]


DOCUMENT = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}


def test_one_key_per_settings_class() -> None:
    assert settings_key(ThingSettings) is THINGS
    assert settings_key(ServiceSettings) is not THINGS


def test_the_app_holds_its_settings_under_the_key_of_each_class() -> None:
    settings = LocalThingSettings()
    app = create_app("t-settings", settings)
    assert app[THINGS] is settings and app[settings_key(LocalThingSettings)] is settings
    assert app[settings_key(ServiceSettings)] is settings and app[SETTINGS] is settings


def test_json_response_encodes_values_and_sends_bytes_as_they_are() -> None:
    resp = json_response({"n": 1}, 201)
    assert (resp.status, resp.body, resp.content_type) == (201, b'{"n":1}', "application/json")
    assert json_response(b'{"cached":true}').body == b'{"cached":true}'


def test_json_response_keeps_given_headers_and_adds_the_type() -> None:
    resp = json_response([], headers={"Access-Control-Allow-Origin": "*"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.content_type == "application/json"
    built = json_headers({"X-A": "1"})
    assert json_response([], headers=built).headers["X-A"] == "1"


@pytest.mark.parametrize(
    ("loc", "name"), [((), "body"), (("items",), "items"), (("items", 0, "quantity"), "items[0].quantity")]
)
def test_field_names_point_where_a_client_would(loc: tuple[int | str, ...], name: str) -> None:
    assert field_name(loc) == name


def test_invalid_lists_every_error_under_its_field_in_the_given_words() -> None:
    with pytest.raises(ValidationError) as caught:
        Order.model_validate({"items": [{"quantity": 0}, {"quantity": "2"}]})
    error = invalid(caught.value)
    worded = invalid(caught.value, field=lambda e: str(e["loc"][0]), message=lambda e: e["type"])
    assert error.status == 422
    assert set(error.errors) == {"items[0].quantity", "items[1].quantity"}
    assert worded.errors == {"items": ["greater_than", "int_type"]}


async def test_read_json_validates_or_answers_422_naming_the_field(serve: Serve) -> None:
    async def place(request: web.Request) -> web.Response:
        order = await read_json(request, Order)
        return json_response({"lines": len(order.items)}, 201)

    def setup(app: web.Application) -> None:
        add_routes(app, [web.post("/orders", place)])

    async with serve("t-read-json", setup=setup) as (_, client):
        ok = await client.post("/orders", data=b'{"items": [{"quantity": 2}]}')
        assert (ok.status, await ok.json()) == (201, {"lines": 1})
        bad = await client.post("/orders", data=b'{"items": [{"quantity": 2.5}]}')
        assert bad.status == 422 and list((await bad.json())["errors"]) == ["items[0].quantity"]
        not_json = await client.post("/orders", data=b"{nope")
        assert not_json.status == 422 and list((await not_json.json())["errors"]) == ["body"]


async def test_the_openapi_document_is_served_with_its_docs(serve: Serve) -> None:
    def setup(app: web.Application) -> None:
        docs = add_openapi_routes(app, "/api/things/openapi.json", DOCUMENT, headers={"X-Cors": "*"})
        assert docs == "/api/things/docs"

    async with serve("t-openapi", setup=setup) as (_, client):
        resp = await client.get("/api/things/openapi.json")
        assert resp.status == 200 and resp.headers["X-Cors"] == "*"
        assert resp.content_type == "application/json"
        assert orjson.loads(await resp.read()) == DOCUMENT
        assert (await client.get("/api/things/docs")).status == 200
