"""A Kafka-protocol broker on loopback: librdkafka's mock cluster, driven through ctypes.

No Kafka broker is installable here, but the librdkafka inside the confluent-kafka wheel carries the
mock cluster its own test suite uses (public API in ``rdkafka_mock.h``). The mock has no CreateTopics
API, so topics are made here: at launch (``--topic name:partitions``) or, with ``--control``, one per
stdin line ``name:partitions`` (answered ``ok name`` on stdout; stdin EOF stops the cluster, so a
test session that dies takes its broker with it). The control lines ``down:<broker id>`` and
``up:<broker id>`` take a broker off the network and back (its connections drop, new ones are
refused, its data stays): a broker outage. The mock keeps ~5 MiB per partition: give big runs
enough partitions.

    uv run python deploy/local/kafka_mock.py --brokers 1 --topic events:16 --topic events.dlq:4 \
        --bootstrap-file /tmp/asyncstack/kafka.bootstrap

Runs until SIGTERM/SIGINT, then destroys the cluster and removes the bootstrap file.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

import confluent_kafka

RD_KAFKA_PRODUCER = 0


def load_librdkafka() -> ctypes.CDLL:
    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if not found:
        raise SystemExit(f"no librdkafka in {libs}")
    lib = ctypes.CDLL(str(found[0]))
    p, s, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for name, restype, argtypes in [
        ("rd_kafka_conf_new", p, []),
        ("rd_kafka_conf_set", i, [p, s, s, s, ctypes.c_size_t]),
        ("rd_kafka_new", p, [i, p, s, ctypes.c_size_t]),
        ("rd_kafka_destroy", None, [p]),
        ("rd_kafka_mock_cluster_new", p, [p, i]),
        ("rd_kafka_mock_cluster_destroy", None, [p]),
        ("rd_kafka_mock_cluster_bootstraps", s, [p]),
        ("rd_kafka_mock_topic_create", i, [p, s, i, i]),
        ("rd_kafka_mock_broker_set_down", i, [p, ctypes.c_int32]),
        ("rd_kafka_mock_broker_set_up", i, [p, ctypes.c_int32]),
    ]:
        getattr(lib, name).restype = restype
        getattr(lib, name).argtypes = argtypes
    return lib


def topic_spec(text: str) -> tuple[str, int]:
    name, _, partitions = text.strip().partition(":")
    return name, int(partitions or 1)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".kafka-bootstrap-")
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", type=int, default=1)
    parser.add_argument("--topic", type=topic_spec, action="append", default=[], help="name:partitions")
    parser.add_argument("--bootstrap-file", type=Path)
    parser.add_argument("--control", action="store_true", help="create topics named on stdin")
    args = parser.parse_args()

    # Block the stop signals before librdkafka starts its threads (they inherit the mask), so only
    # sigwait below receives them and the cluster is always torn down.
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    lib = load_librdkafka()
    errstr = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    # The handle only hosts the cluster and never connects anywhere: its "no bootstrap" notice is noise.
    lib.rd_kafka_conf_set(conf, b"log_level", b"4", errstr, len(errstr))
    rk = lib.rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, len(errstr))
    if not rk:
        raise SystemExit(f"rd_kafka_new: {errstr.value.decode()}")
    cluster = lib.rd_kafka_mock_cluster_new(rk, args.brokers)
    if not cluster:
        raise SystemExit("rd_kafka_mock_cluster_new failed")

    def create(name: str, partitions: int) -> int:
        return int(lib.rd_kafka_mock_topic_create(cluster, name.encode(), partitions, min(args.brokers, 3)))

    for name, partitions in args.topic:
        if err := create(name, partitions):
            raise SystemExit(f"creating topic {name}: rd_kafka_resp_err {err}")
    bootstrap = lib.rd_kafka_mock_cluster_bootstraps(cluster).decode()
    if args.bootstrap_file:
        write_atomically(args.bootstrap_file, bootstrap)
    print(bootstrap, flush=True)

    def control(line: str) -> tuple[str, int]:
        """``(what, error)`` for one control line: a topic to create, or a broker to take down or up."""
        name, partitions = topic_spec(line)
        if name in ("down", "up"):
            broker_id, set_state = partitions, getattr(lib, f"rd_kafka_mock_broker_set_{name}")
            return f"{name}:{broker_id}", int(set_state(cluster, broker_id))
        return name, create(name, partitions) if name and partitions > 0 else -1

    def serve_control() -> None:
        for line in sys.stdin:
            try:
                name, err = control(line)
            except ValueError:
                name, err = line.strip(), -1
            print(f"error {name} {err}" if err else f"ok {name}", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    if args.control:
        threading.Thread(target=serve_control, daemon=True).start()
    signal.sigwait(stop)
    if args.bootstrap_file:
        args.bootstrap_file.unlink(missing_ok=True)
    lib.rd_kafka_mock_cluster_destroy(cluster)
    lib.rd_kafka_destroy(rk)


if __name__ == "__main__":
    main()
