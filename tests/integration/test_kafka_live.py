"""Live Kafka traffic from a real client library: confluent-kafka (librdkafka) producing and consuming
against librdkafka's built-in mock cluster (`test.mock.num.brokers`), which speaks the real Kafka wire
protocol on loopback — no Kafka broker runs here. The client runs inside a network namespace of its
own, tcpdump captures that namespace's `lo`, and the capture is dissected offline: the entries must
equal what the clients themselves did (topics, record counts, keys and values, the consumer group's
calls), for every compression codec the client offers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import NetPair, veth_pair
from tests.helpers.tcpdump import Watched, dissect, tcpdump_argv

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace and tcpdump"),
]
confluent_kafka = pytest.importorskip("confluent_kafka", reason="confluent-kafka (dev group) not installed")

READY_TIMEOUT_S = 15.0
RECORDS = 5
CAPTURE_ATTEMPTS = 3

# Producer and consumer in one process: the producer's mock cluster is the consumer's bootstrap.
CLIENT = """
import json, sys, time
from confluent_kafka import Consumer, Producer

codec, n = sys.argv[1], int(sys.argv[2])
topic = "orders-" + codec
p = Producer({"test.mock.num.brokers": 1, "client.id": "wt-producer", "compression.type": codec,
              "linger.ms": 50, "log_level": 0})
broker = next(iter(p.list_topics(timeout=10).brokers.values()))
sent = []
for i in range(n):
    p.produce(topic, key=f"k{i}", value=f"order {i} " + "x" * 40, headers=[("source", b"live-test")],
              partition=0)
    sent.append([f"k{i}", f"order {i} " + "x" * 40])
assert p.flush(10) == 0
c = Consumer({"bootstrap.servers": f"{broker.host}:{broker.port}", "group.id": "billing",
              "client.id": "wt-consumer", "auto.offset.reset": "earliest", "log_level": 0,
              "enable.auto.commit": False})
c.subscribe([topic])
got = []
deadline = time.monotonic() + 30
while len(got) < n and time.monotonic() < deadline:
    m = c.poll(0.2)
    if m is not None and not m.error():
        got.append([m.key().decode(), m.value().decode()])
c.commit(asynchronous=False)
c.close()
print(json.dumps({"topic": topic, "sent": sent, "got": got}), flush=True)
"""


@pytest.fixture
def pair() -> Iterator[NetPair]:
    with veth_pair(subnet="10.78.0") as p:
        yield p


def capture_client(pair: NetPair, tmp: Path, codec: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the client in namespace a with tcpdump on its `lo`; (what the client did, the entries).
    A capture that lost packets (tcpdump counts what the kernel dropped on a loaded machine) is not
    the traffic the clients made: the run is repeated, a bounded number of times."""
    for attempt in range(CAPTURE_ATTEMPTS):
        record, entries, dropped = _capture_once(pair, tmp / f"kafka-{codec}-{attempt}.pcap", codec)
        if not dropped:
            return record, entries
    raise AssertionError(f"every capture lost packets ({dropped} dropped in the last one)")


def _capture_once(pair: NetPair, pcap: Path, codec: str) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    dump = Watched(
        pair.popen(
            pair.ns_a,
            tcpdump_argv("lo", pcap, "tcp", buffer_kib=8192),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
    )
    try:
        dump.wait_for(b"listening on", READY_TIMEOUT_S)
        done = pair.run(
            pair.ns_a,
            [sys.executable, "-c", CLIENT, codec, str(RECORDS)],
            capture_output=True,
            timeout=120,
            check=False,
        )
    finally:
        dump.stop()
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    record = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return record, dissect(pcap), dump.dropped()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_a_producer_and_a_consumer_group_against_the_mock_cluster_become_kafka_entries(
    pair: NetPair, tmp_path: Path, codec: str
) -> None:
    record, entries = capture_client(pair, tmp_path, codec)
    topic = record["topic"]
    assert sorted(record["got"]) == sorted(record["sent"])  # the clients' own account
    kafka = [e for e in entries if e["protocol"] == "kafka"]
    assert kafka and all(e["protocol"] == "kafka" for e in entries if e["transport"] == "tcp")
    methods = {e["method"] for e in kafka}
    # The calls a producer and a consumer group make, each named.
    named = {"ApiVersions", "Metadata", "Produce", "FindCoordinator", "JoinGroup", "SyncGroup", "Fetch",
             "OffsetCommit"}  # fmt: skip
    assert named <= methods, " ".join(f"{e['src']['port']}:{e['method']}" for e in entries)
    # Every response found its request. The only errors are requests the clients' close cut short
    # (a long-polling Fetch, a background Metadata or coordinator query): never a dissection error,
    # never a call the clients waited for.
    cut_short = [e for e in kafka if e["error"]]
    assert all(e["response"] is None and e["error"]["type"] == "unmatched" for e in cut_short)
    assert not {e["method"] for e in cut_short} & {"Produce", "JoinGroup", "SyncGroup", "OffsetCommit"}
    produced = [e for e in kafka if e["method"] == "Produce" and e["path"] == topic]
    assert sum(e["request"]["topics"][0]["partitions"][0]["record_count"] for e in produced) == RECORDS
    assert all(e["status"] == 0 for e in produced)
    keys_values = [
        [r["key"], r["value"]]
        for e in produced
        for r in e["request"]["topics"][0]["partitions"][0].get("records", [])
    ]
    assert keys_values == record["sent"]
    headers = produced[0]["request"]["topics"][0]["partitions"][0]["records"][0]["headers"]
    assert headers == [{"key": "source", "value": "live-test"}]
    assert produced[0]["request"]["topics"][0]["partitions"][0]["compression"] == codec
    assert produced[0]["summary"].startswith(f"Produce {topic} (")
    fetched = [
        [r["key"], r["value"]]
        for e in kafka
        if e["method"] == "Fetch" and e["response"] and e["path"] == topic
        for t in e["response"].get("topics") or ()
        for part in t.get("partitions") or ()
        for r in part.get("records", ())
    ]
    assert sorted(fetched) == sorted(record["sent"])
    (join, *_) = [e for e in kafka if e["method"] == "JoinGroup" and e["status"] == 0]
    assert join["path"] == "billing" and join["request"]["client_id"] == "wt-consumer"
    commits = [e for e in kafka if e["method"] == "OffsetCommit"]
    assert commits and commits[-1]["path"] == topic and commits[-1]["status"] == 0
    assert commits[-1]["request"]["topics"][0]["partitions"][0]["committed_offset"] == RECORDS
