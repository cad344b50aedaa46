"""Kernel-observed causality: which inbound request a thread was serving when it wrote an outbound call.

Rule: an edge is emitted only for what the kernel saw on one thread — a read on an accepted socket,
then, before that thread wrote anything back on it, a write on a socket it connected — and both
connections are named in the kernel (accept's peer address and connect's handshake), never from
/proc afterwards, so a process that exits or closes mid-call is still named. No edge is a guess: a
thread that hands its work to another (event loops, goroutines, worker pools) yields no edge, and
the tracer falls back to timing there. Syscall and sock/sched tracepoints only (no kprobes).
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from wiretide.capture.sources.ebpf.feed import SourceThread
from wiretide.capture.sources.ebpf.source import EbpfUnavailable, _ensure_tracefs, _load_bcc, compile_program

log = logging.getLogger(__name__)

# Sockets named (accepted or connected, per process and fd), threads followed, accepts waiting for
# their handshake's 4-tuple: LRU tables, so a process that exits without closing leaves nothing
# behind for long.
MAX_SOCKETS: Final = 65536
MAX_THREADS: Final = 65536
MAX_HANDSHAKES: Final = 16384
PERF_PAGES: Final = 64  # per CPU: an edge is 136 bytes, ~1,900 per CPU between two reads
POLL_MS: Final = 100  # how often the buffers are read (edges wait at most this long)
# Processes remembered as Go or not (beyond it the memory starts afresh).
MAX_PROCESSES: Final = 16384

# Kernel-side counters (a per-CPU array, summed on read): what was seen and what could not be named.
COUNTERS: Final = ("edges", "accept_unnamed", "inbound_unnamed", "muxed_processes", "muxed_calls")

SOURCE: Final = r"""
#include <uapi/linux/ptrace.h>

#define ROLE_SERVER 1
#define ROLE_CLIENT 2

struct conn_t {
    u8 local[16];
    u8 remote[16];
    u16 lport;
    u16 rport;
    u16 family;
    u16 role;
    u32 gen;  // the process's generation when named (see `gens`)
    u32 reader;  // an inbound socket's last reading thread
};

struct fdkey_t {
    u32 pid;
    s32 fd;
};

// What one thread is doing: the request it reads (its socket and when its first bytes were read)
// and the outbound call it last announced (so that a request written in several writes is one edge).
struct thread_t {
    u64 in_ts;
    s32 in_fd;
    s32 out_fd;
    u32 out_open;
    s32 ans_fd;  // the inbound socket it is answering on (a long answer is several writes)
};

// A passive handshake's 4-tuple, found again by the peer address accept() returns.
struct peerkey_t {
    u8 remote[16];
    u16 rport;
    u16 family;
    u32 pad;
};

struct accept_t {
    u64 addr;
    s32 fd;
    u32 pad;
};

struct edge_t {
    u64 ts_out;
    u64 ts_in;
    u32 pid;
    u32 tid;
    struct conn_t out;
    struct conn_t in;
    char comm[16];
};

BPF_TABLE("lru_hash", struct fdkey_t, struct conn_t, sockets, __MAX_SOCKETS__);
BPF_TABLE("lru_hash", u64, struct thread_t, threads, __MAX_THREADS__);
BPF_TABLE("lru_hash", u64, s32, reading, __MAX_THREADS__);
BPF_TABLE("lru_hash", u64, struct accept_t, accepting, __MAX_THREADS__);
BPF_TABLE("lru_hash", u64, s32, connecting, __MAX_THREADS__);
BPF_TABLE("lru_hash", u64, u64, sk_owner, __MAX_HANDSHAKES__);
BPF_TABLE("lru_hash", struct peerkey_t, struct conn_t, passive, __MAX_HANDSHAKES__);
// pid -> generation, bumped when a task of that id is created: a socket named for a process that
// exited without closing it (the kernel closes its files, no close() is seen) is never taken for a
// socket of a later process that reuses the pid.
BPF_TABLE("lru_hash", u32, u32, gens, __MAX_THREADS__);
// pid -> its generation, for processes seen serving requests other than thread-per-request: a
// thread reading a second request before answering the first (an event loop), or a request answered
// by another thread than the one that read it (a pool handing work over, goroutines moving between
// threads). Their edges are not emitted: the tracer falls back to timing for them.
BPF_TABLE("lru_hash", u32, u32, muxed, __MAX_THREADS__);
BPF_PERCPU_ARRAY(counts, u64, 5);
BPF_PERF_OUTPUT(edges);

