"""The fulfilment worker: the second deployable (``orders-worker``, ``python -m orders.worker``).

* ``fulfilment`` — consume ``order.created`` → pay → commit → email → ack, and
  ``order.refund_requested`` → refund (or void) → commit → email → ack;
* ``payments`` — the payment provider over HTTP; ``mail`` — the customer's emails;
* ``app`` — the process: its resources and ``main``.

It shares with the API only what both need: the domain and the store (``orders.lifecycle``,
``states``, ``store``, ``db``, ``errors``), ``messaging``, ``settings``, ``resources`` and ``metrics``.
Nothing here imports the API's modules (``api``, ``app``, ``batching``, ``placement``, ``relay``).
"""

from orders.worker.app import WORKER, build_app, main

__all__ = ["WORKER", "build_app", "main"]
