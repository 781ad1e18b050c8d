"""A private Apache Kafka broker for tests and benchmarks: ``deploy/kafka/broker`` as a subprocess.

One broker per test session (its own temp data dir and free ports), topics per test. The broker is a
real KRaft node from the jars deploy/kafka/pom.xml pins; it can be killed (SIGKILL: a crash) and
started again on the same ports and data, which is what the outage tests need.

    broker = KafkaBroker()          # started and answering metadata requests (also a context manager)
    broker.create_topic("events-1", partitions=8)
    broker.kill(); broker.start()   # a crash and a restart, data kept
    broker.close()                  # stopped, data dir removed

Also ``python -m devservers.kafka_broker wait 127.0.0.1:9092 --timeout 60``: exit 0 once a broker there
answers a metadata request (the local stack waits for its broker this way).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import confluent_kafka
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from asynccore.testing import free_port

__all__ = ["KafkaBroker", "launcher", "metadata_answers", "read_topic", "wait_ready"]


@functools.cache
def launcher() -> Path:
    """``deploy/kafka/broker`` of the checkout this package is installed from (editable, as every dev
    install of the workspace is), or ``$ASYNCSTACK_KAFKA_LAUNCHER``."""
    if given := os.environ.get("ASYNCSTACK_KAFKA_LAUNCHER"):
        return Path(given)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "deploy" / "kafka" / "broker"
        if candidate.is_file():
            return candidate
    raise RuntimeError("no deploy/kafka/broker above this package: set ASYNCSTACK_KAFKA_LAUNCHER")


PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 90.0  # a cold JVM on a loaded 2-core box: ~5 s typical, 30 s seen under load


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started the broker dies (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _admin(bootstrap: str) -> AdminClient:
    # log_level 3: a broker that is still starting is expected here, not worth a line per retry.
    return AdminClient(
        {"bootstrap.servers": bootstrap, "log_level": 3, "socket.connection.setup.timeout.ms": 2000}
    )


def metadata_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request now."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:  # a refused connect is "not yet", without librdkafka logging a line per retry
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
        metadata = _admin(bootstrap).list_topics(timeout=timeout_s)
    except OSError:
        return False
    except confluent_kafka.KafkaException:
        return False
    return bool(metadata.brokers)


def wait_ready(bootstrap: str, timeout_s: float, alive: object = None) -> None:
    """Block until the broker answers; ``TimeoutError`` after ``timeout_s``.

    ``alive``: a ``subprocess.Popen`` to watch, so a broker that died fails at once, not at the deadline.
    """
    deadline = time.monotonic() + timeout_s
    while not metadata_answers(bootstrap):
        if isinstance(alive, subprocess.Popen) and alive.poll() is not None:
            raise RuntimeError(f"the Kafka broker exited with {alive.returncode}")
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"Kafka at {bootstrap} did not answer a metadata request within {timeout_s:g}s"
            )
        time.sleep(0.2)


class KafkaBroker:
    """A single-node KRaft broker on free loopback ports; started by the constructor."""

    def __init__(self, data_dir: Path | None = None, *, metrics_port: int | None = None) -> None:
        self._owned_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="kafka-")) if data_dir is None else data_dir
        self.port = free_port()
        self.controller_port = free_port()
        self.metrics_port = metrics_port or 0
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = self.data_dir / "broker.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start (or restart, same ports and data) and return once it answers metadata requests."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError("the broker is already running")
        argv = [str(launcher()), "--data-dir", str(self.data_dir), "--port", str(self.port)]
        argv += ["--controller-port", str(self.controller_port), "--metrics-port", str(self.metrics_port)]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_stop_with_parent,
            )
        try:
            wait_ready(self.bootstrap, timeout_s, alive=self._proc)
        except BaseException as exc:
            self.kill()
            raise RuntimeError(f"{exc}; its log:\n{self.output[-4000:]}") from None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the broker (SIGKILL: a crash, no clean shutdown) and wait until it is gone."""
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: the broker flushes and closes its logs)."""
        self.kill(signal.SIGTERM)

    def create_topic(self, name: str, partitions: int, timeout_s: float = 30.0, **config: str) -> None:
        admin = _admin(self.bootstrap)  # kept referenced until the futures resolve
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)],
            operation_timeout=timeout_s,
        )
        futures[name].result(timeout_s)

    def delete_topic(self, name: str, timeout_s: float = 30.0) -> None:
        """Delete a topic and wait until the broker no longer lists it."""
        admin = _admin(self.bootstrap)
        admin.delete_topics([name], operation_timeout=timeout_s)[name].result(timeout_s)
        deadline = time.monotonic() + timeout_s
        while name in admin.list_topics(timeout=5).topics:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topic {name} still listed {timeout_s:g}s after its deletion")
            time.sleep(0.1)

    def close(self) -> None:
        self.stop()
        if self._owned_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_topic(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0
) -> list[confluent_kafka.Message]:
    """Everything in ``topic`` (at least ``expected`` messages, or whatever arrived by the deadline).

    Blocking: call it through ``asyncio.to_thread`` from a test whose loop runs a consumer."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 4,
        }
    )
    consumer.subscribe([topic])
    got: list[confluent_kafka.Message] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(msg)
        # Whatever else is already there (a duplicate would show up here).
        while (msg := consumer.poll(0.5)) is not None:
            if msg.error() is None:
                got.append(msg)
    finally:
        consumer.close()
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description="wait until a Kafka broker answers a metadata request")
    parser.add_argument("command", choices=["wait"])
    parser.add_argument("bootstrap")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    try:
        wait_ready(args.bootstrap, args.timeout)
    except TimeoutError as exc:
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    main()
