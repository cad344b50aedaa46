"""The gateway's HAR export over real captures: HTTP/1, HTTP/2, gRPC and WebSocket calls stored
through NATS come back from `/api/export.har` as one HAR 1.2 document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.helpers.har import assert_valid_har
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.helpers.pcaps import needs_pcaps, pcap
from tests.integration.test_gateway_api import make_gateway, wait_stored
from tests.integration.test_store_writer import publish
from tests.unit.dissector.pcaps import read_columns
from wiretide.common.har import is_http
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

CAPTURES = (
    "http1.1/arkime_http-content-gzip.pcap",
    "http2/arkime_http2-nghttp2.pcap",
    "grpc/deepflow_grpc-server-stream.pcap",
    "websocket/suricata_basic_websockets.pcap",
    "dns/zeek_mdns.pcap",  # not HTTP: stored, left out of the HAR
)


def dissected() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rel in CAPTURES:
        p = Pipeline(default_registry(), source="pcap")
        out += p.feed(read_columns(pcap(rel))) + p.finish()
    return out


@needs_pcaps
async def test_export_har_of_real_captures_is_har_1_2_with_every_http_call(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    docs = dissected()
    gw = make_gateway(nats_server.url, tmp_path)
    async with running(gw):
        await publish(nats_server.url, [docs])
        await wait_stored(gw, len(docs))
        async with httpx.AsyncClient() as c:
            r = await c.get(f"http://{gw.gs.gateway_http}/api/export.har")
            only_grpc = (
                await c.get(f"http://{gw.gs.gateway_http}/api/export.har", params={"q": "grpc"})
            ).json()
    assert r.status_code == 200 and "wiretide.har" in r.headers["content-disposition"]
    doc = r.json()
    assert_valid_har(doc)
    assert_valid_har(only_grpc)
    entries = doc["log"]["entries"]
    http = [d for d in docs if is_http(d["protocol"])]
    assert sorted(e["_id"] for e in entries) == sorted(d["id"] for d in http)
    assert {e["_protocol"] for e in entries} == {"http", "http2", "grpc"}
    assert {e["request"]["httpVersion"] for e in entries} == {"HTTP/1.1", "HTTP/2.0"}
    gzipped = [e for e in entries if "compression" in e["response"]["content"]]
    assert gzipped and all(e["response"]["content"]["compression"] > 0 for e in gzipped)
    (upgrade,) = [e for e in entries if e["response"]["status"] == 101]
    assert len(upgrade["_webSocketMessages"]) == sum(d["protocol"] == "ws" for d in docs)
    assert [e["_protocol"] for e in only_grpc["log"]["entries"]] == ["grpc"]
