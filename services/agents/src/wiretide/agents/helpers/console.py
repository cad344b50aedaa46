"""`console.log/info/warn/error/debug`: lines in the agent's log (REST, CLI, the UI's Agents panel).

Rule: at most `MAX_LINES_PER_CALL` lines per call into the sandbox are kept; the rest are counted and
the count is logged, so an agent that logs every entry cannot flood its log or the host.
"""

from __future__ import annotations

from typing import Final

from wiretide.agents.helpers import Call, Helper, Host

MAX_LINES_PER_CALL: Final = 1000  # also __wt_max_logs in the prelude

JS: Final = """
function __wt_console(stream, args) {
  if (__wt_logs >= __wt_max_logs) { __wt_log_dropped++; return; }
  __wt_logs++;
  __wt_emit([stream, __wt_fmt(args)]);
}
var console = {
  log: function () { __wt_console("console.log", arguments); },
  info: function () { __wt_console("console.log", arguments); },
  debug: function () { __wt_console("console.log", arguments); },
  warn: function () { __wt_console("console.error", arguments); },
  error: function () { __wt_console("console.error", arguments); },
};
"""


def _log(call: Call, host: Host) -> None:
    host.log("log", str(call.args[0]))


def _error(call: Call, host: Host) -> None:
    host.log("error", str(call.args[0]))


def _dropped(call: Call, host: Host) -> None:
    counters = getattr(host, "counters", None)  # the service's and the harness's hosts count them
    if counters is not None:
        counters.log_dropped += int(call.args[0])
    host.log("system", f"{call.args[0]} console lines dropped: more than {MAX_LINES_PER_CALL} in one call")


HELPER: Final = Helper(
    namespace="console",
    js=JS,
    doc="""`console.log(...values)`, `console.error(...values)` (also `info`, `debug`, `warn`): one line in
the agent's log; strings as they are, other values as JSON. The log keeps the newest 1000 lines per
agent (`wiretide agents logs NAME`, `GET /api/agents/NAME/logs`, the UI's Agents panel); at most 1000
lines per call into the sandbox are kept and the rest counted.""",
    handlers={"console.log": _log, "console.error": _error, "console.dropped": _dropped},
)
