-- take_stock: the conditional stock take of one order, called by place_orders_and_commit once the
-- batch's product rows are locked. For each line of p_lines (JSON [{"product_id": …, "quantity": …},
-- …] in ascending product id order, so two multi-line orders cannot deadlock):
--     UPDATE products SET stock = stock - quantity WHERE id = product_id AND stock >= quantity
-- p_short is the index of the first line that could not be covered (the lines before it are taken:
-- the caller undoes them), -1 if none. It neither commits nor rolls back: the caller decides.
CREATE PROCEDURE take_stock(IN p_lines TEXT, OUT p_short INT)
    MODIFIES SQL DATA
body: BEGIN
    DECLARE i INT DEFAULT 0;
    DECLARE n INT DEFAULT JSON_LENGTH(p_lines);
    DECLARE product BIGINT UNSIGNED;
    DECLARE quantity INT UNSIGNED;
    WHILE i < n DO
        SET product = JSON_EXTRACT(p_lines, CONCAT('$[', i, '].product_id'));
        SET quantity = JSON_EXTRACT(p_lines, CONCAT('$[', i, '].quantity'));
        UPDATE products SET stock = stock - quantity WHERE id = product AND stock >= quantity;
        IF ROW_COUNT() = 0 THEN
            SET p_short = i;
            LEAVE body;
        END IF;
        SET i = i + 1;
    END WHILE;
    SET p_short = -1;
END
