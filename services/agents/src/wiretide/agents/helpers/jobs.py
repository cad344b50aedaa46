"""`jobs.schedule(tag, cron, fn)`, `jobs.remove(tag)`, `jobs.list()`, `jobs.run(tag)`: code on a schedule.

Rule: the cron string is parsed when the schedule is recorded; one that does not parse stops the
agent with the parser's message and the line of the `jobs.schedule` call (at `put`, for a schedule
made at the top level), instead of a job that never runs.
"""

from __future__ import annotations

from typing import Final

from wiretide.agents.cron import CronError, parse_cron
from wiretide.agents.helpers import Call, Helper, Host

JS: Final = """
var __wt_jobs = new Map();
function __wt_jobs_run(tag) {
  var fn = __wt_jobs.get(tag);
  if (fn !== undefined) fn();
}
var jobs = {
  schedule: function (tag, cron, fn) {
    var sig = "jobs.schedule(tag, cron, fn)";
    __wt_check(sig, "tag", tag, ["string"]);
    __wt_check(sig, "cron", cron, ["string"]);
    __wt_check(sig, "fn", fn, ["function"]);
    __wt_jobs.set(tag, fn);
    __wt_emit(["jobs.schedule", tag, cron, __wt_line()]);
  },
  remove: function (tag) {
    __wt_check("jobs.remove(tag)", "tag", tag, ["string"]);
    var had = __wt_jobs.delete(tag);
    __wt_emit(["jobs.remove", tag]);
    return had;
  },
  list: function () { return Array.from(__wt_jobs.keys()); },
  run: function (tag) {
    __wt_check("jobs.run(tag)", "tag", tag, ["string"]);
    var fn = __wt_jobs.get(tag);
    if (fn === undefined) throw new Error("jobs.run: no job " + JSON.stringify(tag));
    fn();
  },
};
"""


def _schedule(call: Call, host: Host) -> None:
    tag, text, line = call.args
    try:
        cron = parse_cron(str(text))
    except CronError as exc:
        host.fail(f"jobs.schedule({tag!r}, {str(text)[:80]!r}): {exc}", int(line or 0))
        return
    host.schedule(str(tag), cron)


def _remove(call: Call, host: Host) -> None:
    host.unschedule(str(call.args[0]))


HELPER: Final = Helper(
    namespace="jobs",
    js=JS,
    doc="""`jobs.schedule(tag, cron, fn)`: run `fn()` on the schedule `cron`, six fields with seconds
(`second minute hour day-of-month month day-of-week`: `"*/10 * * * * *"` every ten seconds,
`"0 0 * * * *"` hourly; `*`, numbers, `a-b`, `a,b`, `*/n`, `jan`..`dec`, `sun`..`sat`; five fields
mean second 0). Scheduling the same tag again replaces it. A cron string that does not parse stops
the agent with the reason and the line (reported at `put` when scheduled at the top level).
`jobs.remove(tag)` stops a job (true if it existed), `jobs.list()` returns the tags, `jobs.run(tag)`
runs one now. In the replay harness, jobs run on the capture's clock.""",
    handlers={"jobs.schedule": _schedule, "jobs.remove": _remove},
)
