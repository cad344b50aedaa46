"""The BPF program of the eBPF source (compiled by BCC at start-up).

Rule: the kernel side only copies what the hooked calls returned and remembers, per thread, which
socket the call touched. Connections are named in the kernel from tracepoint fields (the kernel
headers at hand may not match the running kernel): a TCP socket's 4-tuple from its transition to
ESTABLISHED (keyed by its `struct sock` address), joined to a process and fd by the socket layer's
send/recv tracepoints in the thread making the call. The one kernel structure read is the head of a
UDP socket's `struct sock_common` (addresses and ports, laid out so since Linux 2.6), which no
tracepoint names. User space reads /proc only for sockets older than the program. Uprobes and
tracepoints only: kprobes are unavailable on some kernels this runs on.
"""

from __future__ import annotations

from typing import Final

# Bytes copied per event, and events per call: a call returning more is cut, the rest becomes a gap
# (the per-direction offset still advances by everything the call returned).
CHUNK_BYTES: Final = 8192
PIECES_PER_CALL: Final = 4
# Calls in flight (threads inside SSL_read/SSL_write at once) and sockets remembered; the tables are
# LRU, so a process that exits mid-call leaves nothing behind for long.
MAX_ACTIVE: Final = 16384
MAX_SOCKETS: Final = 65536

# Kernel-side counters (`lost_calls`, per CPU): calls whose socket was never learnt (no socket call
# inside them and none before on the same SSL object), not copied.
UNPLACED: Final = 0

# Event kinds.
DATA: Final = 0
CLOSE: Final = 1
EXEC: Final = 2
SOCKET: Final = 3  # a process used a TCP socket: its 4-tuple and the process (the socket table)

# How an event's 4-tuple was named (`known`): not at all, the local end connected, or it accepted;
# or (SOCKET events only) a UDP socket, as the kernel holds it (local address 0 when unbound).
UNKNOWN: Final = 0
CLIENT: Final = 1
SERVER: Final = 2
DATAGRAM: Final = 3

# Directions (as seen by the hooked process).
WRITE: Final = 0
READ: Final = 1

# Libraries (the `lib` of a call and of its events).
OPENSSL: Final = 0
GO: Final = 1
BORINGSSL: Final = 2

# OpenSSL's SSL BIO (`BIO_f_ssl`): where struct bio_st holds its method and its data (the data of an
# SSL BIO is a BIO_SSL, whose first field is the SSL*), by OpenSSL version. 3.x puts its library
# context first; 1.1.1 has none (1.1.0, whose BIO methods are of another shape, is not hooked). Each
# layout has its own entry functions (`bio_read_enter_<name>`, `bio_write_enter_<name>`).
BIO_TYPE_SSL: Final = 0x207  # 7 | BIO_TYPE_FILTER
BIO_LAYOUTS: Final = {"3": (8, 64), "111": (0, 56)}  # name: (offset of method, offset of ptr)

