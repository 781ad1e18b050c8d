"""Kafka topics as a service expects them: created at start-up through the admin API when absent.

As on any real cluster, the broker does not create topics on first use (the local broker runs with
``auto.create.topics.enable=false``): a service names the topics it reads or writes and their partition
counts, and the ones that do not exist yet are created. An existing topic is left as it is (its
partition count is the operator's), and a race with another replica creating it is not an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

__all__ = ["ensure_topics"]

log = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
    client_id: str = "asyncstack-admin",
) -> list[str]:
    """Create those of ``topics`` (name -> partitions) that do not exist; the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=10_000)
    async with asyncio.timeout(timeout_s):
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [name for name in topics if name not in existing]
            if not missing:
                return []
            new = [NewTopic(name, topics[name], replication_factor) for name in missing]
            try:
                response = await admin.create_topics(new)
            except TopicAlreadyExistsError:  # another replica won the race for every one of them
                return []
            created = []
            # CreateTopics answers per topic: (name, error code, ...); 36 = TOPIC_ALREADY_EXISTS.
            for name, code, *_ in response.topic_errors:
                if code == 0:
                    created.append(name)
                elif code != TopicAlreadyExistsError.errno:
                    raise RuntimeError(f"creating Kafka topic {name}: error code {code}")
            for name in created:
                log.info("created Kafka topic", extra={"topic": name, "partitions": topics[name]})
            return created
        finally:
            await admin.close()
