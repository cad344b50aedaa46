"""A recording job: what to record (a KFL filter, nodes, namespaces), when (a start, a duration, daily
repetitions, an expiry, or a trigger), and where its bundles go (S3 or GCS). The vocabulary shared by
whoever defines jobs (the gateway's API, agents' `record.start`) and the gateway that runs them.

Rule: a job is a validated, frozen value; its JSON form is the one stored in the JetStream KV bucket
`BUCKET`, and a value that does not validate is refused with a message naming the field (never
half-read). Credentials are never part of a job: an upload names a file (a mounted Secret) or uses the
environment (IRSA, workload identity).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

BUCKET: Final = "wiretide_recordings"  # the JetStream stream behind it is KV_wiretide_recordings
HISTORY: Final = 8
NS: Final = 1_000_000_000
DAY_NS: Final = 86_400 * NS
# A job's name is a KV key, a file name and a bundle name: a safe, short alphabet.
NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Bounds that keep a job sane: a run spans at most a day (daily repetitions must not overlap), a
# trigger looks back at most an hour (the capture ring keeps about that by default).
MAX_DURATION_S: Final = 86_400
MAX_PRECEDING_S: Final = 3_600
MAX_FILTER_CHARS: Final = 8_192
MAX_SCOPE_ITEMS: Final = 64
# What `record.start` (agents) takes from before its start: the capture ring keeps about an hour.
AGENT_PRECEDING_S: Final = 300.0
RETENTION_MODES: Final = ("GOVERNANCE", "COMPLIANCE")
UPLOAD_KINDS: Final = ("s3", "gcs")


class InvalidJob(ValueError):
    """A job definition that cannot be used; the message names the field."""


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidJob(
            "name must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Trigger:
    """Start a run when more than `threshold` entries match `condition` within `window_s` seconds."""

    condition: str
    threshold: int = 10
    window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class UploadTarget:
    """Where finished (and, hourly, growing) bundles go. `endpoint` addresses any S3-compatible store;
    `credentials_file` is a JSON file (a mounted Secret) — else the environment's credential chain."""

    kind: Literal["s3", "gcs"]
    bucket: str
    prefix: str = ""
    endpoint: str = ""
    region: str = ""
    retention_days: int = 0  # S3 Object Lock retain-until / GCS object retention, 0 = none asked
    retention_mode: str = "GOVERNANCE"
    legal_hold: bool = False  # S3 legal hold / GCS event-based hold
    credentials_file: str = ""


