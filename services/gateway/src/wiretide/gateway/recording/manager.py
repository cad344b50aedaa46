"""The recording manager: runs the jobs of the KV bucket — scheduled windows and triggers — and turns
each run into a bundle: the run's entries (from the store), the packets of their flows (cut from the
capture recorder's ring), and the identities of its interval (from the resolver), then uploads it.

Rule: a run collects in cuts, each covering a time interval that follows the previous one without a
gap or an overlap (entries by their timestamp; packets by theirs), and its state is on disk after
every cut, so a restarted gateway resumes where it stopped. Nothing a run cannot keep is lost
silently: every limit (disk, entries, the ring's reach) is counted in the run's status and in
`/api/health`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import grpc
import orjson
from google.protobuf.json_format import MessageToDict
from pydantic import field_validator

from wiretide.common.auth import NamespaceScope
from wiretide.common.kfl import KflError, compile_predicate, parse_query
from wiretide.common.recording import NS, InvalidJob, RecordingJob
from wiretide.common.rpc import channel
from wiretide.common.settings import CommonSettings
from wiretide.gateway.recording import bundle as bundles
from wiretide.gateway.recording.lease import Lease, replica_name
from wiretide.gateway.recording.lease import open_bucket as open_lease_bucket
from wiretide.gateway.recording.pcapng import Selection, select_flows
from wiretide.gateway.recording.shared import SharedRuns
from wiretide.gateway.recording.shared import open_bucket as open_runs_bucket
from wiretide.gateway.recording.store import JobStore
from wiretide.gateway.recording.upload import UploadError, upload_bundle
from wiretide.proto.v1 import capture_pb2, capture_pb2_grpc, resolver_pb2, resolver_pb2_grpc

log = logging.getLogger(__name__)

TICK_S: Final = 1.0
PAGE: Final = 1000  # entries per store page while a cut collects
MAX_ENTRIES_PER_RUN: Final = 2_000_000  # beyond: counted (`entries_cap`), not written
# Packets from this long before a run's start are taken too: the handshakes of its first calls.
HANDSHAKE_MARGIN_NS: Final = 2 * NS
# A snapshot answer is bounded (capture's SNAPSHOT_INLINE_MAX): a window that is too large is halved
# until its packets fit, down to this span (then counted as `packets_too_large`).
MIN_SNAPSHOT_SPAN_NS: Final = NS // 10
RPC_TIMEOUT_S: Final = 60.0
MAX_ERRORS: Final = 20  # the last errors kept in a run's status
STATUS: Final = "status.json"
SHARED_READY_S: Final = 10.0  # how long start-up waits for the shared runs' current values


class RecordingSettings(CommonSettings):
    """`WIRETIDE_RECORDING_*`: where runs and bundles live on this node, how often a run collects and
    uploads, and the node's limits."""

    recording_dir: Path | None = None  # default: <data dir>/recordings
    recording_cut_s: float = 30.0  # an active run collects this often
    recording_lag_s: float = 5.0  # entries younger than this are left to the next cut (still in flight)
    recording_max_mb: int = 10_240  # runs and bundles on this node together
    recording_max_age_s: float = 30 * 86_400.0  # bundles kept locally this long (0 = no bound)
    recording_upload_every_s: float = 3_600.0  # an active run uploads a partial bundle this often
    recording_preceding_s: float = 300.0  # what `record.start` takes from before it (the ring's reach)
    recording_import: str = ""  # bundles to load at start (`wiretide up --recording`), os.pathsep-separated
    # The URL other gateway replicas reach this one's HTTP API at (to fetch a bundle kept here);
    # empty: derived from WIRETIDE_GATEWAY_HTTP (its host, or this host's address when it is 0.0.0.0).
    recording_advertise_url: str = ""
    recording_lease_ttl_s: float = 15.0  # a dead lease holder's jobs are taken over within this

    @field_validator("recording_cut_s", "recording_upload_every_s", "recording_lease_ttl_s")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("recording_lag_s", "recording_max_age_s", "recording_preceding_s")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be >= 0")
        return value

    @field_validator("recording_max_mb")
    @classmethod
    def _mb(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be a positive number of MiB")
        return value

    def recordings_path(self) -> Path:
        return self.recording_dir or self.data_dir / "recordings"

    def imports(self) -> list[Path]:
        return [Path(p) for p in self.recording_import.split(os.pathsep) if p.strip()]


class _Store(Protocol):
    def scan(
        self, query: str, *, limit: int, before: Any = None, after: Any = None, max_scan: int = ...
    ) -> Any: ...

    def insert_many(self, docs: Sequence[dict[str, Any]], raw: Sequence[bytes] | None = None) -> int: ...


class _Auth(Protocol):
    def call_metadata(self) -> tuple[tuple[str, str], ...]: ...


class _Live(Protocol):
    def subscribe(self, predicate: Callable[[dict[str, Any]], bool]) -> Any: ...

    def close(self, s: Any, reason: str) -> None: ...

    async def ready(self) -> None: ...


def advertise_url(settings: RecordingSettings, http: str) -> str:
    """Where the other replicas reach this one's HTTP API: the setting, else WIRETIDE_GATEWAY_HTTP
    with this host's address in place of a wildcard."""
    if settings.recording_advertise_url:
        return settings.recording_advertise_url.rstrip("/")
    host, _, port = http.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def rfc3339(ns: int) -> str:
    moment = datetime.fromtimestamp(ns // NS, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % NS:09d}Z"


def run_id(job: str, start_ns: int) -> str:
    return f"{job}-{datetime.fromtimestamp(start_ns // NS, UTC).strftime('%Y%m%dT%H%M%SZ')}"


def check_filter(text: str, what: str = "filter") -> None:
    """A job's KFL, parsed as the store will run it; InvalidJob names the problem and its position."""
    if not text.strip():
        return
    try:
        parse_query(text)
    except KflError as exc:
        raise InvalidJob(f"{what}: {exc} (at {exc.position})") from None


def selection_kfl(job: RecordingJob, start_ns: int, end_ns: int) -> str:
    """What a run of `job` takes from the store in [start_ns, end_ns): its filter, its window, its
    namespaces (either end) and nodes."""
    parts = [f'timestamp >= timestamp("{rfc3339(start_ns)}") && timestamp < timestamp("{rfc3339(end_ns)}")']
    if job.filter.strip():
        parts.append(f"(\n{job.filter}\n)")
    if job.namespaces:
        clause = NamespaceScope(frozenset(job.namespaces)).kfl()
        if clause:
            parts.append(f"({clause})")
    if job.nodes:
        parts.append(f"node_name in {orjson.dumps(list(job.nodes)).decode()}")
    return " && ".join(parts)


@dataclass(slots=True)
class Run:
    """One run of a job, as kept in `<run dir>/status.json`."""

    id: str
    job: str
    start_ns: int
    end_ns: int
    state: str = "recording"  # recording | done | failed | imported
    collected_until_ns: int = 0  # entries with timestamps before this are in
    packets_until_ns: int = 0  # packets with timestamps before this are in
    carry_flows: list[str] = field(default_factory=list)  # flows of the last cut: their later packets
    entries: int = 0
    packets: dict[str, int] = field(default_factory=dict)  # node -> packets kept
    identities: int = 0
    bytes: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    bundle: str = ""
    bundle_sha256: str = ""
    uploads: dict[str, Any] = field(default_factory=dict)
    last_partial_upload_ns: int = 0
    partials: int = 0
    filter: str = ""
    namespaces: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    trigger_fired_ns: int = 0
    finished_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Run:
        known = {k: v for k, v in doc.items() if k in cls.__slots__}
        return cls(**known)

    def note(self, message: str) -> None:
        if self.errors and self.errors[-1] == message:
            return  # the same trouble cut after cut: once is enough (its drops count each time)
        self.errors = [*self.errors[-(MAX_ERRORS - 1) :], message]

    def count(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n


@dataclass(slots=True)
class TriggerState:
    """The last `threshold + 1` arrival times of entries matching a trigger's condition."""

    job: str
    threshold: int
    window_ns: int
    times: deque[int]
    subscriber: Any = None
    fired: int = 0

    def seen(self, now_ns: int) -> bool:
        self.times.append(now_ns)
        return len(self.times) > self.threshold and now_ns - self.times[0] <= self.window_ns


class DiskFull(OSError):
    pass


class RecordingManager:
    def __init__(
        self,
        settings: RecordingSettings,
        store: _Store,
        auth: _Auth,
        live: _Live | None = None,
        clock: Callable[[], int] = time.time_ns,
        capture_nodes: Callable[[], Awaitable[dict[str, str]]] | None = None,
        url: str = "",
    ) -> None:
        self.settings = settings
        self.capture_nodes = capture_nodes  # node -> capture gRPC address (the per-node registry)
        self.replica = replica_name()
        self.url = url
        self.lease: Lease | None = None
        self.shared: SharedRuns | None = None
        self._dirty: set[str] = set()
        self._reconciled = False
        self.store = store
        self.auth = auth
        self.live = live
        self.clock = clock
        self.root = settings.recordings_path()
        self.jobs: dict[str, RecordingJob] = {}
        self.runs: dict[str, Run] = {}
        self.triggers: dict[str, TriggerState] = {}
        self.counters: dict[str, int] = {}
        self.job_store: JobStore | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._fired: list[tuple[str, int]] = []
        self._busy = asyncio.Lock()
        self.last_error = ""

    # -- paths ----------------------------------------------------------------------------------

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def bundles_dir(self) -> Path:
        return self.root / "bundles"

    @property
    def imported_dir(self) -> Path:
        return self.root / "imported"

    def run_dir(self, run: Run) -> Path:
        return self.runs_dir / run.id

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, js: Any) -> None:
        for d in (self.runs_dir, self.bundles_dir, self.imported_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._load_runs()
        for path in self.settings.imports():
            try:
                await asyncio.to_thread(self.import_bundle, path)
            except bundles.BundleError as exc:
                self.last_error = f"import {path}: {exc}"
                log.error("recording import failed", extra={"bundle": str(path), "error": str(exc)})
        self.job_store = await JobStore.open(js)
        self.shared = SharedRuns(await open_runs_bucket(js))
        self._tasks.append(asyncio.create_task(self.shared.watch(), name="rec-runs-watch"))
        self._tasks.append(
            asyncio.create_task(self.job_store.watch(self._on_job, self._ready), name="rec-watch")
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.shared.ready.wait(), SHARED_READY_S)
        ttl = self.settings.recording_lease_ttl_s
        self.lease = Lease(await open_lease_bucket(js, ttl), self.replica, self.url, self._on_lease, ttl)
        await self.lease.step()  # a lone gateway runs its jobs from the first tick
        self.lease.start()
        self._tasks.append(asyncio.create_task(self._loop(), name="rec-loop"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            await self._publish()
        if self.lease is not None:
            await self.lease.stop()
        for name in list(self.triggers):
            self._disarm(name)

    @property
    def leading(self) -> bool:
        """This replica runs the jobs (it holds the lease)."""
        return self.lease is not None and self.lease.held

    async def _on_lease(self, held: bool) -> None:
        if held:
            self._reconciled = False
            for job in self.jobs.values():
                if job.trigger is not None and not job.stopped:
                    await self._arm(job)
        else:
            for name in list(self.triggers):
                self._disarm(name)
            self._fired.clear()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    def _load_runs(self) -> None:
        for status in sorted(self.runs_dir.glob(f"*/{STATUS}")):
            try:
                run = Run.from_dict(orjson.loads(status.read_bytes()))
            except (OSError, orjson.JSONDecodeError, TypeError) as exc:
                log.warning("recording run status unreadable", extra={"file": str(status), "error": str(exc)})
                continue
            self.runs[run.id] = run

    async def _on_job(self, name: str, job: RecordingJob | None) -> None:
        if job is None:
            self.jobs.pop(name, None)
            self._disarm(name)
            return
        self.jobs[name] = job
        if job.trigger is not None and not job.stopped and self.leading:
            await self._arm(job)
        else:
            self._disarm(name)

    # -- triggers -------------------------------------------------------------------------------

    async def _arm(self, job: RecordingJob) -> None:
        """Watch for the trigger; returns once the live feed it counts from is subscribed."""
        assert job.trigger is not None
        self._disarm(job.name)
        if self.live is None:
            return
        try:
            matches = compile_predicate(job.trigger.condition)
        except KflError as exc:
            log.warning("trigger condition refused", extra={"job": job.name, "error": str(exc)})
            return
        scope = NamespaceScope(frozenset(job.namespaces)) if job.namespaces else None
        state = TriggerState(
            job.name,
            job.trigger.threshold,
            int(job.trigger.window_s * NS),
            deque(maxlen=job.trigger.threshold + 1),
        )
        nodes = frozenset(job.nodes)

        def tap(entry: dict[str, Any]) -> bool:
            # Counts, never queues: the hub calls this once per entry, and False keeps the queue empty.
            if (
                matches(entry)
                and (scope is None or scope.allows(entry))
                and (not nodes or entry.get("node") in nodes)
            ):
                now = self.clock()
                if state.seen(now):
                    state.times.clear()
                    state.fired += 1
                    self._fired.append((job.name, now))
            return False

        state.subscriber = self.live.subscribe(tap)
        self.triggers[job.name] = state
        try:
            await self.live.ready()
        except Exception as exc:  # the bus is down: the hub subscribes when the next one comes
            log.warning("trigger's live feed not subscribed", extra={"job": job.name, "error": str(exc)})

    def _disarm(self, name: str) -> None:
        state = self.triggers.pop(name, None)
        if state is not None and state.subscriber is not None and self.live is not None:
            self.live.close(state.subscriber, "trigger disarmed")

    # -- the loop -------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop outlives any one failure; said and shown in health
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("recording tick failed")
            await asyncio.sleep(TICK_S)

    def active(self, job: str) -> Run | None:
        for run in self.runs.values():
            if run.job == job and run.state == "recording":
                return run
        return None

    async def tick(self) -> None:
        if not self._ready.is_set():
            return  # the jobs are not all read yet: a run whose job is unknown would end here
        if not self.leading:
            self._fired.clear()
            return  # another replica runs the jobs
        async with self._busy:
            if not self._reconciled:
                self._reconcile()
            now = self.clock()
            fired, self._fired = self._fired, []
            for name, at in fired:
                job = self.jobs.get(name)
                if job is not None and job.trigger is not None and self.active(name) is None:
                    done = sum(1 for r in self.runs.values() if r.job == name)
                    if not job.repetitions or done < job.repetitions:
                        run = self._start_run(
                            job, at - int(job.preceding_s * NS), at + int(job.duration_s * NS)
                        )
                        run.trigger_fired_ns = at
            for job in list(self.jobs.values()):
                window = job.active_window(now)
                if window is not None:
                    rid = run_id(job.name, window[0])
                    if rid not in self.runs:
                        self._start_run(job, window[0] - int(job.preceding_s * NS), window[1])
                if job.expiry_ns and now >= job.expiry_ns and self.active(job.name) is None:
                    if self.job_store is not None:
                        await self.job_store.delete(job.name)
                    self.jobs.pop(job.name, None)
                    self._disarm(job.name)
            lag = int(self.settings.recording_lag_s * NS)
            cut_ns = int(self.settings.recording_cut_s * NS)
            for run in [r for r in self.runs.values() if r.state == "recording"]:
                job = self.jobs.get(run.job)
                if job is None or job.stopped:
                    # The run ends when the stop is seen; its last cut waits the lag like any other,
                    # so calls made just before the stop (still on their way to the store) are in.
                    run.end_ns = min(run.end_ns, max(now, run.start_ns))
                due = min(now - lag, run.end_ns)
                if due >= run.end_ns or due - run.collected_until_ns >= cut_ns:
                    await self._cut(run, job, due, final=due >= run.end_ns)
                if run.state == "recording" and job is not None and job.upload is not None:
                    every = int(self.settings.recording_upload_every_s * NS)
                    if now - (run.last_partial_upload_ns or run.start_ns) >= every and run.entries:
                        await self._upload_partial(run, job)
            for run in [r for r in self.runs.values() if r.state == "done" and r.bundle]:
                job = self.jobs.get(run.job)
                await self._upload_final(run, job)
            await asyncio.to_thread(self.enforce_limits, now)
            await self._publish()

    def _start_run(self, job: RecordingJob, start_ns: int, end_ns: int) -> Run:
        rid = run_id(job.name, max(start_ns + int(job.preceding_s * NS), 0))
        while rid in self.runs:
            rid += "x"
        run = Run(
            id=rid,
            job=job.name,
            start_ns=start_ns,
            end_ns=end_ns,
            collected_until_ns=start_ns,
            packets_until_ns=start_ns - HANDSHAKE_MARGIN_NS,
            filter=job.filter,
            namespaces=list(job.namespaces),
            nodes=list(job.nodes),
        )
        self.runs[rid] = run
        self.run_dir(run).mkdir(parents=True, exist_ok=True)
        self._save(run)
        log.info("recording started", extra={"job": job.name, "run": rid})
        self.counters["runs_started"] = self.counters.get("runs_started", 0) + 1
        return run

    def _save(self, run: Run) -> None:
        self._dirty.add(run.id)
        d = self.run_dir(run)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (STATUS + ".part")
        try:
            tmp.write_bytes(orjson.dumps(run.to_dict()))
            tmp.replace(d / STATUS)
        except OSError as exc:  # a full disk: the status in memory stays right; said in it
            tmp.unlink(missing_ok=True)
            run.note(f"cannot save status: {exc.strerror}")

    # -- replicas -------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """On taking the lease: runs another replica left recording are continued here — collected
        again from their start (entries from the shared store, packets from the capture rings while
        they hold them, identities from the resolver), since what that replica wrote is on its disk;
        and this replica's own unfinished copies of runs another replica finished are set aside."""
        self._reconciled = True
        shared = self.shared.runs if self.shared is not None else {}
        for rid, doc in list(shared.items()):
            local = self.runs.get(rid)
            if doc.get("replica") in (None, self.replica):
                continue
            if doc.get("state") != "recording":
                if local is not None and local.state == "recording":
                    local.state = "superseded"
                    local.note(f"finished by replica {doc.get('replica')}")
                    shutil.rmtree(self.run_dir(local), ignore_errors=True)
                    self._save(local)
                continue
            if local is not None and local.collected_until_ns >= int(doc.get("collected_until_ns") or 0):
                continue  # this replica's own copy (a restart) is as far as the shared one
            try:
                run = Run.from_dict({k: v for k, v in doc.items() if k not in ("replica", "url", "bundle")})
            except TypeError:
                continue
            shutil.rmtree(self.runs_dir / rid, ignore_errors=True)
            run.collected_until_ns = run.start_ns
            run.packets_until_ns = run.start_ns - HANDSHAKE_MARGIN_NS
            run.carry_flows, run.packets, run.entries, run.identities, run.bytes = [], {}, 0, 0, 0
            run.note(
                f"continued by replica {self.replica} after replica {doc.get('replica')} stopped: "
                "collected again from the start"
            )
            run.count("handovers")
            self.counters["handovers"] = self.counters.get("handovers", 0) + 1
            self.runs[rid] = run
            self._save(run)
            log.info("recording run taken over", extra={"run": rid, "from": doc.get("replica")})

    async def _publish(self) -> None:
        """The changed runs' status into the shared bucket (the lease holder's only)."""
        if self.shared is None or not self._dirty or not self.leading:
            return
        dirty, self._dirty = self._dirty, set()
        for rid in sorted(dirty):
            run = self.runs.get(rid)
            if run is None:
                continue
            try:
                await self.shared.put({**run_doc(run), "replica": self.replica, "url": self.url})
            except Exception as exc:  # shown in health; the next change publishes it again
                self._dirty.add(rid)
                self.last_error = f"cannot share run status: {type(exc).__name__}: {exc}"

    def all_runs(self) -> dict[str, dict[str, Any]]:
        """Every run as the API shows it: this replica's, and those the shared bucket names (kept by
        another replica — `replica` says which)."""
        out: dict[str, dict[str, Any]] = {}
        if self.shared is not None:
            for rid, doc in self.shared.runs.items():
                if doc.get("replica") != self.replica:
                    out[rid] = doc
        for rid, run in self.runs.items():
            if run.state == "superseded":
                continue
            if rid in out and run.state == "recording" and not self.leading:
                continue  # a copy this replica stopped when it lost the lease: the holder's is current
            out[rid] = {**run_doc(run), "replica": self.replica}
        return out

    # -- one cut ----------------------------------------------------------------------------------

    async def _cut(self, run: Run, job: RecordingJob | None, until_ns: int, final: bool) -> None:
        d = self.run_dir(run)
        if run.collected_until_ns < until_ns:
            if self.over_limit():
                run.count("disk_limit_cuts_skipped")
                run.note("the node's recording limit (WIRETIDE_RECORDING_MAX_MB) is reached: cut skipped")
                if not final:
                    self._save(run)
                    return
            else:
                try:
                    await self._collect(run, job, until_ns)
                except DiskFull as exc:
                    run.count("disk_full")
                    run.note(f"disk full: {exc}")
                    self.counters["disk_full"] = self.counters.get("disk_full", 0) + 1
                    self._save(run)
                    return
        if final:
            await asyncio.to_thread(self._finish, run, job, d)
        self._save(run)

    async def _collect(self, run: Run, job: RecordingJob | None, until_ns: int) -> None:
        d = self.run_dir(run)
        spec = job or RecordingJob(
            name=run.job, filter=run.filter, namespaces=tuple(run.namespaces), nodes=tuple(run.nodes)
        )
        text = selection_kfl(spec, run.collected_until_ns, until_ns)
        docs: list[dict[str, Any]] = []
        before = None
        while True:
            page = await asyncio.to_thread(self.store.scan, text, limit=PAGE, before=before)
            docs.extend(page.docs)
            if page.next is None:
                break
            before = page.next
        docs.reverse()  # oldest first in the file
        room = MAX_ENTRIES_PER_RUN - run.entries
        if len(docs) > room:
            run.count("entries_cap", len(docs) - max(room, 0))
            docs = docs[: max(room, 0)]
        flows = {str(e["flow_id"]) for e in docs if e.get("flow_id")}
        packets_to = self.clock()
        # The last cut's flows continue from where their packets were taken; a flow new in this cut
        # is taken from its first call here (less the handshake margin) — its packets may be older
        # than the last cut's packet bound, since entries reach the store later than packets the ring.
        carried = set(run.carry_flows)
        asks: list[tuple[frozenset[str], int, int]] = []
        if carried:
            asks.append((frozenset(carried), run.packets_until_ns, packets_to))
        new = flows - carried
        if new:
            first = min(int(e["timestamp"]) for e in docs if e.get("flow_id") in new)
            asks.append((frozenset(new), first - HANDSHAKE_MARGIN_NS, packets_to))
        selections: dict[str, Selection] = {}
        if asks:
            selections = await self._packets_of_nodes(run, asks)
        identities = await self._identities(run, until_ns)
        sizes = _sizes(d)
        try:
            await asyncio.to_thread(self._write_cut, d, docs, selections, identities)
        except OSError as exc:
            _truncate(d, sizes)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(exc.strerror or "no space left") from None
            raise
        run.entries += len(docs)
        for node, selection in selections.items():
            if selection.kept:
                run.packets[node] = run.packets.get(node, 0) + selection.kept
        if identities is not None:
            run.identities = len(identities)
        run.collected_until_ns = until_ns
        run.packets_until_ns = packets_to
        run.carry_flows = sorted(flows)
        run.bytes = sum(_sizes(d).values())

    def _write_cut(
        self,
        d: Path,
        docs: list[dict[str, Any]],
        selections: dict[str, Selection],
        identities: list[dict[str, Any]] | None,
    ) -> None:
        with open(d / bundles.ENTRIES, "ab") as fh:
            fh.write(b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in docs))
            fh.flush()
            os.fsync(fh.fileno())
        for node, selection in sorted(selections.items()):
            if not selection.data:
                continue
            packets = d / bundles.PACKETS_DIR
            packets.mkdir(exist_ok=True)
            with open(packets / f"{pcapng_name(node)}.pcapng", "ab") as fh:
                fh.write(selection.data)
                fh.flush()
                os.fsync(fh.fileno())
        if identities is not None:
            tmp = d / (bundles.IDENTITIES + ".part")
            tmp.write_bytes(b"".join(orjson.dumps(i, option=orjson.OPT_APPEND_NEWLINE) for i in identities))
            tmp.replace(d / bundles.IDENTITIES)

    async def _packets_of_nodes(
        self, run: Run, asks: list[tuple[frozenset[str], int, int]]
    ) -> dict[str, Selection]:
        """For each (flows, start, end) of `asks`, the packets of those flows in [start, end) from
        every capture node in the run's scope (the per-node registry; the configured capture address
        when it names none): node → what was kept."""
        targets: dict[str, str] = {}
        if self.capture_nodes is not None:
            try:
                targets = dict(await self.capture_nodes())
            except Exception as exc:  # the registry is a hint: the configured address still answers
                run.note(f"capture node registry unavailable: {type(exc).__name__}: {exc}")
        if run.nodes:
            targets = {n: a for n, a in targets.items() if n in run.nodes}
        if not targets:
            targets = {"": self.settings.capture_grpc}
        selections = {node: Selection(node=node) for node in targets}

        async def node_asks(node: str, address: str) -> None:
            for flows, start_ns, end_ns in asks:
                await self._packets(run, flows, start_ns, end_ns, selections[node], address)

        await asyncio.gather(*(node_asks(node, address) for node, address in targets.items()))
        # A node the registry does not name (one configured address) is named by its own recording.
        return {(node or sel.node or "node"): sel for node, sel in selections.items()}

    async def _packets(
        self, run: Run, flows: frozenset[str], start_ns: int, end_ns: int, out: Selection, address: str
    ) -> None:
        """The packets of `flows` in [start_ns, end_ns) from the capture recorder at `address`."""
        s = self.settings
        wanted = frozenset(flows)
        spans = [(start_ns, end_ns)]
        where = f" of node {out.node}" if out.node else ""
        try:
            async with channel(address, s.transport, peer="capture") as ch:
                stub = capture_pb2_grpc.CaptureServiceStub(ch)
                while spans:
                    a, b = spans.pop()
                    request = capture_pb2.CaptureServiceSnapshotRequest(start_ns=a, end_ns=b, inline=True)
                    try:
                        answer = await stub.Snapshot(
                            request, timeout=RPC_TIMEOUT_S, metadata=self.auth.call_metadata()
                        )
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and b - a > MIN_SNAPSHOT_SPAN_NS:
                            mid = a + (b - a) // 2
                            spans += [(mid, b), (a, mid)]  # the earlier half first (popped last-in)
                            continue
                        run.count("packets_unavailable")
                        run.note(f"capture{where} snapshot failed: {exc.code().name}: {exc.details()}")
                        continue
                    await asyncio.to_thread(select_flows, answer.data, wanted, out)
        except (OSError, ValueError) as exc:
            run.count("packets_unavailable")
            run.note(f"capture{where} unreachable: {exc}")
        if out.damaged:
            run.count("packets_damaged")

    async def _identities(self, run: Run, until_ns: int) -> list[dict[str, Any]] | None:
        """Who held which address at any time within the run (the resolver's spans that overlap it)."""
        s = self.settings
        try:
            async with channel(s.resolver_grpc, s.transport, peer="resolver") as ch:
                snap = await resolver_pb2_grpc.ResolverServiceStub(ch).Snapshot(
                    resolver_pb2.SnapshotRequest(), timeout=RPC_TIMEOUT_S, metadata=self.auth.call_metadata()
                )
        except grpc.aio.AioRpcError as exc:
            run.count("identities_unavailable")
            run.note(f"resolver unavailable: {exc.code().name}: {(exc.details() or '')[:200]}")
            return None
        except OSError as exc:
            run.count("identities_unavailable")
            run.note(f"resolver unreachable: {exc}")
            return None
        path = self.run_dir(run) / bundles.IDENTITIES
        kept: dict[tuple[Any, ...], dict[str, Any]] = {}
        for old in bundles.read_jsonl(path) if path.exists() else ():
            kept[_ident_key(old)] = old
        for ident in snap.identities:
            if ident.valid_from_ns and ident.valid_from_ns >= until_ns:
                continue
            if ident.valid_until_ns and ident.valid_until_ns < run.start_ns:
                continue
            doc = MessageToDict(ident, preserving_proto_field_name=True)
            kept[_ident_key(doc)] = doc
        return list(kept.values())

    def _finish(self, run: Run, job: RecordingJob | None, d: Path) -> None:
        out = self.bundles_dir / f"{run.id}{bundles.SUFFIX}"
        manifest = {
            "name": run.job,
            "run": run.id,
            "window": {"start_ns": run.start_ns, "end_ns": run.end_ns},
            "job": job.to_dict() if job is not None else {"name": run.job, "filter": run.filter},
            "created_ns": self.clock(),
            "counts": {"entries": run.entries, "packets": run.packets, "identities": run.identities},
            "drops": run.drops,
        }
        for name in (bundles.ENTRIES, bundles.IDENTITIES):
            (d / name).touch()
        try:
            bundles.pack(d, out, manifest)
        except OSError as exc:
            run.note(f"cannot write the bundle: {exc.strerror or exc}")
            run.count("disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "bundle_failed")
            return
        run.bundle = str(out)
        run.bundle_sha256 = bundles.sha256_file(out)
        run.state = "done"
        run.finished_ns = self.clock()
        for name in bundles.data_files(d):
            (d / name).unlink(missing_ok=True)
        shutil.rmtree(d / bundles.PACKETS_DIR, ignore_errors=True)
        run.bytes = out.stat().st_size
        self.counters["runs_finished"] = self.counters.get("runs_finished", 0) + 1
        log.info("recording finished", extra={"job": run.job, "run": run.id, "entries": run.entries})

    # -- uploads --------------------------------------------------------------------------------

    async def _upload_final(self, run: Run, job: RecordingJob | None) -> None:
        if job is None or job.upload is None:
            return
        target = job.upload
        key = f"{target.kind}://{target.bucket}"
        state = run.uploads.get(key, {})
        if state.get("state") == "uploaded" or state.get("next_try_ns", 0) > self.clock():
            return
        object_key = "/".join(p for p in (target.prefix, run.job, f"{run.id}{bundles.SUFFIX}") if p)
        try:
            result = await asyncio.to_thread(
                upload_bundle, target, Path(run.bundle), object_key, self.upload_state_dir(run)
            )
        except UploadError as exc:
            tries = int(state.get("tries", 0)) + 1
            run.uploads[key] = {
                "state": "failed",
                "error": str(exc),
                "tries": tries,
                "object": object_key,
                "next_try_ns": self.clock() + min(2**tries, 600) * NS,
            }
            run.count("upload_failed")
            self.counters["upload_failed"] = self.counters.get("upload_failed", 0) + 1
        else:
            run.uploads[key] = {"state": "uploaded", "uploaded_ns": self.clock(), **result}
            self.counters["uploaded"] = self.counters.get("uploaded", 0) + 1
        self._save(run)

    async def _upload_partial(self, run: Run, job: RecordingJob) -> None:
        assert job.upload is not None
        run.last_partial_upload_ns = self.clock()
        run.partials += 1
        part = self.runs_dir / f"{run.id}.part-{run.partials:04d}{bundles.SUFFIX}"
        d = self.run_dir(run)
        manifest = {
            "name": run.job,
            "run": run.id,
            "partial": run.partials,
            "window": {"start_ns": run.start_ns, "end_ns": run.collected_until_ns},
            "job": job.to_dict(),
            "created_ns": self.clock(),
        }
        target = job.upload
        object_key = "/".join(p for p in (target.prefix, run.job, part.name) if p)
        try:
            await asyncio.to_thread(bundles.pack, d, part, manifest)
            await asyncio.to_thread(upload_bundle, target, part, object_key, self.upload_state_dir(run))
        except (OSError, UploadError) as exc:
            run.count("upload_failed")
            run.note(f"hourly upload failed: {exc}")
        finally:
            part.unlink(missing_ok=True)
        self._save(run)

    def upload_state_dir(self, run: Run) -> Path:
        return self.runs_dir / run.id / "uploads"

    # -- limits ---------------------------------------------------------------------------------

    def used_bytes(self) -> int:
        total = 0
        for p in self.root.rglob("*"):
            with contextlib.suppress(OSError):
                if p.is_file():
                    total += p.stat().st_size
        return total

    def over_limit(self) -> bool:
        return self.used_bytes() >= self.settings.recording_max_mb * (1 << 20)

    def enforce_limits(self, now_ns: int) -> None:
        """Bundles past their age go; then the oldest bundles until the node is within its size."""
        age = int(self.settings.recording_max_age_s * NS)
        done = sorted(
            (r for r in self.runs.values() if r.state == "done" and r.bundle), key=lambda r: r.finished_ns
        )
        for run in done:
            if age and now_ns - run.finished_ns > age:
                self._drop_bundle(run, "deleted_age")
        limit = self.settings.recording_max_mb * (1 << 20)
        used = self.used_bytes()
        for run in done:
            if used < limit:
                break
            if run.bundle:
                size = run.bytes
                self._drop_bundle(run, "deleted_size")
                used -= size

    def _drop_bundle(self, run: Run, reason: str) -> None:
        Path(run.bundle).unlink(missing_ok=True)
        run.bundle = ""
        run.state = "deleted"
        run.note(f"bundle deleted ({reason.removeprefix('deleted_')} limit)")
        self.counters[reason] = self.counters.get(reason, 0) + 1
        self._save(run)

    # -- imports --------------------------------------------------------------------------------

    def import_bundle(self, path: Path) -> Run:
        """Load a bundle (`wiretide up --recording`): its entries into the store, listed as a run."""
        b = bundles.open_bundle(path, bundles.unpack_dir(self.imported_dir, path))
        batch: list[dict[str, Any]] = []
        total = 0
        for doc in b.entries():
            batch.append(doc)
            if len(batch) >= PAGE:
                self.store.insert_many(batch)
                total += len(batch)
                batch = []
        if batch:
            self.store.insert_many(batch)
            total += len(batch)
        window = b.manifest.get("window") or {}
        job = b.manifest.get("job") or {}
        run = Run(
            id=b.run or b.name,
            job=b.name,
            start_ns=int(window.get("start_ns") or 0),
            end_ns=int(window.get("end_ns") or 0),
            state="imported",
            entries=total,
            bundle=str(path),
            filter=str(job.get("filter") or ""),
            namespaces=list(job.get("namespaces") or []),
            nodes=list(job.get("nodes") or []),
            identities=sum(1 for _ in b.identities()),
        )
        run.collected_until_ns = run.end_ns
        self.runs[run.id] = run
        self._save(run)
        log.info("recording imported", extra={"bundle": str(path), "entries": total})
        return run

    # -- what the API shows ---------------------------------------------------------------------

    def windows(self, name: str) -> list[tuple[int, int, RecordingJob | None, dict[str, Any]]]:
        """The intervals a recording covers (its runs, collected so far), for `record("name")`."""
        out = []
        for run in self.all_runs().values():
            if run["job"] == name and run["state"] not in ("deleted", "failed"):
                end = (
                    run["end_ns"]
                    if run["state"] in ("done", "imported")
                    else max(run["collected_until_ns"], self.clock())
                )
                out.append((run["start_ns"], min(end, run["end_ns"]), self.jobs.get(name), run))
        return out

    def record_kfl(self, name: str) -> str | None:
        """`record("name")` as KFL the store can run: its runs' windows with the job's selection."""
        parts = []
        for start, end, job, run in self.windows(name):
            spec = job or RecordingJob(
                name=name,
                filter=str(run.get("filter") or ""),
                namespaces=tuple(run.get("namespaces") or ()),
                nodes=tuple(run.get("nodes") or ()),
            )
            parts.append(f"({selection_kfl(spec, start, end)})")
        if not parts:
            return None if name not in self.jobs else "false"
        return " || ".join(parts)

    def health(self) -> dict[str, Any]:
        runs = list(self.runs.values())
        every = self.all_runs().values()
        holder = self.lease.holder if self.lease is not None else {}
        return {
            "jobs": len(self.jobs),
            "active_runs": sum(r["state"] == "recording" for r in every),
            "bundles": sum(r["state"] == "done" for r in every),
            "replica": self.replica,
            "running_jobs": self.leading,
            "jobs_run_by": self.replica if self.leading else str(holder.get("replica") or ""),
            "used_bytes": self.used_bytes(),
            "limit_bytes": self.settings.recording_max_mb * (1 << 20),
            "counters": dict(self.counters),
            "drops": _sum_drops(runs),
            "last_error": self.last_error,
        }

    def job_doc(self, job: RecordingJob) -> dict[str, Any]:
        now = self.clock()
        mine = (r for r in self.all_runs().values() if r["job"] == job.name)
        runs = sorted(mine, key=lambda r: r["start_ns"])
        active = any(r["state"] == "recording" for r in runs)
        state = (
            "stopped"
            if job.stopped
            else "recording"
            if active
            else "armed"
            if job.trigger
            else ("finished" if job.finished(now) else "scheduled")
        )
        trig = self.triggers.get(job.name)
        return {
            **job.to_dict(),
            "revision": job.revision,
            "state": state,
            "next_start_ns": job.next_start(now),
            "trigger_fired": trig.fired if trig else 0,
            "runs": runs,
        }

    def orphan_runs(self) -> list[dict[str, Any]]:
        """Runs whose job is gone (finished and removed, or imported bundles)."""
        return [r for r in self.all_runs().values() if r["job"] not in self.jobs]

    async def put_job(self, job: RecordingJob) -> RecordingJob:
        assert self.job_store is not None
        check_filter(job.filter)
        if job.trigger is not None:
            check_filter(job.trigger.condition, "trigger.condition")
        stored = await self.job_store.put(job)
        await self._on_job(stored.name, stored)
        return stored

    async def stop_job(self, name: str) -> RecordingJob | None:
        assert self.job_store is not None
        job = await self.job_store.get(name)
        if job is None:
            return None
        stored = await self.job_store.put(replace(job, stopped=True))
        await self._on_job(name, stored)
        await self.tick()
        return stored

    async def delete_job(self, name: str) -> bool:
        assert self.job_store is not None
        gone = await self.job_store.delete(name)
        await self._on_job(name, None)
        return gone


def pcapng_name(node: str) -> str:
    """A node's packets file in a bundle: `packets/<node>.pcapng`, the name made path-safe."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in node).lstrip(".") or "node"


def run_doc(r: Run) -> dict[str, Any]:
    doc = r.to_dict()
    doc.pop("carry_flows", None)
    doc["bundle"] = Path(r.bundle).name if r.bundle else ""
    return doc


def _ident_key(doc: dict[str, Any]) -> tuple[Any, ...]:
    return (
        doc.get("ip"),
        doc.get("port", 0),
        doc.get("kind"),
        doc.get("namespace"),
        doc.get("name"),
        doc.get("valid_from_ns"),
    )


def _sizes(d: Path) -> dict[Path, int]:
    out = {}
    for p in [d / bundles.ENTRIES, *sorted((d / bundles.PACKETS_DIR).glob("*.pcapng"))]:
        with contextlib.suppress(OSError):
            out[p] = p.stat().st_size
    return out


def _truncate(d: Path, sizes: dict[Path, int]) -> None:
    """Undo a cut's partial appends (a full disk mid-write): files back to their sizes before it."""
    for p in [d / bundles.ENTRIES, *sorted((d / bundles.PACKETS_DIR).glob("*.pcapng"))]:
        with contextlib.suppress(OSError):
            if p in sizes:
                os.truncate(p, sizes[p])
            else:
                p.unlink()


def _sum_drops(runs: list[Run]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in runs:
        for k, v in r.drops.items():
            out[k] = out.get(k, 0) + v
    return out
