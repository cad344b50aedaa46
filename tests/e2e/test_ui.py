"""The web UI in headless Chromium against a running gateway: what the table shows is what the API
answers for the same KFL; the detail pane shows the entry; the live stream, the filter bar's
validation, click-to-filter, the service map and keyboard navigation work."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import shot
from tests.helpers.entries import entries
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.services import ServiceProcess, service_env
from tests.helpers.wait import wait_for
from tests.integration.test_store_writer import publish

DOCS = entries(400, seed=12)


def run_async(coro: Any) -> Any:
    """Run a coroutine to completion on its own thread (the browser driver owns this thread's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp: Path = tmp_path_factory.mktemp("ui")
    nats = NatsServer(tmp / "nats")
    nats.start()
    port = free_port()
    gw = ServiceProcess(
        "gateway",
        service_env(nats.url, tmp / "data", WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{port}"),
        tmp / "gw.log",
    )
    gw.start()
    try:
        gw.wait_health("SERVING")
        run_async(publish(nats.url, [DOCS[i : i + 100] for i in range(0, 400, 100)]))
        base = f"http://127.0.0.1:{port}"
        wait_for(
            "400 entries served",
            lambda: len(httpx.get(f"{base}/api/entries", params={"limit": 1000}).json()["entries"]),
            lambda n: n >= 400,
        )
        yield base, nats.url
    finally:
        gw.kill()
        nats.stop()


def api_ids(base: str, q: str) -> list[str]:
    return [
        e["id"] for e in httpx.get(f"{base}/api/entries", params={"q": q, "limit": 1000}).json()["entries"]
    ]


def table_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("#rows .row", "rows => rows.map(r => r.dataset.id)")


def test_a_typed_filter_shows_the_rows_the_api_answers(page: Any, ui: tuple[str, str]) -> None:
    base, _ = ui
    page.goto(base + "/")
    page.wait_for_selector("#rows .row")
    page.fill("#kfl", 'http && status_code >= 500 && dst.namespace == "payments"')
    page.press("#kfl", "Enter")
    want = api_ids(base, 'http && status_code >= 500 && dst.namespace == "payments"')
    assert want, "the data set should contain such entries"
    page.wait_for_function(
        "n => document.querySelectorAll('#rows .row').length === n", arg=min(len(want), 40)
    )
    shown = table_ids(page)
    assert shown == want[: len(shown)]
    assert "q=http" in page.url  # the query is in the URL, to share it
    statuses = page.eval_on_selector_all("#rows .row span:nth-child(7)", "c => c.map(x => x.textContent)")
    assert all(int(s) >= 500 for s in statuses)


def test_an_invalid_filter_is_highlighted_where_it_breaks(page: Any, ui: tuple[str, str]) -> None:
    base, _ = ui
    page.goto(base + "/")
    page.fill("#kfl", "http && status_code >= ")
    page.wait_for_selector("#kfl-error:not([hidden])")
    text = page.inner_text("#kfl-error")
    assert "^" in text and "expected" in text
    assert "invalid" in (page.get_attribute("#kfl", "class") or "")
    shot(page, "ui-invalid-filter")


def test_a_translated_filter_runs_and_shows_its_canonical_spelling_as_a_warning(
    page: Any, ui: tuple[str, str]
) -> None:
    base, _ = ui
    page.goto(base + "/")
    page.wait_for_selector("#rows .row")
    page.fill("#kfl", "http && status_code >= 500 && elapsed_time > 700ms")
    page.wait_for_selector("#kfl-error.warning:not([hidden])")
    assert 'duration("700ms")' in page.inner_text("#kfl-error")
    assert "invalid" not in (page.get_attribute("#kfl", "class") or "")
    page.press("#kfl", "Enter")
    want = api_ids(base, 'http && status_code >= 500 && elapsed_time > duration("700ms")')
    assert 0 < len(want) < 20, "the filter should select a few entries of the data set"
    page.wait_for_function("n => document.querySelectorAll('#rows .row').length === n", arg=len(want))
    assert table_ids(page) == want


def test_clicking_a_row_shows_its_headers_and_body_and_a_value_refines_the_filter(
    page: Any, ui: tuple[str, str]
) -> None:
    base, _ = ui
    page.goto(base + "/?q=" + "http%20%26%26%20method%20%3D%3D%20%22GET%22")
    page.wait_for_selector("#rows .row")
    first = table_ids(page)[0]
    entry = httpx.get(f"{base}/api/entries/{first}").json()
    page.click("#rows .row >> nth=0 >> span >> nth=0")
    page.wait_for_selector("#detail h2")
    detail = page.inner_text("#detail")
    assert entry["request"]["headers"]["user-agent"] in detail
    assert entry["path"] in detail
    shot(page, "ui-detail")
    page.click("#detail td.clickable >> text=curl/8")
    page.wait_for_function("() => document.querySelector('#kfl').value.includes('user-agent')")
    assert page.input_value("#kfl").endswith('request.headers["user-agent"] == "curl/8"')


def test_the_live_stream_adds_new_matching_entries(page: Any, ui: tuple[str, str]) -> None:
    base, nats_url = ui
    page.goto(base + "/?q=dns")
    page.wait_for_selector("#conn.up")
    before = len(api_ids(base, "dns"))
    fresh = [d for d in entries(60, seed=77) if d["protocol"] == "dns"]
    run_async(publish(nats_url, [fresh]))
    page.wait_for_function(
        "id => [...document.querySelectorAll('#rows .row')].some(r => r.dataset.id === id)",
        arg=fresh[-1]["id"],
    )
    assert len(api_ids(base, "dns")) == before + len(fresh)


def test_keyboard_moves_the_selection_and_escape_closes_the_detail(page: Any, ui: tuple[str, str]) -> None:
    base, _ = ui
    page.goto(base + "/")
    page.wait_for_selector("#rows .row")
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.wait_for_selector("#detail h2")
    assert page.eval_on_selector("#rows .row.selected", "r => r.dataset.i") == "1"
    page.keyboard.press("Escape")
    assert page.is_hidden("#detail")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "kfl"


def test_a_detail_answered_late_neither_reopens_a_closed_pane_nor_replaces_a_newer_one(
    page: Any, ui: tuple[str, str]
) -> None:
    base, _ = ui
    slow: set[str] = set()

    def delay(route: Any) -> None:
        entry_id = route.request.url.rsplit("/", 1)[-1].split("?", 1)[0]
        if entry_id in slow:
            page.wait_for_timeout(600)  # the answer for this entry comes late
        route.continue_()

    page.route("**/api/entries/*", delay)
    page.goto(base + "/")
    page.wait_for_selector("#rows .row")
    ids = page.eval_on_selector_all("#rows .row", "rows => rows.slice(0, 3).map(r => r.dataset.id)")
    slow.update(ids[1:2])
    page.keyboard.press("j")  # row 0: answered at once
    page.wait_for_selector("#detail h2")
    page.keyboard.press("j")  # row 1: answered late ...
    page.keyboard.press("Escape")  # ... after the pane was closed
    page.wait_for_timeout(1200)
    assert page.is_hidden("#detail")
    page.keyboard.press("j")  # row 2 selected while row 1's answer is still on its way
    page.keyboard.press("k")
    page.keyboard.press("j")
    page.wait_for_timeout(1200)
    assert page.eval_on_selector("#rows .row.selected", "r => r.dataset.id") == ids[2]
    shown = page.inner_text("#detail")
    row2 = httpx.get(f"{base}/api/entries/{ids[2]}").json()
    stamp = dt.datetime.fromtimestamp(row2["timestamp"] // 10**6 / 1000, dt.UTC)
    when = stamp.isoformat(timespec="milliseconds")
    assert not page.is_hidden("#detail") and when.replace("+00:00", "Z") in shown  # its own time row


def test_the_service_map_shows_the_edges_of_the_traffic(page: Any, ui: tuple[str, str]) -> None:
    base, _ = ui
    page.goto(base + "/?q=" + "src.name%20%3D%3D%20%22web%22%20%26%26%20dst.namespace%20%3D%3D%20%22shop%22")
    page.click("[data-view=map]")
    page.wait_for_selector("#map svg")
    want = {
        d["dst"]["name"] for d in DOCS if d["src"]["name"] == "web" and d["dst"]["namespace"] == "shop"
    } | {"web"}

    def names() -> set[str]:
        return set(page.eval_on_selector_all("#map .node text", "t => t.map(x => x.textContent)"))

    # The svg appears with the first answer; the nodes are drawn as the map's query completes.
    assert wait_for("the map's nodes", names, lambda got: got == want) == want
    edges = page.eval_on_selector_all("#map [data-edge]", "e => e.length")
    assert edges >= len(want) - 1
    shot(page, "ui-service-map")


def test_the_light_theme_and_the_empty_state(page: Any, ui: tuple[str, str]) -> None:
    base, _ = ui
    page.goto(base + "/?q=" + "path%20%3D%3D%20%22%2Fnothing%22")
    page.wait_for_selector("#empty:not([hidden])")
    assert "Nothing matches" in page.inner_text("#empty")
    page.click("#theme")
    assert page.evaluate("document.documentElement.dataset.theme") == "light"


def test_the_page_keeps_at_most_its_cap_of_entries(page: Any, ui: tuple[str, str]) -> None:
    base, _ = ui
    page.goto(base + "/")
    page.wait_for_selector("#rows .row")
    cap = page.evaluate(
        """() => {
            const t = window.wiretide.table;
            const now = Date.now() * 1e6;
            const batch = [];
            for (let i = 0; i < 120000; i++)
                batch.push({id: 'x' + i, timestamp: now + i, protocol: 'tcp', src: {}, dst: {}});
            t.add(batch);
            return t.length;
        }"""
    )
    assert cap == 100_000
    page.wait_for_function("() => document.querySelector('#rows .row').dataset.id === 'x119999'")
    assert page.eval_on_selector_all("#rows .row", "r => r.length") < 200  # only the visible rows exist


def test_a_binary_body_is_shown_as_bounded_hex(page: Any, ui: tuple[str, str]) -> None:
    base, nats_url = ui
    import base64

    blob = bytes(range(256)) * 64  # 16 KiB of binary
    doc = entries(1, seed=5)[0]
    doc.update(protocol="http", method="POST", path="/upload", status=200)
    body = {"size": len(blob), "mime": "application/octet-stream", "encoding": "base64",
            "content": base64.b64encode(blob).decode(), "truncated": False}  # fmt: skip
    doc["request"] = {"method": "POST", "path": "/upload", "headers": {"content-type": "x/y"}, "body": body}
    run_async(publish(nats_url, [[doc]]))
    page.goto(base + "/?q=" + "path%20%3D%3D%20%22%2Fupload%22")
    page.wait_for_selector("#rows .row")
    page.click("#rows .row >> nth=0 >> span >> nth=0")
    page.wait_for_selector("#detail pre.body")
    text = page.inner_text("#detail pre.body")
    assert text.startswith("000000  00 01 02 03")
    assert "more bytes" in text and text.count("\n") < 300


def test_statuses_read_as_the_protocol_table_says(page: Any, ui: tuple[str, str]) -> None:
    """A gRPC call that failed UNAVAILABLE over HTTP 200 is an error in the UI as in /api/stats."""
    base, nats_url = ui
    failed, refused = entries(2, seed=6)
    failed.update(protocol="grpc", method="POST", path="/shop.Tables/Read", status=200)
    failed["response"] = {"status": 200, "grpc_status": 14, "headers": {}}
    refused.update(protocol="dns", method="QUERY", path="tables.invalid", status=3)
    refused["response"] = {"rcode": 3, "answers": []}
    run_async(publish(nats_url, [[failed, refused]]))
    page.goto(base + "/?q=" + 'path == "/shop.Tables/Read" || path == "tables.invalid"')
    page.wait_for_function("() => document.querySelectorAll('#rows .row').length === 2")
    cells = page.eval_on_selector_all(
        "#rows .row span:nth-child(7)", "c => c.map(x => [x.textContent, x.className])"
    )
    assert sorted(cells) == [["NXDOMAIN", "s2"], ["UNAVAILABLE (14)", "s5"]]


def test_the_stream_reconnects_after_the_gateway_restarts(page: Any, tmp_path: Path) -> None:
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    port = free_port()
    env = service_env(nats.url, tmp_path / "data", WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{port}")
    gw = ServiceProcess("gateway", env, tmp_path / "gw.log")
    gw.start()
    try:
        gw.wait_health("SERVING")
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#conn.up")
        gw.kill()
        page.wait_for_function("() => document.querySelector('#conn').textContent.includes('reconnecting')")
        shot(page, "ui-reconnecting")
        gw = ServiceProcess("gateway", env, tmp_path / "gw2.log")
        gw.start()
        gw.wait_health("SERVING")
        page.wait_for_selector("#conn.up", timeout=30_000)
        fresh = entries(5, seed=31)
        run_async(publish(nats.url, [fresh]))
        page.wait_for_function("n => document.querySelectorAll('#rows .row').length >= n", arg=5)
    finally:
        gw.kill()
        nats.stop()
