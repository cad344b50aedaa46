"""eBPF TLS plaintext of BoringSSL: a C client and a C server built here against Debian's BoringSSL
(`android-libboringssl-dev`: `libssl.so.0` under /usr/lib/x86_64-linux-gnu/android/), both hooked in
that library, told apart from OpenSSL by a function only BoringSSL exports, and each HTTPS call
comes out as one entry per connection equal to the client's record, named by its processes.

Root, BCC (python3-bpfcc), gcc and the BoringSSL package are needed; elsewhere these tests skip and
say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from functools import partial
from pathlib import Path

import pytest

from tests.helpers.ebpf import Harness, cert_fixture, harness_fixture, listening, net_fixture, source_fixture
from tests.helpers.netns import NetPair
from tests.helpers.wait import wait_for
from wiretide.capture.sources.ebpf import probe
from wiretide.capture.sources.ebpf.report import Scanner

WHY_NOT = probe()
GCC = shutil.which("gcc")
BORING_LIB = Path("/usr/lib/x86_64-linux-gnu/android")
BORING_INCLUDE = Path("/usr/include/android")
pytestmark = [
    pytest.mark.skipif(WHY_NOT is not None, reason=f"eBPF unavailable: {WHY_NOT}"),
    pytest.mark.skipif(GCC is None, reason="no C compiler to build the BoringSSL peers (Debian: gcc)"),
    pytest.mark.skipif(
        not (BORING_LIB / "libssl.so").exists()
        or not (BORING_INCLUDE / "openssl" / "is_boringssl.h").exists(),
        reason="BoringSSL is not installed (Debian: android-libboringssl-dev)",
    ),
]
PORT = 8463

# bclient IP PORT PATH...: waits for a line on stdin, then one TLS connection per path (HTTP/1.0,
# the answer read to its end), printing "GET PATH STATUS" per call.
CLIENT = r"""
#include <arpa/inet.h>
#include <openssl/is_boringssl.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char go[8];
    if (!fgets(go, sizeof go, stdin)) return 2;
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    for (int i = 3; i < argc; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons(atoi(argv[2]));
        inet_pton(AF_INET, argv[1], &a.sin_addr);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) return 3;
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_connect(ssl) != 1) return 4;
        char req[512];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: server\r\n\r\n", argv[i]);
        if (SSL_write(ssl, req, n) != n) return 5;
        char buf[4096], head[64];
        int got, total = 0, status = 0;
        memset(head, 0, sizeof head);
        while ((got = SSL_read(ssl, buf, sizeof buf)) > 0) {
            if (total == 0) memcpy(head, buf, got < 63 ? got : 63);
            total += got;
        }
        sscanf(head, "HTTP/%*s %d", &status);
        printf("GET %s %d\n", argv[i], status);
        fflush(stdout);
        SSL_shutdown(ssl);
        SSL_free(ssl);
        close(fd);
    }
    return 0;
}
"""

# bserver PORT CERT KEY: answers each connection's request "GET PATH" with 200 and a body naming the
# path (404 for a path under /missing), then closes it.
SERVER = r"""
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (SSL_CTX_use_certificate_file(ctx, argv[2], SSL_FILETYPE_PEM) != 1) return 2;
    if (SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1) return 2;
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) return 3;
    for (;;) {
        int fd = accept(s, NULL, NULL);
        if (fd < 0) continue;
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
            char req[2048];
            int total = 0, got;
            while (total < (int)sizeof req - 1 &&
                   (got = SSL_read(ssl, req + total, sizeof req - 1 - total)) > 0) {
                total += got;
                req[total] = 0;
                if (strstr(req, "\r\n\r\n")) break;
            }
            char path[512] = "";
            sscanf(req, "GET %511s", path);
            int missing = strncmp(path, "/missing", 8) == 0;
            char body[600], resp[1024];
            int blen = snprintf(body, sizeof body, "boring %s\n", path);
            int n = snprintf(resp, sizeof resp,
                             "HTTP/1.0 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s",
                             missing ? "404 Not Found" : "200 OK", blen, body);
            SSL_write(ssl, resp, n);
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        close(fd);
    }
}
"""


def _build(directory: Path, name: str, text: str) -> Path:
    (directory / f"{name}.c").write_text(textwrap.dedent(text))
    assert GCC is not None
    subprocess.run(
        [GCC, "-O1", "-o", name, f"{name}.c", f"-I{BORING_INCLUDE}", f"-L{BORING_LIB}",
         f"-Wl,-rpath,{BORING_LIB}", "-lssl", "-lcrypto"],
        cwd=directory, check=True, capture_output=True,
    )  # fmt: skip
    linked = subprocess.run(["ldd", str(directory / name)], capture_output=True, text=True).stdout
    assert f"{BORING_LIB}/libssl.so" in linked, linked  # BoringSSL's, not the system's OpenSSL
    return directory / name


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("boringssl")
    return _build(d, "bclient", CLIENT), _build(d, "bserver", SERVER)


source = source_fixture()
harness = harness_fixture(record_pids=True)
cert = cert_fixture()
net = net_fixture("10.93.0")


def test_boringssl_calls_of_both_ends_are_read_and_come_out_as_one_entry_per_connection(
    harness: Harness, net: NetPair, peers: tuple[Path, Path], cert: tuple[Path, Path]
) -> None:
    bclient, bserver = peers
    key, crt = cert
    server = net.popen(net.ns_b, [str(bserver), str(PORT), str(crt), str(key)])
    client: subprocess.Popen[bytes] | None = None
    try:
        wait_for("the BoringSSL server listening", lambda: listening(net, PORT) or server.poll() is not None)
        assert server.poll() is None, f"the server exited with {server.returncode}"
        library = os.path.realpath(BORING_LIB / "libssl.so")
        hook = wait_for("the source hooking BoringSSL's libssl", lambda: harness.source.hooks.get(library))
        assert hook is not None and hook.error is None, hook
        assert hook.library == "boringssl" and set(hook.functions) == {"SSL_write", "SSL_read"}, hook
        paths = ("/boring/one", "/boring/two", "/missing/three")
        client = net.popen(
            net.ns_a,
            [str(bclient), net.ip_b, str(PORT), *paths],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        out, _ = client.communicate(b"go\n", timeout=60)
        assert client.returncode == 0, client.returncode
        records = [line.split() for line in out.decode().splitlines()]
        assert [(r[1], r[2]) for r in records] == [
            (p, "404" if p.startswith("/missing") else "200") for p in paths
        ]
        wait_for("both ends' chunks", lambda: {client.pid, server.pid} <= harness.pids)
        for method, path, status in records:
            (entry,) = wait_for(f"the entry of {path}", partial(harness.http, path))
            assert (entry["method"], entry["path"], entry["status"]) == (method, path, int(status))
            assert entry["tls"]["decrypted"] is True and entry["tls"]["library"] == "boringssl", entry["tls"]
            assert entry["capture"]["source"] == "ebpf_tls"
            assert (entry["src"]["ip"], entry["dst"]["ip"], entry["dst"]["port"]) == (
                net.ip_a,
                net.ip_b,
                PORT,
            )
            # Named by whichever end reported first (the other may come a poll later); right when named.
            for end, pid, name in (("src", client.pid, "bclient"), ("dst", server.pid, "bserver")):
                process = entry[end].get("process")
                if process is not None:
                    assert (process["pid"], process["name"]) == (pid, name), (end, process)
        # Both ends read every call, yet one entry per connection: no call came out twice.
        calls = [e["path"] for e in harness.poll() if e["protocol"] == "http" and e["path"] in paths]
        assert sorted(calls) == sorted(paths)
        by_pid = {c.pid: c.library for c in harness.chunks}
        assert by_pid[client.pid] == by_pid[server.pid] == "boringssl"
        # The decryptability report names the library BoringSSL, and read.
        hooked = {path: bool(h.functions) for path, h in harness.source.hooks.items()}
        report = Scanner().process(server.pid, hooked, "")
        assert report is not None
        assert [(lib.kind, lib.path, lib.hooked) for lib in report.libraries] == [
            ("boringssl", library, True)
        ]
    finally:
        for p in (client, server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
