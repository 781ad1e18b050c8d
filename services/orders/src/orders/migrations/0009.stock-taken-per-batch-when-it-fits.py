"""place_orders_and_commit takes a batch's stock with one UPDATE per product when the locked stock
covers the batch's total (the usual case), instead of a savepoint, a nested CALL and UPDATEs per order
while the hot rows are locked; the per-order path remains for batches that do not all fit. Same
arguments and result as 0008's, so processes still running the previous code keep working.
"""

from yoyo import step

from orders.procedures import recreate

__depends__ = {"0008.procedures-from-files-named-json"}

steps = [step(sql) for sql in recreate("place_orders_and_commit")]
