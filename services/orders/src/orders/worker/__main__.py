"""``python -m orders.worker``: the worker on ``ORDERS_WORKER_PORT``."""

from orders.worker.app import main

if __name__ == "__main__":
    main()
