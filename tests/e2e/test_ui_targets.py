"""The Targets tab (headless Chromium, the whole stack capturing loopback): it shows the spec and what
each capture node applied, changes the spec live (the node's kernel filter follows) and names a bad
spec's error instead of applying it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import shot
from tests.helpers.stack import Stack
from tests.helpers.wait import wait_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("targets-ui")
    s = Stack(tmp / "wt", None, WIRETIDE_CAPTURE_INTERFACES="lo", WIRETIDE_NODE_NAME="node-ui")
    try:
        s.wait_up()
        yield s
    finally:
        s.stop()


def _headers(s: Stack) -> dict[str, str]:
    token = s.data_dir / "service-token"
    return {"authorization": f"Bearer {token.read_text().strip()}"} if token.is_file() else {}


def targets(s: Stack) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{s.base}/api/targets", headers=_headers(s), timeout=10).json()
    return doc


def test_the_targets_tab_changes_what_is_captured_live(page: Any, stack: Stack) -> None:
    wait_for(
        "the node reports", lambda: [n["node"] for n in targets(stack)["nodes"]], lambda n: "node-ui" in n
    )
    page.goto(stack.base + "/")
    page.click("button[data-view=targets]")
    page.wait_for_selector("tr[data-node=node-ui]")
    assert "every pod" in page.inner_text("tr[data-node=node-ui]")
    assert page.inner_text("#targets-note") == "capturing every pod"

    page.fill("#targets-regex", "^checkout-")
    page.fill("#targets-ns", "shop, payments")
    page.click("#targets-form button[type=submit]")
    page.wait_for_selector(
        "#targets-note:has-text('applied')"
    )  # selectors, not eval: the page's CSP forbids it
    spec = targets(stack)["spec"]
    assert spec == {"pod_regex": "^checkout-", "namespaces": ["shop", "payments"], "excluded_namespaces": []}
    wait_for(
        "the node follows",
        lambda: next(n for n in targets(stack)["nodes"] if n["node"] == "node-ui")["note"],
        lambda note: "nothing is captured" in note,
    )
    page.wait_for_selector("tr[data-node=node-ui]:has-text('nothing is captured')")
    shot(page, "ui-targets")

    page.fill("#targets-regex", "(")
    page.click("#targets-form button[type=submit]")
    page.wait_for_selector("#targets-note.bad")
    assert "pod_regex" in page.inner_text("#targets-note")
    assert targets(stack)["spec"]["pod_regex"] == "^checkout-"  # the bad one was not applied
