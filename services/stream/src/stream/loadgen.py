"""``uv run stream-loadgen --rate R --duration S``: a shop's click stream, produced to Kafka.

Visitors browse one category per visit (so "also viewed" has something to find), some add to
cart and order; a little of the traffic is late, duplicated or malformed, and now and
then a bot trips a risk rule — enough for every panel of the dashboards to show life.
Produced with librdkafka (confluent-kafka) to ``KAFKA_BOOTSTRAP`` keyed by user, partitioned like the
Java client and aiokafka (murmur2), so a user's events share a partition whoever produced them. The
broker does not create topics on first use: an absent topic is created first, with
``STREAM_PARTITIONS`` partitions (``--partitions``), as the service creates its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import confluent_kafka
import orjson

from asynccore.kafka import ensure_topics
from asynccore.settings import load_settings
from stream.settings import EventsTopicSettings

__all__ = ["Mix", "generate", "main", "new_kafka_producer", "produce"]

CATEGORY_SIZE = 20
TYPES = ("page_view", "click", "add_to_cart", "order_placed", "payment")
WEIGHTS = (60, 20, 12, 5, 3)
STOP_FLUSH_S = 0.5


@dataclass(frozen=True)
class Mix:
    users: int = 200_000  # known users a visit belongs to
    visits: int = 2_000  # visits in progress at any moment
    products: int = 1_000
    late: float = 0.002  # fraction produced minutes behind the stream
    duplicate: float = 0.002  # fraction sent twice
    invalid: float = 0.001  # fraction malformed
    bots_per_minute: float = 2.0  # users who trip a risk rule


def generate(mix: Mix, rng: random.Random, now_ms: int | None = None) -> Iterator[tuple[bytes, bytes]]:
    """Endless (key, value) pairs; event time is the wall clock unless ``now_ms`` pins it.

    Traffic is ``mix.visits`` concurrent visits, each a user browsing one category for a handful
    of events (geometric, mean 8) before leaving and being replaced by a new visit.
    """
    seq = 0
    run = f"{rng.getrandbits(32):08x}"  # event ids stay unique across restarts of the generator
    categories = max(1, mix.products // CATEGORY_SIZE)
    visits = [_visit(rng, mix, categories) for _ in range(mix.visits)]
    recent: list[tuple[bytes, bytes]] = []
    bot_every = int(60 / mix.bots_per_minute * 1000) if mix.bots_per_minute > 0 else 0
    next_bot = 0
    while True:
        ts = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        roll = rng.random()
        if roll < mix.invalid:
            seq += 1
            yield b"garbage", rng.choice([b"{not json", b'{"event_id": 1}', b'{"type": "page_view"}'])
            continue
        if roll < mix.invalid + mix.duplicate and recent:
            yield rng.choice(recent)
            continue
        if bot_every and ts >= next_bot:
            next_bot = ts + bot_every
            yield from _bot(rng, f"{run}-{seq}", ts, mix)
            seq += 20
            continue
        slot = rng.randrange(len(visits))
        user_id, category, left = visits[slot]
        visits[slot] = (user_id, category, left - 1) if left > 1 else _visit(rng, mix, categories)
        product = category * CATEGORY_SIZE + rng.randrange(CATEGORY_SIZE)
        kind = rng.choices(TYPES, WEIGHTS)[0]
        if roll > 1 - mix.late:
            ts -= rng.randrange(120_000, 600_000)
        seq += 1
        pair = (user_id.encode(), orjson.dumps(_event(f"{run}-{seq}", kind, user_id, f"p{product}", ts)))
        if len(recent) < 1000:
            recent.append(pair)
        else:
            recent[seq % 1000] = pair
        yield pair


def _visit(rng: random.Random, mix: Mix, categories: int) -> tuple[str, int, int]:
    """(user, category browsed, events left) of a new visit."""
    return f"u{rng.randrange(mix.users)}", rng.randrange(categories), 1 + int(rng.expovariate(1 / 7))


def _event(event_id: str, kind: str, user: str, product: str, ts: int) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": event_id,
        "type": kind,
        "user_id": user,
        "product_id": product,
        "ts": ts,
    }
    if kind in ("order_placed", "payment"):
        event["price"] = round(5 + zlib.crc32(product.encode()) % 20_000 / 100, 2)
    return event


def _bot(rng: random.Random, ids: str, ts: int, mix: Mix) -> Iterator[tuple[bytes, bytes]]:
    """A burst that trips ``cart_spree`` (many products in 10 s) or ``order_velocity`` (many orders)."""
    user = f"bot{rng.randrange(1_000_000)}"
    kind = rng.choice(("add_to_cart", "order_placed"))
    for i in range(20):
        product = f"p{rng.randrange(mix.products)}"
        event = _event(f"{ids}-{i}", kind, user, product, ts)
        yield user.encode(), orjson.dumps(event)


def new_kafka_producer(bootstrap: str) -> confluent_kafka.Producer:
    return confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 10,
            "batch.size": 512 * 1024,
            "queue.buffering.max.messages": 1_000_000,
            "partitioner": "murmur2_random",
            "log_level": 4,
        }
    )


def produce(
    producer: confluent_kafka.Producer,
    topic: str,
    pairs: Iterator[tuple[bytes, bytes]],
    *,
    rate: float,
    duration_s: float,
    count: int | None = None,
    stop: list[bool] | None = None,
) -> int:
    """Produce at ``rate``/s (0: as fast as librdkafka takes them) for ``duration_s`` or ``count`` events.

    Returns how many were produced. Once ``stop`` is set, what is still queued gets at most
    :data:`STOP_FLUSH_S` to be delivered: a stop usually comes with the whole stack's, so the broker
    may be gone, and synthetic traffic is not worth waiting for.
    """
    started = time.monotonic()
    sent = 0
    while not (stop and stop[0]):
        elapsed = time.monotonic() - started
        if elapsed >= duration_s or (count is not None and sent >= count):
            break
        due = sent + 10_000 if rate <= 0 else int(rate * elapsed) + 1
        if count is not None:
            due = min(due, count)
        while sent < due:
            key, value = next(pairs)
            try:
                producer.produce(topic, value, key=key)
            except BufferError:
                producer.poll(0.01)
                continue
            sent += 1
            if sent % 10_000 == 0:
                producer.poll(0)
        producer.poll(0.005 if rate > 0 else 0)
    undelivered = producer.flush(STOP_FLUSH_S if stop and stop[0] else 30)
    return sent - undelivered


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Produce a synthetic shop click stream to Kafka.")
    parser.add_argument("--rate", type=float, default=100.0, help="events per second (0: unthrottled)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--count", type=int, default=None, help="stop after this many events")
    parser.add_argument("--topic", default=None, help="default: STREAM_TOPIC")
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="of the topic when it is absent (default: STREAM_PARTITIONS)",
    )
    parser.add_argument("--users", type=int, default=Mix.users, help="known users")
    parser.add_argument("--visits", type=int, default=Mix.visits, help="concurrent visits")
    parser.add_argument("--products", type=int, default=Mix.products)
    parser.add_argument("--clean", action="store_true", help="no late, duplicate, malformed or bot events")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    settings = load_settings(EventsTopicSettings)  # no service secrets: it writes to Kafka directly
    clean = {"late": 0, "duplicate": 0, "invalid": 0, "bots_per_minute": 0} if args.clean else {}
    mix = Mix(users=args.users, visits=args.visits, products=args.products, **clean)
    topic = args.topic or settings.stream_topic
    bootstrap = settings.kafka_bootstrap
    asyncio.run(ensure_topics(bootstrap, {topic: args.partitions or settings.stream_partitions}))
    producer = new_kafka_producer(bootstrap)
    stop = [False]

    def on_signal(*_: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    sent = produce(
        producer,
        topic,
        generate(mix, random.Random(args.seed)),
        rate=args.rate,
        duration_s=args.duration,
        count=args.count,
        stop=stop,
    )
    seconds = time.monotonic() - started
    print(json.dumps({"topic": topic, "produced": sent, "seconds": round(seconds, 3)}), file=sys.stderr)


if __name__ == "__main__":
    main()
