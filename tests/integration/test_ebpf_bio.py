"""eBPF TLS plaintext of servers that go through OpenSSL's BIO layer (`BIO_f_ssl`): `openssl s_server
-www`/`-WWW` read and write through a buffer BIO over an SSL BIO, so they never call SSL_read or
SSL_write; their side is read at the SSL BIO's own read/write (bio_ssl.c's, found through BIO_f_ssl's
method table). curl (SSL_read/SSL_write) is the client. Each process's byte stream must
come out whole and once: the server's read stream equal to curl's written one and the other way.

Root and BCC (python3-bpfcc) are needed; elsewhere these tests skip and say why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys
import textwrap
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from tests.helpers.ebpf import Harness, cert_fixture, harness_fixture, listening, net_fixture, source_fixture
from tests.helpers.netns import NetPair
from tests.helpers.wait import wait_for
from wiretide.capture.sources.ebpf import Chunk, EbpfSource, _program, probe

WHY_NOT = probe()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"eBPF unavailable: {WHY_NOT}")
PORT = 8443

source = source_fixture()
harness = harness_fixture()
cert = cert_fixture()
net = net_fixture("10.96.0")

Stream = tuple[int, bool, int, int]  # pid, sending, local port, remote port


def streams(chunks: list[Chunk]) -> dict[Stream, list[Chunk]]:
    out: dict[Stream, list[Chunk]] = {}
    for c in chunks:
        if c.closed:
            continue
        local, remote = (c.src_port, c.dst_port) if c.local_is_sender else (c.dst_port, c.src_port)
        out.setdefault((c.pid, c.local_is_sender, local, remote), []).append(c)
    return out


def joined(chunks: list[Chunk]) -> bytes:
    """A stream's bytes; each chunk must start where the previous one ended (none twice, none lost)."""
    data = b""
    for c in sorted(chunks, key=lambda c: c.offset):
        assert c.offset == len(data), f"chunk at {c.offset} after {len(data)} bytes: repeated or lost"
        data += c.data
    return data


def ends(h: Harness, server: int, client: int) -> dict[str, bytes]:
    """The four byte streams of one connection (server read/written, client written/read) read so far."""
    h.poll()
    out: dict[str, bytes] = {}
    for (pid, sending, _l, _r), chunks in streams(h.chunks).items():
        if pid in (server, client):
            name = ("server" if pid == server else "client") + (" wrote" if sending else " read")
            assert name not in out, f"{name}: more than one connection"
            out[name] = joined(chunks)
    return out


def complete(body: bytes) -> Callable[[dict[str, bytes]], bool]:
    """Whether both ends' streams are whole: the client has read `body` to its end, and each end's
    bytes are the other's."""

    def done(got: dict[str, bytes]) -> bool:
        return (
            len(got) == 4
            and got["client read"].endswith(body)
            and got["server read"] == got["client wrote"]
            and got["server wrote"] == got["client read"]
        )

    return done


