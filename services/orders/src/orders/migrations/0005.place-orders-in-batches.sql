-- Orders placed in batches: concurrent orders share one transaction (see orders.batching), so
-- place_order_and_commit (0004) becomes place_orders_and_commit, which writes any number of orders
-- and decides each one's stock under the row locks. A single order is a batch of one.
--
-- p_orders: JSON array, one element per order:
--   [user_id, username, total_cents, idempotency_key, request_hash, created_at,
--    [[product_id, quantity, price_cents], …], event_id, event payload (order_id 0), request_id]
-- p_lines: per order, its [[product_id, quantity], …] ascending by product id (p_orders' order).
-- p_products: every product id of the batch, ascending.
--
-- 1. Every order gets its row, items and order.created outbox row (JSON_SET puts the id the server
--    assigned into the event). No product row is locked yet.
-- 2. The batch's product rows are locked in ascending id order (as every other stock change locks
--    them, so no deadlock), then each order in turn takes its stock with take_stock's conditional
--    UPDATEs; an order that does not fit is undone alone (savepoint, then its rows deleted).
-- 3. COMMIT. Hot rows are locked only for step 2, inside this one call, never across a round trip.
--
-- Returns one row, one JSON element per order: [order_id, -1, null] when placed, else [null, index
-- in its p_lines of the first line short, stock of that product]. A duplicate idempotency key fails
-- the whole call with 1062 in step 1, before any product row is touched.
DROP PROCEDURE IF EXISTS place_order_and_commit;

CREATE PROCEDURE place_orders_and_commit(IN p_orders LONGTEXT, IN p_lines LONGTEXT, IN p_products TEXT)
    MODIFIES SQL DATA
BEGIN
    DECLARE v_done BOOLEAN DEFAULT FALSE;
    DECLARE v_user_id VARCHAR(64);
    DECLARE v_username VARCHAR(200);
    DECLARE v_total BIGINT UNSIGNED;
    DECLARE v_key VARCHAR(200);
    DECLARE v_hash CHAR(64);
    DECLARE v_created DATETIME(6);
    DECLARE v_event_id CHAR(32);
    DECLARE v_payload LONGTEXT;
    DECLARE v_request_id VARCHAR(128);
    DECLARE v_order BIGINT UNSIGNED;
    DECLARE v_ids LONGTEXT DEFAULT '[]';
    DECLARE v_events LONGTEXT DEFAULT '[]';
    DECLARE v_results LONGTEXT DEFAULT '[]';
    DECLARE v_lines TEXT;
    DECLARE v_short INT;
    DECLARE v_stock BIGINT;
    DECLARE i INT DEFAULT 0;
    DECLARE each_order CURSOR FOR
        SELECT o.user_id, o.username, o.total, o.idempotency_key, o.request_hash, o.created,
               o.event_id, o.payload, o.request_id
          FROM JSON_TABLE(p_orders, '$[*]' COLUMNS (
                   user_id VARCHAR(64) PATH '$[0]',
                   username VARCHAR(200) PATH '$[1]',
                   total BIGINT UNSIGNED PATH '$[2]',
                   idempotency_key VARCHAR(200) PATH '$[3]',
                   request_hash CHAR(64) PATH '$[4]',
                   created DATETIME(6) PATH '$[5]',
                   event_id CHAR(32) PATH '$[7]',
                   payload LONGTEXT PATH '$[8]',
                   request_id VARCHAR(128) PATH '$[9]')) AS o;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_done = TRUE;

    OPEN each_order;
    orders_loop: LOOP
        FETCH each_order INTO v_user_id, v_username, v_total, v_key, v_hash, v_created, v_event_id,
                              v_payload, v_request_id;
        IF v_done THEN
            LEAVE orders_loop;
        END IF;
        INSERT INTO orders (user_id, username, status, total_cents, idempotency_key, request_hash,
                            created_at, updated_at)
            VALUES (v_user_id, v_username, 'pending', v_total, v_key, v_hash, v_created, v_created);
        SET v_order = LAST_INSERT_ID();
        SET v_ids = JSON_ARRAY_APPEND(v_ids, '$', v_order);
        INSERT INTO outbox (event_id, routing_key, payload, request_id, created_at)
            VALUES (v_event_id, 'order.created', JSON_SET(v_payload, '$.order_id', v_order), v_request_id,
                    UTC_TIMESTAMP(6));
        SET v_events = JSON_ARRAY_APPEND(v_events, '$', LAST_INSERT_ID());
    END LOOP;
    CLOSE each_order;
    INSERT INTO order_items (order_id, product_id, quantity, price_cents)
        SELECT JSON_VALUE(v_ids, CONCAT('$[', line.n - 1, ']')), line.product_id, line.quantity,
               line.price_cents
          FROM JSON_TABLE(p_orders, '$[*]' COLUMNS (
                   n FOR ORDINALITY,
                   NESTED PATH '$[6][*]' COLUMNS (
                       product_id BIGINT UNSIGNED PATH '$[0]',
                       quantity INT UNSIGNED PATH '$[1]',
                       price_cents BIGINT UNSIGNED PATH '$[2]'))) AS line;

    WHILE i < JSON_LENGTH(p_products) DO
        SELECT stock INTO v_stock FROM products WHERE id = JSON_VALUE(p_products, CONCAT('$[', i, ']'))
            FOR UPDATE;
        SET i = i + 1;
    END WHILE;
    SET i = 0;
    WHILE i < JSON_LENGTH(v_ids) DO
        SET v_lines = JSON_QUERY(p_lines, CONCAT('$[', i, ']'));
        SET v_order = JSON_VALUE(v_ids, CONCAT('$[', i, ']'));
        SAVEPOINT one_order;
        CALL take_stock(v_lines, v_short);
        IF v_short >= 0 THEN
            ROLLBACK TO SAVEPOINT one_order;
            DELETE FROM outbox WHERE id = JSON_VALUE(v_events, CONCAT('$[', i, ']'));
            DELETE FROM order_items WHERE order_id = v_order;
            DELETE FROM orders WHERE id = v_order;
            SELECT stock INTO v_stock FROM products
             WHERE id = JSON_VALUE(v_lines, CONCAT('$[', v_short, '][0]')) FOR UPDATE;
            SET v_results = JSON_ARRAY_APPEND(v_results, '$',
                                              JSON_ARRAY(NULL, CAST(v_short AS SIGNED), CAST(v_stock AS SIGNED)));
        ELSE
            -- CAST: MariaDB puts a variable set from JSON_VALUE or an OUT parameter in as a string
            SET v_results = JSON_ARRAY_APPEND(v_results, '$', JSON_ARRAY(CAST(v_order AS UNSIGNED), -1, NULL));
        END IF;
        SET i = i + 1;
    END WHILE;
    SELECT v_results AS results;
    COMMIT;
END;
