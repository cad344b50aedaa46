"""eBPF TLS plaintext of a statically linked OpenSSL: a C client built here against the system's
libssl.a/libcrypto.a (no libssl.so mapped: the executable itself carries SSL_read/SSL_write, as
Envoy carries BoringSSL's), hooked in the executable by its own symbols, and its calls to `openssl
s_server` come out as entries equal to the client's record, named by the client's process.

Root, BCC (python3-bpfcc), gcc and the static OpenSSL libraries (Debian: libssl-dev) are needed;
elsewhere these tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from functools import partial
from pathlib import Path

import pytest

from tests.helpers.ebpf import Harness, cert_fixture, harness_fixture, net_fixture, s_server, source_fixture
from tests.helpers.netns import NetPair
from tests.helpers.wait import wait_for
from wiretide.capture.sources.ebpf import probe

WHY_NOT = probe()
GCC = shutil.which("gcc")
LIBSSL_A = next(iter(Path("/usr/lib").glob("*/libssl.a")), None)
pytestmark = [
    pytest.mark.skipif(WHY_NOT is not None, reason=f"eBPF unavailable: {WHY_NOT}"),
    pytest.mark.skipif(GCC is None, reason="no C compiler to build the static client (Debian: gcc)"),
    pytest.mark.skipif(LIBSSL_A is None, reason="no static OpenSSL libraries (Debian: libssl-dev)"),
]
PORT = 8443

CLIENT = textwrap.dedent(
    r"""
    #include <arpa/inet.h>
    #include <openssl/ssl.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/socket.h>
    #include <unistd.h>

    /* sclient IP PORT PATH...: waits for a line on stdin, then one TLS connection per path. */
    int main(int argc, char **argv) {
        char go[8];
        if (!fgets(go, sizeof go, stdin)) return 2;
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
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
)


@pytest.fixture(scope="module")
def sclient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("static")
    (d / "sclient.c").write_text(CLIENT)
    out = d / "sclient"
    assert GCC is not None
    subprocess.run(
        [GCC, "-O1", "-static", "-o", str(out), "sclient.c", "-lssl", "-lcrypto", "-lpthread", "-ldl"],
        cwd=d, check=True, capture_output=True,
    )  # fmt: skip
    linked = subprocess.run(["ldd", str(out)], capture_output=True, text=True)
    assert "libssl" not in linked.stdout, linked.stdout  # nothing to hook but the executable itself
    return out


source = source_fixture()
harness = harness_fixture(record_pids=True)
cert = cert_fixture()
net = net_fixture("10.93.0")


def test_a_statically_linked_openssl_client_is_hooked_in_its_executable_and_its_calls_come_out(
    harness: Harness, net: NetPair, sclient: Path, cert: tuple[Path, Path]
) -> None:
    server = s_server(net, cert, PORT)
    paths = ("/static/one", "/static/two")
    client = net.popen(
        net.ns_a,
        [str(sclient), net.ip_b, str(PORT), *paths],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        real = os.path.realpath(sclient)
        hook = wait_for("the source hooking the static executable", lambda: harness.source.hooks.get(real))
        assert hook is not None and hook.library == "openssl (static)" and hook.error is None, hook
        assert {"SSL_write", "SSL_read"} <= set(hook.functions), hook.functions
        out, _ = client.communicate(b"go\n", timeout=60)
        assert client.returncode == 0
        records = [line.split() for line in out.decode().splitlines()]
        assert [r[1] for r in records] == list(paths)
        for method, path, status in records:
            (entry,) = wait_for(f"the entry of {path}", partial(harness.http, path))
            assert (entry["method"], entry["path"], entry["status"]) == (method, path, int(status))
            assert entry["tls"]["decrypted"] is True and entry["capture"]["source"] == "ebpf_tls"
            assert (entry["src"]["ip"], entry["dst"]["ip"], entry["dst"]["port"]) == (
                net.ip_a,
                net.ip_b,
                PORT,
            )
            process = entry["src"].get("process")
            if process is not None:  # named by whichever end reported first; right when named
                assert (process["pid"], process["name"]) == (client.pid, "sclient")
        # s_server is hooked too (the system's libssl): the client's own chunks show that the static
        # executable's SSL_write/SSL_read were read, not only the server's.
        wait_for("the static client's own chunks", lambda: client.pid in harness.pids)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        server.kill()
        server.wait()
