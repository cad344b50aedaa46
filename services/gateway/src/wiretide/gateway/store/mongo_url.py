"""The MongoDB store's connection string: how it is checked at start-up, shown, and explained.

Rule: TLS to MongoDB is configured in the URL, with MongoDB's own connection-string options
(`tls=true`, `tlsCAFile`, optionally `tlsCertificateKeyFile`), so that what an operator reads in
MongoDB's documentation is what the gateway takes. The URL is never shown as given: its password and
the options that carry secrets are replaced by `***` wherever it appears — logs, errors, /api/health.
Like every other link of Wiretide's, a URL that would carry plaintext beyond loopback is refused at
start-up unless `WIRETIDE_TLS_ALLOW_PLAINTEXT=true`.

No pymongo here: the gateway checks and shows the URL without importing the driver (SQLite setups
never load it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import unquote

from wiretide.common.tls import ALLOW_PLAINTEXT_SETTING, host_of, is_loopback

SCHEMES: Final = ("mongodb", "mongodb+srv")
MASK: Final = "***"
# Options whose values are secrets (a client key's passphrase; AWS session tokens and the like).
SECRET_OPTIONS: Final = frozenset({"tlscertificatekeyfilepassword", "authmechanismproperties"})
# Options naming files the driver reads: checked at start-up, so a missing mount names the file.
FILE_OPTIONS: Final = ("tlsCAFile", "tlsCertificateKeyFile", "tlsCRLFile")
# Options that switch certificate checks off: allowed, and announced at start-up.
INSECURE_OPTIONS: Final = ("tlsInsecure", "tlsAllowInvalidCertificates", "tlsAllowInvalidHostnames")
# The driver's wait for a usable server before an operation fails (pymongo's default is 30 s);
# a URL's own `serverSelectionTimeoutMS` wins.
SELECTION_TIMEOUT_OPTION: Final = "serverSelectionTimeoutMS"
DEFAULT_SELECTION_TIMEOUT_MS: Final = 5000


@dataclass(frozen=True, slots=True)
class MongoUrl:
    """A connection string taken apart just enough to check and redact it (values stay encoded)."""

    scheme: str
    user: str | None
    password: str | None
    hosts: tuple[str, ...]
    path: str
    options: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, url: str) -> MongoUrl:
        """Never raises: a malformed URL gives whatever parts could be read."""
        scheme, sep, rest = url.strip().partition("://")
        if not sep:
            scheme, rest = "", url.strip()
        user = password = None
        # Where the credentials end, erring towards hiding more: a password may hold unescaped
        # `@`, `/` or `?` (the driver refuses such a URL, but its message must not show it either).
        before_query = rest.partition("?")[0]
        at = before_query.rfind("@") if "@" in before_query else rest.rfind("@")
        if at >= 0:
            name, colon, secret = rest[:at].partition(":")
            user, password, rest = name, (secret if colon else None), rest[at + 1 :]
        head, _, query = rest.partition("?")
        hostpart, slash, db = head.partition("/")
        options = []
        for pair in query.replace(";", "&").split("&"):
            if pair:
                key, _, value = pair.partition("=")
                options.append((key, value))
        return cls(
            scheme=scheme.lower(),
            user=user,
            password=password,
            hosts=tuple(h for h in hostpart.split(",") if h),
            path=slash + db,
            options=tuple(options),
        )

    def option(self, name: str) -> str | None:
        """The (decoded) value of option `name`, matched case-insensitively as the driver does."""
        found = None
        for key, value in self.options:
            if key.lower() == name.lower():
                found = unquote(value)
        return found

    @property
    def tls(self) -> bool:
        """What the driver will do: `tls`/`ssl` if given, else TLS for mongodb+srv only."""
        for name in ("tls", "ssl"):
            value = self.option(name)
            if value is not None:
                return value.lower() == "true"
        return self.scheme == "mongodb+srv"

    def redacted(self) -> str:
        """The URL as it may be shown: user kept, password and secret options as ***."""
        auth = ""
        if self.user is not None:
            auth = f"{self.user}:{MASK}@" if self.password is not None else f"{self.user}@"
        query = "&".join(f"{k}={MASK if k.lower() in SECRET_OPTIONS else v}" for k, v in self.options)
        prefix = f"{self.scheme}://" if self.scheme else ""
        return f"{prefix}{auth}{','.join(self.hosts)}{self.path}{'?' + query if query else ''}"

    def secrets(self) -> list[str]:
        """Every secret of the URL as it could appear in a message: encoded and decoded."""
        raw = [self.password or ""]
        raw += [v for k, v in self.options if k.lower() in SECRET_OPTIONS]
        found = {s for value in raw for s in (value, unquote(value)) if s}
        return sorted(found, key=len, reverse=True)  # longest first: no partial replacement left

    def scrub(self, text: str) -> str:
        """`text` (a driver's error, say) with any secret of this URL replaced by ***."""
        for secret in self.secrets():
            text = text.replace(secret, MASK)
        return text


def _local(host: str) -> bool:
    name = unquote(host)
    if name.startswith("/") or name.endswith(".sock"):  # a Unix socket: never leaves the machine
        return True
    return is_loopback(host_of(name))


def check(url: str, allow_plaintext: bool) -> list[str]:
    """Check the URL at start-up: ValueError naming the problem (never quoting the URL: the caller
    shows it redacted), else the warnings to log (certificate checks off, plaintext allowed)."""
    parsed = MongoUrl.parse(url)
    if parsed.scheme not in SCHEMES:
        raise ValueError("must be a mongodb:// or mongodb+srv:// URL")
    if not parsed.hosts:
        raise ValueError("names no host")
    for name in ("tls", "ssl"):
        value = parsed.option(name)
        if value is not None and value.lower() not in ("true", "false"):
            raise ValueError(f"{name}={value}: must be true or false")
    warnings: list[str] = []
    if not parsed.tls:
        remote = [h for h in parsed.hosts if parsed.scheme == "mongodb+srv" or not _local(h)]
        if remote and not allow_plaintext:
            raise ValueError(
                f"would reach {', '.join(remote)} in plaintext: add "
                "tls=true&tlsCAFile=<CA certificate file> to the URL (docs/deploy.md), or set "
                f"{ALLOW_PLAINTEXT_SETTING}=true to accept plaintext there"
            )
        if remote:
            warnings.append(
                f"MongoDB is reached in PLAINTEXT beyond loopback ({ALLOW_PLAINTEXT_SETTING}=true)"
            )
        return warnings
    for name in FILE_OPTIONS:
        value = parsed.option(name)
        if value is None:
            continue
        try:
            with Path(value).open("rb"):
                pass
        except OSError as exc:
            raise ValueError(f"{name}={value}: cannot read it: {exc.strerror or exc}") from None
    for name in INSECURE_OPTIONS:
        value = parsed.option(name)
        if value is not None and value.lower() == "true":
            warnings.append(f"MongoDB's certificate is not fully checked ({name}=true)")
    return warnings


def _concise(text: str) -> str:
    """A server-selection timeout without its topology dump and timeout settings: the reason stays."""
    if "Topology Description" in text:
        text = text.partition(", Timeout:")[0]
    return _TIMEOUTS.sub("", text)


_TIMEOUTS: Final = re.compile(r" \(configured timeouts: [^)]*\)")


def explain(error: str, url: MongoUrl) -> str:
    """A driver's error, secrets removed, with what to do about the usual TLS mistakes."""
    text = _concise(url.scrub(error))
    low = text.lower()
    hint = ""
    if "certificate_verify_failed" in low or "certificate verify failed" in low:
        hint = (
            "the server's certificate is not trusted: it must be signed by the CA in tlsCAFile "
            "and name the host in the URL"
        )
    elif url.tls and ("certificate required" in low or "connection closed" in low):
        hint = (
            "the server ended the TLS session: does it require a client certificate "
            "(tlsCertificateKeyFile) signed by a CA it trusts?"
        )
    elif url.tls and ("no servers found yet" in low or "wrong version number" in low):
        hint = "no TLS handshake completed: does the server speak TLS on that port?"
    elif not url.tls and ("connection closed" in low or "reset by peer" in low):
        hint = "the server closed the connection: if it requires TLS, add tls=true&tlsCAFile=… to the URL"
    return f"{text} ({hint})" if hint else text
