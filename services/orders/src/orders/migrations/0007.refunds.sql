-- Money and order state agree (issue 16): a charge that lands for an order cancelled (by its owner or
-- by expiry) while the charge was in flight is refunded, once.
--
-- payment_attempts: how often the worker set out to charge the order. It is raised, under the order's
--   row lock, only while the order is pending, before each charge call; from the first one on, a
--   charge may exist at the provider even if the order never became paid.
-- refund_requested_at: when the order.refund_requested event was queued (in the transaction that left
--   a status where money may have been taken for one that owes nothing); set once, so never twice.
-- refund_ref, refunded_cents, refunded_at: the provider's answer, recorded by the worker: the refund
--   (refunded_cents > 0) or the void (0: nothing had been captured, and nothing can be now).
-- refund_email_sent_at: the customer was told their money is on its way back.
--
-- New orders leave every one at its default: the placing procedure's INSERT is unchanged. INSTANT:
-- a metadata change, no rebuild, whatever the table's size.
ALTER TABLE orders
    ADD COLUMN payment_attempts INT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN refund_requested_at DATETIME(6) NULL,
    ADD COLUMN refund_ref VARCHAR(100) NULL,
    ADD COLUMN refunded_cents BIGINT UNSIGNED NULL,
    ADD COLUMN refunded_at DATETIME(6) NULL,
    ADD COLUMN refund_email_sent_at DATETIME(6) NULL,
    ALGORITHM=INSTANT;

-- Paid orders cancelled before this migration queued an order.refund_requested event that nothing
-- consumed (no queue was bound to it, so the broker dropped it): they are the cancelled ones with a
-- payment_ref. Queue their refund again, through the outbox like any other; the provider's refund is
-- keyed by the order, so one that someone refunded by hand meanwhile is not refunded twice.
INSERT INTO outbox (event_id, routing_key, payload, created_at)
    SELECT REPLACE(UUID(), '-', ''), 'order.refund_requested',
           JSON_OBJECT('order_id', id, 'user_id', user_id, 'username', username, 'status', 'cancelled',
                       'total_cents', total_cents, 'payment_ref', payment_ref, 'items', JSON_ARRAY(),
                       'ts', CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS UNSIGNED)),
           UTC_TIMESTAMP(6)
      FROM orders
     WHERE status = 'cancelled' AND payment_ref IS NOT NULL;
UPDATE orders SET refund_requested_at = UTC_TIMESTAMP(6)
 WHERE status = 'cancelled' AND payment_ref IS NOT NULL;
