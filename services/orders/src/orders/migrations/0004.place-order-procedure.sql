-- Placing an order in one call after its (non-locking) stock read: the order, its items and its
-- order.created event are inserted, then stock is taken line by line with conditional UPDATEs (the
-- hot product rows are locked last), then the whole order is committed, or rolled back at the first
-- line the stock cannot cover. One round trip instead of one per statement: the rows cost the server
-- the same, but every round trip saved is a network write and read less in each API process.
--
-- take_stock: UPDATE … SET stock = stock - q WHERE id = ? AND stock >= q for each line of p_lines
-- (JSON [[product_id, quantity, …], …] in ascending product id order, so two multi-line orders
-- cannot deadlock); p_short is the index of the first line that could not be covered, -1 if none.
-- It neither commits nor rolls back: the caller decides.
DROP PROCEDURE IF EXISTS take_stock_and_commit;

CREATE PROCEDURE take_stock(IN p_lines TEXT, OUT p_short INT)
    MODIFIES SQL DATA
body: BEGIN
    DECLARE i INT DEFAULT 0;
    DECLARE n INT DEFAULT JSON_LENGTH(p_lines);
    DECLARE product BIGINT UNSIGNED;
    DECLARE quantity INT UNSIGNED;
    WHILE i < n DO
        SET product = JSON_EXTRACT(p_lines, CONCAT('$[', i, '][0]'));
        SET quantity = JSON_EXTRACT(p_lines, CONCAT('$[', i, '][1]'));
        UPDATE products SET stock = stock - quantity WHERE id = product AND stock >= quantity;
        IF ROW_COUNT() = 0 THEN
            SET p_short = i;
            LEAVE body;
        END IF;
        SET i = i + 1;
    END WHILE;
    SET p_short = -1;
END;

-- place_order_and_commit returns one row (short_line, order_id): short_line -1 when the order
-- committed (order_id is then its id), else the index in p_lines of the line the stock could not
-- cover (everything rolled back). p_lines: [[product_id, quantity, price_cents], …] ascending by
-- product id. p_payload is the event with order_id 0: the id is only known here, JSON_SET fills it.
-- A duplicate idempotency key fails the first INSERT with error 1062, before any stock is touched.
CREATE PROCEDURE place_order_and_commit(
    IN p_user_id VARCHAR(64),
    IN p_username VARCHAR(200),
    IN p_total BIGINT UNSIGNED,
    IN p_key VARCHAR(200),
    IN p_hash CHAR(64),
    IN p_now DATETIME(6),
    IN p_lines TEXT,
    IN p_event_id CHAR(32),
    IN p_payload TEXT,
    IN p_request_id VARCHAR(128)
)
    MODIFIES SQL DATA
BEGIN
    DECLARE v_order BIGINT UNSIGNED;
    DECLARE v_short INT;
    INSERT INTO orders (user_id, username, status, total_cents, idempotency_key, request_hash,
                        created_at, updated_at)
        VALUES (p_user_id, p_username, 'pending', p_total, p_key, p_hash, p_now, p_now);
    SET v_order = LAST_INSERT_ID();
    INSERT INTO order_items (order_id, product_id, quantity, price_cents)
        SELECT v_order, line.product_id, line.quantity, line.price_cents
          FROM JSON_TABLE(p_lines, '$[*]' COLUMNS (
                   product_id BIGINT UNSIGNED PATH '$[0]',
                   quantity INT UNSIGNED PATH '$[1]',
                   price_cents BIGINT UNSIGNED PATH '$[2]')) AS line;
    INSERT INTO outbox (event_id, routing_key, payload, request_id, created_at)
        VALUES (p_event_id, 'order.created', JSON_SET(p_payload, '$.order_id', v_order), p_request_id,
                UTC_TIMESTAMP(6));
    CALL take_stock(p_lines, v_short);
    SELECT v_short AS short_line, v_order AS order_id;
    IF v_short >= 0 THEN
        ROLLBACK;
    ELSE
        COMMIT;
    END IF;
END;
