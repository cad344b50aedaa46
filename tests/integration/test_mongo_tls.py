"""The gateway's MongoDB link over TLS: stored and queried through a TLS terminator, refused clearly
when the server's certificate is from another CA or when the two ends disagree about TLS, and the
URL's secrets never in the gateway's log or /api/health.

nx-27017 (the MongoDB-wire stand-in, see tests/helpers/mongo.py) speaks no TLS: a real TLS
terminator (tests/helpers/tls_relay.py, Python's `ssl`) sits in front of it with a certificate
made here, as a TLS-terminating proxy would. The CA and certificates come from the project's own
certificate code (wiretide.cli.certs).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from pymongo import MongoClient

from tests.helpers.entries import entries
from tests.helpers.mongo import WireMongo
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.services import service_env
from tests.helpers.tls_relay import TlsRelay
from tests.helpers.wait import wait_for
from tests.integration.test_store_writer import publish
from wiretide.cli import certs
from wiretide.gateway.store.base import StoreError
from wiretide.gateway.store.mongo import MongoStore

# Secrets that must never be shown: a user's password (with characters that need escaping) and the
# passphrase of the client's private key.
PASSWORD = "Pw-of-the/store@7"
PASSPHRASE = "key-passphrase-3f9c1e"
# The TLS terminator of these tests (tests/helpers/tls_relay.py, asyncio) is stopped by cancelling its
# tasks; a connection pymongo's monitor opens just then has an accept task not yet started, whose
# socket asyncio drops unclosed when it is cancelled. That is the test helper's socket, not Wiretide's:
# the warning is ignored here, where it belongs, instead of failing a later test's teardown.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
FAST = "serverSelectionTimeoutMS=2000"  # a refused link fails in 2 s, not the default 5
ESCAPED = quote(PASSWORD, safe="")  # as it must be written in a URL


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    foreign_cert: Path  # a server certificate for the same names, from another CA
    foreign_key: Path
    client_pem: Path  # the gateway's client certificate and its key (encrypted), one file


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    d = tmp_path / "pki"
    d.mkdir()
    ca, ca_key = certs.make_ca("Test MongoDB CA")
    other, other_key = certs.make_ca("Some other CA")
    server = certs.Leaf("mongo", ("mongo", "localhost"), ("127.0.0.1",))
    files: dict[str, bytes] = {"ca.crt": certs._pem(ca)}
    for name, (issuer, issuer_key) in {"server": (ca, ca_key), "foreign": (other, other_key)}.items():
        cert, key = certs.issue(server, issuer, issuer_key)
        files[f"{name}.crt"], files[f"{name}.key"] = certs._pem(cert), certs._pem_key(key)
    cert, key = certs.issue(certs.Leaf("gateway", ("gateway",), server=False), ca, ca_key)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    )
    files["client.pem"] = certs._pem(cert) + encrypted
    for name, data in files.items():
        (d / name).write_bytes(data)
    return Pki(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "foreign.crt",
        d / "foreign.key",
        d / "client.pem",
    )


@pytest.fixture
def mongo(tmp_path: Path) -> Iterator[WireMongo]:
    server = WireMongo(tmp_path / "mongo")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def relays() -> Iterator[list[TlsRelay]]:
    started: list[TlsRelay] = []
    yield started
    for relay in started:
        relay.stop()


def relay(
    started: list[TlsRelay], backend: int, cert: Path, key: Path, client_ca: Path | None = None
) -> TlsRelay:
    r = TlsRelay(backend, cert, key, client_ca)
    r.start()
    started.append(r)
    return r


def test_the_gateway_stores_and_queries_through_mutual_tls_and_never_shows_the_key_passphrase(
    nats_server: NatsServer, spawn: Any, mongo: WireMongo, relays: list[TlsRelay], pki: Pki
) -> None:
    tls = relay(relays, mongo.port, pki.server_cert, pki.server_key, client_ca=pki.ca)
    url = (
        f"mongodb://127.0.0.1:{tls.port}/?tls=true&tlsCAFile={pki.ca}&tlsCertificateKeyFile={pki.client_pem}"
        f"&tlsCertificateKeyFilePassword={PASSPHRASE}"
    )
    http = free_port()
    gw = spawn(
        "gateway", nats_server.url, WIRETIDE_GATEWAY_MONGO_URL=url, WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{http}"
    )
    gw.wait_health("SERVING")
    docs = entries(300, seed=22)
    asyncio.run(publish(nats_server.url, [docs[i : i + 50] for i in range(0, 300, 50)]))
    # Stored: read behind the terminator, where the stand-in keeps them.
    direct: MongoClient[dict[str, Any]] = MongoClient(mongo.url)
    try:
        coll = direct["wiretide"]["entries"]
        wait_for("300 entries stored", lambda: coll.count_documents({}), lambda n: n >= 300)
        assert coll.count_documents({}) == 300
    finally:
        direct.close()
    # Queried: the gateway reads them back through TLS.
    body = httpx.get(
        f"http://127.0.0.1:{http}/api/entries", params={"q": "", "limit": 1000}, timeout=30
    ).json()
    assert sorted(e["id"] for e in body["entries"]) == sorted(d["id"] for d in docs)
    one = docs[7]["id"]
    got = httpx.get(f"http://127.0.0.1:{http}/api/entries/{one}", timeout=30)
    assert got.status_code == 200 and got.json()["id"] == one
    # Every connection was TLS, with the gateway's client certificate.
    assert tls.handshakes >= 1 and tls.failures == []
    assert len(tls.client_subjects) == tls.handshakes
    assert all("wiretide-gateway" in s for s in tls.client_subjects)
    health = httpx.get(f"http://127.0.0.1:{http}/api/health", timeout=30)
    store = health.json()["store"]
    assert store["kind"] == "mongodb" and store["writing"] is True
    assert f"127.0.0.1:{tls.port}" in store["location"]
    assert "tlsCertificateKeyFilePassword=***" in store["location"]
    assert PASSPHRASE not in health.text
    assert PASSPHRASE not in gw.log_path.read_text()


def test_a_server_certificate_from_another_ca_is_refused_clearly_and_the_password_is_not_logged(
    nats_server: NatsServer, spawn: Any, mongo: WireMongo, relays: list[TlsRelay], pki: Pki
) -> None:
    foreign = relay(relays, mongo.port, pki.foreign_cert, pki.foreign_key)
    url = f"mongodb://wiretide:{ESCAPED}@127.0.0.1:{foreign.port}/?tls=true&tlsCAFile={pki.ca}&{FAST}"
    gw = spawn(
        "gateway",
        nats_server.url,
        WIRETIDE_GATEWAY_MONGO_URL=url,
        WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{free_port()}",
    )
    code = wait_for("the gateway to give up on the store", gw.proc.poll, lambda rc: rc is not None)
    assert code == 1
    log = gw.log_path.read_text()
    assert "certificate verify failed" in log, log
    assert "must be signed by the CA in tlsCAFile" in log
    assert f"mongodb://wiretide:***@127.0.0.1:{foreign.port}/" in log
    for secret in (PASSWORD, ESCAPED, "Pw-of-the"):
        assert secret not in log
    # The handshake reached the terminator and the gateway refused the certificate there.
    assert foreign.handshakes == 0
    assert any("unknown ca" in f.lower() for f in foreign.failures), foreign.failures


def test_a_plaintext_url_to_the_tls_port_fails_clearly(
    mongo: WireMongo, relays: list[TlsRelay], pki: Pki
) -> None:
    tls = relay(relays, mongo.port, pki.server_cert, pki.server_key)
    with pytest.raises(StoreError) as err:
        MongoStore(f"mongodb://127.0.0.1:{tls.port}/?{FAST}", database="t")
    message = str(err.value)
    assert "connection closed" in message and "add tls=true" in message, message
    assert any("wrong version number" in f.lower() for f in tls.failures), tls.failures


def test_a_tls_url_to_a_server_without_tls_fails_clearly(mongo: WireMongo, pki: Pki) -> None:
    with pytest.raises(StoreError) as err:
        MongoStore(f"mongodb://127.0.0.1:{mongo.port}/?tls=true&tlsCAFile={pki.ca}&{FAST}", database="t")
    assert "does the server speak TLS on that port?" in str(err.value), str(err.value)


def test_a_server_that_requires_a_client_certificate_says_so_when_none_is_given(
    mongo: WireMongo, relays: list[TlsRelay], pki: Pki
) -> None:
    tls = relay(relays, mongo.port, pki.server_cert, pki.server_key, client_ca=pki.ca)
    with pytest.raises(StoreError) as err:
        MongoStore(f"mongodb://127.0.0.1:{tls.port}/?tls=true&tlsCAFile={pki.ca}&{FAST}", database="t")
    assert "tlsCertificateKeyFile" in str(err.value), str(err.value)
    assert any("did not return a certificate" in f for f in tls.failures), tls.failures
    # With the certificate (and its passphrase) the same server takes the store's writes.
    store = MongoStore(
        f"mongodb://127.0.0.1:{tls.port}/?tls=true&tlsCAFile={pki.ca}&tlsCertificateKeyFile={pki.client_pem}"
        f"&tlsCertificateKeyFilePassword={PASSPHRASE}&{FAST}",
        database="t",
    )
    try:
        docs = entries(20, seed=5)
        assert store.insert_many(docs) == 20
        assert store.get(docs[3]["id"]) == docs[3]
        assert store.count() == 20
        assert PASSPHRASE not in store.location
    finally:
        store.close()


def gateway_start_up(nats_url: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wiretide.gateway"],
        env=service_env(nats_url, tmp_path / "data", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_plaintext_url_beyond_loopback_stops_the_gateway_at_start_up_naming_the_setting(
    tmp_path: Path,
) -> None:
    """The other refusals (scheme, unreadable CA file, tls=maybe) share this path; their messages
    are checked in tests/unit/gateway/test_mongo_url.py."""
    url = f"mongodb://wiretide:{ESCAPED}@mongo.example:27017/?replicaSet=rs0"
    # No NATS needed: the settings are checked before anything connects.
    out = gateway_start_up("nats://127.0.0.1:1", tmp_path, WIRETIDE_GATEWAY_MONGO_URL=url)
    assert out.returncode == 2, out.stderr
    assert "WIRETIDE_GATEWAY_MONGO_URL=mongodb://wiretide:***@mongo.example:27017/" in out.stderr, out.stderr
    assert "in plaintext" in out.stderr and "tls=true" in out.stderr
    for secret in (PASSWORD, ESCAPED, "Pw-of-the"):
        assert secret not in out.stderr + out.stdout


def test_plaintext_beyond_loopback_is_accepted_when_allowed_and_announced(tmp_path: Path) -> None:
    """WIRETIDE_TLS_ALLOW_PLAINTEXT=true lets the check pass (the gateway then goes on to wait for
    NATS, which is not there: the warning is what is looked for, then it is stopped)."""
    env = service_env(
        "nats://127.0.0.1:1",
        tmp_path / "data",
        WIRETIDE_GATEWAY_MONGO_URL="mongodb://mongo.example:27017/",
        WIRETIDE_TLS_ALLOW_PLAINTEXT="true",
    )
    log = tmp_path / "gw.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wiretide.gateway"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for("the plaintext warning", log.read_text, lambda text: "PLAINTEXT beyond loopback" in text)
        assert proc.poll() is None  # not refused
    finally:
        proc.terminate()
        proc.wait(15)
