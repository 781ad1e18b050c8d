"""The order state machine: which status may follow which. Anything else is refused.

    pending → paid → fulfilled
    pending → cancelled            paid → cancelled (until fulfilled)
    pending → payment_failed → cancelled

Entering ``cancelled`` releases the order's stock; since ``cancelled`` is final, that happens once.
Entering ``cancelled`` or ``payment_failed`` while money may have been taken (``paid``, or a charge
under way) also queues the order's refund, once (``lifecycle.refund_owed``): a status that owes nothing
never keeps the customer's money.
"""

from __future__ import annotations

from enum import StrEnum

from orders.errors import OrdersError

__all__ = ["ALLOWED", "SETTLED", "IllegalTransition", "Status", "check_transition"]


class Status(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    PAYMENT_FAILED = "payment_failed"


ALLOWED: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.PAID, Status.CANCELLED, Status.PAYMENT_FAILED}),
    Status.PAID: frozenset({Status.FULFILLED, Status.CANCELLED}),
    Status.PAYMENT_FAILED: frozenset({Status.CANCELLED}),
    Status.FULFILLED: frozenset(),
    Status.CANCELLED: frozenset(),
}

# Where the fulfilment pipeline leaves an order on its own: the worker is done with it.
SETTLED = frozenset({Status.PAID, Status.FULFILLED, Status.CANCELLED, Status.PAYMENT_FAILED})


class IllegalTransition(OrdersError):
    def __init__(self, current: Status, to: Status, order_id: int | None = None) -> None:
        move = f"cannot move an order from {current.value} to {to.value}"
        super().__init__(move if order_id is None else f"order {order_id} is {current.value}: {move}")
        self.current = current
        self.to = to
        self.order_id = order_id


def check_transition(current: Status, to: Status, order_id: int | None = None) -> None:
    if to not in ALLOWED[current]:
        raise IllegalTransition(current, to, order_id)