SOURCE: Final = r"""
#include <uapi/linux/ptrace.h>

#define CHUNK __CHUNK__
#define PIECES __PIECES__
#define GO_TASK_REGS __GO_TASK_REGS__
#define SOCK_LENGTH __SOCK_LENGTH__
#define UDP_OWNERS __UDP_OWNERS__

struct call_t {
    u64 buf;
    u64 ssl;
    u64 outlen;
    s32 fd;
    u32 dir;
    u32 ex;
    u32 lib;
    u32 done;  // a Go write already emitted (at its first syscall)
    u32 bio;   // entered through the SSL BIO's read/write: `sp` tells its own return
    u64 sp;    // the stack pointer at entry (the return address's slot)
};

// A Go call is keyed by its goroutine (R14 in the register ABI), not its thread: a goroutine
// blocked in Read can resume on another thread.
struct gokey_t {
    u64 g;
    u32 pid;
    u32 pad;
};

struct sslkey_t {
    u64 ssl;
    u32 pid;
    u32 pad;
};

struct fdkey_t {
    u32 pid;
    u32 fd_dir;
};

struct event_t {
    u64 ts;
    u64 cgroup;
    u64 offset;
    u32 pid;
    u32 tid;
    s32 fd;
    u32 dir;
    u32 total;
    u32 pos;
    u32 len;
    u32 kind;
    char comm[16];
    u8 local[16];
    u8 remote[16];
    u16 lport;
    u16 rport;
    u16 family;
    u16 known;
    u32 lib;
    u32 pad;
    u8 data[CHUNK];
};

struct conn_t {
    u8 local[16];
    u8 remote[16];
    u16 lport;
    u16 rport;
    u16 family;
    u16 known;  // 1: the local end connected, 2: it accepted
};

// A TCP socket named at ESTABLISHED, by its struct sock address; `owner` is the last process
// announced as using it (a SOCKET event per process that sends or receives on it).
struct skconn_t {
    struct conn_t conn;
    u32 owner;
    u32 pad;
};

BPF_TABLE("lru_hash", u64, struct call_t, active, __MAX_ACTIVE__);
BPF_TABLE("lru_hash", struct sslkey_t, s32, ssl_fd, __MAX_SOCKETS__);
BPF_TABLE("lru_hash", struct fdkey_t, u64, offsets, __MAX_SOCKETS__);
BPF_TABLE("lru_hash", u64, u64, connecting, __MAX_ACTIVE__);
BPF_TABLE("lru_hash", u64, u64, sk_owner, __MAX_ACTIVE__);
BPF_TABLE("lru_hash", struct fdkey_t, struct conn_t, fd_conn, __MAX_SOCKETS__);
BPF_TABLE("lru_hash", u64, struct skconn_t, sk_conn, __MAX_SOCKETS__);
BPF_TABLE("lru_hash", u64, s32, call_fd, __MAX_ACTIVE__);  // thread in a hooked call -> its syscall's fd
BPF_TABLE("lru_hash", struct gokey_t, struct call_t, go_active, __MAX_ACTIVE__);
BPF_TABLE("lru_hash", u32, u32, go_pids, __MAX_ACTIVE__);  // processes that entered a hooked Go call
// Goroutines inside (*Conn).handshakeContext -> the *tls.Conn: its first syscall names the socket, so
// that a first Read served from what the handshake already read (no syscall) is placed too.
BPF_TABLE("lru_hash", struct gokey_t, u64, go_hs, __MAX_ACTIVE__);
#if !GO_TASK_REGS
BPF_TABLE("lru_hash", u64, u64, go_thread, __MAX_ACTIVE__);  // thread -> goroutine that entered on it
#endif
#if SOCK_LENGTH
// UDP sockets announced (a SOCKET event once per socket, process, local port and peer).
struct dgram_key_t {
    u64 sk;
    u8 remote[16];
    u32 pid;
    u16 rport;
    u16 lport;
};
BPF_TABLE("lru_hash", struct dgram_key_t, u8, dgram_seen, __MAX_SOCKETS__);
// A thread inside sendto()/sendmsg() with a destination -> that user pointer (a sockaddr, or for
// sendmsg the msghdr whose first field points to one): an unconnected UDP socket's peer.
struct dest_t {
    u64 ptr;
    u64 is_msg;
};
BPF_TABLE("lru_hash", u64, struct dest_t, send_dest, __MAX_ACTIVE__);
#endif
BPF_PERCPU_ARRAY(scratch, struct event_t, 1);
// What the kernel side could not report, by reason (see UNPLACED): summed by user space.
BPF_PERCPU_ARRAY(lost_calls, u64, 1);
BPF_PERF_OUTPUT(events);

static __always_inline int enter(struct pt_regs *ctx, u32 dir, u32 ex, u32 lib) {
    u64 id = bpf_get_current_pid_tgid();
    struct call_t c = {};
    c.ssl = PT_REGS_PARM1(ctx);
    c.buf = PT_REGS_PARM2(ctx);
    c.outlen = ex ? PT_REGS_PARM4(ctx) : 0;
    c.fd = -1;
    c.dir = dir;
    c.ex = ex;
    c.lib = lib;
    active.update(&id, &c);
    return 0;
}

int write_enter(struct pt_regs *ctx) { return enter(ctx, 0, 0, 0); }
int read_enter(struct pt_regs *ctx) { return enter(ctx, 1, 0, 0); }
int write_ex_enter(struct pt_regs *ctx) { return enter(ctx, 0, 1, 0); }
int read_ex_enter(struct pt_regs *ctx) { return enter(ctx, 1, 1, 0); }
// BoringSSL: the same signatures (it has no SSL_read_ex/SSL_write_ex); told apart for `tls.library`.
int boring_write_enter(struct pt_regs *ctx) { return enter(ctx, 0, 0, 2); }
int boring_read_enter(struct pt_regs *ctx) { return enter(ctx, 1, 0, 2); }

// OpenSSL's SSL BIO (BIO_f_ssl): bio_ssl.c's own read/write (found through BIO_f_ssl's method table,
// ebpf/biossl.py) call libssl's internal functions, not SSL_read/SSL_write. Their arguments are
// SSL_read_ex's with the BIO in place of the SSL: (BIO *, buffer, length, size_t *done); the SSL* is
// the first field of the BIO's data (a BIO_SSL). The call then counts as SSL_read_ex/SSL_write_ex on
// that SSL*. The method's type is checked as well (a table this code misread hooks nothing).
static __always_inline int bio_enter(struct pt_regs *ctx, u32 dir, u32 ex, u32 method_at, u32 ptr_at) {
    u64 bio = PT_REGS_PARM1(ctx);
    u64 method = 0;
    u64 data = 0;
    u64 ssl = 0;
    int type = 0;
    if (!bio || bpf_probe_read_user(&method, sizeof(method), (void *)(bio + method_at)) != 0 || !method)
        return 0;
    if (bpf_probe_read_user(&type, sizeof(type), (void *)method) != 0 || type != __BIO_TYPE_SSL__)
        return 0;
    if (bpf_probe_read_user(&data, sizeof(data), (void *)(bio + ptr_at)) != 0 || !data)
        return 0;
    if (bpf_probe_read_user(&ssl, sizeof(ssl), (void *)data) != 0 || !ssl)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    struct call_t c = {};
    c.ssl = ssl;
    c.buf = PT_REGS_PARM2(ctx);
    c.outlen = ex ? PT_REGS_PARM4(ctx) : 0;
    c.fd = -1;
    c.dir = dir;
    c.ex = ex;
    c.bio = 1;
    c.sp = PT_REGS_SP(ctx);
    active.update(&id, &c);
    return 0;
}

#define BIO_ENTERS(name, method_at, ptr_at) \
    int bio_write_enter_##name(struct pt_regs *ctx) { return bio_enter(ctx, 0, 1, method_at, ptr_at); } \
    int bio_read_enter_##name(struct pt_regs *ctx) { return bio_enter(ctx, 1, 1, method_at, ptr_at); }
__BIO_LAYOUTS__

static int emit(void *ctx, struct call_t call, u64 n, u64 id);

static __always_inline int finish(struct pt_regs *ctx, struct call_t call, u64 id) {
    int rc = (int)PT_REGS_RC(ctx);  // every hooked function returns an int (eax)
    u64 n = 0;
    if (call.ex) {
        if (rc == 1 && call.outlen) {
            u64 v = 0;
            bpf_probe_read_user(&v, sizeof(v), (void *)call.outlen);
            n = v;
        }
    } else if (rc > 0) {
        n = rc;
    }
    if (n == 0)
        return 0;
    return emit(ctx, call, n, id);
}

int leave(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    struct call_t *c = active.lookup(&id);
    if (!c)
        return 0;
    struct call_t call = *c;
    active.delete(&id);
    call_fd.delete(&id);  // a syscall fd not consumed by a socket tracepoint is not carried over
    return finish(ctx, call, id);
}

// The return of the SSL BIO's read/write: only that call's own return ends it (the stack pointer one
// slot above the one it entered with: `ret` popped the return address), should a call nest in it.
int bio_leave(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    struct call_t *c = active.lookup(&id);
    if (!c || !c->bio || c->sp + 8 != PT_REGS_SP(ctx))
        return 0;
    struct call_t call = *c;
    active.delete(&id);
    call_fd.delete(&id);
    return finish(ctx, call, id);
}

// Go crypto/tls.(*Conn).Read/Write, register ABI (Go 1.17+): receiver in RAX, the slice's data
// pointer in RBX (its length in RCX), the current goroutine in R14. The return sites are uprobes on
// each RET instruction (uretprobes corrupt Go stacks), where RAX holds n. A Write is emitted at its
// first write syscall, before its bytes leave: emitted at its return, a fast answer read by another
// goroutine could come out before the request it answers.
static int go_enter(struct pt_regs *ctx, u32 dir) {
    u64 id = bpf_get_current_pid_tgid();
    struct gokey_t k = {};
    k.g = ctx->r14;
    k.pid = id >> 32;
    struct call_t c = {};
    c.ssl = ctx->ax;
    c.buf = ctx->bx;
    c.outlen = ctx->cx;
    c.fd = -1;
    c.dir = dir;
    c.lib = 1;
    go_active.update(&k, &c);
    u32 one = 1;
    go_pids.update(&k.pid, &one);
#if !GO_TASK_REGS
    go_thread.update(&id, &k.g);
#endif
    return 0;
}

int go_write_enter(struct pt_regs *ctx) { return go_enter(ctx, 0); }
int go_read_enter(struct pt_regs *ctx) { return go_enter(ctx, 1); }

int go_handshake_enter(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    struct gokey_t k = {};
    k.g = ctx->r14;
    k.pid = id >> 32;
    u64 conn = ctx->ax;
    go_hs.update(&k, &conn);
    u32 one = 1;
    go_pids.update(&k.pid, &one);
#if !GO_TASK_REGS
    go_thread.update(&id, &k.g);
#endif
    return 0;
}

int go_handshake_leave(struct pt_regs *ctx) {
    struct gokey_t k = {};
    k.g = ctx->r14;
    k.pid = bpf_get_current_pid_tgid() >> 32;
    go_hs.delete(&k);
    return 0;
}

int go_leave(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    struct gokey_t k = {};
    k.g = ctx->r14;
    k.pid = id >> 32;
    struct call_t *c = go_active.lookup(&k);
    if (!c)
        return 0;
    struct call_t call = *c;
    go_active.delete(&k);
    call_fd.delete(&id);
    s64 n = (s64)ctx->ax;
    if (n <= 0 || call.done)
        return 0;
    return emit(ctx, call, (u64)n, id);
}

static __always_inline int emit(void *ctx, struct call_t call, u64 n, u64 id) {
    u32 pid = id >> 32;
    struct sslkey_t sk = {};
    sk.ssl = call.ssl;
    sk.pid = pid;
    // Tables are written only when their value changes (a lookup costs a fraction of an update).
    s32 *known = ssl_fd.lookup(&sk);
    if (call.fd >= 0) {
        if (!known || *known != call.fd)
            ssl_fd.update(&sk, &call.fd);
    } else if (known) {
        call.fd = *known;
    }
    u64 offset = 0;
    if (call.fd >= 0) {
        struct fdkey_t fk = {};
        fk.pid = pid;
        fk.fd_dir = ((u32)call.fd << 1) | call.dir;
        u64 *seen = offsets.lookup(&fk);
        if (seen) {
            offset = *seen;
            *seen = offset + n;  // one thread per call on an fd and direction: no race worth a lock
        } else {
            u64 next = n;
            offsets.update(&fk, &next);
        }
    }
    if (call.fd < 0) {  // no socket call inside SSL_* (a memory BIO, bytes read ahead): not placed
        u32 unplaced = 0;
        u64 *n = lost_calls.lookup(&unplaced);
        if (n)
            *n += 1;
        return 0;
    }
    u32 zero = 0;
    struct event_t *e = scratch.lookup(&zero);
    if (!e)
        return 0;
    e->ts = bpf_ktime_get_ns();
    e->cgroup = bpf_get_current_cgroup_id();
    e->offset = offset;
    e->pid = pid;
    e->tid = (u32)id;
    e->fd = call.fd;
    e->dir = call.dir;
    e->total = n > 0xffffffff ? 0xffffffff : (u32)n;
    e->kind = 0;
    e->lib = call.lib;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    e->known = 0;
    if (call.fd >= 0) {
        struct fdkey_t ck = {};
        ck.pid = pid;
        ck.fd_dir = (u32)call.fd;
        struct conn_t *conn = fd_conn.lookup(&ck);
        if (conn) {
            __builtin_memcpy(e->local, conn->local, 16);
            __builtin_memcpy(e->remote, conn->remote, 16);
            e->lport = conn->lport;
            e->rport = conn->rport;
            e->family = conn->family;
            e->known = conn->known;
        }
    }
    for (int i = 0; i < PIECES; i++) {
        u64 pos = (u64)i * CHUNK;
        if (pos >= n)
            break;
        u64 len = n - pos;
        if (len > CHUNK)
            len = CHUNK;
        e->pos = pos;
        e->len = len;
        len &= (2 * CHUNK - 1);
        if (len > CHUNK)
            return 0;
        bpf_probe_read_user(&e->data, len, (void *)(call.buf + pos));
        events.perf_submit(ctx, e, offsetof(struct event_t, data) + len);
    }
    return 0;
}

static __always_inline void note_fd(void *ctx, int fd, int writing) {
    u64 id = bpf_get_current_pid_tgid();
    struct call_t *c = active.lookup(&id);
    s32 f32 = fd;
    if (c) {
        if (c->fd < 0)
            c->fd = fd;
        call_fd.update(&id, &f32);
    }
    u32 pid = id >> 32;
    if (!go_pids.lookup(&pid))
        return;
    struct gokey_t k = {};
    k.pid = pid;
#if GO_TASK_REGS
    // A Go process: the goroutine making this syscall is the R14 it entered the kernel with.
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    bpf_probe_read_kernel(&k.g, sizeof(k.g), &regs->r14);
#else
    // Kernels without bpf_task_pt_regs (< 5.15): the goroutine that last entered a call on this
    // thread (wrong only when it blocked before its first syscall and another took the thread).
    u64 *g = go_thread.lookup(&id);
    if (!g)
        return;
    k.g = *g;
#endif
    u64 *hs = go_hs.lookup(&k);
    if (hs) {
        struct sslkey_t sk = {};
        sk.ssl = *hs;
        sk.pid = pid;
        s32 f = fd;
        ssl_fd.update(&sk, &f);
        go_hs.delete(&k);
    }
    struct call_t *gc = go_active.lookup(&k);
    if (!gc)
        return;
    if (gc->fd < 0)
        gc->fd = fd;
    call_fd.update(&id, &f32);
    if (writing && gc->dir == 0 && !gc->done && gc->outlen > 0) {
        gc->done = 1;
        struct call_t call = *gc;
        emit(ctx, call, call.outlen, id);
    }
}

TRACEPOINT_PROBE(syscalls, sys_enter_write) { note_fd(args, args->fd, 1); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_read) { note_fd(args, args->fd, 0); return 0; }
#if SOCK_LENGTH
static __always_inline void note_dest(u64 ptr, u64 is_msg) {
    if (!ptr)
        return;
    u64 id = bpf_get_current_pid_tgid();
    struct dest_t d = {};
    d.ptr = ptr;
    d.is_msg = is_msg;
    send_dest.update(&id, &d);
}

static __always_inline void forget_dest(void) {
    u64 id = bpf_get_current_pid_tgid();
    send_dest.delete(&id);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { forget_dest(); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { forget_dest(); return 0; }
#else
#define note_dest(ptr, is_msg)
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_sendto) {
    note_fd(args, args->fd, 1);
    note_dest((u64)args->addr, 0);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom) { note_fd(args, args->fd, 0); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) {
    note_fd(args, args->fd, 1);
    note_dest((u64)args->msg, 1);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg) { note_fd(args, args->fd, 0); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { note_fd(args, args->fd, 1); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { note_fd(args, args->fd, 0); return 0; }

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    u64 id = bpf_get_current_pid_tgid();
    struct fdkey_t fk = {};
    fk.pid = id >> 32;
    fk.fd_dir = ((u32)args->fd << 1);
    struct fdkey_t ck = {};
    ck.pid = fk.pid;
    ck.fd_dir = (u32)args->fd;
    fd_conn.delete(&ck);
    int hit = offsets.delete(&fk) == 0;
    fk.fd_dir |= 1;
    hit |= offsets.delete(&fk) == 0;
    if (!hit)
        return 0;
    u32 zero = 0;
    struct event_t *e = scratch.lookup(&zero);
    if (!e)
        return 0;
    e->ts = bpf_ktime_get_ns();
    e->pid = fk.pid;
    e->tid = (u32)id;
    e->fd = args->fd;
    e->kind = 1;
    e->len = 0;
    events.perf_submit(args, e, offsetof(struct event_t, data));
    return 0;
}

// Connections named in the kernel, so that a process gone before user space reads /proc is still
// placed. Every TCP socket reaching ESTABLISHED is remembered by its struct sock address with its
// 4-tuple (SYN_SENT -> ESTABLISHED: the local end connected; SYN_RECV -> ESTABLISHED: a socket a
// listener will hand to accept()). A client's fd is known at once (connect() says which fd in this
// thread, SYN_SENT in the same thread which socket); any socket's fd, accepted ones included, is
// joined when the socket layer's send/recv tracepoint fires in a thread inside a hooked call (its
// syscall's fd is `call_fd`, the socket is the tracepoint's `sk`): before the call's bytes are
// emitted at its return.
TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    u64 id = bpf_get_current_pid_tgid();
    u64 fd = (u64)args->fd;
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
    if (args->newstate == 2) {  // TCP_SYN_SENT, in the connecting thread
        u64 id = bpf_get_current_pid_tgid();
        u64 *fd = connecting.lookup(&id);
        if (fd) {
            u64 owner = (id & 0xffffffff00000000ULL) | (*fd & 0xffffffff);
            sk_owner.update(&sk, &owner);
        }
        return 0;
    }
    if (args->newstate == 7) {  // TCP_CLOSE: the address may be reused by another socket
        sk_conn.delete(&sk);
        sk_owner.delete(&sk);
        return 0;
    }
    if (args->newstate != 1 || (args->oldstate != 2 && args->oldstate != 3))
        return 0;
    struct skconn_t named = {};
    struct conn_t *conn = &named.conn;
    conn->family = args->family;
    if (args->family == 2) {
        __builtin_memcpy(conn->local, args->saddr, 4);
        __builtin_memcpy(conn->remote, args->daddr, 4);
    } else {
        __builtin_memcpy(conn->local, args->saddr_v6, 16);
        __builtin_memcpy(conn->remote, args->daddr_v6, 16);
    }
    conn->lport = args->sport;
    conn->rport = args->dport;
    conn->known = args->oldstate == 2 ? 1 : 2;
    sk_conn.update(&sk, &named);
    if (args->oldstate != 2)
        return 0;
    u64 *owner = sk_owner.lookup(&sk);  // SYN_SENT -> ESTABLISHED: our connect
    if (!owner)
        return 0;
    struct fdkey_t ck = {};
    ck.pid = *owner >> 32;
    ck.fd_dir = (u32)*owner;
    fd_conn.update(&ck, conn);
    sk_owner.delete(&sk);
    return 0;
}

#if SOCK_LENGTH
// The first 16 bytes of struct sock_common, laid out so since Linux 2.6: the one kernel structure
// read here, for UDP sockets, which no tracepoint names. IPv4 addresses only (the IPv6 ones sit at
// offsets that vary with the kernel's configuration).
struct sock_head_t {
    u32 daddr;
    u32 rcv_saddr;
    u32 hash;
    u16 dport;  // network order; 0 when not connected
    u16 num;    // the local port, host order
};

// A process sends or receives on a UDP socket: the socket table learns the process, its local port
// and address (0 when bound to any) and its peer — the connected one, or for an unconnected socket the
// destination its sendto()/sendmsg() names (its receives say nothing: the sender is copied out only
// after the socket layer). Once per socket, process, local port and peer.
static __always_inline void dgram_used(void *ctx, u64 sk, u16 family, int sending) {
    struct sock_head_t head = {};
    if (bpf_probe_read_kernel(&head, sizeof(head), (void *)sk) != 0 || head.num == 0)
        return;
    u64 id = bpf_get_current_pid_tgid();
    struct dgram_key_t k = {};
    k.sk = sk;
    k.pid = id >> 32;
    k.lport = head.num;
    u16 peer_family = family;
    if (family == 2 && head.dport) {
        __builtin_memcpy(k.remote, &head.daddr, 4);
        k.rport = ntohs(head.dport);
    } else {
        if (!sending)
            return;
        struct dest_t *d = send_dest.lookup(&id);
        if (!d)
            return;
        u64 ptr = d->ptr;
        if (d->is_msg && (bpf_probe_read_user(&ptr, sizeof(ptr), (void *)ptr) != 0 || !ptr))
            return;  // msghdr.msg_name
        struct {
            u16 family;
            u16 port;
            u32 v4;       // sockaddr_in's address; sockaddr_in6's flow info
            u8 v6[16];
        } sa = {};
        if (bpf_probe_read_user(&sa, sizeof(sa), (void *)ptr) != 0)
            return;
        if (sa.family == 2)
            __builtin_memcpy(k.remote, &sa.v4, 4);
        else if (sa.family == 10)
            __builtin_memcpy(k.remote, sa.v6, 16);
        else
            return;
        peer_family = sa.family;
        k.rport = ntohs(sa.port);
    }
    if (dgram_seen.lookup(&k))
        return;
    u8 one = 1;
    dgram_seen.update(&k, &one);
    u32 zero = 0;
    struct event_t *e = scratch.lookup(&zero);
    if (!e)
        return;
    e->ts = bpf_ktime_get_ns();
    e->cgroup = bpf_get_current_cgroup_id();
    e->pid = k.pid;
    e->tid = (u32)id;
    e->fd = -1;
    e->kind = 3;
    e->len = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    __builtin_memset(e->local, 0, 16);
    if (family == 2)
        __builtin_memcpy(e->local, &head.rcv_saddr, 4);
    __builtin_memcpy(e->remote, k.remote, 16);
    e->lport = k.lport;
    e->rport = k.rport;
    e->family = peer_family;
    e->known = 3;
    events.perf_submit(ctx, e, offsetof(struct event_t, data));
}

// A process sends or receives on a TCP socket (the socket layer, in the calling thread): the socket
// table learns the process (once per socket and process), and a hooked call learns its fd's 4-tuple.
static __always_inline void sock_used(void *ctx, u64 sk, u16 protocol) {
    if (protocol != 6)
        return;
    struct skconn_t *named = sk_conn.lookup(&sk);
    if (!named)
        return;
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
    s32 *fd = call_fd.lookup(&id);
    if (fd) {
        struct fdkey_t ck = {};
        ck.pid = pid;
        ck.fd_dir = (u32)*fd;
        struct conn_t *had = fd_conn.lookup(&ck);
        // Rewritten only when the fd names another connection (reused without a close seen here).
        int same = 0;
        if (had && had->lport == named->conn.lport && had->rport == named->conn.rport) {
            u64 h[2], w[2];
            __builtin_memcpy(h, had->remote, 16);
            __builtin_memcpy(w, named->conn.remote, 16);
            same = h[0] == w[0] && h[1] == w[1];
        }
        if (!same) {
            struct conn_t conn = named->conn;
            fd_conn.update(&ck, &conn);
        }
        call_fd.delete(&id);
    }
    if (named->owner == pid)
        return;
    named->owner = pid;
    u32 zero = 0;
    struct event_t *e = scratch.lookup(&zero);
    if (!e)
        return;
    e->ts = bpf_ktime_get_ns();
    e->cgroup = bpf_get_current_cgroup_id();
    e->pid = pid;
    e->tid = (u32)id;
    e->fd = -1;
    e->kind = 3;
    e->len = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    __builtin_memcpy(e->local, named->conn.local, 16);
    __builtin_memcpy(e->remote, named->conn.remote, 16);
    e->lport = named->conn.lport;
    e->rport = named->conn.rport;
    e->family = named->conn.family;
    e->known = named->conn.known;
    events.perf_submit(ctx, e, offsetof(struct event_t, data));
}

TRACEPOINT_PROBE(sock, sock_send_length) {
    if (args->protocol == 17 && UDP_OWNERS)
        dgram_used(args, (u64)args->sk, args->family, 1);
    else
        sock_used(args, (u64)args->sk, args->protocol);
    return 0;
}
TRACEPOINT_PROBE(sock, sock_recv_length) {
    if (args->protocol == 17 && UDP_OWNERS)
        dgram_used(args, (u64)args->sk, args->family, 0);
    else
        sock_used(args, (u64)args->sk, args->protocol);
    return 0;
}
#endif

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 zero = 0;
    struct event_t *e = scratch.lookup(&zero);
    if (!e)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    e->ts = bpf_ktime_get_ns();
    e->pid = id >> 32;
    e->tid = (u32)id;
    e->fd = -1;
    e->kind = 2;
    e->len = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    events.perf_submit(args, e, offsetof(struct event_t, data));
    return 0;
}
"""


