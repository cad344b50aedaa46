"""The tables every replica keeps of every replica's agents: lines of several replicas merge by one
cursor that any replica gives the same; a purge empties them; what does not decode is skipped; an
agent's state is failed when a live replica stopped it (named when there are several), and a stale
replica or one still on an older revision is listed but left out of the state and the counters."""

from __future__ import annotations

import time
from typing import Any

import orjson

from wiretide.agents.model import AgentDef
from wiretide.agents.replicas import CURSOR_SPAN, STALE_AFTER_S, Shared, replica_token
from wiretide.agents.runtime import Backend, Limits, Runtime
from wiretide.agents.service import agent_message


def batch(replica: str, *texts: str) -> bytes:
    return orjson.dumps({"replica": replica, "lines": [[i, "log", t] for i, t in enumerate(texts)]})


def state(replica: str, **fields: Any) -> bytes:
    doc = {"replica": replica, "state": "running", "revision": 7, "items": 0, "seen_ns": time.time_ns()}
    return orjson.dumps({**doc, **fields})


def test_lines_of_two_replicas_merge_by_cursor_and_a_cursor_resumes_anywhere() -> None:
    a, b = Shared(), Shared()
    values = [
        ("log.x.r1", 3, batch("r1", "one", "two")),
        ("log.x.r2", 4, batch("r2", "three")),
        ("log.x.r1", 9, batch("r1", "four")),
    ]
    for key, rev, value in values:
        a.apply(key, rev, value, None)
    for key, rev, value in reversed(values):  # another replica's watch, in another order
        b.apply(key, rev, value, None)
    merged = a.lines("x")
    assert [(x.text, x.replica) for x in merged] == [
        ("one", "r1"),
        ("two", "r1"),
        ("three", "r2"),
        ("four", "r1"),
    ]
    assert [x.seq for x in merged] == [3 * CURSOR_SPAN, 3 * CURSOR_SPAN + 1, 4 * CURSOR_SPAN, 9 * CURSOR_SPAN]
    assert a.lines("x", after=merged[1].seq) == b.lines("x", after=merged[1].seq) == merged[2:]
    assert a.lines("x", limit=1) == merged[-1:]
    assert a.replicas_with_lines("x") == ["r1", "r2"]
    a.apply("log.x.r1", 10, None, "PURGE")
    assert [x.text for x in a.lines("x")] == ["three"]
    a.apply("log.x.r2", 11, None, "PURGE")
    assert not a.knows("x")


def test_values_that_do_not_decode_are_skipped_and_never_raise() -> None:
    shared = Shared()
    for key, value in [
        ("log.x.r1", b"not json"),
        ("log.x.r1", b"[1, 2]"),
        ("log.x.r1", orjson.dumps({"lines": [[1, "log"], "text", None, [1, "log", "kept"]]})),
        ("state.x", state("r1")),
        ("other.x.r1", state("r1")),
        ("log..r1", batch("r1", "no agent")),
        ("state.x.r2", b"\xff\xfe"),
    ]:
        shared.apply(key, 5, value, None)
    shared.apply("state.y.r9", 6, None, "DEL")  # a deletion of what was never seen
    assert [x.text for x in shared.lines("x")] == ["kept"]
    assert shared.states("x") == {}
    assert not shared.knows("y")
    assert replica_token("pod.a b/c") == "pod_a_b_c"


def test_a_failure_on_one_replica_fails_the_agent_naming_it_and_counters_add_up() -> None:
    rt = Runtime(Backend("r1"), Limits(memory_mb=32, time_limit_s=0.2))
    definition = AgentDef("x", "function onItemCaptured(e) {}\n", revision=7)
    run = rt.put(definition)
    rt.dispatch("onItemCaptured", [{"id": str(i)} for i in range(5)])
    shared = Shared()
    now = time.time_ns()
    shared.apply("state.x.r1", 1, state("r1", items=99), None)  # this replica's own, as shared
    shared.apply(
        "state.x.r2", 2, state("r2", state="failed", last_error="boom (line 3)", error_line=3, items=4), None
    )
    shared.apply("state.x.r3", 3, state("r3", items=1000, seen_ns=now - int(2 * STALE_AFTER_S * 1e9)), None)
    shared.apply("state.x.r4", 4, state("r4", revision=6, state="failed", last_error="old", items=50), None)
    msg = agent_message(run, definition, False, shared.states("x", now), "r1")
    assert msg.state == "failed"
    assert (msg.last_error, msg.error_line) == ("r2: boom (line 3)", 3)
    assert msg.items == 5 + 4  # r1 (live, not its shared copy) and r2; not the stale r3 nor r4 on revision 6
    assert [(r.replica, r.state, r.stale) for r in msg.replicas] == [
        ("r1", "running", False),
        ("r2", "failed", False),
        ("r3", "running", True),
        ("r4", "failed", False),
    ]
    alone = agent_message(run, definition, False, {}, "r1")
    assert (alone.state, alone.last_error, alone.items) == ("running", "", 5)
    rt.put(AgentDef("x", "function onItemCaptured(e) { while (true) {} }\n", revision=7))
    rt.dispatch("onItemCaptured", [{"id": "a"}])
    failed_alone = agent_message(rt.agents["x"], definition, False, {}, "r1")
    assert failed_alone.state == "failed" and failed_alone.last_error.startswith("time limit exceeded")
