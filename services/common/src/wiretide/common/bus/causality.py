"""The CausalEdgeBatch contract on `wt.causality.<node>`: its version, and reading one.

Rule: a consumer reads every version up to its own and refuses a newer one with a reason naming
both; a message that does not decode is counted (`decode_or_count`) and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from wiretide.common.bus.subscribe import decode_or_count
from wiretide.proto.v1 import causality_pb2

CAUSALITY_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class CausalityBatch:
    """What one message held: its edges, or why none were read."""

    edges: list[causality_pb2.CausalEdge]
    node: str = ""
    invalid: bool = False
    refused: str = ""


def read_causality(data: bytes, subject: str) -> CausalityBatch:
    batch = decode_or_count(causality_pb2.CausalEdgeBatch, data, subject)
    if batch is None:
        return CausalityBatch([], invalid=True)
    if batch.version > CAUSALITY_VERSION:
        return CausalityBatch(
            [],
            batch.node,
            refused=f"CausalEdgeBatch version {batch.version} on {subject} (this consumer reads up to "
            f"{CAUSALITY_VERSION})",
        )
    return CausalityBatch(list(batch.edges), batch.node)
