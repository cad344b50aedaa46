"""The processes of one node's TCP connections and UDP sockets (eBPF socket owners) →
`src.process`/`dst.process`.

Rule: an entry's end is named only by the process the kernel saw using that very connection from
that end (the 4-tuple as the end's own socket holds it); nothing is guessed from ports alone. A UDP
socket bound to any address (a DNS server on 0.0.0.0:53) is known by its local port and the peer it
exchanged with, the local address unspecified: it names an end with that port and that peer. The
table is bounded (oldest forgotten first, counted) and costs nothing when no owner was ever learnt.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Final

from wiretide.proto.v1 import packets_pb2

# Connections remembered per node; a node's busiest hosts open a few thousand connections a second,
# and an entry needs its owners only until its connection's calls are dissected.
MAX_SOCKETS: Final = 65536

Key = tuple[str, int, str, int]  # local ip, local port, remote ip, remote port (as that end sees it)
_ANY: Final = frozenset({"0.0.0.0", "::"})  # an owner's local address when its socket is bound to any


def _ip(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw)) if len(raw) in (4, 16) else ""


class ProcessTable:
    """Socket owners learnt from a node's eBPF source, naming the local ends of its entries."""

    def __init__(self, max_sockets: int = MAX_SOCKETS) -> None:
        self.max_sockets = max_sockets
        self._by_socket: OrderedDict[Key, dict[str, Any]] = OrderedDict()
        self.learnt = 0
        self.evicted = 0
        self.bad = 0  # owners with an address that is not one
        self.named = 0  # entry ends named
        self._any = 0  # owners learnt with an unspecified local address (UDP): worth a second look-up

    def __len__(self) -> int:
        return len(self._by_socket)

    def learn(self, owners: Iterable[packets_pb2.SocketOwner]) -> None:
        table = self._by_socket
        for o in owners:
            local, remote = _ip(o.local_ip), _ip(o.remote_ip)
            if not local or not remote:
                self.bad += 1
                continue
            key = (local, o.local_port, remote, o.remote_port)
            if local in _ANY:
                self._any += 1
            if key in table:
                table.move_to_end(key)
            elif len(table) >= self.max_sockets:
                table.popitem(last=False)
                self.evicted += 1
            # A later owner of the same connection (a forked worker, a socket handed over) wins.
            table[key] = {
                "pid": o.pid,
                "name": o.comm,
                "cgroup_id": o.cgroup_id,
                "container_id": o.container_id or None,
            }
            self.learnt += 1

    def name(self, entries: Sequence[dict[str, Any]]) -> None:
        """Fill each entry's `src.process`/`dst.process` that is empty and whose end is a known local
        socket of this node."""
        table = self._by_socket
        if not table:
            return
        lookup = self._lookup_any if self._any else table.get
        for doc in entries:
            src, dst = doc.get("src"), doc.get("dst")
            if not isinstance(src, dict) or not isinstance(dst, dict):
                continue
            a = (src.get("ip"), src.get("port"), dst.get("ip"), dst.get("port"))
            if not src.get("process"):
                found = lookup(a)  # type: ignore[arg-type]
                if found is not None:
                    src["process"] = dict(found)
                    self.named += 1
            if not dst.get("process"):
                found = lookup((a[2], a[3], a[0], a[1]))  # type: ignore[arg-type]
                if found is not None:
                    dst["process"] = dict(found)
                    self.named += 1

    def _lookup_any(self, key: Key) -> dict[str, Any] | None:
        """The owner of the end `key` names: its own socket, else a socket bound to any address with
        that port and peer."""
        table = self._by_socket
        found = table.get(key)
        if found is None and isinstance(key[0], str):
            found = table.get(("::" if ":" in key[0] else "0.0.0.0", key[1], key[2], key[3]))
        return found
