"""The built-in protocols, in detection priority order (first YES wins among equals).

Rule: adding a protocol is one module with a `SPEC` at its bottom, one line here and its row in the
protocol table (`wiretide.common.protocols`, docs/protocols.md).
"""

from __future__ import annotations

from typing import Final

from wiretide.dissector import native

native.extend(__name__, __path__)

from wiretide.dissector.api import ProtocolSpec  # noqa: E402
from wiretide.dissector.protocols import (  # noqa: E402
    amqp,
    diameter,
    dns,
    http1,
    http2,
    kafka,
    ldap,
    mail,
    mongodb,
    mysql,
    postgresql,
    radius,
    redis,
    tls,
    websocket,
)

# HTTP/2 goes last: its mid-connection heuristic should only run when nothing else claims a flow.
# H2C_SPEC is reached only through HTTP/1.1's `Upgrade: h2c` (never by detection).
BUILTINS: Final[tuple[ProtocolSpec, ...]] = (
    http1.SPEC,
    tls.SPEC,
    dns.SPEC,
    dns.TCP_SPEC,
    radius.SPEC,
    ldap.SPEC,
    ldap.UDP_SPEC,
    mail.SMTP_SPEC,
    mail.IMAP_SPEC,
    mail.POP3_SPEC,
    websocket.SPEC,
    postgresql.SPEC,
    mysql.SPEC,
    mongodb.SPEC,
    redis.SPEC,
    diameter.SPEC,  # before Kafka: a Diameter header reads as a plausible Kafka size
    amqp.SPEC,  # before Kafka: its mid-stream length heuristic also takes AMQP frames
    kafka.SPEC,
    http2.SPEC,
    http2.H2C_SPEC,
)

__all__ = ["BUILTINS"]
