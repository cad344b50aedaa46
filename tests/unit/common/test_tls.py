"""Mutual TLS between Wiretide's processes, over real gRPC on loopback: a server answers only clients
holding a certificate of its CA, a client accepts only the service it meant to reach, and plaintext
beyond loopback is refused unless allowed."""

from __future__ import annotations

import base64
import os
import shutil
import stat
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from wiretide.cli import certs
from wiretide.common.rpc import check_health, create_health_server, create_server
from wiretide.common.settings import CommonSettings, SettingsError, load_settings
from wiretide.common.tls import PlaintextRefused, TlsFiles, Transport, is_loopback

SERVICE = "wiretide.proto.v1.CaptureService"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    return certs.ensure(tmp_path / "tls", certs.local_leaves())


@pytest.fixture
def other_pki(tmp_path: Path) -> dict[str, TlsFiles]:
    return certs.ensure(tmp_path / "other", certs.local_leaves())


async def serving(transport: Transport) -> tuple[grpc.aio.Server, str]:
    server, health, port = create_server("127.0.0.1:0", [SERVICE], transport=transport)
    await server.start()
    await health.set(True)
    return server, f"127.0.0.1:{port}"


async def ask(address: str, creds: grpc.ChannelCredentials | None, name: str = "capture") -> str:
    options = [("grpc.ssl_target_name_override", name)]
    ch = (
        grpc.aio.insecure_channel(address)
        if creds is None
        else grpc.aio.secure_channel(address, creds, options=options)
    )
    async with ch:
        try:
            resp = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))


async def test_a_client_with_a_certificate_of_the_ca_is_answered(pki: dict[str, TlsFiles]) -> None:
    server, address = await serving(Transport(pki["capture"]))
    try:
        got = await check_health(
            address, SERVICE, timeout=5, transport=Transport(pki["gateway"]), peer="capture"
        )
        assert got == "SERVING"
    finally:
        await server.stop(None)


async def test_a_client_without_a_certificate_is_refused(pki: dict[str, TlsFiles]) -> None:
    server, address = await serving(Transport(pki["capture"]))
    ca = pki["capture"].ca.read_bytes()
    try:
        assert await ask(address, grpc.ssl_channel_credentials(root_certificates=ca)) == "UNAVAILABLE"
        assert await ask(address, None) == "UNAVAILABLE"  # plaintext does not even reach the handshake
    finally:
        await server.stop(None)


async def test_a_client_with_a_certificate_of_another_ca_is_refused(
    pki: dict[str, TlsFiles], other_pki: dict[str, TlsFiles]
) -> None:
    server, address = await serving(Transport(pki["capture"]))
    ca = pki["capture"].ca.read_bytes()
    foreign = other_pki["gateway"]
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=foreign.key.read_bytes(),
        certificate_chain=foreign.cert.read_bytes(),
    )
    try:
        assert await ask(address, creds) == "UNAVAILABLE"
        own = pki["gateway"]
        good = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=own.key.read_bytes(), certificate_chain=own.cert.read_bytes()
        )
        assert await ask(address, good) == "SERVING"
    finally:
        await server.stop(None)


async def test_a_client_refuses_a_server_whose_certificate_names_another_service(
    pki: dict[str, TlsFiles],
) -> None:
    server, address = await serving(Transport(pki["gateway"]))  # a gateway where capture was expected
    try:
        assert await check_health(address, timeout=5, transport=Transport(pki["cli"]), peer="capture") == (
            "UNREACHABLE"
        )
        assert await check_health(address, timeout=5, transport=Transport(pki["cli"]), peer="gateway") == (
            "SERVING"
        )
    finally:
        await server.stop(None)


async def test_a_server_reloads_its_certificate_when_the_files_change(
    pki: dict[str, TlsFiles], other_pki: dict[str, TlsFiles], tmp_path: Path
) -> None:
    live = tmp_path / "mounted"
    live.mkdir()
    files = TlsFiles(live / "ca.crt", live / "tls.crt", live / "tls.key")
    for src, dst in zip(pki["capture"].read(), (files.ca, files.cert, files.key), strict=True):
        dst.write_bytes(src)
    server, address = await serving(Transport(files))
    try:
        assert (
            await check_health(address, transport=Transport(pki["cli"]), peer="capture", timeout=5)
            == "SERVING"
        )
        # A rotation to another CA (as a Secret update does): new clients of that CA get in, old ones not.
        for src, dst in zip(other_pki["capture"].read(), (files.ca, files.cert, files.key), strict=True):
            tmp = dst.with_suffix(".new")
            tmp.write_bytes(src)
            tmp.replace(dst)
        assert await check_health(
            address, transport=Transport(other_pki["cli"]), peer="capture", timeout=5
        ) == ("SERVING")
        assert await check_health(address, transport=Transport(pki["cli"]), peer="capture", timeout=5) == (
            "UNREACHABLE"
        )
    finally:
        await server.stop(None)


async def test_plaintext_beyond_loopback_is_refused_unless_allowed() -> None:
    with pytest.raises(PlaintextRefused, match="WIRETIDE_TLS_ALLOW_PLAINTEXT"):
        create_server("0.0.0.0:0", [SERVICE])
    server, _health, port = create_server(
        "0.0.0.0:0", [SERVICE], transport=Transport(None, allow_plaintext=True)
    )
    assert port > 0
    await server.stop(None)
    with pytest.raises(PlaintextRefused):
        Transport().channel("10.1.2.3:50051", "capture")


