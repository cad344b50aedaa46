"""`prometheus.metric(...)` and `prometheus.vector(...)`: an agent's own series on the agents service's
`/metrics`, each labelled with the agent's name.

Rule: the sandbox sums counter increments and keeps the last gauge value per series within a call,
and hands them over once per call (never once per entry); a series whose name, type or labels clash
with an existing one is refused with a line in the agent's log.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wiretide.agents.helpers import Call, Helper, Host

MAX_SERIES: Final = 10_000  # per process: an agent that labels by entry id hits this, not the memory limit
NAME: Final = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

JS: Final = """
function __wt_metric(sig, name, help, type, lnames, lvalues, value) {
  __wt_check(sig, "name", name, ["string"]);
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name) || name.indexOf("wiretide_") === 0) {
    throw new TypeError(
      sig + ": name " + JSON.stringify(name) +
        " must match [a-zA-Z_:][a-zA-Z0-9_:]* and not start with wiretide_"
    );
  }
  __wt_check(sig, "help", help, ["string"]);
  var t = type === 1 || type === "counter" ? "counter" : type === 2 || type === "gauge" ? "gauge" : null;
  if (t === null) {
    throw new TypeError(
      sig + ": type must be \\"counter\\" or \\"gauge\\" (or 1, 2), got " + JSON.stringify(type)
    );
  }
  __wt_check(sig, "value", value, ["number"]);
  if (!isFinite(value)) throw new TypeError(sig + ": value must be a finite number");
  if (t === "counter" && value < 0) {
    throw new TypeError(sig + ": a counter only goes up (value " + value + ")");
  }
  var key = name + "\\u0000" + lvalues.join("\\u0000");
  var m = __wt_metrics.get(key);
  if (m === undefined) { m = [name, help, t, lnames, lvalues, 0]; __wt_metrics.set(key, m); }
  if (t === "counter") m[5] += value; else m[5] = value;
}
var prometheus = {
  metric: function (name, help, type, value) {
    __wt_metric("prometheus.metric(name, help, type, value)", name, help, type, [], [], value);
  },
  vector: function (name, help, type, labelNames, labels, value) {
    var sig = "prometheus.vector(name, help, type, labelNames, labels, value)";
    __wt_check(sig, "labelNames", labelNames, ["array"]);
    __wt_check(sig, "labels", labels, ["array", "object"]);
    var values = [];
    for (var i = 0; i < labelNames.length; i++) {
      var n = labelNames[i];
      if (typeof n !== "string" || !/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(n) || n === "agent") {
        throw new TypeError(
          sig + ": label name " + JSON.stringify(n) + " must match [a-zA-Z_][a-zA-Z0-9_]* (and not be agent)"
        );
      }
      var v = Array.isArray(labels) ? labels[i] : labels[n];
      values.push(v === undefined || v === null ? "" : String(v));
    }
    __wt_metric(sig, name, help, type, labelNames, values, value);
  },
};
"""


class MetricsTable(Collector):
    """Every agent's series, exposed through the process's Prometheus registry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> (help, type, label names); (name, agent, label values) -> value
        self.families: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        self.values: dict[tuple[str, str, tuple[str, ...]], float] = {}
        self.refused = 0

    def apply(self, agent: str, rows: list[list[Any]]) -> list[str]:
        """Apply one call's series; return why any were refused."""
        problems: list[str] = []
        with self._lock:
            for name, help_text, kind, lnames, lvalues, value in rows:
                family = (str(help_text), str(kind), tuple(str(n) for n in lnames))
                known = self.families.get(name)
                if known is None:
                    self.families[name] = family
                elif known[1:] != family[1:]:
                    self.refused += 1
                    problems.append(f"metric {name}: already a {known[1]} with labels {list(known[2])}")
                    continue
                key = (str(name), agent, tuple(str(v) for v in lvalues))
                if key not in self.values and len(self.values) >= MAX_SERIES:
                    self.refused += 1
                    problems.append(f"metric {name}: more than {MAX_SERIES} series, refused")
                    continue
                if kind == "counter":
                    self.values[key] = self.values.get(key, 0.0) + float(value)
                else:
                    self.values[key] = float(value)
        return problems

    def forget(self, agent: str) -> None:
        with self._lock:
            for key in [k for k in self.values if k[1] == agent]:
                del self.values[key]
            used = {k[0] for k in self.values}
            for name in [n for n in self.families if n not in used]:
                del self.families[name]

    def value(self, name: str, agent: str, labels: tuple[str, ...] = ()) -> float | None:
        with self._lock:
            return self.values.get((name, agent, labels))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = list(self.values.items())
            families = dict(self.families)
        out: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for (name, agent, lvalues), value in snapshot:
            help_text, kind, lnames = families[name]
            fam = out.get(name)
            if fam is None:
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                fam = out[name] = cls(name, help_text, labels=["agent", *lnames])
            fam.add_metric([agent, *lvalues], value)
        yield from out.values()


def _apply(call: Call, host: Host) -> None:
    for problem in host.backend.metrics.apply(host.agent, list(call.args[0])):
        host.log("error", problem)


HELPER: Final = Helper(
    namespace="prometheus",
    js=JS,
    doc="""`prometheus.metric(name, help, type, value)`: a series on the agents service's `/metrics`;
`type` is `"counter"` (`value` is added) or `"gauge"` (`value` is set), or Kubeshark's 1 and 2.
`prometheus.vector(name, help, type, labelNames, labels, value)`: the same with labels (`labels` an
array in the order of `labelNames`, or an object). Every series gets an `agent` label. Names must
not start with `wiretide_` (the service's own); a name reused with another type or other labels is
refused with a line in the log; at most 10,000 series in all.""",
    handlers={"prometheus": _apply},
)
