"""From an entry to its trace: the gateway and the tracer run, entries carrying W3C trace context
arrive over NATS, the detail pane links to the trace and the waterfall shows its spans with how
they were linked."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import shot
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.services import ServiceProcess, service_env
from tests.integration.test_store_writer import publish
from wiretide.common.entry import UlidGenerator

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def end(name: str, ns: str, ip: str, port: int) -> dict[str, Any]:
    return {
        "ip": ip,
        "port": port,
        "name": name,
        "namespace": ns,
        "workload": {"kind": "Deployment", "name": name},
    }


def chain(propagate: bool = True, offset_ns: int = 0) -> list[dict[str, Any]]:
    """loadgen → frontend → api, the frontend propagating the trace context it received (or, without
    `propagate`, no context at all: linked by timing)."""
    gen = UlidGenerator()
    t0 = time.time_ns() + offset_ns
    loadgen, frontend = end("loadgen", "load", "10.9.0.30", 40000), end("frontend", "shop", "10.9.0.10", 8080)
    caller, api = end("frontend", "shop", "10.9.0.10", 41000), end("api", "shop", "10.9.0.11", 8080)
    calls = [
        (loadgen, frontend, "/", 0, 40_000_000, "00f067aa0ba902b7"),
        (caller, api, "/api/items" if propagate else "/api/stock", 5_000_000, 25_000_000, "53995c3f42cd8ad8"),
    ]
    out = []
    for src, dst, path, start, dur, span in calls:
        headers = {"host": dst["name"]}
        if propagate:
            headers["traceparent"] = f"00-{TRACE_ID}-{span}-01"
        out.append(
            {
                "id": gen.new(t0 + start), "node": "n1", "timestamp": t0 + start, "elapsed_us": dur // 1000,
                "protocol": "http", "version": "1.1", "transport": "tcp", "src": src, "dst": dst,
                "method": "GET", "path": path, "status": 200, "summary": f"GET {path} → 200",
                "request": {"method": "GET", "path": path, "url": path, "headers": headers},
                "response": {"status": 200, "reason": "OK", "headers": {}}, "error": None,
                "size": {"request": 100, "response": 200},
            }
        )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("traces")
    nats = NatsServer(tmp / "nats")
    nats.start()
    port = free_port()
    env = service_env(
        nats.url, tmp / "data", WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{port}", WIRETIDE_TRACER_WINDOW_S="0.5"
    )
    procs = [ServiceProcess(n, env, tmp / f"{n}.log") for n in ("gateway", "tracer")]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.wait_health("SERVING")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, publish(nats.url, [chain(), chain(False, 100_000_000)])).result()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = httpx.get(f"{base}/api/traces/{TRACE_ID}")
            if r.status_code == 200 and len(r.json()["spans"]) >= 2:
                break
            time.sleep(0.3)
        yield base
    finally:
        for p in procs:
            p.kill()
        nats.stop()


def test_an_entry_links_to_its_trace_and_the_waterfall_shows_the_spans(page: Any, stack: str) -> None:
    spans = httpx.get(f"{stack}/api/traces/{TRACE_ID}").json()["spans"]
    assert len(spans) >= 2 and all(s["trace_id"] == TRACE_ID for s in spans)
    page.goto(stack + "/?q=" + "path%20%3D%3D%20%22%2Fapi%2Fitems%22")
    page.wait_for_selector("#rows .row")
    page.click("#rows .row >> nth=0 >> span >> nth=0")
    page.wait_for_selector("#detail [data-act=trace]")
    assert TRACE_ID in page.inner_text("#detail")
    page.click("#detail [data-act=trace]")
    page.wait_for_selector("#trace .span-row")
    rows = page.eval_on_selector_all("#trace .span-row", "r => r.map(x => x.getAttribute('title'))")
    assert len(rows) == len(spans)
    assert all("link" in r for r in rows)
    assert "header" in " ".join(rows)
    shot(page, "ui-trace")


def test_traces_are_found_by_service_and_duration_and_a_span_opens_its_entry_and_the_map(
    page: Any, stack: str
) -> None:
    found = httpx.get(f"{stack}/api/traces", params={"service": "shop/api"}).json()["traces"]
    assert len(found) == 2  # the propagated trace and the one linked by timing
    timing_trace = next(t["trace_id"] for t in found if t["trace_id"] != TRACE_ID)
    page.goto(stack + "/")
    page.click(".tabs [data-view=trace]")
    page.fill("#trace-service", "shop/api")
    page.fill("#trace-min", "30ms")
    page.click("#trace-find")
    page.wait_for_selector(f"#trace-list [data-trace='{TRACE_ID}']")
    listed = page.eval_on_selector_all("#trace-list [data-trace]", "r => r.map(x => x.dataset.trace)")
    assert sorted(listed) == sorted(t["trace_id"] for t in found)
    page.fill("#trace-min", "1h")  # no trace is that long
    page.click("#trace-find")
    page.wait_for_selector("#trace-list >> text=No trace matches.")
    page.fill("#trace-min", "")
    page.click("#trace-find")
    # The timing-linked trace: its call's link kind and confidence are on the row.
    page.click(f"#trace-list [data-trace='{timing_trace}']")
    page.wait_for_selector("#trace .span-row [data-link=timing]")
    badge = page.eval_on_selector(
        "#trace [data-link=timing]", "b => [b.textContent, Number(b.dataset.confidence)]"
    )
    assert badge[0].startswith("timing 0.") and 0 < badge[1] < 1
    links = page.eval_on_selector_all("#trace [data-link]", "r => r.map(x => x.dataset.link)")
    assert sorted(links) == ["entry", "entry", "root", "timing"]
    # A span opens the entry it was made from.
    page.click("#trace .span-row:has([data-link=timing])")
    page.wait_for_selector("#trace-detail:not([hidden])")
    assert "/api/stock" in page.inner_text("#trace-detail")
    # The trace's services on the map, and a map node back to its traces.
    page.click("#trace-map")
    page.wait_for_selector("#map .node.hot")
    hot = page.eval_on_selector_all("#map .node.hot text", "r => r.map(x => x.textContent)")
    assert {"frontend", "api"} <= set(hot)
    page.click("#map .node:has(text:text-is('api'))")
    page.wait_for_selector("#view-trace.active #trace-list [data-trace]")
    assert page.input_value("#trace-service") == "shop/api"
    shot(page, "ui-trace-search")
