"""Wiretide dissector: flows into API calls (entries).

Rule: the public surface is the plugin contract (`api`), the registry and the pipeline; everything
else is implementation.
"""

from wiretide.dissector.api import (
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
from wiretide.dissector.pipeline import Limits, Pipeline
from wiretide.dissector.registry import ENTRY_POINT_GROUP, Registry, default_registry, parse_overrides

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
