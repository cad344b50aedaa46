"""Static bearer tokens: a file (a mounted Secret) mapping each token to a subject, role and namespaces.

Rule: tokens are looked up by their SHA-256 digest, never compared as text, and the file may hold the
digest instead of the token (`token_sha256`), so the Secret need not contain what a client sends.
A file that cannot be read or understood stops the process at start-up, naming the entry.

    {"tokens": [
      {"token": "…", "subject": "alice", "role": "viewer", "namespaces": ["shop"]},
      {"token_sha256": "9f86d08…", "subject": "ci", "role": "admin"}
    ]}

`namespaces` is required for viewers and editors (`["*"]` for every namespace); admins see every
namespace whatever it says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from wiretide.common.auth.principal import Principal, Role
from wiretide.common.auth.scope import ALL_NAMESPACES, NamespaceScope

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


def read_secret(path: Path, what: str) -> str:
    """A token kept alone in a file (the service token); surrounding whitespace is not part of it."""
    try:
        token = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read {what} {path}: {exc}") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenFileError(f"{what} {path} holds fewer than {MIN_TOKEN_CHARS} characters")
    return token
