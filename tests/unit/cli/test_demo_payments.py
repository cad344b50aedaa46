"""The demo's TLS hop without the demo: the payments role serving HTTPS with a certificate from a
throwaway CA, the api's client checking it by the Service's name; peers that misbehave (a client that
never finishes its handshake, one that speaks plain HTTP, a server that is not TLS, a wrong name) get
an answer or an error status, never a raise or a stuck server. And what the demo says about eBPF."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.helpers.nats import free_port
from tests.helpers.wait import wait_for
from wiretide.cli.certs import Leaf, ensure
from wiretide.cli.demo.apps import PAYMENTS_SNI, https_post
from wiretide.cli.demo.cluster import listening
from wiretide.cli.demo_cmd import ebpf_choice

ORDER = json.dumps({"order_id": "order-1", "item": "tea", "qty": 3}).encode()
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def payments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ssl.SSLContext]]:
    files = ensure(tmp_path_factory.mktemp("tls"), [Leaf("payments", (PAYMENTS_SNI,), ("127.0.0.1",))])[
        "payments"
    ]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wiretide.cli.demo.apps", "payments", "--listen", f"127.0.0.1:{port}",
         "--tls-cert", str(files.cert), "--tls-key", str(files.key)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(
            "payments listening", lambda: listening(proc.pid, "127.0.0.1", port) or proc.poll() is not None
        )
        assert proc.poll() is None, "payments exited at start"
        yield f"127.0.0.1:{port}", ssl.create_default_context(cafile=str(files.ca))
    finally:
        proc.terminate()
        proc.wait(10)


def charge(
    payments: tuple[str, ssl.SSLContext], body: bytes = ORDER, path: str = "/v1/charges"
) -> tuple[int, bytes]:
    addr, ctx = payments
    return https_post(addr, ctx, PAYMENTS_SNI, path, body, JSON)


def test_a_charge_over_tls_is_created_or_declined_with_its_order(
    payments: tuple[str, ssl.SSLContext],
) -> None:
    seen: dict[int, dict[str, object]] = {}
    wait_for(
        "both a created and a declined charge", lambda: seen.setdefault(*_answer(payments)) and len(seen) == 2
    )
    assert set(seen) == {201, 402}
    assert str(seen[201]["charge_id"]).startswith("ch_") and seen[201]["amount_cents"] == 3750
    assert seen[402] == {"order_id": "order-1", "status": "declined", "reason": "insufficient_funds"}


def _answer(payments: tuple[str, ssl.SSLContext]) -> tuple[int, dict[str, object]]:
    status, body = charge(payments)
    doc: dict[str, object] = json.loads(body)
    return status, doc


def test_bad_charges_and_unknown_paths_are_client_errors(payments: tuple[str, ssl.SSLContext]) -> None:
    assert charge(payments, b"not json")[0] == 400
    assert charge(payments, b'{"order_id": "o", "qty": "many"}')[0] == 400
    assert charge(payments, path="/v1/refunds")[0] == 404


def test_a_name_the_certificate_does_not_hold_is_refused_by_the_client(
    payments: tuple[str, ssl.SSLContext],
) -> None:
    addr, ctx = payments
    status, why = https_post(addr, ctx, "db.data.svc.cluster.local", "/v1/charges", ORDER, JSON)
    assert status == 502 and b"CERTIFICATE_VERIFY_FAILED" in why
    assert charge(payments)[0] in (201, 402)  # the server goes on


def test_a_stalled_handshake_or_plain_http_does_not_hold_up_other_clients(
    payments: tuple[str, ssl.SSLContext],
) -> None:
    host, port = payments[0].rsplit(":", 1)
    with (
        socket.create_connection((host, int(port))) as stalled,
        socket.create_connection((host, int(port))) as plain,
    ):
        stalled.sendall(b"\x16\x03\x01")  # the start of a ClientHello, never finished
        plain.sendall(b"POST /v1/charges HTTP/1.1\r\nHost: x\r\n\r\n")
        assert charge(payments)[0] in (201, 402)
        plain.settimeout(10)
        assert not plain.recv(4096).startswith(b"HTTP/")  # a TLS alert or a close, never an answer


def test_a_peer_that_is_not_tls_is_a_502_not_a_raise(payments: tuple[str, ssl.SSLContext]) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]

        def answer_junk() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nnot tls at all")

        import threading

        t = threading.Thread(target=answer_junk, daemon=True)
        t.start()
        status, why = https_post(f"127.0.0.1:{port}", payments[1], PAYMENTS_SNI, "/v1/charges", ORDER, JSON)
        t.join(10)
    assert status == 502 and why


def test_the_demo_says_why_the_tls_hop_is_not_decrypted() -> None:
    on, said = ebpf_choice(no_ebpf=True)
    assert not on and "--no-ebpf" in said and "TLS handshakes only" in said
    on, said = ebpf_choice(no_ebpf=False)
    from wiretide.capture.sources.ebpf import probe

    why = probe()
    assert on is (why is None)
    assert ("decrypted" in said) if on else (f"eBPF unavailable ({why})" in said)
