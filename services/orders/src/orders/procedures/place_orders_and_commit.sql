-- place_orders_and_commit: a batch of orders written, each one's stock taken, one COMMIT; one CALL
-- (see orders.placement.commit_orders, which builds the JSON, and orders.batching).
--
-- p_orders: JSON array, one object per order:
--   {"user_id", "username", "total_cents", "idempotency_key", "request_hash", "created_at",
--    "items": [{"product_id", "quantity", "price_cents"}, …], "event_id",
--    "payload" (the order.created event as JSON text, order_id 0), "request_id"}
-- p_lines: per order (p_orders' order), its [{"product_id", "quantity"}, …] ascending by product id.
-- p_products: every product id of the batch, ascending.
--
-- 1. Every order gets its row, items and order.created outbox row (JSON_SET puts the id the server
--    assigned into the event). No product row is locked yet.
-- 2. The batch's product rows are locked in ascending id order (as every other stock change locks
--    them, so no deadlock), each one's stock read under the lock against the batch's total demand.
--    When every product covers its total (the usual case), every order fits whatever their order:
--    one UPDATE per product takes the total. Otherwise each order in turn takes its stock with
--    take_stock's conditional UPDATEs; an order that does not fit is undone alone (savepoint, then
--    its rows deleted). Both give each order the answer it would get alone, in batch order.
-- 3. COMMIT. Hot rows are locked only for step 2, inside this one call, never across a round trip.
--
-- Returns one row, a JSON array with one object per order: {"order_id": id, "short_line": -1} when
-- placed, else {"order_id": null, "short_line": index in its p_lines of the first line short,
-- "stock": that product's stock}. A duplicate idempotency key fails the whole call with 1062 in
-- step 1, before any product row is touched.
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
    DECLARE v_product BIGINT UNSIGNED;
    DECLARE v_wanted BIGINT;
    DECLARE v_demand LONGTEXT DEFAULT '[]';
    DECLARE v_fits BOOLEAN DEFAULT TRUE;
    DECLARE i INT DEFAULT 0;
    DECLARE each_order CURSOR FOR
        SELECT o.user_id, o.username, o.total_cents, o.idempotency_key, o.request_hash, o.created_at,
               o.event_id, o.payload, o.request_id
          FROM JSON_TABLE(p_orders, '$[*]' COLUMNS (
                   user_id VARCHAR(64) PATH '$.user_id',
                   username VARCHAR(200) PATH '$.username',
                   total_cents BIGINT UNSIGNED PATH '$.total_cents',
                   idempotency_key VARCHAR(200) PATH '$.idempotency_key',
                   request_hash CHAR(64) PATH '$.request_hash',
                   created_at DATETIME(6) PATH '$.created_at',
                   event_id CHAR(32) PATH '$.event_id',
                   payload LONGTEXT PATH '$.payload',
                   request_id VARCHAR(128) PATH '$.request_id')) AS o;
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
                   NESTED PATH '$.items[*]' COLUMNS (
                       product_id BIGINT UNSIGNED PATH '$.product_id',
                       quantity INT UNSIGNED PATH '$.quantity',
                       price_cents BIGINT UNSIGNED PATH '$.price_cents'))) AS line;

    WHILE i < JSON_LENGTH(p_products) DO
        SET v_product = JSON_VALUE(p_products, CONCAT('$[', i, ']'));
        SELECT stock INTO v_stock FROM products WHERE id = v_product FOR UPDATE;
        SELECT SUM(line.quantity) INTO v_wanted
          FROM JSON_TABLE(p_lines, '$[*]' COLUMNS (
                   NESTED PATH '$[*]' COLUMNS (
                       product_id BIGINT UNSIGNED PATH '$.product_id',
                       quantity BIGINT UNSIGNED PATH '$.quantity'))) AS line
         WHERE line.product_id = v_product;
        SET v_fits = v_fits AND v_stock >= v_wanted;
        SET v_demand = JSON_ARRAY_APPEND(v_demand, '$', v_wanted);
        SET i = i + 1;
    END WHILE;
    SET i = 0;
    IF v_fits THEN
        -- Stock only goes down as orders take it, so when the total fits, each order's take in turn
        -- would have fitted too: no per-order savepoint, CALL and UPDATE while the rows are locked.
        WHILE i < JSON_LENGTH(p_products) DO
            UPDATE products SET stock = stock - CAST(JSON_VALUE(v_demand, CONCAT('$[', i, ']')) AS UNSIGNED)
             WHERE id = JSON_VALUE(p_products, CONCAT('$[', i, ']'));
            SET i = i + 1;
        END WHILE;
        SELECT JSON_ARRAYAGG(JSON_OBJECT('order_id', placed.id, 'short_line', -1) ORDER BY placed.n)
          INTO v_results
          FROM JSON_TABLE(v_ids, '$[*]' COLUMNS (n FOR ORDINALITY, id BIGINT UNSIGNED PATH '$')) AS placed;
        SET i = JSON_LENGTH(v_ids);  -- every order is answered: skip the loop below
    END IF;
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
             WHERE id = JSON_VALUE(v_lines, CONCAT('$[', v_short, '].product_id')) FOR UPDATE;
            SET v_results = JSON_ARRAY_APPEND(v_results, '$',
                JSON_OBJECT('order_id', NULL, 'short_line', CAST(v_short AS SIGNED),
                            'stock', CAST(v_stock AS SIGNED)));
        ELSE
            -- CAST: MariaDB puts a variable set from JSON_VALUE or an OUT parameter in as a string
            SET v_results = JSON_ARRAY_APPEND(v_results, '$',
                JSON_OBJECT('order_id', CAST(v_order AS UNSIGNED), 'short_line', -1));
        END IF;
        SET i = i + 1;
    END WHILE;
    SELECT v_results AS results;
    COMMIT;
END
