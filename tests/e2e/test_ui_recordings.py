"""Recordings in the web UI (headless Chromium, a real gateway and nats-server): the Recordings tab
starts a job from its dialog — a bad filter is refused in the dialog with the gateway's words — lists
it with its run as the run collects, stops it, downloads the run's bundle (a whole, verified bundle
with the matching entries), opens its entries in the traffic view as record("name"), and deletes it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import shot
from tests.e2e.test_ui import run_async
from tests.helpers.entries import entries
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.services import ServiceProcess, service_env
from tests.helpers.wait import wait_for
from tests.integration.test_store_writer import publish
from wiretide.gateway.recording.bundle import open_bundle

NS = 1_000_000_000


def recent_docs() -> list[dict[str, Any]]:
    """Calls of the last few seconds: a recording starting now takes them with its preceding minutes."""
    docs = entries(120, seed=23)
    now = time.time_ns()
    for i, d in enumerate(docs):
        d["timestamp"] = now - 5 * NS + i * 1000
    return docs


DOCS = recent_docs()
FAILING = sorted(d["id"] for d in DOCS if d["protocol"] == "http" and (d.get("status") or 0) >= 500)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("recordings-ui")
    nats = NatsServer(tmp / "nats")
    nats.start()
    port = free_port()
    env = service_env(
        nats.url,
        tmp / "data",
        WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{port}",
        WIRETIDE_RECORDING_CUT_S="0.5",
        WIRETIDE_RECORDING_LAG_S="0",
    )
    gateway = ServiceProcess("gateway", env, tmp / "gateway.log")  # capture and resolver away: counted
    gateway.start()
    try:
        gateway.wait_health("SERVING")
        base = f"http://127.0.0.1:{port}"
        run_async(publish(nats.url, [DOCS]))
        wait_for(
            "entries served",
            lambda: len(httpx.get(f"{base}/api/entries", params={"limit": 1000}).json()["entries"]),
            lambda n: n >= len(DOCS),
        )
        yield base
    finally:
        gateway.kill()
        nats.stop()


def test_the_recordings_tab_starts_lists_stops_downloads_opens_and_deletes_a_recording(
    page: Any, stack: str, tmp_path: Path
) -> None:
    page.goto(stack + "/")
    page.click("[data-view=recordings]")
    page.wait_for_selector("#rec-list:has-text('No recording jobs')")

    page.click("#rec-new")
    page.fill("#rec-name", "ui-errors")
    page.fill("#rec-filter", "http && status_code >=")
    page.fill("#rec-preceding", "5")
    page.click("#rec-start-btn")
    page.wait_for_selector("#rec-error:has-text('filter')")
    assert page.is_visible("#rec-dialog")  # refused: the dialog stays, with what was wrong
    page.fill("#rec-filter", "http && status_code >= 500")
    page.click("#rec-start-btn")
    page.wait_for_selector("#rec-dialog", state="hidden")
    job = '#rec-list tbody[data-job="ui-errors"]'
    page.wait_for_selector(f"{job} .rec-state:has-text('recording')")
    page.wait_for_selector(f"{job} .rec-run .rec-entries:text-is('{len(FAILING)}')")
    shot(page, "recordings-tab")

    page.click(f"{job} [data-act=stop]")
    page.wait_for_selector(f"{job} .rec-state:has-text('stopped')")
    with page.expect_download() as got:
        page.click(f"{job} .rec-download")
    saved = tmp_path / "ui-errors.tar.gz"
    got.value.save_as(str(saved))
    bundle = open_bundle(saved, tmp_path / "opened")
    assert sorted(e["id"] for e in bundle.entries()) == FAILING and bundle.name == "ui-errors"

    page.click(f"{job} [data-act=open]")
    assert page.input_value("#kfl") == 'record("ui-errors")'
    # Polled from here: the UI's CSP (no eval) refuses wait_for_function's string predicates.
    wait_for(
        "the run's entries in the table",
        lambda: page.evaluate("() => window.wiretide.table.length") == len(FAILING),
    )

    page.click("[data-view=recordings]")
    page.once("dialog", lambda d: d.accept())
    page.click(f"{job} [data-act=delete]")
    page.wait_for_selector(f"{job} .rec-job", state="detached")
    page.wait_for_selector('.rec-orphans tbody[data-job="ui-errors"] .rec-download')  # the run stays
    listed = httpx.get(f"{stack}/api/recordings", timeout=10).json()
    assert [j["name"] for j in listed["recordings"]] == []
    assert [r["job"] for r in listed["runs"]] == ["ui-errors"]  # its run and bundle stay
