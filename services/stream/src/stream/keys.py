"""Every Redis key the service writes or reads, in one place, under the configured prefix.

One prefix is one state store (aggregates *and* the checkpoints they correspond to), which is what
lets tests and benchmarks run side by side with the local stack on the same Redis.
"""

from __future__ import annotations

__all__ = ["Keys"]


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.alerts = f"{prefix}alerts"  # list, newest first
        self.outbox = f"{prefix}outbox"  # stream of messages still to produce to Kafka
        self.relay_lease = f"{prefix}outbox:relay"  # name of the one relay producing the outbox
        # A random id made with the outbox: its messages carry it, so ids of another outbox (another
        # Redis, or this one emptied and restarted) never pass for this one's in Kafka.
        self.outbox_instance = f"{prefix}outbox:instance"
        self.newest = f"{prefix}newest"  # newest event time aggregated (ms)

    def checkpoint(self, topic: str, partition: int) -> str:
        """A partition's checkpoint, ``"<next offset>:<newest event time>"``, written with the deltas
        it covers."""
        return f"{self.prefix}off:{topic}:{partition}"

    def minute(self, minute: int) -> str:
        """Hash of one tumbling minute: ``t:<type>`` counts, ``rev`` cents, quality and lateness counts."""
        return f"{self.prefix}m:{minute}"

    def products(self, event_type: str, minute: int) -> str:
        """Sorted set product → events of ``event_type`` in one minute (a pane of the hopping windows)."""
        return f"{self.prefix}p:{event_type}:{minute}"

    def users(self, minute: int) -> str:
        """HyperLogLog of the users active in one minute."""
        return f"{self.prefix}u:{minute}"

    def stage(self, stage: str, minute: int) -> str:
        """HyperLogLog of the users reaching a funnel stage (view, cart, order) in one minute."""
        return f"{self.prefix}f:{stage}:{minute}"

    def seen(self, bucket: int) -> str:
        """Set of event ids counted in one dedup-horizon bucket of event time."""
        return f"{self.prefix}seen:{bucket}"

    def sessions(self, bucket: int) -> str:
        """Hash user → recently viewed products (JSON ``[[product, ts], …]``) as of one session-gap
        bucket of event time; a session is read from the newest bucket holding it."""
        return f"{self.prefix}s:{bucket}"

    def co_views(self, hour: int, product: str) -> str:
        """Hash other product → co-views with ``product`` in one hour of event time."""
        return f"{self.prefix}rc:{hour}:{product}"

    def risk_orders(self, minute: int) -> str:
        """Hash user → orders placed in one minute."""
        return f"{self.prefix}ro:{minute}"

    def risk_cart_pairs(self, bucket: int) -> str:
        """Hash ``user|product`` → 1 for add-to-carts in one 10 s bucket (distinctness)."""
        return f"{self.prefix}rcp:{bucket}"

    def risk_cart_counts(self, bucket: int) -> str:
        """Hash user → distinct products added to cart in one 10 s bucket."""
        return f"{self.prefix}rcn:{bucket}"
