"""The one table of NATS subjects and JetStream streams. Nobody spells a subject anywhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


def entries_subject(node: str) -> str:
    """EntryBatches from the dissectors of one capture node."""
    return f"wt.entries.{_token(node)}"


ENTRIES_ALL: Final = "wt.entries.>"
IDENTITY_UPDATES: Final = "wt.identity.updates"
AGENT_EVENTS: Final = "wt.agents.events"
CAPTURE_STATS: Final = "wt.capture.stats"


def causality_subject(node: str) -> str:
    """CausalEdgeBatches (kernel-observed causality, eBPF) of one capture node."""
    return f"wt.causality.{_token(node)}"


CAUSALITY_ALL: Final = "wt.causality.>"


def tracer_facts_subject(replica: int) -> str:
    """Trace ids decided by one tracer replica for calls another replica holds copies of
    (services/tracer/.../partition.py), addressed to the replica that waits for them."""
    return f"wt.tracer.facts.{int(replica)}"


def _token(name: str) -> str:
    """A subject token: no dots, wildcards or whitespace."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return cleaned or "_"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_s: float
    max_bytes: int
    # Window in which a repeated Nats-Msg-Id is dropped by the server (publisher retries).
    duplicate_window_s: float = 120.0


ENTRIES_STREAM: Final = StreamSpec(
    name="WT_ENTRIES",
    subjects=(ENTRIES_ALL,),
    max_age_s=24 * 3600.0,
    max_bytes=2 * 1024**3,
)

STREAMS: Final = (ENTRIES_STREAM,)

# Durable consumer names.
STORE_WRITER_DURABLE: Final = "gateway-store"
