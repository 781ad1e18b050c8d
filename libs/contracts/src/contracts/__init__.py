"""What two services exchange, defined once: each module is one channel's schema (``events``: the
``events`` Kafka topic the stream service reads and orders writes to). No service code, no I/O."""
