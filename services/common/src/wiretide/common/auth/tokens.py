"""Static bearer tokens: a file (a mounted Secret) mapping each token to a subject, role and namespaces.

Rule: tokens are looked up by their SHA-256 digest, never compared as text, and the file may hold the
digest instead of the token (`token_sha256`), so the Secret need not contain what a client sends.
A file that cannot be read or understood stops the process at start-up, naming the entry. A running
process reads the file again when it changes (`TokensFile`: one `stat` every `RELOAD_CHECK_S` at
most, never one per request); a changed file that does not load is logged and the tokens it last
loaded stay in force.

    {"tokens": [
      {"token": "…", "subject": "alice", "role": "viewer", "namespaces": ["shop"]},
      {"token_sha256": "9f86d08…", "subject": "ci", "role": "admin"}
    ]}

`namespaces` is required for viewers and editors (`["*"]` for every namespace); admins see every
namespace whatever it says.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from wiretide.common.auth.principal import Principal, Role
from wiretide.common.auth.scope import ALL_NAMESPACES, NamespaceScope

log = logging.getLogger(__name__)

# How stale the tokens may be: a Secret updated in a cluster reaches the pod within about a minute
# anyway (the kubelet's sync period), so a few seconds more costs nothing, and requests between two
# checks cost no system call.
RELOAD_CHECK_S: Final = 5.0
MIN_TOKEN_CHARS: Final = 16  # shorter secrets are guessable; refuse them rather than accept weak ones
MAX_TOKEN_CHARS: Final = 4_096  # a bearer value longer than this is not one of ours (JWTs stay far below)


class TokenFileError(ValueError):
    """The tokens file is unreadable or malformed; the message names the file and the entry."""


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class StaticTokens:
    """Token digest → principal."""

    by_digest: Mapping[bytes, Principal] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.by_digest)

    def lookup(self, token: str) -> Principal | None:
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        # By digest: what a lookup's timing could reveal is about the hash, not the token.
        return self.by_digest.get(digest(token))

    def merged(self, other: Mapping[bytes, Principal]) -> StaticTokens:
        return StaticTokens({**self.by_digest, **other})


def admin_token(token: str, subject: str) -> dict[bytes, Principal]:
    """One admin token given directly (WIRETIDE_GATEWAY_TOKEN, the service token)."""
    return {digest(token): Principal(subject, Role.ADMIN, ALL_NAMESPACES, "token")}


def _entry(i: int, raw: Any, where: str) -> tuple[bytes, Principal]:
    name = f"{where}: tokens[{i}]"
    if not isinstance(raw, dict):
        raise TokenFileError(f"{name} must be an object")
    token, hashed = raw.get("token"), raw.get("token_sha256")
    if (token is None) == (hashed is None):
        raise TokenFileError(f"{name} needs exactly one of 'token' and 'token_sha256'")
    if token is not None:
        if not isinstance(token, str) or not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
            raise TokenFileError(f"{name}: 'token' must be a string of {MIN_TOKEN_CHARS}+ characters")
        key = digest(token)
    else:
        try:
            key = bytes.fromhex(str(hashed))
        except ValueError:
            key = b""
        if len(key) != hashlib.sha256().digest_size:
            raise TokenFileError(f"{name}: 'token_sha256' must be 64 hex digits")
    subject = raw.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        raise TokenFileError(f"{name} needs a 'subject'")
    try:
        role = Role.parse(str(raw.get("role", "")))
    except ValueError as exc:
        raise TokenFileError(f"{name}: {exc}") from None
    namespaces = raw.get("namespaces")
    if role is Role.ADMIN:
        scope = ALL_NAMESPACES
    elif isinstance(namespaces, list) and all(isinstance(n, str) for n in namespaces):
        scope = NamespaceScope.of(namespaces)
    else:
        raise TokenFileError(f"{name} ({subject}): a {role.name.lower()} needs 'namespaces' (['*'] for all)")
    return key, Principal(subject.strip(), role, scope, "token")


def parse_tokens(data: bytes, where: str = "tokens file") -> StaticTokens:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise TokenFileError(f"{where}: not JSON ({exc})") from None
    items = doc.get("tokens") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise TokenFileError(f'{where}: expected {{"tokens": [...]}}')
    out: dict[bytes, Principal] = {}
    for i, raw in enumerate(items):
        key, principal = _entry(i, raw, where)
        if key in out:
            raise TokenFileError(f"{where}: tokens[{i}] repeats the token of {out[key].subject}")
        out[key] = principal
    return StaticTokens(out)


def load_tokens(path: Path) -> StaticTokens:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenFileError(f"cannot read tokens file {path}: {exc.strerror}") from None
    return parse_tokens(data, str(path))


def _stamp(path: Path) -> tuple[int, ...]:
    """What changes when the file does: written in place (mtime, ctime, size) or replaced (device and
    inode; a Kubernetes Secret volume swaps a symlink to a new directory)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class TokensFile:
    """The tokens of a file, read again when it changes. Not a value: it caches what it last loaded.

    `current()` costs a clock read between checks; every `check_every_s` it stats the file, and
    loads it again only when the stat differs from the one taken before the last load."""

    def __init__(
        self,
        path: Path,
        *,
        check_every_s: float = RELOAD_CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self._clock = clock
        try:
            # Stamped before reading: a change during the read is seen at the next check.
            self._seen: tuple[int, ...] = _stamp(path)
        except OSError as exc:
            raise TokenFileError(f"cannot read tokens file {path}: {exc.strerror}") from None
        self.tokens = load_tokens(path)
        self.reloads = 0
        self._checked = clock()

    def __len__(self) -> int:
        return len(self.tokens)

    def current(self) -> StaticTokens:
        now = self._clock()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            self._check()
        return self.tokens

    def _check(self) -> None:
        try:
            stamp = _stamp(self.path)
        except OSError as exc:
            if self._seen != ():
                log.error(
                    "tokens file unreadable; keeping the tokens last loaded",
                    extra={"path": str(self.path), "error": exc.strerror},
                )
            self._seen = ()
            return
        if stamp == self._seen:
            return
        self._seen = stamp
        try:
            self.tokens = load_tokens(self.path)
        except TokenFileError as exc:
            log.error(
                "tokens file changed but does not load; keeping the tokens last loaded",
                extra={"path": str(self.path), "error": str(exc)},
            )
            return
        self.reloads += 1
        log.info("tokens file reloaded", extra={"path": str(self.path), "tokens": len(self.tokens)})


def read_secret(path: Path, what: str) -> str:
    """A token kept alone in a file (the service token); surrounding whitespace is not part of it."""
    try:
        token = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read {what} {path}: {exc}") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenFileError(f"{what} {path} holds fewer than {MIN_TOKEN_CHARS} characters")
    return token
