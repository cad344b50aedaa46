"""`record.start(name, filter, minutes)` from a real agent: the agents service runs a script that
starts a recording on the first server error it sees; the gateway (sharing the NATS server) runs the
job it stored — including the calls of the preceding minutes. A bad name throws in the script, a bad
filter or a name already recording rejects the promise, and neither stores a job."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from tests.integration.test_agents_service import agents, logs, put
from tests.integration.test_gateway_api import make_gateway, wait_stored
from tests.integration.test_record_jobs import FAST, absent_peers, job, recent
from tests.integration.test_store_writer import publish

AGENT = """
var asked = false;
function onItemCaptured(e) {
  if (asked || e.protocol !== "http" || !(e.status >= 500)) return;
  asked = true;
  try { record.start("no good", "", 1); } catch (err) { console.log("bad name:", err.message); }
  record.start("bad-filter", "status_code >=", 1).then(null, function (err) {
    console.log("bad filter:", String(err));
  });
  record.start("agent-5xx", "http && status_code >= 500", 5).then(function (j) {
    console.log("recording", j.name, j.origin, j.created_by, j.preceding_s);
    record.start("agent-5xx", "http", 1).then(null, function (err) { console.log("again:", String(err)); });
  }, function (err) { console.log("refused:", String(err)); });
}
"""


async def test_an_agent_starts_a_recording_that_takes_the_preceding_calls(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    gw = make_gateway(nats_server.url, tmp_path / "gw", **FAST, **absent_peers())
    async with running(gw), agents(nats_server.url, data_dir=tmp_path / "agents") as (_, stub):
        assert (await put(stub, "rec", AGENT)).stored
        docs = recent(300, seed=31)
        await publish(nats_server.url, [docs[i : i + 100] for i in range(0, 300, 100)])
        await wait_stored(gw, 300)
        lines = await wait_for_async(
            "the agent started a recording and was refused the rest",
            lambda: logs(stub, "rec"),
            lambda got: (
                any(line.startswith("again:") for line in got)
                and any(line.startswith("bad filter:") for line in got)
            ),
        )
        assert "recording agent-5xx agent agent:rec 300" in lines, lines
        assert any(line.startswith("bad name:") and "letters, digits" in line for line in lines), lines
        assert any("already scheduled or running" in line for line in lines if line.startswith("again:")), (
            lines
        )
        expected = sorted(d["id"] for d in docs if d["protocol"] == "http" and d["status"] >= 500)
        async with httpx.AsyncClient(timeout=30) as client:
            base = f"http://{gw.gs.gateway_http}"
            listed = (await client.get(f"{base}/api/recordings")).json()["recordings"]
            assert [j["name"] for j in listed] == ["agent-5xx"]  # nothing stored for the refused calls
            j = await wait_for_async(
                "the gateway ran the agent's job, with the calls that preceded it",
                lambda: job(client, base, "agent-5xx"),
                lambda j: bool(j["runs"]) and j["runs"][0]["entries"] == len(expected),
            )
            assert j["origin"] == "agent" and j["duration_s"] == 300 and j["state"] == "recording"
            assert all(d["timestamp"] < j["created_ns"] for d in docs)  # every call preceded the job
