"""A full disk under a running recording: the gateway keeps serving, the run counts `disk_full` and
writes nothing half (a cut that cannot be written whole is undone), and once space is back the next
cut takes up where the run stood — the bundle holds every entry exactly once. The recordings live on
a small tmpfs filled to its last byte (tests/helpers/disk.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers.disk import fill, tmpfs
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.helpers.netns import is_root
from tests.helpers.wait import wait_for_async
from tests.integration.test_gateway_api import make_gateway, wait_stored
from tests.integration.test_record_jobs import FAST, absent_peers, job, recent
from tests.integration.test_store_writer import publish
from wiretide.gateway.recording.bundle import ENTRIES, open_bundle


@pytest.mark.skipif(not is_root(), reason="needs root (mounts a tmpfs)")
async def test_a_full_disk_is_counted_undone_and_caught_up_when_space_returns(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "small", 4) as disk:
        gw = make_gateway(
            nats_server.url, tmp_path / "data", WIRETIDE_RECORDING_DIR=str(disk), **FAST, **absent_peers()
        )
        async with running(gw), httpx.AsyncClient(timeout=30) as client:
            base = f"http://{gw.gs.gateway_http}"
            docs = recent(400, seed=21)
            await publish(nats_server.url, [docs[i : i + 100] for i in range(0, 400, 100)])
            await wait_stored(gw, 400)
            ballast = fill(disk)
            made = await client.post(
                f"{base}/api/recordings", json={"name": "full", "duration_s": 600, "preceding_s": 60}
            )
            assert made.status_code == 201, made.text
            stuck = await wait_for_async(
                "the run counts the full disk",
                lambda: job(client, base, "full"),
                lambda j: bool(j["runs"]) and j["runs"][0]["drops"].get("disk_full", 0) >= 2,
            )
            run = stuck["runs"][0]
            assert run["entries"] == 0 and run["state"] == "recording"
            assert any("disk full" in e for e in run["errors"]), run["errors"]
            written = disk / "runs" / run["id"] / ENTRIES
            assert not written.exists() or written.stat().st_size == 0  # nothing half-written
            health = (await client.get(f"{base}/api/health")).json()
            assert health["recordings"]["counters"]["disk_full"] >= 2 and health["store"]["writing"]

            ballast.unlink()
            await wait_for_async(
                "the run caught up",
                lambda: job(client, base, "full"),
                lambda j: j["runs"][0]["entries"] == len(docs),
            )
            assert (await client.post(f"{base}/api/recordings/full/stop")).status_code == 200
            done = await wait_for_async(
                "the run is a bundle",
                lambda: job(client, base, "full"),
                lambda j: j["runs"][0]["state"] == "done",
            )
            got = await client.get(f"{base}/api/recordings/full/runs/{done['runs'][0]['id']}/bundle")
            assert got.status_code == 200
            (tmp_path / "full.tar.gz").write_bytes(got.content)
            ids = [e["id"] for e in open_bundle(tmp_path / "full.tar.gz", tmp_path / "opened").entries()]
            assert sorted(ids) == sorted(d["id"] for d in docs) and len(set(ids)) == len(ids)
