"""Wireshark display-filter fields a KFL filter accepts, and the Wiretide field each one reads.

Rule: a display-filter name is only ever a translation — it is bound to the Wiretide spelling in
`fields` (with the protocol it exists under and Wireshark's "any of them" meaning for fields that
name either end or a list), and the checker reports a warning naming that spelling; KFL's own
names always win over a display-filter name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from wiretide.common.kfl.ast import PathKey

Seconds = Literal["duration", "timestamp"]


@dataclass(frozen=True, slots=True)
class DisplayField:
    """One display-filter field: the document paths it reads and the conditions Wireshark implies."""

    name: str
    fields: tuple[tuple[PathKey, ...], ...]  # KFL spellings; more than one: any of them (`ip.addr`)
    flag: str | None = None  # the KFL protocol flag the field only exists under
    transport: str | None = None  # ... or the transport it only exists over (`tcp.port`)
    listed: bool = False  # fields[0] names a KFL list variable: a test holds for any element
    seconds: Seconds | None = None  # Wireshark writes times as seconds: a bare number is converted
    note: str = ""  # what differs from Wireshark, said in the warning

    def spelling(self) -> str:
        """The Wiretide spelling for the warning: `src.ip`, `src.ip or dst.ip`."""
        return " or ".join(spell(path) for path in self.fields)


def spell(path: tuple[PathKey, ...]) -> str:
    out = str(path[0])
    for key in path[1:]:
        out += f".{key}" if type(key) is str and key.isidentifier() else f'["{key}"]'
    return out


_SRC_IP: Final = ("src", "ip")
_DST_IP: Final = ("dst", "ip")
_SRC_PORT: Final = ("src", "port")
_DST_PORT: Final = ("dst", "port")


def _ports(transport: str) -> list[DisplayField]:
    return [
        DisplayField(f"{transport}.srcport", (_SRC_PORT,), transport=transport),
        DisplayField(f"{transport}.dstport", (_DST_PORT,), transport=transport),
        DisplayField(f"{transport}.port", (_SRC_PORT, _DST_PORT), transport=transport),
    ]


_FIELDS: Final = (
    *(
        field
        for ip in ("ip", "ipv6")
        for field in (
            DisplayField(f"{ip}.src", (_SRC_IP,)),
            DisplayField(f"{ip}.dst", (_DST_IP,)),
            DisplayField(f"{ip}.addr", (_SRC_IP, _DST_IP)),
            DisplayField(f"{ip}.src_host", (("src", "name"),)),
            DisplayField(f"{ip}.dst_host", (("dst", "name"),)),
            DisplayField(f"{ip}.host", (("src", "name"), ("dst", "name"))),
        )
    ),
    *_ports("tcp"),
    *_ports("udp"),
    *_ports("sctp"),
    DisplayField("http.request.method", (("method",),), flag="http"),
    DisplayField("http.request.uri", (("path",),), flag="http", note="the path, without the query string"),
    DisplayField("http.request.uri.path", (("path",),), flag="http"),
    DisplayField("http.request.uri.query", (("request", "query_string"),), flag="http"),
    DisplayField("http.request.full_uri", (("request", "url"),), flag="http"),
    DisplayField("http.response.code", (("status_code",),), flag="http"),
    DisplayField("http.response.phrase", (("response", "reason"),), flag="http"),
    DisplayField("http.host", (("request", "headers", "host"),), flag="http"),
    DisplayField("http.user_agent", (("request", "headers", "user-agent"),), flag="http"),
    DisplayField("http.time", (("elapsed_time",),), flag="http", seconds="duration"),
    DisplayField("dns.qry.name", (("dns_questions",),), flag="dns", listed=True),
    DisplayField("dns.a", (("dns_answers",),), flag="dns", listed=True),
    DisplayField("dns.aaaa", (("dns_answers",),), flag="dns", listed=True),
    DisplayField("dns.cname", (("dns_answers",),), flag="dns", listed=True),
    DisplayField("dns.flags.rcode", (("dns_rcode",),), flag="dns"),
    DisplayField("dns.time", (("elapsed_time",),), flag="dns", seconds="duration"),
    DisplayField(
        "radius.code",
        (("radius_code",),),
        flag="radius",
        note="the request's code (the answer's is `status_code`)",
    ),
    DisplayField("radius.User_Name", (("radius_user_name",),), flag="radius"),
    DisplayField("radius.NAS_Identifier", (("radius_nas_identifier",),), flag="radius"),
    DisplayField("radius.Calling_Station_Id", (("radius_calling_station_id",),), flag="radius"),
    DisplayField("radius.Acct_Status_Type", (("radius_acct_status_type",),), flag="radius"),
    DisplayField("radius.time", (("elapsed_time",),), flag="radius", seconds="duration"),
    *(
        field
        for tls in ("tls", "ssl")
        for field in (
            DisplayField(f"{tls}.handshake.extensions_server_name", (("tls", "sni"),)),
            DisplayField(f"{tls}.handshake.ja3", (("tls", "ja3"),)),
            DisplayField(f"{tls}.handshake.ja4", (("tls", "ja4"),)),
        )
    ),
    DisplayField("frame.time", (("timestamp",),), seconds="timestamp", note="when the request started"),
    DisplayField("frame.time_epoch", (("timestamp",),), seconds="timestamp", note="when the request started"),
    *(
        DisplayField(name, (("elapsed_time",),), seconds="duration", note="the call's duration")
        for name in ("frame.time_delta", "frame.time_delta_displayed", "tcp.time_delta")
    ),
    DisplayField("frame.interface_name", (("capture", "interface"),)),
)

DISPLAY_FIELDS: Final[Mapping[str, DisplayField]] = {field.name: field for field in _FIELDS}

# Wireshark protocol names: an unknown dotted name under one of these is a display-filter field
# Wiretide does not have, which deserves a better answer than "unknown variable".
PROTOCOLS: Final = frozenset(
    {
        "eth", "arp", "vlan", "ip", "ipv6", "icmp", "icmpv6", "tcp", "udp", "sctp", "frame", "http",
        "http2", "grpc", "dns", "mdns", "tls", "ssl", "kafka", "amqp", "redis", "ldap", "radius",
        "diameter", "websocket", "quic", "pgsql", "mysql",
    }
)  # fmt: skip
