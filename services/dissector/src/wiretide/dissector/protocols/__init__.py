"""The built-in protocols, in detection priority order (first YES wins among equals).

Rule: adding a protocol is one module with a `SPEC` at its bottom and one line here.
"""

from __future__ import annotations

from typing import Final

from wiretide.dissector.api import ProtocolSpec
from wiretide.dissector.protocols import dns, http1, tls, websocket

BUILTINS: Final[tuple[ProtocolSpec, ...]] = (http1.SPEC, tls.SPEC, dns.SPEC, dns.TCP_SPEC, websocket.SPEC)

__all__ = ["BUILTINS"]
