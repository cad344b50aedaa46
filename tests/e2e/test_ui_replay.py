"""The UI over real traffic: a recorded capture replayed through the whole running stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import shot
from tests.helpers.pcaps import PCAPS, require_pcaps
from tests.helpers.stack import Stack, merged_capture

FILES = [
    PCAPS / "http1.1" / "zeek_pipelined-requests.pcap",
    PCAPS / "http1.0" / "zeek_web.pcap",
    PCAPS / "dns" / "suricata_dns-udp-google.com-a-aaaa-mx.pcap",
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_pcaps(*FILES)
    tmp = tmp_path_factory.mktemp("ui-replay")
    s = Stack(tmp / "wt", pcap=merged_capture(tmp, FILES))
    try:
        s.wait_up()
        s.wait_entries(10)
        yield s
    finally:
        s.stop()


def test_filtering_replayed_traffic_shows_what_the_api_answers(page: Any, stack: Stack) -> None:
    page.goto(stack.base + "/")
    page.wait_for_selector("#rows .row")
    page.fill("#kfl", 'http && path.endsWith(".png")')
    page.press("#kfl", "Enter")
    want = [e["id"] for e in stack.entries('http && path.endsWith(".png")')]
    assert want
    page.wait_for_function("n => document.querySelectorAll('#rows .row').length === n", arg=len(want))
    assert page.eval_on_selector_all("#rows .row", "r => r.map(x => x.dataset.id)") == want
    page.click("#rows .row >> nth=0 >> span >> nth=0")
    page.wait_for_selector("#detail h2")
    entry = httpx.get(f"{stack.base}/api/entries/{want[0]}").json()
    detail = page.inner_text("#detail")
    assert entry["request"]["headers"]["host"] in detail
    assert entry["path"] in detail
    shot(page, "ui-replay-detail")


def test_the_status_bar_shows_every_service_serving(page: Any, stack: Stack) -> None:
    page.goto(stack.base + "/")
    page.wait_for_selector("#status .pill")
    pills = page.eval_on_selector_all("#status .pill.ok", "p => p.map(x => x.textContent)")
    assert {"capture", "dissector", "resolver", "tracer", "agents", "gateway", "nats"} <= set(pills)
