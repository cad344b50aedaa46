"""The eBPF source: plaintext of TLS connections, read from the processes' TLS library calls.

Rule: off unless enabled, and it says why it cannot run (no BCC, no privilege, no tracefs) instead of
failing the capture. Uprobes attach by library file (every process mapping that file is covered,
including ones started later); new files are found by scanning /proc at start and the maps of each
newly exec'd process shortly after it starts. Executables are examined once each (by device and
inode): a Go binary's crypto/tls and a statically linked OpenSSL or BoringSSL are hooked in the
executable itself. Every chunk leaves with the process (pid, tid, comm, cgroup id) and the
connection's 4-tuple; what cannot be placed or was lost is counted by reason. Beside the chunks, the
source reports which process uses each TCP connection and UDP socket (`SocketOwner`, once per socket
and process, and for UDP per peer; TLS or not), so that packet entries name their local processes;
SCTP associations' processes are read from procfs on a timer (ebpf/sctp.py).
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import os
import re
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from wiretide.capture.sources.ebpf import _program, biossl, gobin
from wiretide.capture.sources.ebpf.cgroups import ROOT as CGROUP_ROOT
from wiretide.capture.sources.ebpf.cgroups import ContainerIds
from wiretide.capture.sources.ebpf.conntab import Connection, ConnectionTable

if TYPE_CHECKING:
    from wiretide.capture.sources.ebpf.sctp import SctpOwners
    from wiretide.proto.v1 import packets_pb2

TRACEFS: Final = Path("/sys/kernel/tracing")
# A new process's libraries are mapped by its loader after exec: its maps are read this long after.
EXEC_SCAN_DELAY_NS: Final = 100_000_000
# Processes scanned per poll at most (an exec storm costs bounded work per poll; the rest wait).
MAX_SCANS_PER_POLL: Final = 64
# Processes waiting for a scan; beyond it new ones are skipped (counted) — their libraries are most
# often one of the files already hooked, which covers them anyway.
MAX_PENDING_EXECS: Final = 4096
# A chunk is released once the clock is this far past its stamp: the longest a probe may take from
# its stamp to its submit, with room for a preempted virtual CPU.
SETTLE_NS: Final = 5_000_000
MAX_HELD: Final = 65536
MAX_OPEN: Final = 65536  # sockets remembered to report their close (the kernel side's bound)
# Socket owners read and not yet taken (`take_sockets`); beyond it new ones are counted and dropped.
MAX_PENDING_SOCKETS: Final = 65536
# SCTP associations are read from procfs this often (ebpf/sctp.py; nothing when the kernel has none).
SCTP_SCAN_EVERY_NS: Final = 2_000_000_000
COUNTERS_EVERY_NS: Final = 1_000_000_000  # the kernel side's counters are summed this often at most
PERF_PAGES: Final = 256  # per CPU: 1 MiB, ~120 full chunks in flight per CPU
# The reader is woken when a CPU's buffer holds this many events (at most ~270 KiB of full chunks, a
# quarter of the buffer), not at each one: a wake-up from inside a probe costs the probed thread an
# inter-processor interrupt, and the reader a pass through poll() per event. Fewer events wait for the
# poll's timeout and are read then (`perf_buffer_consume` reads whatever the buffers hold).
WAKEUP_EVENTS: Final = 32
_LIBSSL = re.compile(r"/libssl\.so(\.[0-9.]+)?$")
# The OpenSSL entry points (name, BPF function at entry); each returns through `leave`.
FUNCTIONS: Final = (
    ("SSL_write", "write_enter"),
    ("SSL_read", "read_enter"),
    ("SSL_write_ex", "write_ex_enter"),
    ("SSL_read_ex", "read_ex_enter"),
)
# BoringSSL's (Envoy, Android): the same signatures, no `_ex` variants; recognised by a function
# only it exports (`BORING_MARK`), its events tagged `boringssl`.
BORING_FUNCTIONS: Final = (
    ("SSL_write", "boring_write_enter"),
    ("SSL_read", "boring_read_enter"),
)
BORING_MARK: Final = b"^SSL_CTX_set_grease_enabled$"
# OpenSSL's SSL BIO (`BIO_f_ssl`: `openssl s_server -www`, programs reading through BIO chains): its
# own read/write functions, found through BIO_f_ssl's method table (ebpf/biossl.py), get
# `bio_<dir>_enter_<layout>` and return through `bio_leave`. The layout (struct bio_st's offsets,
# _program.BIO_LAYOUTS) by libssl's soname version; 1.1.0 (same soname as 1.1.1, no SSL_read_ex) has
# another BIO_METHOD and is not hooked there.
BIO_LAYOUT_OF_VERSION: Final = {"3": "3", "1.1": "111"}
BIO_FUNCTIONS: Final = (("BIO_f_ssl read", "bio_read_enter"), ("BIO_f_ssl write", "bio_write_enter"))
# Go crypto/tls: (function, BPF function at entry); each RET instruction gets `go_leave`.
GO_FUNCTIONS: Final = (
    (gobin.WRITE, "go_write_enter"),
    (gobin.READ, "go_read_enter"),
    (gobin.HANDSHAKE, "go_handshake_enter"),  # optional: names the socket before the first Read
)
_LIBRARY_OF_EVENT: Final = {_program.OPENSSL: "openssl", _program.GO: "go", _program.BORINGSSL: "boringssl"}


AF_INET: Final = 2
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
_V4_MAPPED: Final = b"\0" * 10 + b"\xff\xff"


def _unmap(ip: bytes) -> bytes:
    """An IPv4-mapped IPv6 address (a dual-stack socket) as the IPv4 address it carries."""
    return ip[12:] if len(ip) == 16 and ip[:12] == _V4_MAPPED else ip


@dataclass(frozen=True, slots=True)
class SocketOwner:
    """A process that sent or received on a TCP connection, and the connection as its end sees it;
    or on a UDP socket (`protocol` 17), with the peer it exchanged with: the local address is the
    unspecified one (0.0.0.0 or ::) when the socket is bound to any (a server) or is IPv6."""

    local_ip: bytes
    local_port: int
    remote_ip: bytes
    remote_port: int
    local_is_server: bool  # the local end accepted the connection
    pid: int
    comm: str
    cgroup_id: int
    timestamp_ns: int
    container_id: str = ""  # of the cgroup, read on this node ("" outside any container)
    protocol: int = 6  # IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP (read from procfs: ebpf/sctp.py)

    def to_proto(self) -> packets_pb2.SocketOwner:
        from wiretide.proto.v1 import packets_pb2

        return packets_pb2.SocketOwner(
            local_ip=self.local_ip,
            local_port=self.local_port,
            remote_ip=self.remote_ip,
            remote_port=self.remote_port,
            local_is_server=self.local_is_server,
            pid=self.pid,
            comm=self.comm,
            cgroup_id=self.cgroup_id,
            timestamp_ns=self.timestamp_ns,
            container_id=self.container_id,
            protocol=self.protocol,
        )


class EbpfUnavailable(RuntimeError):
    """The source cannot run here; the message says why."""


# struct event_t of the program up to its data, in native order and alignment: ts, cgroup, offset,
# pid, tid, fd, dir, total, pos, len, kind, comm, local, remote, lport, rport, family, known, lib, pad.
# One unpack per event: reading the fields one by one through ctypes cost more than everything else
# the reader does per chunk.
_HEADER: Final = struct.Struct("=QQQIIiIIIII16s16s16sHHHHII")
_HEADER_SIZE: Final = _HEADER.size
# Where the connection's fields (local … known) sit in the header: decoded once per distinct value.
_CONN_SLICE: Final = slice(72, 112)
MAX_DECODED: Final = 4096  # distinct connections / command names kept decoded; then started afresh


# Not frozen: one is built per event on the reader's hot path, and a frozen dataclass's __init__
# (a call per field) cost several times a plain one's, the largest share of the reader's time per
# chunk. Nothing changes a chunk once built (`replace` makes a new one).
@dataclass(slots=True)
class Chunk:
    """Bytes one end of a TCP connection sent, as a hooked process wrote or read them."""

    src_ip: bytes
    src_port: int
    dst_ip: bytes
    dst_port: int
    from_client: bool
    offset: int
    data: bytes
    timestamp_ns: int
    pid: int
    tid: int
    comm: str
    cgroup_id: int
    library: str
    local_is_sender: bool
    closed: bool = False  # the hooked process closed the socket; `data` is empty
    container_id: str = ""  # of the cgroup, read on this node ("" outside any container)

    def to_proto(self) -> packets_pb2.PlaintextChunk:
        from wiretide.proto.v1 import packets_pb2

        return packets_pb2.PlaintextChunk(
            src_ip=self.src_ip,
            src_port=self.src_port,
            dst_ip=self.dst_ip,
            dst_port=self.dst_port,
            from_client=self.from_client,
            offset=self.offset,
            data=self.data,
            timestamp_ns=self.timestamp_ns,
            pid=self.pid,
            tid=self.tid,
            comm=self.comm,
            cgroup_id=self.cgroup_id,
            library=self.library,
            local_is_sender=self.local_is_sender,
            closed=self.closed,
            container_id=self.container_id,
        )


@dataclass(frozen=True, slots=True)
class Hook:
    """A library file the source looked at: hooked (with which functions) or why not."""

    path: str
    library: str
    functions: tuple[str, ...]
    error: str | None = None


@dataclass(slots=True)
class EbpfStats:
    chunks: int = 0
    bytes: int = 0
    drops: dict[str, int] = field(default_factory=dict)  # lost, unattributed, cut, exec_backlog…
    sockets: int = 0  # socket owners reported

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n


def library_of(path: str) -> str:
    """`openssl 3` for …/libssl.so.3, `openssl 1.1` for …/libssl.so.1.1; `openssl` when unversioned."""
    m = _LIBSSL.search(path)
    version = m.group(1)[1:] if m and m.group(1) else ""
    return f"openssl {version}".strip()


def _load_bcc() -> Any:
    """BCC's Python module: Debian's python3-bpfcc, made importable in the venv by `make setup`."""
    try:
        import bcc  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        raise EbpfUnavailable(
            "BCC is not importable (Debian: apt-get install python3-bpfcc; `sudo make setup` installs it "
            "and makes the venv see it)"
        ) from exc
    return bcc


# BCC compiles with LLVM, which is not thread-safe: two programs compiled at once in one process
# (this source and the causality probe, each on its own thread) crash it. Every compile holds this.
COMPILE_LOCK: Final = threading.Lock()


def compile_program(text: str) -> Any:
    """A BCC program compiled and loaded from `text`, one compile at a time in this process."""
    bcc = _load_bcc()
    with COMPILE_LOCK:
        return bcc.BPF(text=text.encode())  # bytes: BCC warns on str


def _ensure_tracefs() -> None:
    if (TRACEFS / "events").is_dir():
        return
    done = subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not (TRACEFS / "events").is_dir():
        raise EbpfUnavailable(f"tracefs is not mounted at {TRACEFS} and cannot be: {done.stderr.strip()}")


def libraries_in_maps(text: str) -> set[str]:
    """The libssl files a /proc/PID/maps text maps."""
    out: set[str] = set()
    for line in text.splitlines():
        path = line.rsplit(None, 1)[-1] if "/" in line else ""
        if path.startswith("/") and _LIBSSL.search(path):
            out.add(path)
    return out


class EbpfSource:
    """Loads the program, hooks the TLS libraries and turns kernel events into `Chunk`s."""

    def __init__(
        self, proc: Path = Path("/proc"), go_task_regs: bool = True, cgroup_root: str = CGROUP_ROOT
    ) -> None:
        self.proc = proc
        # Each event's cgroup id → its container, from this node's cgroup v2 hierarchy.
        self.containers = ContainerIds(cgroup_root, on_truncated=lambda: self.stats.drop("cgroup_truncated"))
        self._go_task_regs = go_task_regs  # False: as on a kernel without bpf_task_pt_regs
        self.stats = EbpfStats()
        # SCTP associations' processes, from procfs (no tracepoint names an SCTP socket).
        from wiretide.capture.sources.ebpf.sctp import SctpOwners  # it builds this module's SocketOwner

        self.sctp: SctpOwners = SctpOwners(proc, cgroup_root, drop=self.stats.drop)
        self._sctp_at: int | None = None  # monotonic ns of the last SCTP scan
        self.hooks: dict[str, Hook] = {}  # by file path as the processes map it
        self.conns = ConnectionTable(proc)
        self._bpf: Any = None
        self._out: list[Chunk] = []
        self._sockets: list[SocketOwner] = []  # read, not yet taken (see take_sockets)
        self._held: list[Chunk] = []  # read, but stamped too recently to be in order yet (see poll)
        self._open: dict[tuple[int, int], Chunk] = {}  # (pid, fd) → its last chunk, to say it closed
        self._execs: dict[int, int] = {}  # pid → monotonic ns of its exec
        self._checked_exes: set[tuple[int, int]] = set()  # (dev, inode) of executables looked at
        self._boot_offset = time.time_ns() - time.monotonic_ns()  # bpf_ktime_get_ns is CLOCK_MONOTONIC
        # How a Go call's socket is found: the goroutine of each syscall from the task's registers,
        # or (older kernels) the thread its call entered on.
        self.go_goroutine_of_syscall = "registers" if go_task_regs else "thread"
        # Sockets joined to processes in the kernel (sock:sock_send_length, kernel 6.3+); without it
        # accepted sockets are named from /proc and no socket owners are reported.
        self.kernel_sockets = False
        # UDP sockets' processes reported too (`SocketOwner.protocol` 17), on the same kernels.
        self.udp_owners = False
        self._counted_at = 0
        self._conns_decoded: dict[bytes, Connection] = {}  # by the header's connection bytes
        self._comms: dict[bytes, str] = {}  # by the header's 16 comm bytes

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if os.geteuid() != 0:
            raise EbpfUnavailable("eBPF needs root (or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN for uprobes)")
        _load_bcc()  # says why not (BCC missing) before tracefs is touched
        _ensure_tracefs()
        sock_length = all(
            (TRACEFS / "events" / "sock" / n).is_dir() for n in ("sock_send_length", "sock_recv_length")
        )
        # Richest first: a kernel without bpf_task_pt_regs (< 5.15) places Go syscalls by their thread;
        # one that refuses the UDP socket reader (it reads struct sock_common) names TCP sockets only;
        # one whose socket tracepoints do not load names accepted sockets from /proc.
        regs = (True, False) if self._go_task_regs else (False,)
        variants = [(r, sock_length, sock_length) for r in regs]
        if sock_length:
            variants += [(False, True, False), (False, False, False)]
        error: Exception | None = None
        for task_regs, joined, udp in variants:
            try:
                text = _program.program_text(go_task_regs=task_regs, sock_length=joined, udp_owners=udp)
                self._bpf = compile_program(text)
            except Exception as exc:
                error = exc
                continue
            self.go_goroutine_of_syscall = "registers" if task_regs else "thread"
            self.kernel_sockets = joined
            self.udp_owners = udp
            break
        else:
            raise EbpfUnavailable(
                f"the BPF program does not load: {str(error)[:300]} (kernel headers: see docs/ebpf.md)"
            ) from error
        self._bpf[b"events"].open_perf_buffer(
            self._on_event, page_cnt=PERF_PAGES, lost_cb=self._on_lost, wakeup_events=WAKEUP_EVENTS
        )
        for path in sorted(self._system_libraries() | self._mapped_libraries()):
            self.hook(path)
        for entry in os.scandir(self.proc):
            if entry.name.isdigit():
                self._check_static(int(entry.name))

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def _system_libraries(self) -> set[str]:
        """The host's own libssl (hooked even before a process loads it)."""
        import ctypes.util

        name = ctypes.util.find_library("ssl")
        out: set[str] = set()
        if name:
            for d in (
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib64",
                "/usr/lib64",
                "/usr/lib",
            ):
                candidate = os.path.join(d, name)
                if os.path.exists(candidate):
                    out.add(os.path.realpath(candidate))
                    break
        return out

    def _mapped_libraries(self) -> set[str]:
        out: set[str] = set()
        for entry in os.scandir(self.proc):
            if entry.name.isdigit():
                out |= self._maps_of(int(entry.name))
        return out

    def _maps_of(self, pid: int) -> set[str]:
        try:
            text = (self.proc / str(pid) / "maps").read_text()
        except OSError:
            return set()  # gone, or a kernel thread
        # A file in another mount namespace is reached through the process's root.
        return {
            p if os.path.exists(p) else str(self.proc / str(pid) / "root" / p.lstrip("/"))
            for p in libraries_in_maps(text)
        }

    # -- hooking -------------------------------------------------------------------------------

    def _is_boringssl(self, path: bytes) -> bool:
        try:
            return bool(self._bpf.get_user_functions_and_addresses(path, BORING_MARK))
        except Exception:  # unreadable or not ELF: the attach below says why
            return False

    def hook(self, path: str, library: str | None = None) -> Hook:
        """Attach to the OpenSSL (or BoringSSL) functions `path` exports; the result (and why not) is
        remembered."""
        real = os.path.realpath(path)
        known = self.hooks.get(real)
        if known is not None:
            return known
        attached: list[str] = []
        errors: list[str] = []
        functions: tuple[tuple[str, str], ...] = FUNCTIONS
        if self._is_boringssl(real.encode()):
            functions = BORING_FUNCTIONS
            library = "boringssl (static)" if library and "static" in library else "boringssl"
        for sym, enter in functions:
            try:
                self._bpf.attach_uprobe(name=real.encode(), sym=sym.encode(), fn_name=enter.encode())
            except Exception as exc:
                errors.append(f"{sym}: {exc}")
                continue
            try:
                self._bpf.attach_uretprobe(name=real.encode(), sym=sym.encode(), fn_name=b"leave")
            except Exception as exc:
                self._bpf.detach_uprobe(name=real.encode(), sym=sym.encode())
                errors.append(f"{sym} return: {exc}")
                continue
            attached.append(sym)
        if attached and functions is FUNCTIONS:
            attached += self._hook_ssl_bio(real)
        hook = Hook(
            real,
            library or library_of(real),
            tuple(attached),
            None if attached else ("no SSL_read/SSL_write found: " + "; ".join(errors)[:200]),
        )
        self.hooks[real] = hook
        return hook

    def _hook_ssl_bio(self, real: str) -> list[str]:
        """Attach to the SSL BIO's read/write in the OpenSSL libssl `real` (1.1.1 or 3.x, by soname);
        the names attached (none when the library is another version or its table is not found)."""
        m = _LIBSSL.search(real)
        layout = BIO_LAYOUT_OF_VERSION.get(m.group(1)[1:] if m and m.group(1) else "", "")
        name = real.encode()
        try:
            if not layout or (
                layout == "111" and not self._bpf.get_user_functions_and_addresses(name, b"^SSL_read_ex$")
            ):
                return []
            found = self._bpf.get_user_functions_and_addresses(name, b"^BIO_f_ssl$")
        except Exception:  # unreadable: SSL_read/SSL_write were attached, the BIO layer is not
            return []
        methods = biossl.find(real, int(found[0][1]) if found else 0)
        if methods.reason:  # not an OpenSSL this code knows the SSL BIO of: SSL_read/SSL_write still are
            return []
        attached: list[str] = []
        for (what, enter), addr in zip(BIO_FUNCTIONS, (methods.bread, methods.bwrite), strict=True):
            try:
                self._bpf.attach_uprobe(name=name, addr=addr, fn_name=f"{enter}_{layout}".encode())
            except Exception:
                continue
            try:
                self._bpf.attach_uretprobe(name=name, addr=addr, fn_name=b"bio_leave")
            except Exception:
                self._bpf.detach_uprobe(name=name, addr=addr)
                continue
            attached.append(what)
        return attached

    def _scan_execs(self, now: int) -> None:
        due = [pid for pid, t in self._execs.items() if now - t >= EXEC_SCAN_DELAY_NS]
        for pid in due[:MAX_SCANS_PER_POLL]:
            del self._execs[pid]
            self.conns.forget_process(pid)
            for path in self._maps_of(pid):
                self.hook(path)
            self._check_static(pid)

    def hook_go(self, path: str) -> Hook | None:
        """Attach to a Go binary's crypto/tls.(*Conn).Read/Write (entry and every RET); None when
        `path` is not a Go binary. A Go binary with crypto/tls that cannot be hooked is remembered
        with the reason; one without it is answered but not remembered."""
        real = os.path.realpath(path)
        known = self.hooks.get(real)
        if known is not None:
            return known
        try:
            binary = gobin.inspect(real)
        except OSError as exc:
            self.stats.drop("go_unreadable")
            return Hook(real, "go", (), f"unreadable: {exc}")
        if binary is None:
            return None
        library = f"go crypto/tls {binary.version}".strip()
        if not binary.uses_tls:  # nothing to hook, and not kept: it does not speak TLS
            return Hook(real, library, (), binary.reason)
        if not binary.hookable:
            hook = self.hooks[real] = Hook(real, library, (), binary.reason)
            return hook
        attached: list[int] = []
        error = None
        by_name = {f.name: f for f in binary.functions}
        name = real.encode()
        for func, enter in GO_FUNCTIONS:
            f = by_name.get(func)
            if f is None:  # an optional function this version does not have
                continue
            leave = b"go_handshake_leave" if func == gobin.HANDSHAKE else b"go_leave"
            try:
                for ret in f.returns:
                    self._bpf.attach_uprobe(name=name, addr=ret, fn_name=leave)
                    attached.append(ret)
                self._bpf.attach_uprobe(name=name, addr=f.entry, fn_name=enter.encode())
                attached.append(f.entry)
            except Exception as exc:
                error = f"{func}: {exc}"[:200]
                break
        if error is not None:
            for addr in attached:
                with contextlib.suppress(Exception):  # undo what attached; a failure here changes nothing
                    self._bpf.detach_uprobe(name=name, addr=addr)
            hook = Hook(real, library, (), f"attaching failed: {error}")
        else:
            hook = Hook(real, library, tuple(func for func, _ in GO_FUNCTIONS if func in by_name))
        self.hooks[real] = hook
        return hook

    def _check_static(self, pid: int) -> None:
        """The executable itself: Go's crypto/tls, or a statically linked OpenSSL/BoringSSL (Envoy,
        some C++ binaries) found by its own symbols."""
        exe = self.proc / str(pid) / "exe"
        try:
            st = os.stat(exe)
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in self._checked_exes:
            return
        if len(self._checked_exes) >= MAX_OPEN:
            self._checked_exes.clear()
        self._checked_exes.add(key)
        try:
            real = os.readlink(exe)
        except OSError:
            return
        if not os.path.exists(real):  # another mount namespace: reached through the process's root
            real = str(self.proc / str(pid) / "root" / real.lstrip("/"))
        if _LIBSSL.search(real) or not os.path.exists(real):
            return
        try:
            with open(real, "rb") as f:  # cheap filter before the ELF readers
                if f.read(4) != b"\x7fELF":
                    return
        except OSError:
            return
        if self.hook_go(real) is not None:
            return
        try:
            addr = self._bpf.get_user_functions_and_addresses(real.encode(), b"^SSL_write$")
        except Exception:
            return
        if addr:
            self.hook(real, "openssl (static)")

    # -- events --------------------------------------------------------------------------------

    def poll(self, timeout_ms: int = 100) -> list[Chunk]:
        """Wait `timeout_ms` for events (less when a CPU's buffer fills to `WAKEUP_EVENTS`), read all
        the buffers hold; the chunks stamped before the poll settled, in kernel order (later ones wait
        for the next poll).

        Per-CPU buffers are read one after another, and an event stamped on one CPU can reach its
        buffer after a later event of another CPU was read: a Go goroutine's Read answered on CPU 1
        can arrive one poll after the next Write on CPU 0. Sorting one poll's chunks is not enough.
        So the poll settles: it notes the clock, drains the buffers once more without waiting, and
        releases only the chunks stamped more than `SETTLE_NS` before that note — every event stamped
        then was submitted before the drain (a probe runs in microseconds) — holding the rest.
        """
        bpf = self._bpf
        bpf.perf_buffer_poll(timeout=timeout_ms)  # woken early only by a buffer holding WAKEUP_EVENTS
        bpf.perf_buffer_consume()
        now = time.monotonic_ns()
        if self._execs:
            self._scan_execs(now)
        if self._sctp_at is None or now - self._sctp_at >= SCTP_SCAN_EVERY_NS:
            self._sctp_at = now
            self._scan_sctp()
        if now - self._counted_at >= COUNTERS_EVERY_NS:
            self._counted_at = now
            self._read_counters()
        if not self._out and not self._held:
            return []
        settled = time.monotonic_ns()
        bpf.perf_buffer_consume()
        cutoff = settled - SETTLE_NS + self._boot_offset
        out = self._held + self._out if self._held else self._out
        self._out = []
        out.sort(key=_timestamp)
        if out[-1].timestamp_ns <= cutoff:
            self._held = []
            return out
        cut = bisect.bisect_right(out, cutoff, key=_timestamp)
        self._held = out[cut:]
        if len(self._held) > MAX_HELD:  # a clock step: never hold without bound
            cut, self._held = len(out), []
        return out[:cut]

    def _read_counters(self) -> None:
        """The kernel side's own drops (`_program.UNPLACED`) into `stats`, as totals since start."""
        try:
            per_cpu = self._bpf[b"lost_calls"][ctypes.c_int(_program.UNPLACED)]
        except Exception:  # a table that cannot be read says nothing; the next read tries again
            return
        total = sum(int(v) for v in per_cpu)
        if total:
            self.stats.drops["unplaced"] = total

    def _scan_sctp(self) -> None:
        """The owners of SCTP associations not reported yet, queued with the kernel side's."""
        try:
            owners = self.sctp.scan()
        except Exception:  # procfs in a shape not foreseen: counted, the TLS source keeps running
            self.stats.drop("sctp_error")
            return
        room = MAX_PENDING_SOCKETS - len(self._sockets)
        if len(owners) > room:
            self.stats.drop("socket_backlog", len(owners) - room)
            owners = owners[: max(room, 0)]
        self.stats.sockets += len(owners)
        self._sockets.extend(owners)

    def take_sockets(self) -> list[SocketOwner]:
        """The socket owners read since the last call (by `poll`), in the order they were read. They
        are not held for kernel order: each names a connection, and a later one for the same
        connection and process is a repeat."""
        out, self._sockets = self._sockets, []
        return out

    def drain(self) -> list[Chunk]:
        """Every chunk read so far, held ones included (at close)."""
        out = sorted(self._held + self._out, key=_timestamp)
        self._held, self._out = [], []
        return out

    def _on_lost(self, count: int) -> None:
        self.stats.drop("lost", count)

    def _on_event(self, _cpu: int, data: Any, size: int) -> None:
        if size < _HEADER_SIZE:
            self.stats.drop("short_event")
            return
        raw = ctypes.string_at(data, size)
        (ts, cgroup, offset, pid, tid, fd, direction, total, pos, n, kind, comm, _l, _r, _lp, _rp, _f,
         known, lib, _pad) = _HEADER.unpack_from(raw)  # fmt: skip
        if kind == _program.EXEC:
            if len(self._execs) < MAX_PENDING_EXECS:
                self._execs[pid] = ts  # bpf_ktime_get_ns: CLOCK_MONOTONIC, as time.monotonic_ns()
            else:
                self.stats.drop("exec_backlog")
            return
        if kind == _program.SOCKET:
            self._socket(raw)
            return
        if kind == _program.CLOSE:
            self.conns.forget(pid, fd)
            last = self._open.pop((pid, fd), None)
            if last is not None:
                self._out.append(
                    replace(last, data=b"", offset=0, timestamp_ns=ts + self._boot_offset, closed=True)
                )
            return
        if pos == 0 and total > _program.CHUNK_BYTES * _program.PIECES_PER_CALL:  # once per call
            self.stats.drop("cut", total - _program.CHUNK_BYTES * _program.PIECES_PER_CALL)
        conn: Connection | None
        if known:  # a connection the kernel side named (see _program: connections)
            key = raw[_CONN_SLICE]
            conn = self._conns_decoded.get(key)
            if conn is None:
                conn = self._decode_conn(raw)
                if len(self._conns_decoded) >= MAX_DECODED:
                    self._conns_decoded.clear()
                self._conns_decoded[key] = conn
        else:
            conn = self.conns.get(pid, fd) if fd >= 0 else None
        if conn is None:
            self.stats.drop("unattributed")
            return
        payload = raw[_HEADER_SIZE : _HEADER_SIZE + n]
        sending = direction == _program.WRITE
        if sending:
            src, sport, dst, dport = conn.local_ip, conn.local_port, conn.remote_ip, conn.remote_port
            from_client = not conn.local_is_server
        else:
            src, sport, dst, dport = conn.remote_ip, conn.remote_port, conn.local_ip, conn.local_port
            from_client = conn.local_is_server
        self.stats.chunks += 1
        self.stats.bytes += n
        chunk = Chunk(
            src,
            sport,
            dst,
            dport,
            from_client,
            offset + pos,
            payload,
            ts + self._boot_offset,
            pid,
            tid,
            self._comm(comm),
            cgroup,
            _LIBRARY_OF_EVENT.get(lib, "openssl"),
            sending,
            container_id=self.containers.get(cgroup),
        )
        if len(self._open) >= MAX_OPEN:
            self._open.clear()
        self._open[(pid, fd)] = chunk
        self._out.append(chunk)

    def _comm(self, raw: bytes) -> str:
        name = self._comms.get(raw)
        if name is None:
            name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            if len(self._comms) >= MAX_DECODED:
                self._comms.clear()
            self._comms[raw] = name
        return name

    @staticmethod
    def _decode_conn(raw: bytes) -> Connection:
        (*_, local, remote, lport, rport, family, known, _lib, _pad) = _HEADER.unpack_from(raw)
        width = 4 if family == AF_INET else 16
        return Connection(
            _unmap(local[:width]), lport, _unmap(remote[:width]), rport, known == _program.SERVER
        )

    def _socket(self, raw: bytes) -> None:
        if len(self._sockets) >= MAX_PENDING_SOCKETS:
            self.stats.drop("socket_backlog")
            return
        (ts, cgroup, _o, pid, _t, _fd, _d, _tot, _pos, _n, _k, comm, local16, remote16, lport, rport,
         family, known, _lib, _pad) = _HEADER.unpack_from(raw)  # fmt: skip
        width = 4 if family == AF_INET else 16
        remote = _unmap(remote16[:width])
        datagram = known == _program.DATAGRAM
        if datagram:  # the kernel knows only an IPv4 socket's own address; any other is unspecified
            local = local16[:4] if family == AF_INET else bytes(len(remote))
        else:
            local = _unmap(local16[:width])
        self.stats.sockets += 1
        self._sockets.append(
            SocketOwner(
                local,
                lport,
                remote,
                rport,
                known == _program.SERVER,
                pid,
                self._comm(comm),
                cgroup,
                ts + self._boot_offset,
                self.containers.get(cgroup),
                IPPROTO_UDP if datagram else IPPROTO_TCP,
            )
        )


def _timestamp(chunk: Chunk) -> int:
    return chunk.timestamp_ns


def probe() -> str | None:
    """Why eBPF cannot run here (None when it can): for tests and `wiretide doctor`."""
    if os.geteuid() != 0:
        return "not root"
    try:
        _load_bcc()
    except EbpfUnavailable as exc:
        return str(exc)
    return None


OnChunks = Callable[[list[Chunk]], None]