def program_text(go_task_regs: bool = True, sock_length: bool = True, udp_owners: bool = True) -> str:
    """The program with its limits filled in; `go_task_regs` names a Go syscall's goroutine by the
    task's saved registers (kernel 5.15+, BTF) instead of by its thread; `sock_length` joins sockets
    to processes by the sock:sock_send_length/sock_recv_length tracepoints (kernel 6.3+), and with
    `udp_owners` names UDP sockets' processes too."""
    return (
        SOURCE.replace("__CHUNK__", str(CHUNK_BYTES))
        .replace("__UDP_OWNERS__", "1" if udp_owners and sock_length else "0")
        .replace("__GO_TASK_REGS__", "1" if go_task_regs else "0")
        .replace("__SOCK_LENGTH__", "1" if sock_length else "0")
        .replace("__PIECES__", str(PIECES_PER_CALL))
        .replace("__MAX_ACTIVE__", str(MAX_ACTIVE))
        .replace("__MAX_SOCKETS__", str(MAX_SOCKETS))
        .replace("__BIO_TYPE_SSL__", hex(BIO_TYPE_SSL))
        .replace(
            "__BIO_LAYOUTS__",
            "\n".join(f"BIO_ENTERS({name}, {m}, {p})" for name, (m, p) in BIO_LAYOUTS.items()),
        )
    )
