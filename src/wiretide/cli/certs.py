"""The certificates of Wiretide's mutual TLS: one small CA and one certificate per process.

Rule: a certificate names the Wiretide service it belongs to (a DNS subjectAltName equal to the
service's name, which is what clients check), private keys are written 0600 in a 0700 directory,
and a set is made again whenever a file is missing, does not chain to the CA, or expires within
`RENEW_BEFORE`. `wiretide up` keeps one set under the data dir; `python -m wiretide.cli.certs`
prints a set for a cluster as Kubernetes Secrets (the Secret-based option of k8s/), with the
Secret of the service token the services present to each other (common/auth), the same token in
every namespace that runs a service.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import os
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wiretide.common.tls import TlsFiles
from wiretide.common.types import SERVICES

CA_LIFETIME: Final = dt.timedelta(days=365)
LEAF_LIFETIME: Final = dt.timedelta(days=90)  # what cert-manager issues by default
# Renewed this long before expiry, so a running stack never holds an expired certificate for long
# (servers re-read their files on change; `wiretide up` renews at start).
RENEW_BEFORE: Final = dt.timedelta(days=7)
# Backdated a little: a peer whose clock is slightly behind still accepts a fresh certificate.
CLOCK_SKEW: Final = dt.timedelta(minutes=5)
# Processes besides the six services: the bus, and the command line (`wiretide up`'s health checks).
NATS: Final = "nats"
CLI: Final = "cli"
LOCAL_PROCESSES: Final = (*SERVICES, NATS, CLI)
LOCAL_IPS: Final = ("127.0.0.1", "::1")
# The service token's Secret and its one key (k8s/: mounted at /etc/wiretide/service-token, read
# through WIRETIDE_AUTH_SERVICE_TOKEN_FILE).
SERVICE_TOKEN_SECRET: Final = "wiretide-service-token"
SERVICE_TOKEN_KEY: Final = "token"
SERVICE_TOKEN_BYTES: Final = 32  # 256 random bits: the services' shared admin credential


@dataclass(frozen=True, slots=True)
class Leaf:
    """One certificate to issue: the process it identifies and the names it answers to."""

    name: str
    dns: tuple[str, ...]
    ips: tuple[str, ...] = ()
    server: bool = True


def local_leaves() -> list[Leaf]:
    """The set `wiretide up` uses: every process on loopback."""
    return [Leaf(name, (name, "localhost"), LOCAL_IPS, server=name != CLI) for name in LOCAL_PROCESSES]


def cluster_leaves(namespace: str, capture_namespace: str) -> list[tuple[str, Leaf]]:
    """(namespace, leaf) for a cluster: each service's name and Service DNS names; NATS's every pod too."""
    out = []
    for name in (*SERVICES, NATS):
        ns = capture_namespace if name == "capture" else namespace
        dns = [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
        if name == NATS:  # clients dial nats-0.nats.<namespace>, nats-1...
            dns += [f"*.{name}", f"*.{name}.{ns}", f"*.{name}.{ns}.svc", f"*.{name}.{ns}.svc.cluster.local"]
        out.append((ns, Leaf(name, tuple(dns))))
    return out


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())  # small, fast handshakes, accepted everywhere


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(common_name: str = "Wiretide CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(
    leaf: Leaf, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for `leaf`, usable as a client always and as a server when `leaf.server`."""
    key = _key()
    now = _now()
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in leaf.dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in leaf.ips]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH, *([ExtendedKeyUsageOID.SERVER_AUTH] if leaf.server else [])]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"wiretide-{leaf.name}")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + LEAF_LIFETIME, ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)  # O_CREAT's mode is masked by the umask; a key must be 0600 whatever it is
    tmp.replace(path)


