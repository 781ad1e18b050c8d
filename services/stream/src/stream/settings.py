"""Configuration of the stream service, from the environment (see ``asynccore.settings``)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from asynccore.settings import UserServiceSettings, strong_secret

__all__ = ["EventsTopicSettings", "StreamSettings"]

Network = IPv4Network | IPv6Network


class EventsTopicSettings(BaseSettings):
    """Where events go: all a producer of the topic needs (``stream-loadgen``), and no secret."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    kafka_bootstrap: str = Field(default="127.0.0.1:9092", min_length=1)  # the local stack's broker
    stream_topic: str = Field(default="events", min_length=1)
    # Partition counts of the topics created at start-up when absent (an existing topic keeps its
    # own): the events topic's count caps the consumers that get work; DLQ and alerts are a trickle.
    stream_partitions: int = Field(default=16, gt=0)


class StreamSettings(UserServiceSettings, EventsTopicSettings):
    stream_port: int = Field(default=8083, gt=0, lt=65536)
    redis_url: str = "redis://127.0.0.1:6379/0"
    stream_dlq_topic: str = Field(default="events.dlq", min_length=1)
    stream_alerts_topic: str = Field(default="risk.alerts", min_length=1)
    stream_dlq_partitions: int = Field(default=4, gt=0)
    stream_alerts_partitions: int = Field(default=4, gt=0)
    stream_topics_timeout_s: float = Field(default=30.0, gt=0)
    # A stored offset outside its partition's log (topic recreated, another cluster, retention):
    # resume from the log's start or its end (skipped records counted), or stop consuming that
    # partition until an operator decides (see README, "Offsets outside the log").
    stream_offset_reset: Literal["earliest", "latest", "fail"] = "earliest"
    stream_group_id: str = Field(default="stream-analytics", min_length=1)
    # Every Redis key (aggregates, offsets, outbox) starts with this: one prefix = one analytics state.
    stream_redis_prefix: str = Field(default="stream:", min_length=1)
    # False runs the API only (no consumer-group member).
    stream_consume: bool = True

    # Event time.
    stream_allowed_lateness_s: float = Field(default=60.0, ge=0)
    stream_max_future_s: float = Field(default=60.0, ge=0)
    stream_dedup_horizon_s: int = Field(default=600, gt=0)
    stream_retention_s: int = Field(default=26 * 3600, gt=0)
    stream_product_retention_s: int = Field(default=3 * 3600, gt=0)
    stream_max_query_range_s: int = Field(default=24 * 3600, gt=0)

    # Consumer.
    # Records per batch at most: what a process holds in memory is about two batches (one flushing,
    # one being judged). At 50,000, draining a backlog was 2-8 % faster, but RSS climbed by 17-26 %
    # over the run while batches grew to the cap; at 30,000 the cap is reached within about a second
    # and RSS then stays within ~5 % (``python -m loadtests.bench.stream``).
    stream_batch_max: int = Field(default=30_000, gt=0)
    stream_poll_ms: int = Field(default=100, gt=0)
    stream_session_timeout_ms: int = Field(default=10_000, gt=0)
    stream_heartbeat_ms: int = Field(default=1_000, gt=0)
    stream_flush_timeout_s: float = Field(default=30.0, gt=0)

    # Recommendations: co-occurrence of products a user viewed within a session, decayed hourly.
    stream_rec_session_gap_s: int = Field(default=1800, gt=0)
    stream_rec_session_items: int = Field(default=5, gt=0, le=50)
    stream_rec_half_life_s: int = Field(default=6 * 3600, gt=0)
    stream_rec_horizon_h: int = Field(default=24, gt=0, le=24 * 14)

    # Risk rules.
    stream_risk_orders_per_minute: int = Field(default=5, ge=1)
    stream_risk_cart_products_per_10s: int = Field(default=8, ge=1)
    stream_risk_state_ttl_s: int = Field(default=900, gt=0)
    stream_alerts_kept: int = Field(default=1000, gt=0)
    # Dead letters and alerts waiting for the relay: at this many, flushes wait for it (nothing is trimmed).
    stream_outbox_max: int = Field(default=100_000, gt=0)
    # One replica's relay produces the outbox at a time; after a crash another takes over within this.
    stream_relay_lease_ms: int = Field(default=30_000, ge=1_000)

    # Credentials (README, "What is protected, and how"); no defaults, 32 bytes at least each.
    # Trusted producers (loadgen, other services) post any event with this bearer token.
    stream_ingest_token: SecretStr
    # Reads what names users (the risk alerts): an operator's, never handed to producers.
    stream_admin_token: SecretStr

    # Open /api/live streams, in all and per client address (503 beyond): a backstop behind nginx's
    # own caps, and the cap when the port is reached directly.
    stream_live_max: int = Field(default=1000, gt=0)
    stream_live_max_per_client: int = Field(default=10, gt=0)
    # Peers whose X-Real-IP / X-Forwarded-For name the client (comma-separated addresses or
    # networks; empty: none). Anyone else is counted by their own address.
    stream_trusted_proxies: Annotated[tuple[Network, ...], NoDecode] = (
        ip_network("127.0.0.0/8"),
        ip_network("::1/128"),
    )

    @field_validator("stream_ingest_token", "stream_admin_token")
    @classmethod
    def _strong(cls, value: SecretStr) -> SecretStr:
        return strong_secret(value)

    @field_validator("stream_admin_token")
    @classmethod
    def _not_the_ingest_token(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        ingest = info.data.get("stream_ingest_token")
        if ingest is not None and ingest.get_secret_value() == value.get_secret_value():
            raise ValueError("must differ from STREAM_INGEST_TOKEN (producers must not read alerts)")
        return value

    @field_validator("stream_trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip())
        return value