static __always_inline void bump(u32 i) {
    u64 *n = counts.lookup(&i);
    if (n)
        *n += 1;
}

static __always_inline u32 gen_of(u32 pid) {
    u32 *g = gens.lookup(&pid);
    return g ? *g : 0;
}

static __always_inline void name_socket(struct fdkey_t *fk, struct conn_t *conn) {
    conn->gen = gen_of(fk->pid);
    sockets.update(fk, conn);
}

static __always_inline struct conn_t *socket_of(u32 pid, s32 fd) {
    struct fdkey_t fk = {};
    fk.pid = pid;
    fk.fd = fd;
    struct conn_t *c = sockets.lookup(&fk);
    if (c && c->gen != gen_of(pid))
        return 0;  // named for an earlier process with this pid
    return c;
}

static __always_inline void mark_muxed(u32 pid) {
    u32 g = gen_of(pid);
    muxed.update(&pid, &g);
    bump(3);
}

static __always_inline int is_muxed(u32 pid) {
    u32 *g = muxed.lookup(&pid);
    return g && *g == gen_of(pid);
}

TRACEPOINT_PROBE(sched, sched_process_fork) {
    u32 child = args->child_pid;
    u32 g = gen_of(child) + 1;
    gens.update(&child, &g);
    return 0;
}

// ---- naming connections --------------------------------------------------------------------

static __always_inline void accept_enter(u64 addr, int fd) {
    u64 id = bpf_get_current_pid_tgid();
    struct accept_t a = {};
    a.addr = addr;
    a.fd = fd;
    accepting.update(&id, &a);
}

