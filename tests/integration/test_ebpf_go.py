"""eBPF TLS plaintext of Go programs: a Go HTTPS client and server built here with the system's Go,
unstripped and stripped, in network namespaces; their crypto/tls.(*Conn).Read/Write are hooked
(entry and every RET instruction) and the calls come out as entries equal to the client's own record.

Root, BCC (python3-bpfcc) and a Go toolchain (Debian: golang-go) are needed; elsewhere these tests
skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.ebpf import Harness, cert_fixture, harness_fixture, listening, net_fixture, source_fixture
from tests.helpers.netns import NetPair
from tests.helpers.wait import wait_for
from wiretide.capture.sources.ebpf import EbpfSource, gobin, probe
from wiretide.capture.sources.ebpf.report import Scanner, examine

WHY_NOT = probe()
GO = shutil.which("go")
pytestmark = [
    pytest.mark.skipif(WHY_NOT is not None, reason=f"eBPF unavailable: {WHY_NOT}"),
    pytest.mark.skipif(GO is None, reason="no Go toolchain to build the peers (Debian: golang-go)"),
]
PORT = 8443
HUGE = 256 * 1024
HUGE_HEAD = f"POST /huge HTTP/1.1\r\nHost: x\r\nContent-Length: {HUGE}\r\n\r\n"

GO_PEER = textwrap.dedent(
    """
    package main

    import (
        "bufio"
        "bytes"
        "crypto/tls"
        "fmt"
        "io"
        "net"
        "net/http"
        "os"
        "strconv"
        "strings"
    )

    func main() {
        switch os.Args[1] {
        case "serve": // serve ADDR CERT KEY h1|h2
            http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
                n, _ := io.Copy(io.Discard, r.Body)
                status := 200
                if strings.HasSuffix(r.URL.Path, "/created") {
                    status = 201
                }
                w.Header().Set("Content-Type", "text/plain")
                w.WriteHeader(status)
                fmt.Fprintf(w, "hello %s %d", r.URL.Path, n)
            })
            srv := &http.Server{Addr: os.Args[2]}
            if os.Args[5] == "h1" {
                srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
            }
            panic(srv.ListenAndServeTLS(os.Args[3], os.Args[4]))
        case "get": // get h1|h2 BASE BODYSIZE PATH...: one connection, the calls in order
            tr := &http.Transport{
                TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
                ForceAttemptHTTP2: os.Args[2] == "h2",
            }
            client := &http.Client{Transport: tr}
            size, _ := strconv.Atoi(os.Args[4])
            for _, path := range os.Args[5:] {
                var resp *http.Response
                var err error
                if size > 0 {
                    body := bytes.Repeat([]byte("x"), size)
                    resp, err = client.Post(os.Args[3]+path, "text/plain", bytes.NewReader(body))
                } else {
                    resp, err = client.Get(os.Args[3] + path)
                }
                if err != nil {
                    panic(err)
                }
                io.Copy(io.Discard, resp.Body)
                resp.Body.Close()
                fmt.Println(resp.Request.Method, path, resp.StatusCode, resp.Proto)
            }
        case "raw": // raw ADDR SIZE: a POST of SIZE bytes in one (*Conn).Write, then a GET
            conn, err := tls.Dial("tcp", os.Args[2], &tls.Config{InsecureSkipVerify: true})
            if err != nil {
                panic(err)
            }
            size, _ := strconv.Atoi(os.Args[3])
            br := bufio.NewReader(conn)
            head := fmt.Sprintf("POST /huge HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: %d\\r\\n\\r\\n", size)
            for _, req := range [][]byte{
                append([]byte(head), bytes.Repeat([]byte("x"), size)...),
                []byte("GET /after-huge HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"),
            } {
                if _, err := conn.Write(req); err != nil {
                    panic(err)
                }
                resp, err := http.ReadResponse(br, nil)
                if err != nil {
                    panic(err)
                }
                io.Copy(io.Discard, resp.Body)
                line := strings.Fields(string(req[:20]))
                fmt.Println(line[0], line[1], resp.StatusCode, resp.Proto)
            }
        case "hang": // hang ADDR: send a request, then wait forever inside Read
            conn, err := tls.Dial("tcp", os.Args[2], &tls.Config{InsecureSkipVerify: true})
            if err != nil {
                panic(err)
            }
            conn.Write([]byte("GET /never HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"))
            fmt.Println("sent")
            buf := make([]byte, 100)
            conn.Read(buf)
        case "silent": // silent ADDR CERT KEY: accept, handshake, never answer
            cert, _ := tls.LoadX509KeyPair(os.Args[3], os.Args[4])
            ln, err := tls.Listen("tcp", os.Args[2], &tls.Config{Certificates: []tls.Certificate{cert}})
            if err != nil {
                panic(err)
            }
            for {
                c, _ := ln.Accept()
                go func(c net.Conn) { c.(*tls.Conn).Handshake() }(c)
            }
        }
    }
    """
)

NO_TLS = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("no tls here") }\n'


@dataclass(frozen=True, slots=True)
class Binaries:
    peer: Path
    stripped: Path
    no_tls: Path


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> Binaries:
    d = tmp_path_factory.mktemp("go")
    env = {
        **os.environ,
        "GOCACHE": str(d / "cache"),
        "GOPATH": str(d / "gopath"),
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "CGO_ENABLED": "0",
    }
    (d / "peer.go").write_text(GO_PEER)
    (d / "notls.go").write_text(NO_TLS)
    out = Binaries(d / "peer", d / "peer-stripped", d / "notls")
    for target, src, flags in (
        (out.peer, "peer.go", []),
        (out.stripped, "peer.go", ["-ldflags=-s -w"]),
        (out.no_tls, "notls.go", []),
    ):
        assert GO is not None
        subprocess.run([GO, "build", *flags, "-o", str(target), src], cwd=d, env=env, check=True)
    return out


source = source_fixture()
harness = harness_fixture()
cert = cert_fixture()
net = net_fixture("10.92.0")


def _serve(
    harness: Harness,
    net: NetPair,
    binary: Path,
    cert: tuple[Path, Path],
    mode: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """The Go server, once it listens and the source has hooked its executable (found at its exec)."""
    key, crt = cert
    argv = [str(binary), "serve", f":{PORT}", str(crt), str(key), mode]
    server = net.popen(net.ns_b, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_for("the Go server listening", lambda: listening(net, PORT))
    real = os.path.realpath(binary)
    wait_for("the source hooking the server's executable", lambda: real in harness.source.hooks)
    return server


def _client(
    net: NetPair, binary: Path, mode: str, body: int, *paths: str, env: dict[str, str] | None = None
) -> tuple[int, list[list[str]]]:
    argv = [str(binary), "get", mode, f"https://{net.ip_b}:{PORT}", str(body), *paths]
    client = net.popen(net.ns_a, argv, stdout=subprocess.PIPE, env=env)
    out, _ = client.communicate(timeout=60)
    assert client.returncode == 0
    return client.pid, [line.split() for line in out.decode().splitlines()]


def _seen(harness: Harness, pid: int, server_pid: int) -> str:
    """What the source reported of the two processes (for a failure's message)."""
    seen = [
        (c.pid, c.src_port, c.dst_port, c.from_client, c.local_is_sender, c.offset, c.data[:24])
        for c in harness.chunks
        if c.pid in (pid, server_pid)
    ]
    return f"client {pid}, server {server_pid}; source {harness.source.stats}; chunks {seen}"


def _check_calls(
    harness: Harness, net: NetPair, pid: int, server_pid: int, records: list[list[str]], comm: str = "peer"
) -> None:
    for method, path, status, _proto in records:
        try:
            entries = wait_for(f"the entry of {path}", lambda: harness.calls(path))  # noqa: B023
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {_seen(harness, pid, server_pid)}") from None
        assert len(entries) == 1, (entries, _seen(harness, pid, server_pid))  # both ends hooked: one entry
        (entry,) = entries
        assert (entry["method"], entry["path"], entry["status"]) == (method, path, int(status)), _seen(
            harness, pid, server_pid
        )
        assert entry["tls"]["decrypted"] is True
        assert entry["tls"]["library"] == "go"
        assert entry["capture"]["source"] == "ebpf_tls"
        assert (entry["src"]["ip"], entry["dst"]["ip"], entry["dst"]["port"]) == (net.ip_a, net.ip_b, PORT)
        # An end is named by the process that reported its bytes (see test_ebpf_tls.py for why an
        # end may go unnamed on one call); a named end is always the right process.
        named = {end: entry[end]["process"] for end in ("src", "dst") if entry[end].get("process")}
        assert named, "the process that owns the byte stream names its end"
        if "src" in named:
            assert (named["src"]["pid"], named["src"]["name"]) == (pid, comm), _seen(harness, pid, server_pid)
        if "dst" in named:
            assert named["dst"]["pid"] == server_pid, _seen(harness, pid, server_pid)


@pytest.mark.parametrize("mode", ["h1", "h2"])
def test_a_go_client_and_server_give_entries_equal_to_the_clients_record(
    harness: Harness, net: NetPair, binaries: Binaries, cert: tuple[Path, Path], mode: str
) -> None:
    server = _serve(harness, net, binaries.peer, cert, mode)
    try:
        pid, records = _client(net, binaries.peer, mode, 0, "/go/one", "/go/two/created")
        assert [r[1:3] for r in records] == [["/go/one", "200"], ["/go/two/created", "201"]]
        assert all(r[3] == ("HTTP/2.0" if mode == "h2" else "HTTP/1.1") for r in records)
        _check_calls(harness, net, pid, server.pid, records)
    finally:
        server.kill()
        server.wait()
    hook = harness.source.hooks[os.path.realpath(binaries.peer)]
    assert hook.functions == (gobin.WRITE, gobin.READ, gobin.HANDSHAKE) and hook.error is None
    assert hook.library.startswith("go crypto/tls go1.")


def test_on_kernels_without_task_registers_go_calls_are_placed_by_their_thread(
    net: NetPair, binaries: Binaries, cert: tuple[Path, Path]
) -> None:
    source = EbpfSource(go_task_regs=False)  # the program older kernels (< 5.15) load
    source.start()
    harness = Harness(source)
    try:
        assert source.go_goroutine_of_syscall == "thread"
        # Placed by thread, a call whose goroutine moves to another thread inside it is not placed
        # (counted `unplaced`; docs/ebpf.md): on a loaded machine the Go scheduler moves goroutines
        # between its threads, so the peers run one thread of Go code each, as the mechanism assumes.
        one_thread = {**os.environ, "GOMAXPROCS": "1"}
        server = _serve(harness, net, binaries.peer, cert, "h1", env=one_thread)
        try:
            pid, records = _client(
                net, binaries.peer, "h1", 0, "/by-thread", "/by-thread/created", env=one_thread
            )
            _check_calls(harness, net, pid, server.pid, records)
        finally:
            server.kill()
            server.wait()
    finally:
        harness.close()
        source.close()


def test_a_stripped_go_binary_is_hooked_through_its_function_table(
    harness: Harness, net: NetPair, binaries: Binaries, cert: tuple[Path, Path]
) -> None:
    binary = gobin.inspect(str(binaries.stripped))
    assert binary is not None and binary.symbols.startswith("pclntab") and binary.hookable
    server = _serve(harness, net, binaries.stripped, cert, "h1")
    try:
        pid, records = _client(net, binaries.stripped, "h1", 0, "/stripped")
        _check_calls(harness, net, pid, server.pid, records, comm="peer-stripped")
    finally:
        server.kill()
        server.wait()
    assert harness.source.hooks[os.path.realpath(binaries.stripped)].functions


def test_the_function_table_and_the_symbol_table_agree(binaries: Binaries) -> None:
    from elftools.elf.elffile import ELFFile

    with open(binaries.peer, "rb") as f:
        elf = ELFFile(f)
        by_symbols, _ = gobin._from_symtab(elf)
        pclntab, text = elf.get_section_by_name(".gopclntab"), elf.get_section_by_name(".text")
        assert pclntab is not None and text is not None
        by_table, layout = gobin.pcln_functions(pclntab.data(), text["sh_addr"])
    assert layout == "1.18"  # Go 1.19's layout
    for name in gobin.FUNCTIONS:
        assert by_table[name][0] == by_symbols[name][0]
        assert by_symbols[name][1] <= by_table[name][1]  # the table's end includes the padding


def test_a_huge_write_is_cut_and_counted_and_the_call_still_comes_out(
    harness: Harness, net: NetPair, binaries: Binaries, cert: tuple[Path, Path]
) -> None:
    cut_before = harness.source.stats.drops.get("cut", 0)
    server = _serve(harness, net, binaries.peer, cert, "h1")
    try:
        # 256 KiB: eight times what one call copies, small enough that the server's reads of it fit
        # the perf buffer (a burst beyond it is counted as lost, not tested here).
        argv = [str(binaries.peer), "raw", f"{net.ip_b}:{PORT}", str(HUGE)]
        client = net.popen(net.ns_a, argv, stdout=subprocess.PIPE)
        out, _ = client.communicate(timeout=60)
        records = [line.split() for line in out.decode().splitlines()]
        assert [r[:3] for r in records] == [["POST", "/huge", "200"], ["GET", "/after-huge", "200"]]
        # The client's write is cut to what one call copies (the server's reads carry all of it:
        # whichever end's chunks arrive first make the entry), and the call after it is read in full.
        (huge,) = wait_for("the huge call", lambda: harness.calls("/huge"))
        assert (huge["method"], huge["status"]) == ("POST", 200)
        assert 32 * 1024 <= huge["size"]["request"] <= len(HUGE_HEAD) + HUGE
        (after,) = wait_for("the call after the huge one", lambda: harness.calls("/after-huge"))
        assert (after["method"], after["status"]) == ("GET", 200)
    finally:
        server.kill()
        server.wait()
    assert harness.source.stats.drops.get("cut", 0) >= cut_before + HUGE - 32 * 1024
    assert [c for c in harness.chunks if c.pid == client.pid and c.library == "go"]


def test_a_go_client_killed_inside_read_leaves_the_source_working(
    harness: Harness, net: NetPair, binaries: Binaries, cert: tuple[Path, Path]
) -> None:
    key, crt = cert
    silent = net.popen(net.ns_b, [str(binaries.peer), "silent", f":{PORT}", str(crt), str(key)])
    try:
        wait_for("the silent server listening", lambda: listening(net, PORT))
        client = net.popen(
            net.ns_a, [str(binaries.peer), "hang", f"{net.ip_b}:{PORT}"], stdout=subprocess.PIPE
        )
        assert client.stdout is not None and client.stdout.readline() == b"sent\n"
        wait_for(
            "the request chunk",
            lambda: harness.poll() is not None and [c for c in harness.chunks if c.pid == client.pid],
        )
        client.kill()  # inside (*Conn).Read: its RET probes never fire
        client.wait()
        client.stdout.close()
    finally:
        silent.kill()
        silent.wait()
    server = _serve(harness, net, binaries.peer, cert, "h1")
    try:
        pid, records = _client(net, binaries.peer, "h1", 0, "/after-kill")
        _check_calls(harness, net, pid, server.pid, records)
    finally:
        server.kill()
        server.wait()
    ended = harness.flows.finish()
    (never,) = [e for e in harness.entries + ended if e["path"] == "/never"]
    assert never["status"] is None and never["error"] is not None
    assert never["src"]["process"]["pid"] == client.pid


def test_a_go_binary_without_crypto_tls_is_neither_hooked_nor_reported(
    source: EbpfSource, binaries: Binaries
) -> None:
    hook = source.hook_go(str(binaries.no_tls))
    assert hook is not None and not hook.functions and hook.error == "does not link crypto/tls"
    assert os.path.realpath(binaries.no_tls) not in source.hooks
    assert examine(str(binaries.no_tls)) == []
    proc = subprocess.run([str(binaries.no_tls)], capture_output=True, check=True)
    assert proc.stdout == b"no tls here\n"


def test_the_report_says_a_running_go_server_is_read(
    harness: Harness, net: NetPair, binaries: Binaries, cert: tuple[Path, Path]
) -> None:
    server = _serve(harness, net, binaries.stripped, cert, "h1")
    try:
        hooks = {path: bool(h.functions) for path, h in harness.source.hooks.items()}
        report = Scanner().process(server.pid, hooks, "")
        assert report is not None and report.readable
        [lib] = report.libraries
        assert (lib.kind, lib.hooked, lib.reason) == ("go", True, "")
        assert lib.version.startswith("go1.")
    finally:
        server.kill()
        server.wait()
