"""The local source: network namespaces, their addresses and the processes using them, rescanned.

Rule: one scan is one relist — whatever a scan no longer sees is closed at the scan's time; the
scan itself runs in a worker thread so lookups and snapshots never wait for /proc.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from typing import Final

from wiretide.proto.v1 import resolver_pb2
from wiretide.resolver.local import procfs
from wiretide.resolver.table import Claim, IdentityStore

log = logging.getLogger(__name__)

SOURCE: Final = "local"


@dataclass(frozen=True, slots=True)
class ScanResult:
    spaces: list[procfs.NetNs]
    sockets: dict[int, list[tuple[procfs.Socket, procfs.Process]]]  # netns inode → sockets


def scan(proc: str = "/proc", run_netns: str = "/run/netns") -> ScanResult:
    spaces = procfs.scan_namespaces(proc, run_netns)
    return ScanResult(spaces, {ns.inode: procfs.sockets_of(ns, proc) for ns in spaces})


def ns_label(ns: procfs.NetNs, host_name: str, proc: str = "/proc") -> tuple[str, str]:
    """(name, container id) a namespace is known by."""
    if ns.is_host:
        return host_name, ""
    if ns.name:
        return ns.name, ""
    first = procfs.process(ns.pids[0], proc) if ns.pids else None
    if first is None:
        return f"netns-{ns.inode}", ""
    cid = first.container_id
    return (f"{first.name}-{cid[:12]}" if cid else f"{first.name}-{ns.inode}"), cid


class LocalSource:
    def __init__(
        self, store: IdentityStore, host_name: str = "", skip_ips: frozenset[str] = frozenset()
    ) -> None:
        self.store = store
        self.host_name = host_name or socket.gethostname()
        self.skip_ips = skip_ips  # addresses the static inventory names
        self.scans = 0

    def apply(self, result: ScanResult, now_ns: int | None = None, proc: str = "/proc") -> None:
        now = now_ns if now_ns is not None else time.time_ns()
        self.store.begin_relist(SOURCE, "netns")
        self.store.begin_relist(SOURCE, "process")
        for ns in result.spaces:
            name, cid = ns_label(ns, self.host_name, proc)
            kind = "node" if ns.is_host else "netns"
            base = resolver_pb2.Identity(name=name, kind=kind, container_id=cid)
            if ns.is_host:
                base.node = name
            ips = sorted({ip for ip, _ in ns.addresses if ip not in self.skip_ips})
            self.store.set_claims(
                (SOURCE, "netns", "", f"{ns.inode}"), [Claim(ip, 0, now, base) for ip in ips], now
            )
            per_pid: dict[int, list[Claim]] = {}
            for sock, proc_info in result.sockets.get(ns.inode, []):
                ident = resolver_pb2.Identity(
                    name=name,
                    kind="process",
                    node=base.node,
                    pid=proc_info.pid,
                    process_name=proc_info.name,
                    container_id=proc_info.container_id or cid,
                )
                targets = ips if sock.ip in ("0.0.0.0", "::") else [sock.ip]
                for ip in targets:
                    if procfs.usable(ip) and ip not in self.skip_ips:
                        per_pid.setdefault(proc_info.pid, []).append(Claim(ip, sock.port, now, ident))
            for pid, claims in per_pid.items():
                self.store.set_claims((SOURCE, "process", "", f"{ns.inode}:{pid}"), claims, now)
        self.store.end_relist(SOURCE, "netns", now)
        self.store.end_relist(SOURCE, "process", now)
        self.store.mark_synced(now)
        self.scans += 1

    async def run(self, every_s: float) -> None:
        while True:
            try:
                result = await asyncio.to_thread(scan)
                self.apply(result)
            except OSError as exc:
                log.warning("local scan failed", extra={"error": str(exc)})
            await asyncio.sleep(every_s)
