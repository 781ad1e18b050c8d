-- The last step of placing an order, run inside the server so the hot product row is never locked
-- across a network round trip: decrement stock line by line (conditional UPDATE … WHERE stock >= q,
-- lines in ascending product id order as the caller sends them), then COMMIT the whole order, or
-- ROLLBACK it at the first line the stock cannot cover. Returns one row: the index of that line in
-- p_lines, or -1 when the order committed. p_lines: JSON [[product_id, quantity], ...].
CREATE PROCEDURE take_stock_and_commit(IN p_lines TEXT)
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
            SELECT i AS short_line;
            ROLLBACK;
            LEAVE body;
        END IF;
        SET i = i + 1;
    END WHILE;
    SELECT -1 AS short_line;
    COMMIT;
END;
