"""`llm.ask(prompt, data, cb)` and `llm.observe(data, options)`: the optional LLM (common/llm.py) in
agents. `ask` is one question, answered through a promise (and `cb(answer, error)`); `observe`
collects data over a window and, when the window closes, asks the LLM what stands out and hands the
insight to the agent's `onInsight(insight)` hook and its log — anomaly detection over time.

Rule: the LLM is reached only through the backend's `llm` configuration (None: disabled, and the
replay harness has none), off the hook path (`Host.submit`: bounded queue, timeout, counted drops);
what an agent observes is bounded per window and what did not fit is counted and said to the LLM.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from wiretide.agents.helpers import Call, Helper, Host
from wiretide.common.llm import DISABLED, LlmClient, LlmConfig

MAX_PROMPT_CHARS: Final = 8_000
DEFAULT_WINDOW_S: Final = 60.0
MIN_WINDOW_S: Final = 5.0  # shorter windows would ask the LLM several times a minute per agent
MAX_WINDOW_S: Final = 3_600.0
MAX_WINDOW_BYTES: Final = 64 * 1024  # observations kept per window; beyond it they are counted, not kept
ASK_SYSTEM: Final = (
    "You help a network automation agent of Wiretide, which observes the API calls of a Kubernetes "
    "cluster. Answer briefly and precisely from the data given; say when the data cannot answer."
)
OBSERVE_PROMPT: Final = (
    "These observations were collected by a network agent over the window shown. Point out anomalies, "
    "trends or changes that an operator should know about, most important first, in at most five "
    "short lines; answer 'nothing unusual' when nothing stands out."
)

JS: Final = """
var llm = {
  ask: function (prompt, data, cb) {
    var sig = "llm.ask(prompt, data, cb)";
    if (typeof data === "function" && cb === undefined) { cb = data; data = undefined; }
    __wt_check(sig, "prompt", prompt, ["string"]);
    return __wt_async("llm.ask", [prompt, data === undefined ? null : data], cb);
  },
  observe: function (data, options) {
    var sig = "llm.observe(data, options)";
    if (options === undefined || options === null) options = {};
    __wt_check(sig, "options", options, ["object"]);
    var w = options.windowSeconds === undefined ? null : options.windowSeconds;
    if (w !== null) __wt_check(sig, "options.windowSeconds", w, ["number"]);
    var p = options.prompt === undefined ? null : options.prompt;
    if (p !== null) __wt_check(sig, "options.prompt", p, ["string"]);
    __wt_emit(["llm.observe", data === undefined ? null : data, w, p]);
  },
};
"""


@dataclass(slots=True)
class Window:
    """One agent's observations since its window opened (on the backend's clock)."""

    start_s: float
    seconds: float = DEFAULT_WINDOW_S
    prompt: str = OBSERVE_PROMPT
    items: list[Any] = field(default_factory=list)
    size: int = 0
    dropped: int = 0


# An agent's open window, by its run (a reloaded or removed agent's window goes with its old run).
_windows: weakref.WeakKeyDictionary[Host, Window] = weakref.WeakKeyDictionary()


def _config(host: Host) -> LlmConfig | None:
    config = getattr(host.backend, "llm", None)
    return config if isinstance(config, LlmConfig) else None


async def ask_once(config: LlmConfig, prompt: str, data: Any, system: str = ASK_SYSTEM) -> str:
    """One question with its own client (closed after): the worker's event loop owns nothing between calls."""
    client = LlmClient(config)
    try:
        return await client.ask(prompt, data, system=system)
    finally:
        await client.aclose()


def _ask(call: Call, host: Host) -> None:
    call_id, prompt, data = call.args
    config = _config(host)
    if config is None:
        host.settle(int(call_id), False, DISABLED)
        return
    text = str(prompt)[:MAX_PROMPT_CHARS]
    host.submit("llm.ask", lambda: ask_once(config, text, data), int(call_id))


def _observe(call: Call, host: Host) -> None:
    data, seconds, prompt = call.args
    now = host.backend.now()
    window = _windows.get(host)
    if window is None:
        window = _windows[host] = Window(now)
    if isinstance(seconds, int | float):
        window.seconds = min(max(float(seconds), MIN_WINDOW_S), MAX_WINDOW_S)
    if isinstance(prompt, str) and prompt.strip():
        window.prompt = prompt[:MAX_PROMPT_CHARS]
    size = len(orjson.dumps(data, default=str))
    if window.size + size > MAX_WINDOW_BYTES:
        window.dropped += 1
    else:
        window.items.append(data)
        window.size += size
    if now - window.start_s >= window.seconds:
        _windows[host] = Window(now, window.seconds, window.prompt)
        _flush(window, now, host)


def _flush(window: Window, now: float, host: Host) -> None:
    config = _config(host)
    if config is None:
        host.log("system", f"llm.observe: {len(window.items)} observations not sent: {DISABLED}")
        return
    span = {
        "start_s": window.start_s,
        "end_s": now,
        "observations": len(window.items),
        "dropped": window.dropped,
    }
    payload = {"window": span, "observations": window.items}

    async def work() -> None:
        text = await ask_once(config, window.prompt, payload)
        host.log("log", f"insight: {text}")
        host.fire("onInsight", {"text": text, **span})

    host.submit("llm.observe", work)


HELPER: Final = Helper(
    namespace="llm",
    js=JS,
    doc="""`llm.ask(prompt, data?, cb?)`: ask the LLM (`WIRETIDE_LLM_BASE_URL`, any OpenAI-compatible
endpoint) one question about `data` (any JSON value, cut to 32 KiB); returns a promise of the answer's
text and calls `cb(answer, error)` when given. With the LLM off the promise is rejected with a message
saying so, and nothing is sent. `llm.observe(data, {windowSeconds = 60, prompt}?)`: add `data` to the
agent's current window (at most 64 KiB per window; what does not fit is counted); when the window
closes, the LLM is asked what stands out and the agent's `onInsight(insight)` hook receives
`{text, start_s, end_s, observations, dropped}` (the text also goes to the agent's log). The window
closes on the first `observe` after `windowSeconds`. Both run off the hook path and are not sent by
the replay harness.""",
    handlers={"llm.ask": _ask, "llm.observe": _observe},
    hooks=("onInsight",),
)
