"""Wiretide dissector: flows into API calls (entries).

Rule: the public surface is the plugin contract (`api`), the registry and the pipeline; everything
else is implementation.
"""

from wiretide.dissector import native as _native

_native.extend(__name__, __path__)  # compiled hot modules ahead of the sources, when their build is fresh

from wiretide.dissector.api import (  # noqa: E402
    FlowMark,
    Message,
    Presented,
    ProtocolSpec,
    Session,
    SessionConfig,
    Upgrade,
    Verdict,
    Violation,
)
from wiretide.dissector.pipeline import Limits, Pipeline  # noqa: E402
from wiretide.dissector.registry import ENTRY_POINT_GROUP, Registry, default_registry, parse_overrides  # noqa: E402

__all__ = [
    "ENTRY_POINT_GROUP",
    "FlowMark",
    "Limits",
    "Message",
    "Pipeline",
    "Presented",
    "ProtocolSpec",
    "Registry",
    "Session",
    "SessionConfig",
    "Upgrade",
    "Verdict",
    "Violation",
    "default_registry",
    "parse_overrides",
]
