"""The orders service's configuration, read from the environment (see asynccore.settings)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from asynccore.settings import UserServiceSettings, strong_secret

__all__ = ["OrdersSettings"]


class OrdersSettings(UserServiceSettings):
    """API, relay, expiry task and worker share one settings class so both processes agree on names."""

    orders_port: int = Field(default=8082, gt=0, lt=65536)
    orders_worker_port: int = Field(default=8092, gt=0, lt=65536)
    mysql_url: str = "mysql://asyncstack@127.0.0.1:3306/orders"
    mysql_pool_size: int = Field(default=20, gt=0)
    # Fail a row-lock wait fast and retry it rather than hang a request for MariaDB's default 50 s.
    lock_wait_timeout_s: int = Field(default=5, gt=0)
    lock_retry_attempts: int = Field(default=4, gt=0)
    # Concurrent orders share transactions (orders.batching): at most this many orders per batch,
    # this many batches running per process; 1 order per batch turns coalescing off. 2, not 4: fewer,
    # larger calls cost 20 % less CPU per order (service + MariaDB) in bench-orders, at more orders/s.
    orders_batch_max: int = Field(default=50, gt=0, le=500)
    orders_batches_in_flight: int = Field(default=2, gt=0)
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    amqp_timeout_s: float = Field(default=5.0, gt=0)
    # Tests give every run its own exchanges and queues by setting a unique prefix.
    amqp_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    amqp_reconnect_s: float = Field(default=2.0, gt=0)
    payment_url: str = "http://127.0.0.1:8090"
    payment_timeout_s: float = Field(default=3.0, gt=0)
    payment_retries: int = Field(default=3, gt=0)
    payment_backoff_s: float = Field(default=0.2, gt=0)
    breaker_failures: int = Field(default=5, gt=0)
    breaker_reset_s: float = Field(default=5.0, gt=0)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=2525, gt=0, lt=65536)
    smtp_timeout_s: float = Field(default=5.0, gt=0)
    mail_from: str = "orders@asyncstack.test"
    # Bearer token of the admin endpoints (catalogue, restock): required, 32 bytes at least, no default.
    orders_admin_token: SecretStr

    # Unpaid orders (pending, or payment_failed) are cancelled after this long and release their stock.
    order_expiry_s: float = Field(default=900.0, gt=0)
    expiry_interval_s: float = Field(default=5.0, gt=0)
    outbox_interval_s: float = Field(default=0.2, gt=0)
    outbox_batch: int = Field(default=200, gt=0)
    # Keep sent outbox rows this long (for inspection), then purge them.
    outbox_retention_s: float = Field(default=24 * 3600.0, ge=0)
    # Deliveries of one message before it is dead-lettered and the order marked payment_failed.
    worker_attempts: int = Field(default=5, gt=0)
    worker_retry_delay_s: float = Field(default=2.0, gt=0)
    worker_prefetch: int = Field(default=16, gt=0)
    worker_message_timeout_s: float = Field(default=60.0, gt=0)
    # A refund is money owed to a customer: more deliveries than a payment before it is dead-lettered
    # (and alerted on), each failed one waiting twice as long as the one before, from
    # WORKER_RETRY_DELAY_S up to REFUND_RETRY_MAX_S (with the defaults: about 14 minutes in all).
    refund_attempts: int = Field(default=10, gt=0)
    refund_retry_max_s: float = Field(default=300.0, gt=0)
    kafka_bootstrap: str | None = None
    kafka_topic: str = "events"
    # Partitions of ``kafka_topic`` if orders is the first to use it and creates it: the same default as
    # the stream service's STREAM_PARTITIONS (whichever service starts first creates the topic).
    kafka_topic_partitions: int = Field(default=16, gt=0)

    @field_validator("orders_admin_token")
    @classmethod
    def _admin_token_strong(cls, value: SecretStr) -> SecretStr:
        return strong_secret(value)