static __always_inline void accept_exit(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    struct accept_t *a = accepting.lookup(&id);
    if (!a)
        return;
    u64 addr = a->addr;
    accepting.delete(&id);
    if (ret < 0 || !addr)
        return;
    struct peerkey_t k = {};
    u16 family = 0;
    u16 port = 0;
    bpf_probe_read_user(&family, sizeof(family), (void *)addr);
    bpf_probe_read_user(&port, sizeof(port), (void *)(addr + 2));
    k.family = family;
    k.rport = (port >> 8) | (port << 8);
    if (family == 2)
        bpf_probe_read_user(&k.remote, 4, (void *)(addr + 4));
    else if (family == 10)
        bpf_probe_read_user(&k.remote, 16, (void *)(addr + 8));
    else
        return;
    struct conn_t *c = passive.lookup(&k);
    if (!c) {
        bump(1);
        return;
    }
    struct conn_t conn = *c;
    passive.delete(&k);
    conn.role = ROLE_SERVER;
    struct fdkey_t fk = {};
    fk.pid = id >> 32;
    fk.fd = (s32)ret;
    name_socket(&fk, &conn);
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept4) { accept_enter((u64)args->upeer_sockaddr, args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { accept_exit(args->ret); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_accept) { accept_enter((u64)args->upeer_sockaddr, args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { accept_exit(args->ret); return 0; }

TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    u64 id = bpf_get_current_pid_tgid();
    s32 fd = args->fd;
    connecting.update(&id, &fd);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect) {
    u64 id = bpf_get_current_pid_tgid();
    connecting.delete(&id);
    return 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != 6)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == 2) {  // TCP_SYN_SENT: in the connecting thread, which names the fd
        u64 id = bpf_get_current_pid_tgid();
        s32 *fd = connecting.lookup(&id);
        if (fd) {
            u64 owner = (id & 0xffffffff00000000ULL) | (u32)*fd;
            sk_owner.update(&sk, &owner);
        }
        return 0;
    }
    if (args->newstate != 1)  // only ESTABLISHED names a 4-tuple
        return 0;
    struct conn_t conn = {};
    conn.family = args->family;
    if (args->family == 2) {
        __builtin_memcpy(conn.local, args->saddr, 4);
        __builtin_memcpy(conn.remote, args->daddr, 4);
    } else {
        __builtin_memcpy(conn.local, args->saddr_v6, 16);
        __builtin_memcpy(conn.remote, args->daddr_v6, 16);
    }
    conn.lport = args->sport;
    conn.rport = args->dport;
    if (args->oldstate == 2) {  // SYN_SENT -> ESTABLISHED: our connect
        u64 *owner = sk_owner.lookup(&sk);
        if (!owner)
            return 0;
        struct fdkey_t fk = {};
        fk.pid = *owner >> 32;
        fk.fd = (s32)(u32)*owner;
        sk_owner.delete(&sk);
        conn.role = ROLE_CLIENT;
        name_socket(&fk, &conn);
        return 0;
    }
    if (args->oldstate == 3) {  // SYN_RECV -> ESTABLISHED: a peer's connect, to be accepted
        struct peerkey_t k = {};
        k.family = args->family;
        k.rport = args->dport;
        __builtin_memcpy(k.remote, conn.remote, 16);
        passive.update(&k, &conn);
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    u64 id = bpf_get_current_pid_tgid();
    struct fdkey_t fk = {};
    fk.pid = id >> 32;
    fk.fd = (s32)args->fd;
    sockets.delete(&fk);
    struct thread_t *t = threads.lookup(&id);
    if (t) {  // the fd number may come back as another connection: it is not the same call or request
        if (t->out_fd == fk.fd) {
            t->out_fd = -1;
            t->out_open = 0;
        }
        if (t->in_fd == fk.fd)
            t->in_fd = -1;
        if (t->ans_fd == fk.fd)
            t->ans_fd = -1;
    }
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();  // fires per thread
    threads.delete(&id);
    reading.delete(&id);
    accepting.delete(&id);
    connecting.delete(&id);
    return 0;
}

// ---- reads and writes ------------------------------------------------------------------------

static __always_inline void read_enter(int fd) {
    u64 id = bpf_get_current_pid_tgid();
    if (!socket_of(id >> 32, fd))
        return;
    s32 f = fd;
    reading.update(&id, &f);
}

// A read that returned bytes: on an accepted socket, the thread now serves a request on it (from
// its first bytes, until it writes back); on a connected one, the answer to its call is arriving,
// so its next write there is a new call.
static __always_inline void read_exit(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    s32 *f = reading.lookup(&id);
    if (!f)
        return;
    s32 fd = *f;
    reading.delete(&id);
    if (ret <= 0)
        return;
    struct conn_t *c = socket_of(id >> 32, fd);
    if (!c)
        return;
    struct thread_t *t = threads.lookup(&id);
    if (c->role == ROLE_SERVER) {
        c->reader = (u32)id;
        if (t && t->in_fd == fd)
            return;  // more of the same request
        if (t && t->in_fd >= 0)
            mark_muxed(id >> 32);  // a second request before the first was answered: an event loop
        struct thread_t n = {};
        n.in_ts = bpf_ktime_get_ns();
        n.in_fd = fd;
        n.out_fd = -1;
        n.ans_fd = -1;
        threads.update(&id, &n);
    } else if (t && t->out_fd == fd) {
        t->out_open = 0;
    }
}

static __always_inline void write_enter(void *ctx, int fd) {
    u64 id = bpf_get_current_pid_tgid();
    struct conn_t *c = socket_of(id >> 32, fd);
    if (!c)
        return;
    struct thread_t *t = threads.lookup(&id);
    if (c->role == ROLE_SERVER) {
        if (t && fd == t->in_fd) {  // the answer: the request is served
            t->in_fd = -1;
            t->out_open = 0;
            t->ans_fd = fd;
        } else if (c->reader && c->reader != (u32)id && !(t && t->ans_fd == fd)) {
            mark_muxed(id >> 32);  // answered by another thread than the one that read it
        }
        return;
    }
    if (!t || t->in_fd < 0)
        return;  // not serving a request: nothing to relate
    if (t->out_open && t->out_fd == fd)
        return;  // the rest of a call already announced
    if (is_muxed(id >> 32)) {
        bump(4);
        return;
    }
    struct conn_t *in = socket_of(id >> 32, t->in_fd);
    if (!in) {
        bump(2);
        return;
    }
    struct edge_t e = {};
    e.ts_out = bpf_ktime_get_ns();
    e.ts_in = t->in_ts;
    e.pid = id >> 32;
    e.tid = (u32)id;
    __builtin_memcpy(&e.out, c, sizeof(e.out));
    __builtin_memcpy(&e.in, in, sizeof(e.in));
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
    t->out_fd = fd;
    t->out_open = 1;
    edges.perf_submit(ctx, &e, sizeof(e));
    bump(0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_read) { read_enter(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { read_exit(args->ret); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { read_enter(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { read_exit(args->ret); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom) { read_enter(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { read_exit(args->ret); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg) { read_enter(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { read_exit(args->ret); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_write) { write_enter(args, args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { write_enter(args, args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) { write_enter(args, args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { write_enter(args, args->fd); return 0; }
"""


def program_text() -> str:
    """The program with its table bounds filled in."""
    return (
        SOURCE.replace("__MAX_SOCKETS__", str(MAX_SOCKETS))
        .replace("__MAX_THREADS__", str(MAX_THREADS))
        .replace("__MAX_HANDSHAKES__", str(MAX_HANDSHAKES))
    )


class _Conn(ctypes.Structure):
    _fields_ = [
        ("local", ctypes.c_ubyte * 16),
        ("remote", ctypes.c_ubyte * 16),
        ("lport", ctypes.c_uint16),
        ("rport", ctypes.c_uint16),
        ("family", ctypes.c_uint16),
        ("role", ctypes.c_uint16),
        ("gen", ctypes.c_uint32),
        ("reader", ctypes.c_uint32),
    ]


class _Edge(ctypes.Structure):
    _fields_ = [
        ("ts_out", ctypes.c_uint64),
        ("ts_in", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("out", _Conn),
        ("inb", _Conn),
        ("comm", ctypes.c_ubyte * 16),
    ]


EDGE_SIZE: Final = ctypes.sizeof(_Edge)
AF_INET: Final = 2
AF_INET6: Final = 10
_V4_MAPPED: Final = b"\0" * 10 + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """A TCP connection, client end first (as the entry of a call on it names it)."""

    client_ip: str
    client_port: int
    server_ip: str
    server_port: int


@dataclass(frozen=True, slots=True)
class CausalEdge:
    """A thread serving the request on `inbound` (first read at `inbound_ns`) wrote a call on
    `outbound` (first byte at `outbound_ns`). Times are ns since the epoch."""

    outbound: Endpoints
    outbound_ns: int
    inbound: Endpoints
    inbound_ns: int
    pid: int
    tid: int
    comm: str


def _ip(raw: bytes, family: int) -> str:
    if family == AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if raw[:12] == _V4_MAPPED:  # a dual-stack socket carrying IPv4
        return socket.inet_ntop(socket.AF_INET, raw[12:16])
    return socket.inet_ntop(socket.AF_INET6, raw)


# struct edge_t, read with one precompiled unpack: ts_out, ts_in, pid, tid, then per connection local,
# remote, lport, rport, family (role, gen and reader skipped), then comm.
_EDGE: Final = struct.Struct("<QQII16s16sHHH10x16s16sHHH10x16s")


def decode_edge(raw: bytes, boot_offset_ns: int) -> CausalEdge | None:
    """One kernel event as an edge (None when it is not one: short or of an unknown family)."""
    if len(raw) < EDGE_SIZE:
        return None
    ts_out, ts_in, pid, tid, ol, orr, olp, orp, of, il, ir, ilp, irp, inf, comm = _EDGE.unpack_from(raw)
    if of not in (AF_INET, AF_INET6) or inf not in (AF_INET, AF_INET6):
        return None
    return CausalEdge(
        Endpoints(_ip(ol, of), olp, _ip(orr, of), orp),  # we connected: the local end is the client
        ts_out + boot_offset_ns,
        Endpoints(_ip(ir, inf), irp, _ip(il, inf), ilp),  # we accepted: the remote end is the client
        ts_in + boot_offset_ns,
        pid,
        tid,
        comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
    )


@dataclass(slots=True)
class CausalityStats:
    edges: int = 0
    drops: dict[str, int] = field(default_factory=dict)  # lost, malformed, go

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n


def is_go_executable(path: str) -> bool:
    """A Go program (its ELF has Go's build info or function table); False when unreadable."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return False
            f.seek(0)
            elf = ELFFile(f)
            return any(elf.get_section_by_name(n) is not None for n in (".go.buildinfo", ".gopclntab"))
    except (OSError, ELFError, ValueError):
        return False


class CausalityProbe:
    """Loads the program and turns its events into `CausalEdge`s (`poll`).

    Edges of Go programs are dropped (counted `go`): goroutines move between threads, so what one
    thread read and then wrote need not be one request. The kernel side finds most of them by
    themselves (a request answered by another thread); this catches them from their first call.
    """

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.stats = CausalityStats()
        self._go: dict[int, bool] = {}  # pid -> is a Go program
        self._bpf: Any = None
        self._out: list[CausalEdge] = []
        self._boot_offset = time.time_ns() - time.monotonic_ns()  # bpf_ktime_get_ns is CLOCK_MONOTONIC

    def start(self) -> None:
        if os.geteuid() != 0:
            raise EbpfUnavailable("eBPF needs root (or CAP_BPF + CAP_PERFMON)")
        _load_bcc()
        _ensure_tracefs()
        try:
            self._bpf = compile_program(program_text())  # one compilation at a time per process
        except Exception as exc:
            raise EbpfUnavailable(f"the causality program does not load: {str(exc)[:300]}") from exc
        self._bpf[b"edges"].open_perf_buffer(self._on_event, page_cnt=PERF_PAGES, lost_cb=self._on_lost)

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def poll(self, timeout_ms: int = POLL_MS) -> list[CausalEdge]:
        self._bpf.perf_buffer_poll(timeout=timeout_ms)
        out, self._out = self._out, []
        return out

    def kernel_counts(self) -> dict[str, int]:
        """The program's own counters (edges emitted, sockets it could not name), summed over CPUs."""
        table = self._bpf[b"counts"]
        return {name: int(sum(table[ctypes.c_int(i)])) for i, name in enumerate(COUNTERS)}

    def threads_of(self, pid: int) -> int:
        """Threads of process `pid` the kernel side holds state for (walks the table)."""
        return sum(1 for k in self._bpf[b"threads"].keys() if k.value >> 32 == pid)  # noqa: SIM118

    def _is_go(self, pid: int) -> bool:
        known = self._go.get(pid)
        if known is None:
            if len(self._go) >= MAX_PROCESSES:
                self._go.clear()
            known = self._go[pid] = is_go_executable(f"{self.proc}/{pid}/exe")
        return known

    def _on_lost(self, count: int) -> None:
        self.stats.drop("lost", count)

    def _on_event(self, _cpu: int, data: Any, size: int) -> None:
        edge = decode_edge(ctypes.string_at(data, size), self._boot_offset)
        if edge is None:
            self.stats.drop("malformed")
            return
        if self._is_go(edge.pid):
            self.stats.drop("go")
            return
        self.stats.edges += 1
        self._out.append(edge)


class CausalityFeed(SourceThread[CausalityProbe]):
    """Runs a `CausalityProbe` on its own thread and hands each poll's edges to `on_edges` on `loop`.

    Like the TLS feed, it never takes the capture down: whatever stops the probe becomes `error`.
    When another source compiles its own program, loading waits until `after()` says it is done.
    """

    def __init__(
        self,
        on_edges: Callable[[list[CausalEdge]], None],
        loop: Any,
        probe: Callable[[], CausalityProbe] = CausalityProbe,
        after: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(probe, loop, name="ebpf-causality", what="eBPF causality source", after=after)
        self._on_edges = on_edges

    @property
    def probe(self) -> CausalityProbe | None:
        return self._source

    @property
    def stats(self) -> CausalityStats:
        return self._source.stats if self._source is not None else CausalityStats()

    def _serve(self, probe: CausalityProbe) -> None:
        log.info("eBPF causality source running")
        # Read every POLL_MS, not on every event: one wake-up reads all that came meanwhile.
        while not self._stop.wait(POLL_MS / 1000):
            edges = probe.poll(0)
            if edges:
                self._loop.call_soon_threadsafe(self._on_edges, edges)