def s_server(
    net: NetPair, cert: tuple[Path, Path], flag: str, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    key, crt = cert
    argv = ["openssl", "s_server", flag, "-accept", str(PORT), "-cert", str(crt), "-key", str(key)]
    server = net.popen(net.ns_b, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    wait_for("s_server listening", lambda: listening(net, PORT))
    return server


def curl(net: NetPair, path: str) -> tuple[subprocess.Popen[bytes], bytes]:
    client = net.popen(
        net.ns_a, ["curl", "-sk", "--http1.1", f"https://{net.ip_b}:{PORT}{path}"], stdout=subprocess.PIPE
    )
    out, _ = client.communicate(timeout=30)
    assert client.returncode == 0
    return client, out


def test_s_server_www_is_read_from_its_own_process_once_beside_curl(
    harness: Harness, net: NetPair, cert: tuple[Path, Path]
) -> None:
    server = s_server(net, cert, "-www")
    try:
        client, body = curl(net, "/www-page")
        assert b"<HTML>" in body
        got = wait_for(
            "both ends' streams, whole", lambda: ends(harness, server.pid, client.pid), complete(body)
        )
        assert got["server read"].startswith(b"GET /www-page HTTP/1.1\r\n")
        assert got["server wrote"].startswith(b"HTTP/1.0 200 ok\r\n")
        assert got["server wrote"].endswith(body)
        server_chunks = [c for c in harness.chunks if c.pid == server.pid]
        assert {c.library for c in server_chunks} == {"openssl"}
        assert {c.comm for c in server_chunks} == {"openssl"}
        (entry,) = wait_for("the entry of /www-page", partial(harness.http, "/www-page"))
        assert (entry["method"], entry["status"]) == ("GET", 200)
        assert entry["tls"]["decrypted"] is True
        assert entry["capture"]["source"] == "ebpf_tls"
    finally:
        server.kill()
        server.wait()


def test_s_server_WWW_serving_a_file_is_read_from_its_own_process(
    harness: Harness, net: NetPair, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    content = b"".join(b"line %05d of the served file\n" % i for i in range(400))  # ~12 KiB: several writes
    (tmp_path / "served.txt").write_bytes(content)
    server = s_server(net, cert, "-WWW", cwd=tmp_path)
    try:
        client, body = curl(net, "/served.txt")
        assert body == content
        got = wait_for(
            "both ends' streams, whole", lambda: ends(harness, server.pid, client.pid), complete(body)
        )
        assert got["server read"].startswith(b"GET /served.txt HTTP/1.1\r\n")
        assert got["server wrote"].endswith(content)
    finally:
        server.kill()
        server.wait()


MEMORY_BIO = textwrap.dedent(
    """
    import ctypes, ctypes.util, sys
    ctypes.CDLL(ctypes.util.find_library("ssl"))  # mapped, as in a TLS program
    lib = ctypes.CDLL(ctypes.util.find_library("crypto"))
    lib.BIO_s_mem.restype = ctypes.c_void_p
    lib.BIO_new.restype = ctypes.c_void_p
    lib.BIO_new.argtypes = [ctypes.c_void_p]
    lib.BIO_write.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.BIO_read.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.BIO_free.argtypes = [ctypes.c_void_p]
    bio = lib.BIO_new(lib.BIO_s_mem())
    buf = ctypes.create_string_buffer(64)
    total = 0
    for i in range(int(sys.argv[1])):
        msg = b"GET /memory-bio HTTP/1.1 %d" % i
        assert lib.BIO_write(bio, msg, len(msg)) == len(msg)
        n = lib.BIO_read(bio, buf, 64)
        assert buf.raw[:n] == msg
        total += n
    lib.BIO_free(bio)
    print(total)
    """
)


def unplaced(source: EbpfSource) -> int:
    return sum(int(v) for v in source._bpf[b"lost_calls"][ctypes.c_int(_program.UNPLACED)])


def test_a_memory_bio_read_and_written_with_bio_calls_gives_nothing(
    source: EbpfSource, harness: Harness
) -> None:
    """Only the SSL BIO's own read/write are hooked (in libssl, found through BIO_f_ssl's table), not
    libcrypto's BIO_read/BIO_write, which every SSL_read goes through: a program reading and writing a
    memory BIO (libssl mapped too) costs no probe and gives no chunk. Were other BIOs' calls taken for
    SSL BIO calls, each would be counted `unplaced` in the kernel as it returns (the counter is written
    inside the probe, so it is complete when the program has exited)."""
    ssl = ctypes.util.find_library("ssl")
    assert ssl is not None
    hooked = [h for h in source.hooks.values() if Path(h.path).name == ssl]
    assert hooked, f"the system's {ssl} is hooked at start"
    assert {"BIO_f_ssl read", "BIO_f_ssl write"} <= set(hooked[0].functions)
    assert not [h for h in source.hooks.values() if "libcrypto" in Path(h.path).name and h.functions]
    calls = 200
    before = unplaced(source)
    done = subprocess.run([sys.executable, "-c", MEMORY_BIO, str(calls)], capture_output=True, check=True)
    assert int(done.stdout) > 0
    assert unplaced(source) - before < calls
    harness.poll()
    assert not [c for c in harness.chunks if b"/memory-bio" in c.data]
