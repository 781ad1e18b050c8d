-- The request id of the HTTP request that wrote the event, carried on the published message so one id
-- follows an order from the API through the worker's payment call in the logs.
ALTER TABLE outbox ADD COLUMN request_id VARCHAR(128) NULL;
