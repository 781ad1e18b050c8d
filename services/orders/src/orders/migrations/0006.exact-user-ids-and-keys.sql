-- User ids and idempotency keys are compared exactly. Under the database default (utf8mb4_unicode_ci)
-- `Key-AbC` found `key-abc`'s order (so did `clé` `cle`'s and `k ` `k`'s), and a token whose id
-- differed only in case, accents or trailing spaces listed and replayed another user's orders.
-- utf8mb4_nopad_bin compares code points, trailing spaces included (utf8mb4_bin ignores them).
-- Every lookup by these columns (orders_idempotency, orders_user) now uses it: a literal compared
-- with a column takes the column's collation.
-- NOCOPY, LOCK=NONE: the two indexes are rebuilt in place while orders keep being placed; a server
-- that cannot do that fails this migration instead of copying the table under a write lock.
ALTER TABLE orders
    MODIFY user_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    MODIFY idempotency_key VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NULL,
    ALGORITHM=NOCOPY, LOCK=NONE;
