"""Two gateway processes share the jobs: exactly one runs them (the holder of the lease in JetStream
KV), either answers for every run — a bundle kept by the other is fetched through it — and when the
holder is killed, the other takes the lease over and finishes its running recording, collected again
from the shared store. The replicas share a MongoDB store, served here by nx-27017 (see README)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import nats
from pymongo import MongoClient

from tests.helpers.mongo import WireMongo
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.services import ServiceProcess
from tests.helpers.wait import wait_for, wait_for_async
from tests.integration.test_record_jobs import recent
from tests.integration.test_store_writer import publish
from wiretide.gateway.recording.bundle import open_bundle
from wiretide.gateway.recording.lease import Lease, open_bucket

TTL_S = 3.0  # the lease: a killed holder is replaced within this


def health(base: str) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{base}/api/health", timeout=10).json()["recordings"]
    return doc


def job(base: str, name: str) -> dict[str, Any]:
    answer = httpx.get(f"{base}/api/recordings/{name}", timeout=10)
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


def test_one_replica_runs_the_jobs_either_answers_and_the_other_takes_over_when_it_dies(
    nats_server: NatsServer, spawn: Any, tmp_path: Path
) -> None:
    mongo = WireMongo(tmp_path / "mongo")
    mongo.start()
    try:
        bases: list[str] = []
        gws: list[ServiceProcess] = []
        for i in range(2):
            http = f"127.0.0.1:{free_port()}"
            gws.append(
                spawn(
                    "gateway",
                    nats_server.url,
                    WIRETIDE_DATA_DIR=str(tmp_path / f"gw{i}"),
                    WIRETIDE_GATEWAY_MONGO_URL=mongo.url,
                    WIRETIDE_GATEWAY_HTTP=http,
                    WIRETIDE_RECORDING_CUT_S="0.5",
                    WIRETIDE_RECORDING_LAG_S="0",
                    WIRETIDE_RECORDING_LEASE_TTL_S=str(TTL_S),
                    WIRETIDE_CAPTURE_GRPC=f"127.0.0.1:{free_port()}",  # absent: counted in each run
                    WIRETIDE_RESOLVER_GRPC=f"127.0.0.1:{free_port()}",
                )
            )
            gws[-1].wait_health("SERVING")
            bases.append(f"http://{http}")
        states = wait_for(
            "one replica runs the jobs and both name it",
            lambda: [health(b) for b in bases],
            lambda hs: (
                sorted(h["running_jobs"] for h in hs) == [False, True]
                and hs[0]["jobs_run_by"] == hs[1]["jobs_run_by"] != ""
            ),
        )
        holder = next(i for i, h in enumerate(states) if h["running_jobs"])
        other = 1 - holder
        docs = recent(300, seed=11)
        asyncio.run(publish(nats_server.url, [docs[i : i + 100] for i in range(0, 300, 100)]))
        expected = sorted(d["id"] for d in docs if d["dst"]["namespace"] == "shop")
        client: MongoClient[dict[str, Any]] = MongoClient(mongo.url)
        wait_for(
            "the entries are stored",
            lambda: client["wiretide"]["entries"].count_documents({}),
            lambda n: n >= len(docs),
        )
        client.close()
        wanted = {"filter": 'dst.namespace == "shop"', "duration_s": 600, "preceding_s": 60}

        # A job made through the replica that does not run jobs is run by the one that does; its run,
        # listed by either, becomes a bundle the other replica serves by fetching it from the holder.
        made = httpx.post(f"{bases[other]}/api/recordings", json={"name": "first", **wanted}, timeout=30)
        assert made.status_code == 201, made.text
        wait_for(
            "the holder collected every matching entry (seen through the other replica)",
            lambda: job(bases[other], "first")["runs"],
            lambda runs: bool(runs) and runs[0]["entries"] == len(expected),
        )
        assert job(bases[other], "first")["runs"][0]["replica"] == states[holder]["replica"]
        assert httpx.post(f"{bases[other]}/api/recordings/first/stop", timeout=30).status_code == 200
        run = wait_for(
            "the run is a bundle",
            lambda: job(bases[other], "first")["runs"][0],
            lambda r: r["state"] == "done" and r["bundle"],
        )
        fetched = httpx.get(f"{bases[other]}/api/recordings/first/runs/{run['id']}/bundle", timeout=60)
        assert fetched.status_code == 200, fetched.text
        (tmp_path / "first.tar.gz").write_bytes(fetched.content)
        assert sorted(e["id"] for e in open_bundle(tmp_path / "first.tar.gz", tmp_path / "o1").entries()) == (
            expected
        )

        # The holder dies mid-recording: the other takes the lease over and finishes the run.
        made = httpx.post(f"{bases[other]}/api/recordings", json={"name": "second", **wanted}, timeout=30)
        assert made.status_code == 201, made.text
        wait_for(
            "the holder is recording the second job",
            lambda: job(bases[other], "second")["runs"],
            lambda runs: bool(runs) and runs[0]["entries"] == len(expected),
        )
        gws[holder].kill()
        wait_for(
            "the surviving replica took the lease over",
            lambda: health(bases[other]),
            lambda h: h["running_jobs"] and h["jobs_run_by"] == h["replica"],
            timeout=60,
        )
        resumed = wait_for(
            "the survivor collected the run again from the shared store",
            lambda: job(bases[other], "second")["runs"][0],
            lambda r: r["replica"] == states[other]["replica"] and r["entries"] == len(expected),
        )
        assert resumed["drops"]["handovers"] == 1 and resumed["state"] == "recording"
        assert httpx.post(f"{bases[other]}/api/recordings/second/stop", timeout=30).status_code == 200
        run = wait_for(
            "the taken-over run is a bundle",
            lambda: job(bases[other], "second")["runs"][0],
            lambda r: r["state"] == "done" and r["bundle"],
        )
        fetched = httpx.get(f"{bases[other]}/api/recordings/second/runs/{run['id']}/bundle", timeout=60)
        assert fetched.status_code == 200, fetched.text
        (tmp_path / "second.tar.gz").write_bytes(fetched.content)
        got = sorted(e["id"] for e in open_bundle(tmp_path / "second.tar.gz", tmp_path / "o2").entries())
        assert got == expected
        # The first bundle stays listed; its replica is gone, which its download says.
        first = job(bases[other], "first")["runs"][0]["id"]
        gone = httpx.get(f"{bases[other]}/api/recordings/first/runs/{first}/bundle", timeout=60)
        assert gone.status_code == 502 and "unreachable" in gone.json()["error"]
    finally:
        mongo.stop()


async def test_the_lease_passes_on_when_its_holder_stops_or_stops_renewing(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        kv = await open_bucket(nc.jetstream(), ttl_s=1.0)
        seen: list[tuple[str, bool]] = []

        def lease(name: str) -> Lease:
            async def changed(held: bool) -> None:
                seen.append((name, held))

            return Lease(kv, name, f"http://{name}", changed, ttl_s=1.0)

        a, b = lease("a"), lease("b")
        await a.step()
        await b.step()
        assert a.held and not b.held and b.holder["replica"] == "a"
        await a.step()  # a renewal keeps it
        await b.step()
        assert a.held and not b.held

        async def b_tries() -> bool:
            await b.step()
            return b.held

        await wait_for_async("b takes the lease a stopped renewing", b_tries)
        await a.step()  # a's next renewal is refused: it knows it lost the lease
        assert not a.held
        await b.stop()  # a clean stop hands the lease on at the next try
        await a.step()
        assert a.held and seen == [("a", True), ("b", True), ("a", False), ("b", False), ("a", True)]
    finally:
        await nc.close()
