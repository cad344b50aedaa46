"""`pcap.snapshot(filter, name, seconds)`: the recorded packets that match, written to a pcapng file
by the capture service (asynchronous: a promise, and an optional callback)."""

from __future__ import annotations

from typing import Final

from wiretide.agents.helpers import Call, Helper, Host

JS: Final = """
var pcap = {
  snapshot: function (filter, name, seconds, cb) {
    var sig = "pcap.snapshot(filter, name, seconds, cb)";
    if (typeof seconds === "function" && cb === undefined) { cb = seconds; seconds = undefined; }
    __wt_check(sig, "filter", filter, ["string"]);
    __wt_check(sig, "name", name, ["string"]);
    if (!/^[A-Za-z0-9._-]{1,100}$/.test(name)) {
      throw new TypeError(sig + ": name must be 1-100 letters, digits, '.', '_' or '-'");
    }
    if (seconds === undefined) seconds = 60;
    __wt_check(sig, "seconds", seconds, ["number"]);
    if (!(seconds > 0 && seconds <= 3600)) throw new TypeError(sig + ": seconds must be in (0, 3600]");
    return __wt_async("pcap.snapshot", [filter, name, seconds], cb);
  },
};
"""


def _snapshot(call: Call, host: Host) -> None:
    call_id, bpf, name, seconds = call.args
    backend = host.backend
    host.submit(
        f"pcap.snapshot {name}", lambda: backend.snapshot(str(bpf), str(name), float(seconds)), int(call_id)
    )


HELPER: Final = Helper(
    namespace="pcap",
    js=JS,
    doc="""`pcap.snapshot(filter, name, seconds = 60, cb?)`: ask the capture service for the packets of the
last `seconds` that match the BPF `filter` (`""` for all) and write them to
`<data dir>/snapshots/<name>.pcapng`; returns a promise of `{path, packets}` (and calls `cb(result,
error)` when given). Needs the recorder on (`WIRETIDE_CAPTURE_RECORD_*`).""",
    handlers={"pcap.snapshot": _snapshot},
)
