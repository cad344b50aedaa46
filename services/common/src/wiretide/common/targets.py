"""What is captured: the targeting of `wiretide tap POD_REGEX -n NS` and `PUT /api/targets`.

A `TargetSpec` selects pods by a regex on their name, by namespaces and excluded namespaces; all empty
selects everything. The spec lives in a JetStream KV bucket, so a change reaches every capture node at
once and survives restarts; its starting value is the `WIRETIDE_TARGET_*` settings. Each capture node
turns the pods it holds (the resolver's identities) into a kernel filter on their addresses, so what
is not targeted never leaves the kernel.

Rule: a spec that selects nothing captures nothing (a filter no packet passes), never everything; a
spec whose addresses are too many for one kernel program captures everything and says so.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from wiretide.proto.v1 import resolver_pb2

BUCKET: Final = "wiretide_targets"
KEY: Final = "spec"
MAX_REGEX_CHARS: Final = 1024
MAX_NAMESPACES: Final = 512
# Addresses one kernel program is built from; more (after folding into networks) captures everything.
MAX_KERNEL_ADDRESSES: Final = 400
NOTHING: Final = "less 1"  # a BPF expression no frame matches (every frame is at least 1 byte)
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class TargetError(ValueError):
    """A spec that cannot be used: the message names the field and why."""


@dataclass(frozen=True, slots=True)
class TargetSpec:
    pod_regex: str = ""
    namespaces: tuple[str, ...] = ()
    excluded_namespaces: tuple[str, ...] = ()
    _compiled: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(
        cls, pod_regex: str = "", namespaces: Iterable[str] = (), excluded_namespaces: Iterable[str] = ()
    ) -> TargetSpec:
        if not isinstance(pod_regex, str) or len(pod_regex) > MAX_REGEX_CHARS:
            raise TargetError(f"pod_regex: a string of at most {MAX_REGEX_CHARS} characters")
        try:
            compiled = re.compile(pod_regex) if pod_regex else None
        except re.error as exc:
            raise TargetError(f"pod_regex {pod_regex!r}: {exc}") from None
        return cls(
            pod_regex,
            _names("namespaces", namespaces),
            _names("excluded_namespaces", excluded_namespaces),
            compiled,
        )

    @classmethod
    def from_settings(cls, settings: Any) -> TargetSpec:
        return cls.make(
            settings.target_pod_regex,
            _split(settings.target_namespaces),
            _split(settings.target_excluded_namespaces),
        )

    @classmethod
    def from_json(cls, doc: Any) -> TargetSpec:
        if not isinstance(doc, Mapping):
            raise TargetError("a JSON object: {pod_regex, namespaces, excluded_namespaces}")
        unknown = set(doc) - {"pod_regex", "namespaces", "excluded_namespaces"}
        if unknown:
            raise TargetError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
        for key in ("namespaces", "excluded_namespaces"):
            if not isinstance(doc.get(key, []), list):
                raise TargetError(f"{key}: a list of namespace names")
        return cls.make(
            doc.get("pod_regex") or "", doc.get("namespaces") or (), doc.get("excluded_namespaces") or ()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pod_regex": self.pod_regex,
            "namespaces": list(self.namespaces),
            "excluded_namespaces": list(self.excluded_namespaces),
        }

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())

    @property
    def everything(self) -> bool:
        return not (self.pod_regex or self.namespaces or self.excluded_namespaces)

    def selects(self, name: str, namespace: str) -> bool:
        if namespace in self.excluded_namespaces:
            return False
        if self.namespaces and namespace not in self.namespaces:
            return False
        return self._compiled is None or self._compiled.search(name) is not None


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _names(what: str, names: Iterable[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(names))
    if len(out) > MAX_NAMESPACES:
        raise TargetError(f"{what}: at most {MAX_NAMESPACES}")
    for n in out:
        if not isinstance(n, str) or not _DNS_LABEL.match(n):
            raise TargetError(f"{what}: {n!r} is not a namespace name (RFC 1123 label)")
    return out


def decode(data: bytes) -> TargetSpec:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise TargetError(f"not JSON: {exc}") from None
    return TargetSpec.from_json(doc)


@dataclass(frozen=True, slots=True)
class TargetedPod:
    name: str
    namespace: str
    ip: str
    node: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "namespace": self.namespace, "ip": self.ip, "node": self.node}


def targeted(
    spec: TargetSpec, pods: Iterable[resolver_pb2.Identity], node: str | None = None
) -> list[TargetedPod]:
    """The pods (held now) that `spec` selects, on `node` only when given; host-network pods excluded
    (their address is the node's: filtering on it would take the whole node's traffic)."""
    out: dict[tuple[str, str, str], TargetedPod] = {}
    node_ips: set[str] = set()
    pods = list(pods)
    for p in pods:
        if p.kind == "node":
            node_ips.add(p.ip)
    for p in pods:
        if p.kind != "pod" or p.port != 0 or not p.ip or p.ip in node_ips:
            continue
        if node is not None and p.node and p.node != node:
            continue
        if spec.selects(p.name, p.namespace):
            out.setdefault((p.namespace, p.name, p.ip), TargetedPod(p.name, p.namespace, p.ip, p.node))
    return sorted(out.values(), key=lambda t: (t.namespace, t.name, t.ip))


def kernel_expression(spec: TargetSpec, pods: Iterable[TargetedPod]) -> tuple[str, str]:
    """(BPF expression, note) for what `spec` selects on one node: "" captures everything."""
    if spec.everything:
        return "", "every pod"
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for p in pods:
        try:
            address = ipaddress.ip_address(p.ip)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv4Address):
            v4.append(ipaddress.IPv4Network(address))
        else:
            v6.append(ipaddress.IPv6Network(address))
    count = len(v4) + len(v6)
    if not count:
        return NOTHING, "no pod on this node is targeted: nothing is captured"
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
        *ipaddress.collapse_addresses(v4),
        *ipaddress.collapse_addresses(v6),
    ]
    if len(nets) > MAX_KERNEL_ADDRESSES:
        return "", f"{len(nets)} addresses are more than one kernel filter holds: everything is captured"
    parts = [f"host {n.network_address}" if n.num_addresses == 1 else f"net {n.with_prefixlen}" for n in nets]
    return " or ".join(parts), f"{count} targeted pod address(es)"


# -- the spec in JetStream KV ------------------------------------------------------------------------
async def open_bucket(js: Any) -> Any:
    """The KV bucket holding the spec (made on first use; a little history for "who changed it")."""
    from nats.js.api import StorageType

    from wiretide.common.bus.kv import open_kv

    return await open_kv(js, BUCKET, history=10, storage=StorageType.FILE, description="Wiretide targeting")


async def load(kv: Any, default: TargetSpec) -> tuple[TargetSpec, int]:
    """(the stored spec, its revision); the default (revision 0) while none was stored."""
    from nats.js.errors import KeyDeletedError, KeyNotFoundError

    try:
        entry = await kv.get(KEY)
    except (KeyNotFoundError, KeyDeletedError):
        return default, 0
    if entry.value is None:
        return default, 0
    return decode(entry.value), int(entry.revision or 0)


def node_key(node: str) -> str:
    """The KV key of a capture node's targeting state (KV keys allow [-_=/.A-Za-z0-9])."""
    return "node." + ("".join(c if c.isalnum() or c in "-_" else "_" for c in node) or "_")


async def nodes(kv: Any) -> list[dict[str, Any]]:
    """Every capture node's last published targeting state."""
    from nats.js.errors import NoKeysError

    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    out = []
    for key in sorted(k for k in keys if k.startswith("node.")):
        with contextlib.suppress(Exception):
            entry = await kv.get(key)
            if entry.value:
                out.append(orjson.loads(entry.value))
    return out


async def store(kv: Any, spec: TargetSpec) -> int:
    return int(await kv.put(KEY, spec.encode()))