def _fresh(path: Path, ca: x509.Certificate | None = None) -> x509.Certificate | None:
    """The certificate at `path` if it is readable, chains to `ca` and is not about to expire."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    if cert.not_valid_after_utc - RENEW_BEFORE < _now():
        return None
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, Exception):  # InvalidSignature is not a ValueError
            return None
    return cert


def files_for(directory: Path, name: str) -> TlsFiles:
    return TlsFiles(directory / "ca.crt", directory / f"{name}.crt", directory / f"{name}.key")


def ensure(directory: Path, leaves: Iterable[Leaf]) -> dict[str, TlsFiles]:
    """The CA and one certificate per leaf under `directory`, made (again) where needed."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca_path, ca_key_path = directory / "ca.crt", directory / "ca.key"
    ca = _fresh(ca_path)
    ca_key = None
    if ca is not None:
        try:
            loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
            ca_key = loaded if isinstance(loaded, ec.EllipticCurvePrivateKey) else None
        except (OSError, ValueError):
            ca_key = None
    if ca is None or ca_key is None:
        ca, ca_key = make_ca()
        _write(ca_key_path, _pem_key(ca_key), 0o600)
        _write(ca_path, _pem(ca), 0o644)
    out: dict[str, TlsFiles] = {}
    for leaf in leaves:
        files = files_for(directory, leaf.name)
        if _fresh(files.cert, ca) is None or not files.key.is_file():
            cert, key = issue(leaf, ca, ca_key)
            _write(files.key, _pem_key(key), 0o600)
            _write(files.cert, _pem(cert), 0o644)
        out[leaf.name] = files
    return out


def secrets_yaml(namespace: str, capture_namespace: str) -> str:
    """Kubernetes Secrets `wiretide-<name>-tls` (ca.crt, tls.crt, tls.key), as cert-manager lays them out."""
    ca, ca_key = make_ca(f"Wiretide CA ({namespace})")
    docs = []
    for ns, leaf in cluster_leaves(namespace, capture_namespace):
        cert, key = issue(leaf, ca, ca_key)
        data = {"ca.crt": _pem(ca), "tls.crt": _pem(cert), "tls.key": _pem_key(key)}
        lines = [
            "apiVersion: v1",
            "kind: Secret",
            "type: kubernetes.io/tls",
            "metadata:",
            f"  name: wiretide-{leaf.name}-tls",
            f"  namespace: {ns}",
            "  labels: {app.kubernetes.io/part-of: wiretide}",
            "data:",
            *(f"  {k}: {base64.b64encode(v).decode()}" for k, v in data.items()),
        ]
        docs.append("\n".join(lines))
    return "---\n".join(d + "\n" for d in docs)


def new_service_token() -> str:
    """A fresh service token (`wiretide up` keeps one under its data dir; a cluster, in a Secret).
    Never starting with `-`: `wiretide … --token $TOKEN` would read it as an option."""
    while True:
        token = secrets.token_urlsafe(SERVICE_TOKEN_BYTES)
        if not token.startswith("-"):
            return token


def service_token_yaml(namespace: str, capture_namespace: str) -> str:
    """The Secret `wiretide-service-token` (key `token`, a fresh random token) in both namespaces."""
    token = base64.b64encode(new_service_token().encode()).decode()
    docs = [
        "\n".join(
            [
                "apiVersion: v1",
                "kind: Secret",
                "type: Opaque",
                "metadata:",
                f"  name: {SERVICE_TOKEN_SECRET}",
                f"  namespace: {ns}",
                "  labels: {app.kubernetes.io/part-of: wiretide}",
                "data:",
                f"  {SERVICE_TOKEN_KEY}: {token}",
            ]
        )
        for ns in dict.fromkeys((namespace, capture_namespace))
    ]
    return "---\n".join(d + "\n" for d in docs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wiretide.cli.certs",
        description="Print a CA and one certificate per Wiretide service, and the service token the "
        "services present to each other, as Kubernetes Secrets (pipe into `kubectl apply -f -`; the "
        "CA's key is not kept).",
    )
    parser.add_argument("--namespace", default="wiretide", help="the namespace Wiretide runs in")
    parser.add_argument(
        "--capture-namespace", default="wiretide-capture", help="the namespace of the capture DaemonSet"
    )
    parser.add_argument(
        "--only",
        choices=("tls", "service-token"),
        help="print only these Secrets (service-token: when cert-manager issues the certificates)",
    )
    args = parser.parse_args(argv)
    parts = []
    if args.only in (None, "tls"):
        parts.append(secrets_yaml(args.namespace, args.capture_namespace))
    if args.only in (None, "service-token"):
        parts.append(service_token_yaml(args.namespace, args.capture_namespace))
    sys.stdout.write("---\n".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
