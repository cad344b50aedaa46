"""An agent's definition: its name, JavaScript source, settings (`env`) and enabled flag.

Rule: a definition is checked here once (name, sizes, types) before anything stores or runs it; the
JSON form below is what the store keeps, one key per agent.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
MAX_SOURCE_BYTES: Final = 256 * 1024  # an agent is a script, not a bundle; larger is refused
MAX_ENV_ITEMS: Final = 64
MAX_ENV_VALUE: Final = 4096


class InvalidAgent(ValueError):
    """A definition that cannot be stored: bad name, source too large, env not text."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidAgent(
            f"agent name {str(name)[:80]!r} must be 1-63 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class AgentDef:
    name: str
    source: str
    env: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    updated_ns: int = 0
    revision: int = 0  # the store's revision of this version (0 before it is stored)

    def check(self) -> AgentDef:
        check_name(self.name)
        if not isinstance(self.source, str):
            raise InvalidAgent("source must be text")
        if len(self.source.encode()) > MAX_SOURCE_BYTES:
            raise InvalidAgent(f"source larger than {MAX_SOURCE_BYTES // 1024} KiB")
        if not isinstance(self.env, dict) or len(self.env) > MAX_ENV_ITEMS:
            raise InvalidAgent(f"env must be an object of at most {MAX_ENV_ITEMS} settings")
        for key, value in self.env.items():
            if not isinstance(key, str) or not isinstance(value, str) or len(value) > MAX_ENV_VALUE:
                raise InvalidAgent(
                    f"env {str(key)[:40]!r}: values are text of at most {MAX_ENV_VALUE} characters"
                )
        return self

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "name": self.name,
                "source": self.source,
                "env": self.env,
                "enabled": self.enabled,
                "updated_ns": self.updated_ns or time.time_ns(),
            }
        )

    @classmethod
    def from_json(cls, data: bytes, revision: int = 0) -> AgentDef:
        try:
            doc: Any = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidAgent(f"stored agent is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidAgent("stored agent is not a JSON object")
        return cls(
            name=str(doc.get("name", "")),
            source=str(doc.get("source", "")),
            env=dict(doc.get("env") or {}),
            enabled=bool(doc.get("enabled", True)),
            updated_ns=int(doc.get("updated_ns") or 0),
            revision=revision,
        ).check()
