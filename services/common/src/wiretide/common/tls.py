"""Transport security between Wiretide's processes: mutual TLS under one CA, or plaintext on loopback.

Rule: a connection between two Wiretide processes is either mutual TLS — both ends present a
certificate that Wiretide's CA signed, and a client accepts a server only if its certificate names
the service it meant to reach — or plaintext between two ends on loopback. Plaintext on any other
address is refused unless `WIRETIDE_TLS_ALLOW_PLAINTEXT=true` says otherwise, and is announced at
start-up either way.

Certificates are files (a Secret or cert-manager mounts them in a cluster; `wiretide up` writes them
locally). A server re-reads them when they change, so a rotated certificate needs no restart; a
client reads them whenever it opens a channel.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:  # grpc is imported where it is used: settings import this module, analyze needs no grpc
    import grpc

log = logging.getLogger(__name__)

ALLOW_PLAINTEXT_SETTING: Final = "WIRETIDE_TLS_ALLOW_PLAINTEXT"
TLS_SETTINGS: Final = ("WIRETIDE_TLS_CA", "WIRETIDE_TLS_CERT", "WIRETIDE_TLS_KEY")
# The name a client expects in the certificate of the service it dials (a DNS subjectAltName). The
# address is not used: capture dials dissector pods by IP and the host network has no stable names,
# so what is checked is "this is Wiretide's dissector", which is what matters.
SERVICE_NAME_OPTION: Final = "grpc.ssl_target_name_override"


class PlaintextRefused(ValueError):
    """Plaintext was asked for on an address other than loopback, and not explicitly allowed."""


def is_loopback(host: str) -> bool:
    """True for literal loopback addresses and `localhost` (no DNS: a name could resolve anywhere)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_of(address: str) -> str:
    """The host part of `host:port`, `[v6]:port` or a URL."""
    text = address.strip()
    if "://" in text:
        return urlsplit(text).hostname or ""
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0] if ":" in text else text


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files: the CA that signs every Wiretide certificate, and this process's certificate and key."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) bytes; OSError names the file that cannot be read."""
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()

    def stamp(self) -> tuple[int, ...]:
        """Changes whenever one of the files is replaced (a Secret update swaps a symlink)."""
        out: list[int] = []
        for path in (self.ca, self.cert, self.key):
            try:
                st = path.stat()
            except OSError:
                out += [0, 0]
                continue
            out += [st.st_mtime_ns, st.st_ino]
        return tuple(out)


class _Reloader:
    """Hands gRPC a new certificate configuration when the files change (asked once per handshake)."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.stamp = files.stamp()
        self.config = self._load()

    def _load(self) -> object:
        import grpc

        ca, cert, key = self.files.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def __call__(self) -> object | None:
        stamp = self.files.stamp()
        if stamp == self.stamp:
            return None
        try:
            config = self._load()
        except OSError as exc:  # half-written during a rotation: keep the last good one, try again later
            log.warning("TLS files unreadable; keeping the current certificate", extra={"error": str(exc)})
            return None
        self.stamp = stamp
        log.info("TLS certificate reloaded", extra={"cert": str(self.files.cert)})
        return config


@dataclass(frozen=True, slots=True)
class Transport:
    """How this process talks to its peers: mutual TLS with `tls`, else plaintext (loopback only,
    unless `allow_plaintext`)."""

    tls: TlsFiles | None = None
    allow_plaintext: bool = False

    @property
    def mode(self) -> str:
        return "mtls" if self.tls is not None else "plaintext"

    def check_plaintext(self, address: str, what: str) -> None:
        """Raise PlaintextRefused if `address` would carry plaintext beyond loopback, not allowed."""
        if self.tls is not None or is_loopback(host_of(address)) or self.allow_plaintext:
            return
        raise PlaintextRefused(
            f"{what} {address} is not loopback and no TLS is configured: set {', '.join(TLS_SETTINGS)} "
            f"(mutual TLS), or {ALLOW_PLAINTEXT_SETTING}=true to accept plaintext there"
        )

    # -- gRPC ---------------------------------------------------------------------------------
    def bind(self, server: grpc.aio.Server, address: str) -> int:
        """Bind `server` to `address` (mTLS, or plaintext where allowed); returns the port."""
        import grpc

        self.check_plaintext(address, "gRPC listen address")
        if self.tls is None:
            if not is_loopback(host_of(address)):
                log.warning(
                    "gRPC serves PLAINTEXT beyond loopback (%s=true)",
                    ALLOW_PLAINTEXT_SETTING,
                    extra={"address": address},
                )
            else:
                log.info("gRPC serves plaintext on loopback (no TLS configured)", extra={"address": address})
            return int(server.add_insecure_port(address))
        reloader = _Reloader(self.tls)
        creds = grpc.dynamic_ssl_server_credentials(
            reloader.config, reloader, require_client_authentication=True
        )
        log.info("gRPC serves mutual TLS", extra={"address": address, "cert": str(self.tls.cert)})
        return int(server.add_secure_port(address, creds))

    def channel(
        self, address: str, peer: str, options: Sequence[tuple[str, int | str]] = ()
    ) -> grpc.aio.Channel:
        """A channel to the Wiretide service `peer` at `address`."""
        import grpc

        self.check_plaintext(address, f"{peer} address")
        if self.tls is None:
            return grpc.aio.insecure_channel(address, options=list(options))
        ca, cert, key = self.tls.read()
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        return grpc.aio.secure_channel(address, creds, options=[*options, (SERVICE_NAME_OPTION, peer)])

    # -- NATS -----------------------------------------------------------------------------------
    def nats_context(self, url: str) -> ssl.SSLContext | None:
        """The TLS context for NATS at `url` (comma-separated), or None for plaintext.

        `tls://` URLs get TLS: with this process's certificate under Wiretide's CA when TLS files
        are configured, else against the system's CAs. `nats://` is plaintext, loopback only unless
        allowed."""
        urls = [u.strip() for u in url.split(",") if u.strip()]
        if not all(u.startswith("tls://") for u in urls):
            for u in urls:
                self.check_plaintext(u, "NATS URL")
            return None
        if self.tls is None:
            return ssl.create_default_context()
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.tls.ca))
        ctx.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        return ctx


PLAINTEXT: Final = Transport()
