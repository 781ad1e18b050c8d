"""Query-parameter parsing: values in range pass, everything else is a 422 naming the parameter."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from asynccore.errors import ApiError
from asynccore.params import int_param


def query(q: str) -> int | None:
    return int_param(make_mocked_request("GET", f"/x?{q}"), "limit", None, lo=1, hi=100)


@pytest.mark.parametrize(
    ("q", "expected"), [("", None), ("limit=", None), ("limit=1", 1), ("limit=100", 100)]
)
def test_in_range_or_absent(q: str, expected: int | None) -> None:
    assert query(q) == expected


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("limit=ten", "must be an integer"),
        ("limit=0", "must be between 1 and 100"),
        ("limit=101", "must be between 1 and 100"),
        (f"limit={2**63}", "must be between 1 and 100"),
    ],
)
def test_bad_values_name_the_parameter(q: str, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        query(q)
    assert (caught.value.status, caught.value.errors) == (422, {"limit": [message]})
