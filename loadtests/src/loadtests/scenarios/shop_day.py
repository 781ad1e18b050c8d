"""A day at the shop: blog readers, a few writers, buyers and the event stream, with think time.

Importing the other scenarios brings their users *and* their seeding/clean-up listeners along.
"""

from __future__ import annotations

from locust import between

from loadtests.scenarios import blog, flash_sale, stream_ingest


class Reader(blog.Reader):
    weight = 60
    wait_time = between(1, 3)


class Writer(blog.Writer):
    weight = 5
    wait_time = between(2, 5)


class Buyer(flash_sale.Buyer):
    weight = 15
    wait_time = between(1, 4)


class Ingestor(stream_ingest.Ingestor):
    """A backend producer (service token): orders and payments reach the stream through it."""

    weight = 5
    wait_time = between(0.5, 1.5)


class Shopper(stream_ingest.Shopper):
    """Browsers posting their own clicks (their JWT)."""

    weight = 15
    wait_time = between(0.5, 1.5)
