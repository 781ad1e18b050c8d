-- Products, orders, their items, restocks and the transactional outbox (sent_at: RabbitMQ,
-- streamed_at: Kafka, when configured).
-- products.initial_stock + Σ restocks = stock + Σ quantity of non-cancelled orders (the audited invariant).

CREATE TABLE products (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    sku VARCHAR(64) NOT NULL,
    name VARCHAR(200) NOT NULL,
    price_cents BIGINT UNSIGNED NOT NULL,
    initial_stock BIGINT UNSIGNED NOT NULL,
    stock BIGINT NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY products_sku (sku),
    CONSTRAINT products_stock_not_negative CHECK (stock >= 0)
) ENGINE=InnoDB;

CREATE TABLE restocks (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    product_id BIGINT UNSIGNED NOT NULL,
    quantity INT UNSIGNED NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY restocks_product (product_id),
    CONSTRAINT restocks_product_fk FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE=InnoDB;

CREATE TABLE orders (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id VARCHAR(64) NOT NULL,
    username VARCHAR(200) NOT NULL,
    status ENUM('pending', 'paid', 'fulfilled', 'cancelled', 'payment_failed') NOT NULL,
    total_cents BIGINT UNSIGNED NOT NULL,
    idempotency_key VARCHAR(200) NULL,
    request_hash CHAR(64) NULL,
    payment_ref VARCHAR(100) NULL,
    email_sent_at DATETIME(6) NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY orders_idempotency (user_id, idempotency_key),
    KEY orders_user (user_id, id),
    KEY orders_status_age (status, created_at)
) ENGINE=InnoDB;

-- No foreign key to products on purpose: an FK check would take a shared lock on the hot product row
-- before the conditional UPDATE, lengthening exactly the lock we keep short.
CREATE TABLE order_items (
    order_id BIGINT UNSIGNED NOT NULL,
    product_id BIGINT UNSIGNED NOT NULL,
    quantity INT UNSIGNED NOT NULL,
    price_cents BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (order_id, product_id),
    KEY order_items_product (product_id),
    CONSTRAINT order_items_order_fk FOREIGN KEY (order_id) REFERENCES orders (id)
) ENGINE=InnoDB;

CREATE TABLE outbox (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_id CHAR(32) NOT NULL,
    routing_key VARCHAR(64) NOT NULL,
    payload TEXT NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    sent_at DATETIME(6) NULL,
    streamed_at DATETIME(6) NULL,
    KEY outbox_unsent (sent_at, id),
    KEY outbox_unstreamed (streamed_at, id)
) ENGINE=InnoDB;
