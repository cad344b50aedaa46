"""`kfl.match(query, entry)` and `kfl.query(query, limit)`: KFL, the filter language of the UI, in agents.

JavaScript cannot call Python while the sandbox has a time limit, so `kfl.match` does not evaluate
anything in the sandbox: the queries an agent can ask are found in its source when it loads (a
string literal at the call, a `const`/`let`/`var` holding a string literal, or `env.NAME`), each is
compiled once (and cached by its text across agents), and for every entry handed to a hook the
runtime evaluates them in Python once per batch and passes the answers along. `kfl.query` goes to
the gateway's REST API off the hook path and answers through a promise.

Rule: a query that does not parse stops the agent at load (at `put`) with its line and the KFL
error; a query the loader could not see is a clear error when called, never a silent false.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

from wiretide.agents.helpers import Call, Helper, Host
from wiretide.common.kfl import KflError, Predicate, compile_predicate

PREDICATE_CACHE: Final = 1024  # compiled queries kept (by text), shared by every agent
MAX_QUERIES: Final = 64  # kfl.match queries per agent: each costs a predicate per entry
MAX_QUERY_LIMIT: Final = 1000  # kfl.query answers at most this many entries

_STRING: Final = r"""(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`$\\]*`)"""
_CALL: Final = re.compile(
    r"\bkfl\s*\.\s*match\s*\(\s*(?:(?P<lit>"
    + _STRING
    + r")|env\s*\.\s*(?P<env>[A-Za-z_$][\w$]*)|(?P<id>[A-Za-z_$][\w$]*))"
)
_DECL: Final = r"\b(?:const|let|var)\s+{name}\s*=\s*(?P<lit>" + _STRING + ")"

JS: Final = """
var kfl = {
  match: function (query, entry) {
    var sig = "kfl.match(query, entry)";
    __wt_check(sig, "query", query, ["string"]);
    var i = __wt_kq[query];
    if (i === undefined) {
      throw new TypeError(sig + ": query " + JSON.stringify(query) + " was not seen when the agent loaded: " +
        "write it as a string literal in the call, a const holding a string literal, or env.NAME");
    }
    if (entry !== __wt_cur || __wt_kres === null) {
      throw new TypeError(sig + ": entry must be the entry handed to onItemCaptured or onItemQueried");
    }
    return __wt_kres[i] === 1;
  },
  query: function (query, limit, cb) {
    var sig = "kfl.query(query, limit, cb)";
    if (typeof limit === "function" && cb === undefined) { cb = limit; limit = undefined; }
    __wt_check(sig, "query", query, ["string"]);
    if (limit === undefined) limit = 100;
    __wt_check(sig, "limit", limit, ["number"]);
    if (!(limit >= 1 && limit <= 1000 && Math.floor(limit) === limit)) {
      throw new TypeError(sig + ": limit must be an integer 1..1000");
    }
    return __wt_async("kfl.query", [query, limit], cb);
  },
};
"""


class KflLoadError(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line

    def __str__(self) -> str:
        return f"{self.args[0]} (line {self.line})" if self.line else str(self.args[0])


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    if literal[0] == "`":
        return body
    if literal[0] == "'":
        body = body.replace("\\'", "'").replace('"', '\\"')
    try:
        return str(json.loads('"' + body + '"'))
    except json.JSONDecodeError:
        return body


def load_queries(source: str, env: Mapping[str, str]) -> list[str]:
    """The kfl.match queries of an agent, each checked; raises KflLoadError with the line."""
    found: dict[str, int] = {}
    for m in _CALL.finditer(source):
        line = source.count("\n", 0, m.start()) + 1
        if m.group("lit"):
            text: str | None = _unquote(m.group("lit"))
        elif m.group("env"):
            text = env.get(m.group("env"))
            if text is None:
                raise KflLoadError(f"kfl.match uses env.{m.group('env')}, which is not set", line)
        else:
            decl = re.search(_DECL.format(name=re.escape(m.group("id"))), source)
            text = _unquote(decl.group("lit")) if decl else None  # else: found missing at call time
        if text is not None and text not in found:
            found[text] = line
    if len(found) > MAX_QUERIES:
        raise KflLoadError(f"more than {MAX_QUERIES} distinct kfl.match queries", 0)
    for text, line in found.items():
        try:
            predicate(text)
        except KflError as exc:
            raise KflLoadError(f"kfl.match query {text!r}: {exc}", line) from None
    return list(found)


@lru_cache(maxsize=PREDICATE_CACHE)
def predicate(text: str) -> Predicate:
    """The compiled query (KflError when it does not parse); one compilation per text."""
    return compile_predicate(text)


def _query(call: Call, host: Host) -> None:
    call_id, text, limit = call.args
    backend = host.backend
    host.submit("kfl.query", lambda: _run_query(backend, str(text), int(limit)), int(call_id))


async def _run_query(backend: Any, text: str, limit: int) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await backend.kfl_query(text, min(limit, MAX_QUERY_LIMIT))
    return result


HELPER: Final = Helper(
    namespace="kfl",
    js=JS,
    doc="""`kfl.match(query, entry)`: true when the entry handed to `onItemCaptured`/`onItemQueried`
matches the KFL query (the UI's filter language, e.g. `"http && status_code >= 500"`). The query must
be visible when the agent loads — a string literal in the call, a `const` holding one, or
`env.NAME` — so that it is compiled once and checked at `put` (a bad query is reported with its
line). `kfl.query(query, limit = 100, cb?)`: the newest stored entries that match, from the gateway;
returns a promise of an array of entries (and calls `cb(entries, error)` when given).""",
    handlers={"kfl.query": _query},
)
