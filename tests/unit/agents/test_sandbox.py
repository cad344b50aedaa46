"""The sandbox and the runtime with real QuickJS: hooks see entries in batches; an agent that throws,
loops, allocates without bound, recurses, calls a helper with the wrong types or schedules a bad cron
string is stopped and marked failed with the error and its line while the other agents go on; syntax
errors name their line and column without running anything."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.entries import entries
from wiretide.agents.helpers import MODULES, helpers
from wiretide.agents.hooks import HOOKS
from wiretide.agents.model import AgentDef
from wiretide.agents.runtime import Backend, Limits, Runtime, check_syntax

COUNTER = (
    "var n = 0;\nfunction onItemCaptured(e) { n++; }\n"
    "jobs.schedule('c', '* * * * * *', function () { console.log('n', n); });\n"
)


def runtime() -> Runtime:
    return Runtime(Backend("node-x"), Limits(memory_mb=32, time_limit_s=0.2))


def count_of(rt: Runtime, name: str) -> str:
    rt.agents[name].run_job("c")
    return rt.agents[name].lines[-1].text


BAD: list[tuple[str, str, str, int]] = [
    (
        "throws",
        "function onItemCaptured(e) {\n  var x = null;\n  return x.y;\n}\n",
        "TypeError: cannot read property 'y' of null",
        3,
    ),
    ("loops", "function onItemCaptured(e) {\n  while (true) {}\n}\n", "time limit exceeded", 2),
    (
        "allocates",
        "function onItemCaptured(e) {\n  var a = [];\n  for (;;) a.push(new Array(100000).fill(1));\n}\n",
        "memory limit exceeded (32 MiB)",
        3,
    ),
    (
        "doubles",
        "function onItemCaptured(e) {\n  var s = 'x';\n  for (;;) s = s + s;\n}\n",
        "memory limit exceeded",
        3,
    ),
    (
        "recurses",
        "function r() { return r() + 1; }\nfunction onItemCaptured(e) {\n  r();\n}\n",
        "stack overflow",
        0,
    ),
    (
        "wrong-types",
        "function onItemCaptured(e) {\n  vendor.webhook('POST', 42);\n}\n",
        "vendor.webhook(method, url, body, headers): url must be string, got number",
        2,
    ),
    (
        "bad-metric",
        "function onItemCaptured(e) {\n  prometheus.metric('x', 'help', 'histogram', 1);\n}\n",
        'type must be "counter" or "gauge"',
        2,
    ),
    (
        "bad-test",
        "function onItemCaptured(e) {\n  test.fail('not an entry');\n}\n",
        "test.fail(entry, note): entry must be object, got string",
        2,
    ),
    (
        "bad-kfl-entry",
        "function onItemCaptured(e) {\n  kfl.match('http', {id: 'other'});\n}\n",
        "entry must be the entry handed to",
        2,
    ),
    (
        "unknown-kfl",
        "function onItemCaptured(e) {\n  kfl.match(String(e.protocol), e);\n}\n",
        "was not seen when the agent loaded",
        2,
    ),
    (
        "bad-cron",
        "function onItemCaptured(e) {\n  jobs.schedule('late', 'every minute', function () {});\n}\n",
        "jobs.schedule('late', 'every minute')",
        2,
    ),
]


@pytest.mark.parametrize(("name", "source", "error", "line"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_agent_is_stopped_with_its_error_and_line_and_the_others_see_every_entry(
    name: str, source: str, error: str, line: int
) -> None:
    rt = runtime()
    rt.put(AgentDef("before", COUNTER))
    bad = rt.put(AgentDef(name, source))
    rt.put(AgentDef("after", COUNTER))
    assert bad.state == "running"
    docs = entries(300, seed=2)
    rt.dispatch("onItemCaptured", docs)
    assert bad.state == "failed"
    assert error in bad.last_error
    if line:
        assert bad.error_line == line
        assert f"(line {line})" in bad.last_error or name == "bad-cron"
    assert bad.sandbox is None and not bad.jobs
    for other in ("before", "after"):
        assert rt.agents[other].state == "running"
        assert count_of(rt, other) == f"n {len(docs)}"
    rt.dispatch("onItemCaptured", docs)  # a stopped agent is never called again
    assert bad.counters.invocations == 1


# Where a limit stopped an agent: QuickJS names a position only for operations that can throw, so a
# loop of local arithmetic is placed by the line named and the source (`sandbox.loop_line`).
LIMITS: list[tuple[str, str, str, int]] = [
    (
        "loop-after-statements",
        "function onItemCaptured(e) {\n  var n = 0;\n  var m = 1;\n\n  while (true) { n++; }\n}\n",
        "time limit exceeded",
        5,
    ),
    (
        "loop-in-a-branch",
        "function onItemCaptured(e) {\n  var x = 0;\n  if (e.id) {\n"
        "    while (x >= 0) { x = x + 1; }\n  }\n}\n",
        "time limit exceeded",
        4,
    ),
    (
        "loop-in-a-called-function",
        "function spin() {\n  for (;;) { Math.random(); }\n}\nfunction onItemCaptured(e) {\n  spin();\n}\n",
        "time limit exceeded",
        2,
    ),
    (
        "interrupted-inside-the-body-before-a-later-loop",
        "function onItemCaptured(e) {\n  var x = 0;\n  while (true) {\n    Math.random();\n    x++;\n  }\n"
        "  for (;;) {}\n}\n",
        "time limit exceeded",
        3,
    ),
    (
        "loop-in-an-arrow-hook",
        "const onItemCaptured = (e) => {\n  for (let i = 0; i >= 0; i++) {}\n};\n",
        "time limit exceeded",
        2,
    ),
    (
        "loop-in-a-job",
        "jobs.schedule('j', '* * * * * *', function () {\n  var i = 0;\n  do { i++; } while (i > 0);\n});\n"
        "function onItemCaptured(e) {}\n",
        "time limit exceeded",
        3,
    ),
    (
        "allocation-in-a-job",
        "var keep = [];\njobs.schedule('j', '* * * * * *', function () {\n"
        "  for (;;) keep.push('x'.repeat(1 << 16) + keep.length);\n});\nfunction onItemCaptured(e) {}\n",
        "memory limit exceeded (32 MiB)",
        3,
    ),
    ("loop-at-the-top-level", "var ready = false;\n\nwhile (!ready) {}\n", "time limit exceeded", 3),
    (
        "allocation-at-the-top-level",
        "var a = [];\nfor (;;) a.push(new Array(100000).fill(1));\n",
        "memory limit exceeded",
        2,
    ),
]


@pytest.mark.parametrize(("name", "source", "error", "line"), LIMITS, ids=[c[0] for c in LIMITS])
def test_an_agent_stopped_by_a_limit_is_failed_with_the_line_where_the_limit_hit(
    name: str, source: str, error: str, line: int
) -> None:
    rt = runtime()
    agent = rt.put(AgentDef(name, source))
    rt.dispatch("onItemCaptured", entries(3, seed=1))
    if agent.jobs:
        agent.run_job("j")
    assert agent.state == "failed"
    assert error in agent.last_error
    assert agent.error_line == line
    assert agent.last_error.endswith(f"(line {line})")
    assert agent.lines[-1].text == f"agent stopped: {agent.last_error}"


def test_a_bad_kfl_query_or_cron_at_the_top_level_fails_the_load_with_the_line() -> None:
    rt = runtime()
    kfl = rt.put(
        AgentDef("kfl", "// x\nfunction onItemCaptured(e) {\n  return kfl.match('status >=', e);\n}\n")
    )
    assert kfl.state == "failed" and kfl.error_line == 3 and "kfl.match query 'status >='" in kfl.last_error
    cron = rt.put(AgentDef("cron", "var a = 1;\njobs.schedule('t', '* * * * * * *', function () {});\n"))
    assert cron.state == "failed" and cron.error_line == 2 and "has 7 fields" in cron.last_error


@pytest.mark.parametrize(
    ("source", "line", "column", "message"),
    [
        ("function f() {\n  let x = ;\n}\n", 2, 11, "unexpected token in expression: ';'"),
        ("var a = {\n  b: 1,,\n};\n", 2, 8, "invalid property name"),
        ("var ok = 1;\nvar s = 'unterminated;\n", 2, 9, "SyntaxError"),
    ],
)
def test_a_syntax_error_names_its_line_and_column_and_nothing_runs(
    source: str, line: int, column: int, message: str
) -> None:
    problem = check_syntax("while (true) {}\n" * 0 + source)
    assert problem is not None
    assert (problem.line, problem.column) == (line, column)
    assert message in problem.message
    assert check_syntax("while (true) {}\nconsole.log(1);\n") is None  # compiled, never run


def test_kfl_match_answers_the_compiled_query_for_each_entry() -> None:
    rt = runtime()
    source = (
        "const SLOW = 'elapsed_us > 500000';\nvar hits = [];\n"
        "function onItemCaptured(e) {\n  if (kfl.match(SLOW, e) && kfl.match(env.Q, e)) hits.push(e.id);\n}\n"
        "jobs.schedule('c', '* * * * * *', function () { console.log(hits.join(',')); });\n"
    )
    agent = rt.put(AgentDef("k", source, {"Q": "dns"}))
    docs = entries(400, seed=7)
    rt.dispatch("onItemCaptured", docs)
    agent.run_job("c")
    want = [d["id"] for d in docs if d["elapsed_us"] > 500_000 and d["protocol"] == "dns"]
    assert want and agent.lines[-1].text == ",".join(want)


def test_helpers_and_hooks_are_the_registered_ones() -> None:
    namespaces = [h.namespace for h in helpers()]
    issue = ["console", "test", "vendor", "prometheus", "jobs", "kfl", "pcap", "hub", "utils"]
    # The issue's helpers, in the documented order (other namespaces may sit between them).
    assert [n for n in namespaces if n in issue] == issue
    assert "llm" in MODULES
    assert HOOKS == (
        "onItemCaptured",
        "onItemQueried",
        "onPacketCaptured",
        "onPodEvent",
        "onHubAction",
        "onTrace",
    )


def test_console_lines_beyond_the_per_call_bound_are_counted_not_kept() -> None:
    rt = runtime()
    agent = rt.put(AgentDef("loud", "function onItemCaptured(e) { console.log('entry', e.id); }"))
    docs: list[dict[str, Any]] = entries(256 * 5, seed=1)
    rt.dispatch("onItemCaptured", docs)
    assert len(agent.lines) == 1000  # the newest lines kept
    assert not any("dropped" in line.text for line in agent.lines)  # 256 a call: under the bound
    noisy = rt.put(
        AgentDef("noisy", "function onItemCaptured(e) { for (var i = 0; i < 5; i++) console.log(i); }")
    )
    rt.dispatch("onItemCaptured", docs[:256])
    assert any("280 console lines dropped" in line.text for line in noisy.lines)
    assert noisy.status()["log_dropped"] == 280 and agent.status()["log_dropped"] == 0


def test_hub_actions_offline_come_back_to_the_same_agent_and_utils_name_the_node() -> None:
    rt = runtime()
    source = (
        "function onHubAction(a, o) { console.log(a, o.n, utils.nodeName()); }\nhub.action('sum', {n: 3});\n"
    )
    agent = rt.put(AgentDef("hub", source))
    rt.process_inboxes()
    assert [line.text for line in agent.lines] == ["sum 3 node-x"]


def test_the_lines_a_failing_call_logged_are_kept_and_its_other_helper_calls_are_not() -> None:
    rt = runtime()
    source = (
        "function onItemCaptured(e) {\n  console.log('before', e.id);\n"
        "  vendor.webhook('POST', 'http://127.0.0.1:9/x', e.id);\n  test.fail(e, 'never counted');\n"
        "  var s = 'x';\n  for (;;) s = s + s;\n}\n"
    )
    agent = rt.put(AgentDef("dies", source))
    rt.dispatch("onItemCaptured", [{"id": "e1"}, {"id": "e2"}])
    assert agent.state == "failed" and agent.error_line == 6
    assert [line.text for line in agent.lines] == [
        "before e1",
        "agent stopped: memory limit exceeded (32 MiB) (line 6)",
    ]
    assert agent.counters.failed_tests == 0


def test_jobs_are_listed_run_on_demand_and_removed() -> None:
    rt = runtime()
    source = (
        "var runs = 0;\njobs.schedule('a', '*/5 * * * * *', function () { runs++; });\n"
        "jobs.schedule('b', '0 0 * * * *', function () { console.log('b ran', runs); });\n"
        "function onItemCaptured(e) {\n  if (e.id === 'list') console.log(jobs.list().join(','));\n"
        "  if (e.id === 'run') { jobs.run('a'); jobs.run('b'); }\n"
        "  if (e.id === 'remove')\n"
        "    console.log(jobs.remove('a'), jobs.remove('nope'), jobs.list().join(','));\n"
        "  if (e.id === 'missing') jobs.run('a');\n}\n"
    )
    agent = rt.put(AgentDef("jobs", source))
    assert sorted(agent.jobs) == ["a", "b"] and agent.jobs["a"].cron is not None
    rt.dispatch("onItemCaptured", [{"id": "list"}, {"id": "run"}, {"id": "remove"}])
    assert [line.text for line in agent.lines] == ["a,b", "b ran 1", "true false b"]
    assert sorted(agent.jobs) == ["b"]  # the host's schedule follows jobs.remove
    rt.dispatch("onItemCaptured", [{"id": "missing"}])
    assert agent.state == "failed" and 'jobs.run: no job "a"' in agent.last_error and agent.error_line == 9
