"""`test.pass(entry, note)` / `test.fail(entry, note)`: marks on entries, counted per agent.

Rule: a mark made in `onItemQueried` is shown on that entry in the UI; every mark is counted, and the
replay harness exits 1 when any agent failed a test.
"""

from __future__ import annotations

from typing import Final

from wiretide.agents.helpers import Call, Helper, Host

JS: Final = """
function __wt_test(result, entry, note) {
  var sig = "test." + result + "(entry, note)";
  __wt_check(sig, "entry", entry, ["object"]);
  if (note !== undefined) __wt_check(sig, "note", note, ["string"]);
  __wt_emit(["test", result, typeof entry.id === "string" ? entry.id : "", note === undefined ? "" : note]);
  return entry;
}
var test = {
  pass: function (entry, note) { return __wt_test("pass", entry, note); },
  fail: function (entry, note) { return __wt_test("fail", entry, note); },
};
"""


def _test(call: Call, host: Host) -> None:
    result, entry_id, note = call.args
    host.test("pass" if result == "pass" else "fail", str(entry_id), str(note))


HELPER: Final = Helper(
    namespace="test",
    js=JS,
    doc="""`test.pass(entry, note?)`, `test.fail(entry, note?)`: mark `entry` as passing or failing a check
and return it. Marks made in `onItemQueried` appear on the entry in the UI's table and detail pane;
marks are counted per agent (`tests_passed`, `tests_failed`), and `wiretide agents test` exits 1
when any `test.fail` ran.""",
    handlers={"test": _test},
)
