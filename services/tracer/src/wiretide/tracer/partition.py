"""Tracer replicas: which calls one replica assembles, and the facts replicas tell each other.

A trace is what the tracer works out — which call was made while serving which request — so it cannot
be the key entries are split by as they arrive. What the work *is* keyed by is the workload that
serves a request and makes calls while doing so: a call's parent is always an inbound request of
the instance that made the call, and what is learned of a workload's timing (delays.py) is learned
from all its pods. So the workloads are split over the replicas (a stable hash of the workload —
namespace and name, or for an anonymous workload its address: the key both sides of the assembly
share), and each replica receives every entry but keeps those with an end among its workloads:

- the replica of the **caller** owns the call: it decides the client span's parent (the requests the
  caller was serving are all its own), exports both spans, stores them and counts the call on the
  service map — every call is owned by exactly one replica;
- the replica of the **callee**, when another, keeps a copy: the callee's request is what the
  callee's own outbound calls may be children of. The copy is never exported; its trace id comes
  from the owner, once final, as a *fact* over NATS (`facts_subject`). Until it comes, the copy's
  children wait, like any span waiting for its ancestors.

Span ids are derived from the entry id (the same on every replica) so that a child decided on one
replica names its parent exported by another; trace ids are the owner's. A fact that never comes
(the owner replica gone) is waited for `FACT_TIMEOUT_NS` of packet time, then the copy's trace is
decided locally and counted (`facts_missing`): that tree is broken in two, and said to be.

Rule: the hash is stable across processes and versions (CRC-32 of the key), never Python's `hash`.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from typing import Any, Final

import orjson

from wiretide.tracer.spans import Workload

# What a replica does with one entry (a bit set).
ROLE_NONE: Final = 0
ROLE_OWNER: Final = 1  # the caller's replica: decides, exports, stores, maps
ROLE_CALLEE: Final = 2  # the callee's replica: holds the request as a parent for the callee's calls
ROLE_BOTH: Final = ROLE_OWNER | ROLE_CALLEE

FACTS_VERSION: Final = 1
# How long (packet time) a copy waits for its owner's fact before its trace is decided here.
FACT_TIMEOUT_NS: Final = 15_000_000_000
# Facts that came before their entry did (this replica reads the stream behind its owner): kept up to
# this many, oldest forgotten first (counted).
MAX_EARLY_FACTS: Final = 200_000
MAX_KEYS: Final = 100_000  # instance -> replica, memoised
_ORDINAL = re.compile(r"-(\d+)$")


class FactError(ValueError):
    """A facts message that is not one (counted and dropped by the receiver)."""


def key_of(workload: Workload) -> str:
    """What a workload's calls are split by: both sides of any parent link share it (a link joins a
    request and a call of one instance), and so does everything learned of the workload's requests and
    calls (delays.py learns per workload, all its pods together) — for an anonymous workload its
    address (its calling side is named by the IP, its listening side by ip:port)."""
    if not workload.known and workload.address:
        return workload.address
    return f"{workload.namespace}/{workload.service_name}"


def partition_of_key(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


def span_id_of(entry_id: str, side: bytes) -> bytes:
    """8 bytes, never all zero, the same on every replica for one entry's client (b"c") or server
    (b"s") span."""
    digest = hashlib.blake2b(entry_id.encode("utf-8", "surrogatepass"), digest_size=8, person=side).digest()
    return digest if digest != bytes(8) else b"\x00" * 7 + b"\x01"


def replica_index(value: str, partitions: int, hostname: str = "") -> int:
    """`WIRETIDE_TRACER_PARTITION`: a number, or `auto` for the ordinal a StatefulSet puts at the end of
    its pods' hostnames (`tracer-1` is replica 1). ValueError when it names no replica."""
    text = value.strip()
    if text == "auto":
        host = hostname or os.environ.get("HOSTNAME", "") or os.uname().nodename
        found = _ORDINAL.search(host)
        if found is None:
            raise ValueError(f"auto: hostname {host!r} does not end in -<ordinal> like a StatefulSet pod")
        index = int(found.group(1))
    else:
        try:
            index = int(text)
        except ValueError:
            raise ValueError(f"must be a replica number or auto, got {text[:40]!r}") from None
    if not 0 <= index < partitions:
        raise ValueError(f"replica {index} is not one of 0..{partitions - 1} (WIRETIDE_TRACER_PARTITIONS)")
    return index


class Partition:
    """This replica's share: `index` of `count` replicas."""

    __slots__ = ("_memo", "count", "index")

    def __init__(self, index: int, count: int) -> None:
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"replica {index} of {count}")
        self.index = index
        self.count = count
        self._memo: dict[str, int] = {}  # a string's hash is cached by the string: cheaper than a Workload's

    def of(self, workload: Workload) -> int:
        key = key_of(workload)
        memo = self._memo
        found = memo.get(key)
        if found is None:
            found = partition_of_key(key, self.count)
            if len(memo) >= MAX_KEYS:
                memo.clear()
            memo[key] = found
        return found

    def role(self, caller: Workload, callee: Workload) -> tuple[int, int]:
        """(what this replica does with a call from `caller` to `callee`, the callee's replica)."""
        here = self.index
        to = self.of(callee)
        role = ROLE_OWNER if self.of(caller) == here else ROLE_NONE
        return (role | ROLE_CALLEE if to == here else role), to


def encode_facts(sender: int, facts: list[tuple[str, bytes]]) -> bytes:
    """One message of (entry id, trace id) facts for one replica."""
    return orjson.dumps({"v": FACTS_VERSION, "from": sender, "facts": [[e, t.hex()] for e, t in facts]})


def decode_facts(data: bytes) -> list[tuple[str, bytes]]:
    """The facts of one message; FactError when it is not a facts message this replica reads."""
    try:
        doc: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FactError(f"facts message does not parse: {exc}") from None
    if type(doc) is not dict:
        raise FactError("facts message is not a JSON object")
    version = doc.get("v")
    if version != FACTS_VERSION:
        raise FactError(f"facts version {version!r}, this replica reads {FACTS_VERSION}")
    items = doc.get("facts")
    if type(items) is not list:
        raise FactError("facts message has no list of facts")
    out: list[tuple[str, bytes]] = []
    for item in items:
        if type(item) is not list or len(item) != 2 or type(item[0]) is not str or type(item[1]) is not str:
            raise FactError("a fact is not [entry id, trace id]")
        entry_id, trace = item
        if not 1 <= len(entry_id) <= 64 or len(trace) != 32:
            raise FactError("a fact's entry id or trace id has the wrong length")
        try:
            trace_id = bytes.fromhex(trace)
        except ValueError:
            raise FactError("a fact's trace id is not hex") from None
        if trace_id == bytes(16):
            raise FactError("a fact's trace id is all zero")
        out.append((entry_id, trace_id))
    return out
