"""`record.start(name, filter, minutes)`: start a recording job now — the entries matching the KFL
`filter`, their packets and the names of the interval, for `minutes`, including the preceding minutes
still in the capture ring — run by the gateway like any other job (asynchronous: a promise).

Rule: the helper only stores a job definition (the jobs' KV bucket is the one truth the gateway runs);
a bad filter or a recording of that name still running rejects the promise and stores nothing.
"""

from __future__ import annotations

import time
from typing import Any, Final

import orjson

from wiretide.agents.helpers import Call, Helper, Host
from wiretide.common.kfl import KflError, parse_query
from wiretide.common.recording import AGENT_PRECEDING_S, InvalidJob, RecordingJob, open_bucket

MAX_MINUTES: Final = 1440

JS: Final = """
var record = {
  start: function (name, filter, minutes, cb) {
    var sig = "record.start(name, filter, minutes, cb)";
    if (typeof minutes === "function" && cb === undefined) { cb = minutes; minutes = undefined; }
    __wt_check(sig, "name", name, ["string"]);
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name)) {
      throw new TypeError(sig + ": name must be 1-63 letters, digits, '.', '_' or '-'");
    }
    __wt_check(sig, "filter", filter, ["string"]);
    if (minutes === undefined) minutes = 10;
    __wt_check(sig, "minutes", minutes, ["number"]);
    if (!(minutes > 0 && minutes <= 1440)) throw new TypeError(sig + ": minutes must be in (0, 1440]");
    return __wt_async("record.start", [name, filter, minutes], cb);
  },
};
"""


async def start_recording(backend: Any, agent: str, name: str, filt: str, minutes: float) -> dict[str, Any]:
    service = getattr(backend, "service", None)
    bus = getattr(service, "bus", None)
    if bus is None:
        raise RuntimeError("record.start needs a running Wiretide")
    if filt.strip():
        try:
            parse_query(filt)
        except KflError as exc:
            raise ValueError(f"record.start: filter: {exc}") from None
    now = time.time_ns()
    try:
        job = RecordingJob(
            name=name,
            filter=filt,
            start_ns=now,
            duration_s=float(minutes) * 60,
            preceding_s=AGENT_PRECEDING_S,
            created_ns=now,
            created_by=f"agent:{agent}",
            origin="agent",
        )
        RecordingJob.from_dict(job.to_dict())  # the bounds every stored job keeps
    except InvalidJob as exc:
        raise ValueError(f"record.start: {exc}") from None
    kv = await open_bucket(bus.js)
    from nats.js.errors import KeyNotFoundError

    try:
        current = await kv.get(name)
    except KeyNotFoundError:
        current = None
    if current is not None and current.value:
        old = RecordingJob.from_json(current.value)
        if not old.finished(now):
            raise RuntimeError(f"record.start: a recording {name!r} is already scheduled or running")
    await kv.put(name, job.to_json())
    return orjson.loads(job.to_json())  # type: ignore[no-any-return]


def _start(call: Call, host: Host) -> None:
    call_id, name, filt, minutes = call.args
    backend = host.backend
    agent = host.agent
    host.submit(
        f"record.start {name}",
        lambda: start_recording(backend, agent, str(name), str(filt), float(minutes)),
        int(call_id),
    )


HELPER: Final = Helper(
    namespace="record",
    js=JS,
    doc="""`record.start(name, filter, minutes = 10, cb?)`: start a recording job `name` now, for `minutes`
(at most 1440), of the entries matching the KFL `filter` (`""` for all), the packets of their flows and
the names of the interval — including the preceding 5 minutes still in the capture ring. The gateway
runs it like any job (`wiretide record get NAME`, `/api/recordings/NAME`); returns a promise of the
stored job (and calls `cb(job, error)` when given). Rejected when a recording of that name is still
scheduled or running, or the filter is not valid KFL.""",
    handlers={"record.start": _start},
)