async def test_the_health_only_server_answers_probes_without_tls_and_nothing_else(
    pki: dict[str, TlsFiles],
) -> None:
    server, health, _port = create_server("127.0.0.1:0", [SERVICE], transport=Transport(pki["capture"]))
    probe, probe_port = create_health_server("127.0.0.1:0", health)
    await server.start()
    await probe.start()
    await health.set(True)
    try:
        address = f"127.0.0.1:{probe_port}"
        assert await ask(address, None) == "SERVING"
        async with grpc.aio.insecure_channel(address) as ch:
            reflect = ch.unary_unary("/wiretide.proto.v1.CaptureService/GetStatus")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await reflect(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await probe.stop(None)
        await server.stop(None)


def test_loopback_is_a_literal_address_or_localhost() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "capture", "localhost.example"]))


def test_a_service_refuses_to_start_listening_in_plaintext_beyond_loopback() -> None:
    env = {"WIRETIDE_CAPTURE_GRPC": "0.0.0.0:50051"}
    with pytest.raises(SettingsError, match=r"WIRETIDE_CAPTURE_GRPC.*WIRETIDE_TLS_ALLOW_PLAINTEXT"):
        load_settings(CommonSettings, "capture", env)
    allowed = load_settings(CommonSettings, "capture", {**env, "WIRETIDE_TLS_ALLOW_PLAINTEXT": "true"})
    assert allowed.transport.mode == "plaintext"
    with pytest.raises(SettingsError, match="NATS URL nats://nats:4222"):
        load_settings(CommonSettings, "capture", {"WIRETIDE_NATS_URL": "nats://nats:4222"})


def test_tls_settings_come_all_three_or_not_at_all(pki: dict[str, TlsFiles]) -> None:
    f = pki["capture"]
    with pytest.raises(SettingsError, match=r"WIRETIDE_TLS_KEY.*missing WIRETIDE_TLS_KEY"):
        load_settings(
            CommonSettings, "capture", {"WIRETIDE_TLS_CA": str(f.ca), "WIRETIDE_TLS_CERT": str(f.cert)}
        )
    with pytest.raises(SettingsError, match=r"WIRETIDE_TLS_CA.*no such file"):
        load_settings(CommonSettings, "capture", {"WIRETIDE_TLS_CA": "/nonexistent/ca.crt"})
    env = {
        "WIRETIDE_TLS_CA": str(f.ca),
        "WIRETIDE_TLS_CERT": str(f.cert),
        "WIRETIDE_TLS_KEY": str(f.key),
        "WIRETIDE_CAPTURE_GRPC": "0.0.0.0:50051",
        "WIRETIDE_NATS_URL": "tls://nats-0.nats:4222",
    }
    s = load_settings(CommonSettings, "capture", env)
    assert s.transport.tls == f


def test_keys_are_private_and_certificates_are_kept_until_they_near_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "tls"
    first = certs.ensure(d, certs.local_leaves())
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for files in first.values():
        assert stat.S_IMODE(os.stat(files.key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d / "ca.key").st_mode) == 0o600
    before = {n: f.cert.read_bytes() for n, f in first.items()}
    certs.ensure(d, certs.local_leaves())
    assert {n: f.cert.read_bytes() for n, f in first.items()} == before  # fresh: kept

    monkeypatch.setattr(certs, "LEAF_LIFETIME", certs.RENEW_BEFORE / 2)  # issued already near expiry
    (d / "capture.crt").unlink()
    certs.ensure(d, certs.local_leaves())
    near = (d / "capture.crt").read_bytes()
    assert near != before["capture"]
    monkeypatch.undo()
    certs.ensure(d, certs.local_leaves())
    assert (d / "capture.crt").read_bytes() not in (near, before["capture"])  # renewed
    assert (d / "gateway.crt").read_bytes() == before["gateway"]


def test_a_new_ca_reissues_every_certificate(tmp_path: Path) -> None:
    d = tmp_path / "tls"
    first = {n: f.cert.read_bytes() for n, f in certs.ensure(d, certs.local_leaves()).items()}
    (d / "ca.key").unlink()
    second = {n: f.cert.read_bytes() for n, f in certs.ensure(d, certs.local_leaves()).items()}
    assert all(first[n] != second[n] for n in first)
    shutil.rmtree(d)


def test_cluster_secrets_name_each_service_and_every_nats_pod() -> None:
    text = certs.secrets_yaml("wiretide", "wiretide-capture")
    docs = list(yaml.safe_load_all(text))
    by_name = {d["metadata"]["name"]: d for d in docs}
    assert by_name["wiretide-capture-tls"]["metadata"]["namespace"] == "wiretide-capture"
    assert by_name["wiretide-gateway-tls"]["metadata"]["namespace"] == "wiretide"
    nats = x509.load_pem_x509_certificate(base64.b64decode(by_name["wiretide-nats-tls"]["data"]["tls.crt"]))
    names = nats.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert {"nats", "*.nats.wiretide", "*.nats.wiretide.svc"} <= set(names)
