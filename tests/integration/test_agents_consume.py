"""The agents service's consumption over a real nats-server: with no agent that wants
onItemCaptured, entries are counted off their batches and acknowledged without any entry decoded;
an agent deployed later is handed the entries that arrive from then on."""

from __future__ import annotations

from typing import Any

import nats
import orjson
import pytest

from tests.helpers.entries import entries
from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from tests.integration.test_agents_service import agents, logs, put
from wiretide.agents.hooks import ON_ITEM_CAPTURED
from wiretide.common.bus import entries_subject
from wiretide.common.bus.connection import ensure_stream
from wiretide.common.bus.entries import encode_entries
from wiretide.common.bus.subjects import ENTRIES_STREAM

COUNT = """
var n = 0;
function onItemCaptured(entry) { n += 1; console.log("seen " + entry.id + " " + n); }
"""


async def publish(url: str, docs: list[dict[str, Any]], seq: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_stream(js, ENTRIES_STREAM)
    for i in range(0, len(docs), 25):
        await js.publish(entries_subject("node-a"), encode_entries(docs[i : i + 25], "node-a", "t", seq + i))
    await nc.close()


async def test_without_an_agent_entries_are_counted_and_acknowledged_undecoded_until_one_is_deployed(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    loads = orjson.loads

    def counting(data: Any) -> Any:
        decoded.append(1)
        return loads(data)

    docs = entries(120, seed=21)
    later = entries(30, seed=22)
    async with agents(nats_server.url) as (svc, stub):
        monkeypatch.setattr(orjson, "loads", counting)  # every JSON decode in this process, from now on
        await publish(nats_server.url, docs, 1)
        await wait_for_async("every entry counted", lambda: svc.entries_in, lambda n: n == len(docs))
        assert decoded == []
        info = await wait_for_async(
            "every message acknowledged",
            svc._sub.consumer_info,
            lambda info: info.num_ack_pending == 0 and info.num_pending == 0,
        )
        assert info.num_redelivered == 0
        assert (await put(stub, "count", COUNT)).stored
        # Stored is not yet loaded: each replica loads it from the store's watch.
        await wait_for_async("the agent loaded", lambda: svc.runtime.wants(ON_ITEM_CAPTURED), bool)
        await publish(nats_server.url, later, 1_000)
        lines = await wait_for_async(
            "the deployed agent saw the later entries",
            lambda: logs(stub, "count"),
            lambda got: sum(1 for line in got if line.startswith("seen ")) >= len(later),
        )
        assert {line.split()[1] for line in lines if line.startswith("seen ")} == {d["id"] for d in later}
        assert len(decoded) >= len(later)
        assert svc.entries_in == len(docs) + len(later)
