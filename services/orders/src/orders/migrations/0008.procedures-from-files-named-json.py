"""take_stock and place_orders_and_commit re-created from ``orders/procedures/*.sql``, where each one's
current body now lives (it was spread over migrations 0003-0005), and reading JSON objects with named
fields ('$.product_id') instead of positional tuples ('$[7]'). Python's side: placement.commit_orders.
"""

from yoyo import step

from orders.procedures import recreate

__depends__ = {"0007.refunds"}

steps = [step(sql) for sql in recreate("take_stock", "place_orders_and_commit")]