@dataclass(frozen=True, slots=True)
class RecordingJob:
    name: str
    filter: str = ""
    start_ns: int = 0  # 0 = as soon as stored (`created_ns`)
    duration_s: float = 600.0
    repetitions: int = 1  # daily runs (0 = every day, forever); for a trigger, runs it may start
    expiry_ns: int = 0  # 0 = never: no run starts at or after it, and the job is removed then
    nodes: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    preceding_s: float = 0.0  # a run also takes the entries and packets of this many seconds before it
    trigger: Trigger | None = None
    upload: UploadTarget | None = None
    created_ns: int = 0
    created_by: str = ""
    origin: str = "api"
    stopped: bool = False
    revision: int = field(default=0, compare=False)

    # -- schedule -----------------------------------------------------------------------------

    @property
    def first_ns(self) -> int:
        return self.start_ns or self.created_ns

    def window(self, k: int) -> tuple[int, int]:
        """The k-th scheduled run: [start, end) in ns (k counts days from the first)."""
        start = self.first_ns + k * DAY_NS
        return start, start + int(self.duration_s * NS)

    def active_window(self, now_ns: int) -> tuple[int, int] | None:
        """The scheduled run that holds `now_ns`, or None (a triggered job has no schedule)."""
        if self.trigger is not None or self.stopped or now_ns < self.first_ns:
            return None
        k = (now_ns - self.first_ns) // DAY_NS
        if self.repetitions and k >= self.repetitions:
            return None
        start, end = self.window(k)
        if now_ns >= end or (self.expiry_ns and start >= self.expiry_ns):
            return None
        return start, end

    def finished(self, now_ns: int) -> bool:
        """No run of this job can start any more."""
        if self.stopped or (self.expiry_ns and now_ns >= self.expiry_ns):
            return True
        if self.trigger is not None or not self.repetitions:
            return False
        return now_ns >= self.window(self.repetitions - 1)[1]

    def next_start(self, now_ns: int) -> int | None:
        """When the next scheduled run starts (None: none will)."""
        if self.trigger is not None or self.finished(now_ns):
            return None
        if now_ns < self.first_ns:
            return self.first_ns
        k = (now_ns - self.first_ns) // DAY_NS + 1
        if self.repetitions and k >= self.repetitions:
            return None
        start = self.window(k)[0]
        return None if self.expiry_ns and start >= self.expiry_ns else start

    # -- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["nodes"] = list(self.nodes)
        doc["namespaces"] = list(self.namespaces)
        doc.pop("revision")
        return doc

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes, revision: int = 0) -> RecordingJob:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidJob(f"not JSON: {exc}") from None
        return replace(cls.from_dict(doc), revision=revision)

    @classmethod
    def from_dict(cls, doc: Any) -> RecordingJob:
        if not isinstance(doc, dict):
            raise InvalidJob("a job is a JSON object")
        known = set(cls.__dataclass_fields__) - {"revision"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise InvalidJob(f"unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
        name = check_name(doc.get("name"))
        filt = _str(doc, "filter")
        if len(filt) > MAX_FILTER_CHARS:
            raise InvalidJob(f"filter longer than {MAX_FILTER_CHARS} characters")
        duration = _num(doc, "duration_s", 600.0)
        if not 0 < duration <= MAX_DURATION_S:
            raise InvalidJob(f"duration_s must be in (0, {MAX_DURATION_S}]")
        preceding = _num(doc, "preceding_s", 0.0)
        if not 0 <= preceding <= MAX_PRECEDING_S:
            raise InvalidJob(f"preceding_s must be in [0, {MAX_PRECEDING_S}]")
        reps = _int(doc, "repetitions", 1)
        if reps < 0:
            raise InvalidJob("repetitions must be >= 0 (0 = forever)")
        trigger = _trigger(doc.get("trigger"))
        return cls(
            name=name,
            filter=filt,
            start_ns=_int(doc, "start_ns", 0),
            duration_s=duration,
            repetitions=reps,
            expiry_ns=_int(doc, "expiry_ns", 0),
            nodes=_names(doc, "nodes"),
            namespaces=_names(doc, "namespaces"),
            preceding_s=preceding,
            trigger=trigger,
            upload=_upload(doc.get("upload")),
            created_ns=_int(doc, "created_ns", 0),
            created_by=_str(doc, "created_by")[:200],
            origin=_str(doc, "origin", "api")[:200],
            stopped=_bool(doc, "stopped"),
        )


def _str(doc: dict[str, Any], key: str, default: str = "") -> str:
    value = doc.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidJob(f"{key} must be a string")
    return value


def _bool(doc: dict[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise InvalidJob(f"{key} must be true or false")
    return value


def _int(doc: dict[str, Any], key: str, default: int) -> int:
    value = doc.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise InvalidJob(f"{key} must be a non-negative integer")
    return value


def _num(doc: dict[str, Any], key: str, default: float) -> float:
    value = doc.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        raise InvalidJob(f"{key} must be a number")
    return float(value)


def _names(doc: dict[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= 253 for v in value):
        raise InvalidJob(f"{key} must be a list of names")
    if len(value) > MAX_SCOPE_ITEMS:
        raise InvalidJob(f"{key}: at most {MAX_SCOPE_ITEMS}")
    return tuple(sorted(set(value)))


def _trigger(value: Any) -> Trigger | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidJob('trigger must be {"condition": KFL, "threshold": N, "window_s": S}')
    unknown = sorted(set(value) - {"condition", "threshold", "window_s"})
    if unknown:
        raise InvalidJob(f"trigger: unknown field {unknown[0]!r}")
    condition = _str(value, "condition")
    if not condition.strip() or len(condition) > MAX_FILTER_CHARS:
        raise InvalidJob("trigger.condition must be a KFL filter")
    threshold = _int(value, "threshold", 10)
    window = _num(value, "window_s", 60.0)
    if not 0 < window <= MAX_PRECEDING_S:
        raise InvalidJob(f"trigger.window_s must be in (0, {MAX_PRECEDING_S}]")
    return Trigger(condition, threshold, window)


def _upload(value: Any) -> UploadTarget | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidJob('upload must be {"kind": "s3"|"gcs", "bucket": ...}')
    known = set(UploadTarget.__dataclass_fields__)
    unknown = sorted(set(value) - known)
    if unknown:
        raise InvalidJob(f"upload: unknown field {unknown[0]!r}")
    kind = value.get("kind")
    if kind not in UPLOAD_KINDS:
        raise InvalidJob(f"upload.kind must be one of {', '.join(UPLOAD_KINDS)}")
    bucket = _str(value, "bucket")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]", bucket):
        raise InvalidJob("upload.bucket must be a bucket name (3-223 lower-case letters, digits, '.-_')")
    prefix = _str(value, "prefix").strip("/")
    if ".." in prefix.split("/"):
        raise InvalidJob("upload.prefix must not contain '..'")
    endpoint = _str(value, "endpoint")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise InvalidJob("upload.endpoint must be an http:// or https:// URL")
    mode = _str(value, "retention_mode", "GOVERNANCE").upper()
    if mode not in RETENTION_MODES:
        raise InvalidJob(f"upload.retention_mode must be one of {', '.join(RETENTION_MODES)}")
    days = _int(value, "retention_days", 0)
    if days > 36_500:
        raise InvalidJob("upload.retention_days must be at most 36500")
    return UploadTarget(
        kind=kind,
        bucket=bucket,
        prefix=prefix,
        endpoint=endpoint,
        region=_str(value, "region"),
        retention_days=days,
        retention_mode=mode,
        legal_hold=_bool(value, "legal_hold"),
        credentials_file=_str(value, "credentials_file"),
    )


async def open_bucket(js: JetStreamContext) -> KeyValue:
    """The jobs' KV bucket, created on first use (file storage: kept across restarts)."""
    from nats.js.api import StorageType

    from wiretide.common.bus.kv import open_kv

    return await open_kv(
        js, BUCKET, history=HISTORY, storage=StorageType.FILE, description="Wiretide recording jobs"
    )
