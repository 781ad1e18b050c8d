"""Development servers, apart from the services they stand in for: never installed with a service.

- :mod:`devservers.payment`: a payment provider (``payment-sandbox``) with settable latency and failures;
- :mod:`devservers.smtp`: an SMTP sink (``smtp-sink``) whose mail is countable over HTTP;
- :mod:`devservers.kafka_broker`: a private Apache Kafka broker for tests and benchmarks
  (``deploy/kafka/broker`` as a subprocess), and ``python -m devservers.kafka_broker wait HOST:PORT``.
"""
