"""Live MongoDB wire traffic on loopback: `pymongo` against nx-27017, the MongoDB-wire stand-in the
gateway's tests use (no mongod runs on these machines; nx-27017 speaks the real wire protocol, OP_MSG),
captured by tcpdump on `lo` and dissected offline. The entries are what the client did — an insert, a
find, an aggregate and a failing aggregate (`ok: 0`) — and their count equals tshark's."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.mongo import WireMongo
from tests.helpers.tcpdump import dissect, loopback_capture
from tests.helpers.wait import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to capture on lo with tcpdump"),
    pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed"),
]


def test_pymongo_against_the_wire_stand_in_becomes_mongodb_entries(tmp_path: Path) -> None:
    pymongo = pytest.importorskip("pymongo")
    server = WireMongo(tmp_path / "mongo")
    server.start()
    out = tmp_path / "mongo.pcap"
    try:
        with loopback_capture(out, server.port):
            client = pymongo.MongoClient(server.url, serverSelectionTimeoutMS=5000)
            orders = client.shop.orders
            orders.insert_one({"sku": "a", "qty": 2})
            assert len(list(orders.find({"sku": "a"}))) == 1
            assert len(list(orders.aggregate([{"$match": {"qty": {"$gt": 1}}}]))) == 1
            with pytest.raises(pymongo.errors.OperationFailure):
                list(orders.aggregate([{"$bogus": 1}]))
            client.close()
            wait_for(  # every exchange written out (-U flushes per packet) before tcpdump stops
                "the failed aggregate's reply in the capture",
                lambda: [d["status"] for d in dissect(out) if d["protocol"] == "mongodb"].count(-1) == 1,
                timeout=10,
            )
    finally:
        server.stop()
    docs = [d for d in dissect(out) if d["protocol"] == "mongodb"]
    shop = [(d["method"], d["path"], d["status"]) for d in docs if d["path"] == "shop.orders"]
    assert shop == [
        ("insert", "shop.orders", 0), ("find", "shop.orders", 0),
        ("aggregate", "shop.orders", 0), ("aggregate", "shop.orders", -1),
    ]  # fmt: skip
    by_method = {d["method"]: d for d in docs if d["path"] == "shop.orders" and d["status"] == 0}
    assert by_method["insert"]["response"]["n"] == 1
    assert (
        by_method["find"]["request"]["filter"] == {"sku": "a"} and by_method["find"]["response"]["batch"] == 1
    )
    failed = docs[[d["status"] for d in docs].index(-1)]
    assert failed["error"]["type"] == "CommandFailed" and "$bogus" in failed["error"]["message"]
    assert all(d["error"] is None for d in docs if d["status"] == 0)
    if shutil.which("tshark"):
        fields = subprocess.run(
            ["tshark", "-r", str(out), "-d", f"tcp.port=={server.port},mongo", "-Y", "mongo",
             "-T", "fields", "-e", "mongo.opcode"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.split()  # fmt: skip
        assert len(fields) == 2 * len(docs)  # every request and reply, once
