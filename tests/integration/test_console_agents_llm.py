"""`llm.ask` and `llm.observe` in agents, run by the real QuickJS runtime against the OpenAI-compatible
stand-in (no LLM runs here): the answer comes back to the agent's callback, an observation window
becomes an `onInsight` call and a log line, and with the LLM off both say so and send nothing.

The backend runs outbound work inline (the service runs it on its outbound worker), so the test reads
the agent's log as soon as the runtime has delivered what came back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.helpers.entries import entries
from tests.helpers.fake_llm import Turn, fake_llm
from wiretide.agents.helpers import Host
from wiretide.agents.hooks import ON_ITEM_CAPTURED
from wiretide.agents.model import AgentDef
from wiretide.agents.runtime import Backend, Limits, Runtime
from wiretide.common.llm import LlmConfig

LIMITS = Limits(memory_mb=64, time_limit_s=2.0)
SOURCE = """
function onItemCaptured(e) {
  if (e.protocol === "http" && e.status >= 500 && !globalThis.asked) {
    globalThis.asked = true;
    llm.ask("why does this fail?", {path: e.path, status: e.status}, function (answer, err) {
      console.log("answer:", answer, "error:", err ? err.message : null);
    });
  }
  llm.observe({status: e.status, ms: e.elapsed_us / 1000}, {windowSeconds: 30});
}
function onInsight(insight) { console.log("onInsight:", insight.text, insight.observations); }
"""


class InlineBackend(Backend):
    """Runs outbound work at once, on a clock the test moves."""

    def __init__(self, config: LlmConfig | None) -> None:
        super().__init__("test")
        self.llm = config
        self.clock = 1_000.0

    def now(self) -> float:
        return self.clock

    def submit(
        self,
        host: Host,
        what: str,
        work: Callable[[], Awaitable[Any]],
        done: Callable[[bool, Any], None] | None,
    ) -> None:
        value: Any
        try:
            value, ok = asyncio.run(work()), True  # type: ignore[arg-type]
        except Exception as exc:
            value, ok = str(exc), False
        if done is not None:
            done(ok, value)


def run_agent(config: LlmConfig | None) -> list[str]:
    backend = InlineBackend(config)
    runtime = Runtime(backend, LIMITS)
    runtime.put(AgentDef("watcher", SOURCE))
    docs = entries(60, seed=5)
    runtime.dispatch(ON_ITEM_CAPTURED, docs[:30])
    runtime.process_inboxes()
    backend.clock += 31  # the window closes on the next observation
    runtime.dispatch(ON_ITEM_CAPTURED, docs[30:])
    runtime.process_inboxes()
    return [line.text for line in runtime.agents["watcher"].lines]


def test_llm_ask_answers_the_agent_s_callback_and_a_closed_window_becomes_an_insight() -> None:
    def answer(request: dict[str, Any]) -> Turn:
        question = request["messages"][-1]["content"]
        if question.startswith("why does this fail?"):
            return Turn(text="the database is down")
        return Turn(text="error rate doubled")

    with fake_llm(then=answer) as llm:
        lines = run_agent(LlmConfig(llm.base_url, "stand-in", "k", 10.0))
    assert "answer: the database is down error: null" in lines
    assert "insight: error rate doubled" in lines
    assert (
        "onInsight: error rate doubled 31" in lines
    )  # the 30 of the first window and the one that closed it
    asked = [r["messages"][-1]["content"] for r in llm.requests]
    assert asked[0].startswith("why does this fail?") and '"status": 5' in asked[0]
    assert any('"observations": [{"status"' in a for a in asked[1:])


def test_an_llm_that_fails_rejects_the_agent_s_promise_with_the_reason() -> None:
    with fake_llm(then=Turn(status=503)) as llm:
        lines = run_agent(LlmConfig(llm.base_url, "stand-in", "k", 10.0))
    assert any(line.startswith("answer: null error: the LLM endpoint answered HTTP 503") for line in lines), (
        lines
    )
    assert not any(line.startswith("onInsight") for line in lines)


def test_with_the_llm_off_the_agent_is_told_and_nothing_is_sent() -> None:
    with fake_llm() as llm:
        lines = run_agent(None)
    assert llm.requests == []
    assert any("error: the LLM is disabled" in line for line in lines), lines
    assert any("observations not sent: the LLM is disabled" in line for line in lines), lines
