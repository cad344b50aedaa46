"""Several gateway replicas share the durable consumer: every entry is stored once, and both work.

The replicas share a MongoDB store, served here by nx-27017 (MongoDB wire protocol; see README)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from tests.helpers.entries import entries
from tests.helpers.mongo import WireMongo
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.wait import wait_for
from tests.integration.test_store_writer import publish


def metric(port: int, name: str) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_two_replicas_split_the_work_without_duplicates(
    nats_server: NatsServer, spawn: Any, tmp_path: Path
) -> None:
    mongo = WireMongo(tmp_path / "mongo")
    mongo.start()
    try:
        ports = [free_port(), free_port()]
        gws = [
            spawn(
                "gateway",
                nats_server.url,
                WIRETIDE_GATEWAY_MONGO_URL=mongo.url,
                WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{free_port()}",
                WIRETIDE_GATEWAY_METRICS=f"127.0.0.1:{p}",
            )
            for p in ports
        ]
        for gw in gws:
            gw.wait_health("SERVING")
        docs = entries(4000, seed=8)
        asyncio.run(publish(nats_server.url, [docs[i : i + 50] for i in range(0, 4000, 50)]))
        client: MongoClient[dict[str, Any]] = MongoClient(mongo.url)
        coll = client["wiretide"]["entries"]
        wait_for("4000 entries in the store", lambda: coll.count_documents({}), lambda n: n >= 4000, 120)
        assert coll.count_documents({}) == 4000
        assert len({d["_id"] for d in coll.find({}, {"_id": 1})}) == 4000
        client.close()
        # A replica counts a batch after its write returns: the documents can be visible before the
        # counter moves, so wait for the counters too instead of reading them once.
        stored = wait_for(
            "the replicas' stored counters add up to 4000",
            lambda: [metric(p, "wiretide_gateway_entries_stored_total") for p in ports],
            lambda s: sum(s) >= 4000,
        )
        assert sum(stored) == 4000
        assert all(s > 0 for s in stored), f"one replica did all the work: {stored}"
    finally:
        mongo.stop()
