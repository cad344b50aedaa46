"""Agents in the web UI (headless Chromium, real gateway, agents service and nats-server): an agent's
onItemQueried marks show on the rows of the entries table and in the detail pane, and the Agents tab
lists the agent, saves a new one (a syntax error named with its line) and shows its live log; it
offers the templates, drafts an agent with the LLM (the OpenAI-compatible stand-in) and shows its
trial run, and applies a proposed change only when the user approves its diff."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import shot
from tests.e2e.test_ui import run_async
from tests.helpers.entries import entries
from tests.helpers.fake_llm import Turn, fake_llm
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.services import ServiceProcess, service_env
from tests.helpers.wait import wait_for
from tests.integration.test_store_writer import publish

DOCS = entries(120, seed=21)
MARKER = (
    "function onItemQueried(entry) {\n"
    "  entry.status >= 500 ? test.fail(entry, 'server error') : test.pass(entry);\n}\n"
)


DRAFT = (
    "// drafted\nfunction onItemCaptured(entry) {\n"
    "  if (entry.status >= 500) console.log('5xx', entry.path);\n}\n"
)
IMPROVED = DRAFT.replace("console.log('5xx', entry.path)", "console.log('5xx', entry.method, entry.path)")


def model(request: dict[str, Any]) -> Turn:
    """The stand-in model: a change when asked for one, else the draft."""
    asked = request["messages"][1]["content"]
    code = IMPROVED if "Change it:" in asked else DRAFT
    return Turn(text=f"```javascript\n{code}```\nIt logs server errors.")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("agents-ui")
    nats = NatsServer(tmp / "nats")
    nats.start()
    port = free_port()
    llm = ExitStack()
    llm_env = llm.enter_context(fake_llm(then=model)).env()
    env = service_env(nats.url, tmp / "data", WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{port}", **llm_env)
    procs = [ServiceProcess(name, env, tmp / f"{name}.log") for name in ("agents", "gateway")]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.wait_health("SERVING")
        base = f"http://127.0.0.1:{port}"
        answer = httpx.put(f"{base}/api/agents/marker", json={"source": MARKER}, timeout=30)
        assert answer.status_code == 200, answer.text
        run_async(publish(nats.url, [DOCS]))
        wait_for(
            "entries served",
            lambda: len(httpx.get(f"{base}/api/entries", params={"limit": 1000}).json()["entries"]),
            lambda n: n >= len(DOCS),
        )
        yield base
    finally:
        for p in procs:
            p.kill()
        nats.stop()
        llm.close()


def test_marks_show_on_rows_and_in_the_detail_and_the_agents_tab_edits(page: Any, stack: str) -> None:
    page.goto(stack + "/")
    page.wait_for_selector("#rows .row .mark")
    failing = {d["id"] for d in DOCS if (d.get("status") or 0) >= 500}
    shown = page.eval_on_selector_all(
        "#rows .row", "rows => rows.map(r => [r.dataset.id, r.querySelector('.mark')?.className || ''])"
    )
    marked = [(i, c) for i, c in shown if c]
    assert marked
    for entry_id, cls in marked:
        assert cls == ("mark fail" if entry_id in failing else "mark pass")
    page.click(f'#rows .row[data-id="{marked[0][0]}"]')
    page.wait_for_selector("#detail .marks")
    assert "marker" in page.inner_text("#detail .marks")
    shot(page, "agents-marks")

    page.click("[data-view=agents]")
    page.wait_for_selector('.agents-list tr[data-name="marker"]')
    page.click("text=New agent")
    page.fill(".agents-name", "typo")
    page.fill(".agents-source", "function onItemCaptured(e) {\n  return e.status >;\n}\n")
    page.click("[data-act=save]")
    page.wait_for_selector(".agents-problem:has-text('line 2')")
    page.fill(".agents-source", "console.log('hello from the UI');\n")
    page.click("[data-act=save]")
    page.wait_for_selector('.agents-list tr[data-name="typo"]')
    page.click('.agents-list tr[data-name="typo"] [data-act=logs]')
    page.wait_for_selector(".agents-log:has-text('hello from the UI')")
    shot(page, "agents-tab")


def test_the_agents_tab_offers_templates_drafts_with_the_llm_and_applies_an_approved_change(
    page: Any, stack: str
) -> None:
    page.goto(stack + "/")
    page.click("[data-view=agents]")
    page.wait_for_selector(".agents-template option[value=health-check]", state="attached")
    page.select_option(".agents-template", "health-check")
    assert page.input_value(".agents-name") == "health-check"
    assert page.input_value(".agents-source").startswith("// ")
    page.click("[data-act=cancel]")

    page.click("text=Draft with the LLM")
    page.fill(".agents-describe", "log every server error")
    page.click("[data-act=propose]")
    page.wait_for_selector(".agents-summary:has-text('Tried on 120 recent entries')")
    fivexx = [d for d in DOCS if (d.get("status") or 0) >= 500]
    assert page.inner_text(".agents-output").count("5xx ") == len(fivexx)
    assert page.input_value(".agents-source") == DRAFT
    page.fill(".agents-name", "drafted")
    page.click("[data-act=save]")
    page.wait_for_selector('.agents-list tr[data-name="drafted"]')
    shot(page, "agents-draft")

    page.click('.agents-list tr[data-name="drafted"] [data-act=improve]')
    page.fill(".agents-describe", "log the method too")
    page.click("[data-act=propose]")
    page.wait_for_selector(".agents-diff .s2")
    assert "+  if (entry.status >= 500) console.log('5xx', entry.method, entry.path);" in page.inner_text(
        ".agents-diff"
    )
    assert httpx.get(f"{stack}/api/agents/drafted").json()["source"] == DRAFT  # not applied yet
    shot(page, "agents-improve")
    page.click("[data-act=approve]")
    page.wait_for_selector(".agents-note:has-text('Applied the change to drafted')")
    assert httpx.get(f"{stack}/api/agents/drafted").json()["source"] == IMPROVED
