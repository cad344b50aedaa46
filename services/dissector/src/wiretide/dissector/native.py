"""The dissector's hot modules compiled with mypyc, used only when the build matches the sources.

`make setup` runs `services/dissector/build_native.py`, which compiles `MODULES` (the per-packet and
per-message path: flow table, TCP reassembly, pairing, HTTP/1, HTTP/2 with HPACK, gRPC and protobuf,
DNS, the database and messaging protocols, bodies, the entry builder, protocol detection) into
one extension in `build/native/dissector/`. When that build is used, and when the pure-Python modules
run instead, is `wiretide.common.native`'s rule, the same for every service.

Rule: the compiled build is never trusted blindly — a stale build is ignored, not loaded.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from pathlib import Path
from typing import Final

from wiretide.common import native as _common
from wiretide.common.native import ENV_DIR, ENV_SWITCH, MANIFEST, NativeModules

# Compiled together into one extension (calls between them are direct C calls). Not `api`: it is the
# plugin contract, and interpreted code (protocol plugins, tests) may subclass its classes, which a
# compiled class forbids. No module here may define a class that interpreted code subclasses.
MODULES: Final = (
    "wiretide.dissector.matching",
    "wiretide.dissector.pipeline",
    "wiretide.dissector.flows.defrag",
    "wiretide.dissector.flows.table",
    "wiretide.dissector.flows.tcp",
    "wiretide.dissector.protocols._body",
    "wiretide.dissector.protocols._numbers",
    "wiretide.dissector.protocols.amqp",
    "wiretide.dissector.protocols.dns",
    "wiretide.dissector.protocols.graphql",
    "wiretide.dissector.protocols.grpc",
    "wiretide.dissector.protocols.hpack",
    "wiretide.dissector.protocols.http1",
    "wiretide.dissector.protocols.http2",
    "wiretide.dissector.protocols.http_overlays",
    "wiretide.dissector.protocols.kafka",
    "wiretide.dissector.protocols.mongodb",
    "wiretide.dissector.protocols.mysql",
    "wiretide.dissector.protocols.postgresql",
    "wiretide.dissector.protocols.protobuf",
    "wiretide.dissector.protocols.redis",
    "wiretide.dissector.redact",
    "wiretide.dissector.registry",
)
NATIVE: Final = NativeModules("dissector", MODULES, Path(__file__).resolve().parents[2])
GROUP: Final = NATIVE.group
__all__ = ["ACTIVE", "ENV_DIR", "ENV_SWITCH", "GROUP", "MANIFEST", "MODULES", "NATIVE", "STATUS"]

source_of = NATIVE.source_of
fingerprint = NATIVE.fingerprint
build_dir = NATIVE.build_dir
usable = NATIVE.usable

_DIR, STATUS = NATIVE.decide()
ACTIVE: Final = _DIR is not None


def extend(package: str, path: MutableSequence[str]) -> None:
    """Put the compiled modules of `package` ahead of its sources (a package `__init__` calls this)."""
    _common.extend(_DIR, package, path)
