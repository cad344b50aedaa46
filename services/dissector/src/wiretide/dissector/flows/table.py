"""Per-flow state: who talks, what was seen, which protocol owns it.

Rule: a Flow is mutable state owned by the pipeline's bounded tables; it holds no parser logic.
"""

from __future__ import annotations

from typing import Any, Final

from wiretide.dissector.api import ProtocolSpec, Session
from wiretide.dissector.flows.sctp import SctpAssociation
from wiretide.dissector.flows.tcp import TcpStream
from wiretide.dissector.matching import Matcher

# Flow states: probing the first bytes, owned by a protocol, or only counted (nobody claimed it).
DETECT: Final = 0
PINNED: Final = 1
RAW: Final = 2


class Flow:
    """One L4 flow. Side 0 ("a") is whichever end sent the first packet we saw."""

    __slots__ = (
        "a_ip",
        "a_port",
        "b_ip",
        "b_port",
        "bytes_a",
        "bytes_b",
        "client",
        "closed",
        "early",
        "early_bytes",
        "endpoints",
        "error",
        "first_ts",
        "icmp_errors",
        "interface",
        "key",
        "last_entry_id",
        "last_ts",
        "link_id",
        "matcher",
        "pkts_a",
        "pkts_b",
        "resets",
        "rtt_ns",
        "sctp",
        "seen",
        "session",
        "spec",
        "state",
        "streams",
        "syn_ts",
        "tls",
        "transport",
        "upgrades",
    )

    def __init__(
        self,
        key: tuple[Any, ...],
        transport: str,
        a_ip: bytes,
        a_port: int,
        b_ip: bytes,
        b_port: int,
        ts: int,
    ) -> None:
        self.key = key
        self.transport = transport
        self.a_ip = a_ip
        self.a_port = a_port
        self.b_ip = b_ip
        self.b_port = b_port
        self.client: int | None = None  # 0 = a is the client, 1 = b is, None = not known yet
        self.first_ts = ts
        self.last_ts = ts
        self.pkts_a = self.pkts_b = 0
        self.bytes_a = self.bytes_b = 0
        self.streams: tuple[TcpStream, TcpStream] | None = (
            (TcpStream(), TcpStream()) if transport == "tcp" else None
        )
        # SCTP: the association's chunk state (flows/sctp.py); its user messages are this flow's chunks.
        self.sctp: SctpAssociation | None = SctpAssociation() if transport == "sctp" else None
        self.state = DETECT
        self.spec: ProtocolSpec | None = None
        self.session: Session | None = None
        self.matcher: Matcher | None = None
        # While undecided: the chunks seen so far (direction, bytes or gap size, capture time), held
        # once and replayed to the parser that claims the flow; allocated with the first chunk.
        self.early: list[tuple[int, bytes | int, int]] | None = None
        self.early_bytes = 0  # bytes seen while undecided (UDP: also those of datagrams let go)
        # While undecided: [bytes of side a, of side b, of each the probes last saw] (allocated with
        # `early`): the probes re-run once a side's first bytes have doubled.
        self.seen: list[int] | None = None
        self.upgrades = 0  # protocol switches so far (HTTP/1.1 101 → WebSocket, h2c...)
        self.syn_ts = 0
        self.rtt_ns: int | None = None
        self.resets = 0
        self.closed = False
        self.error: str | None = None
        self.tls: dict[str, Any] | None = None
        self.link_id: str | None = None
        self.last_entry_id: str | None = None
        # ICMP errors quoting this flow (icmp.py), a note each, carried by its later entries; bounded.
        self.icmp_errors: list[dict[str, Any]] | None = None
        self.interface = ""
        # (src ip, src port, dst ip, dst port, flow id) rendered once, for every entry of the flow.
        self.endpoints: tuple[str, int, str, int, str] | None = None
