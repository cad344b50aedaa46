"""LDAP v3 (RFC 4511) over TCP and CLDAP over UDP: operations paired by messageID, search filters as
RFC 4515 text, result codes by their RFC names, StartTLS followed into the TLS handshake.

Rule: one LDAPMessage is one BER element read by the bounded reader in `_ber` (no indefinite lengths,
no length beyond its container, no nesting beyond a named depth), and an element that breaks a rule
is counted and skipped — the message framing around it still holds, so the flow goes on. Secrets are
never copied into an entry: a simple bind's password, SASL credentials (both ways), the value of an
extended request (Password Modify carries passwords) and the values of password attributes are
replaced by the marker while parsing. A search's SearchResultEntry and SearchResultReference messages
are counted into the entry of its SearchResultDone (their attribute values are never kept).
SASL-wrapped traffic after a bind that negotiated a security layer (RFC 4422 §3.7) is framed by its
4-octet length: a Kerberos wrap token without confidentiality (RFC 4121 §4.2.4) is unwrapped and its
messages read; a sealed one is counted only.
"""

from __future__ import annotations

import base64
import struct
from collections import OrderedDict
from typing import Any, Final

from wiretide.common.protocols import LDAP_RESULT_CODES
from wiretide.dissector.api import (
    Event,
    Message,
    Presented,
    ProtocolSpec,
    SessionConfig,
    Upgrade,
    Verdict,
    Violation,
)
from wiretide.dissector.protocols._ber import (
    BOOLEAN,
    ENUMERATED,
    INTEGER,
    OCTET_STRING,
    SEQUENCE,
    BerError,
    boolean,
    children,
    expect,
    header,
    integer,
    text,
)

_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")

# A message longer than this is a length bomb, not LDAP: Active Directory refuses more than 10 MB
# (MaxReceiveBuffer), OpenLDAP 4 MiB from a bound client (sockbuf_max_incoming_auth); an entry sent
# back with large binary values stays far below it.
MAX_MESSAGE: Final = 64 << 20
# RFC 4422 §3.7: a SASL buffer's length is four octets; GSSAPI mechanisms cap it at 2^24 - 1.
MAX_SASL_BUFFER: Final = (1 << 24) - 1
# Bytes of one message read at least, whatever the body cap (a bind, a search request, a DN).
MIN_KEEP: Final = 4096
# Requests awaiting their answer per flow (the matcher's own bound, matching.MAX_PENDING).
MAX_PENDING: Final = 256
# Filter nesting rendered; deeper is shown as `(…)` and counted (a hostile filter, not a real one).
MAX_FILTER_DEPTH: Final = 32
# Characters of a rendered filter, a DN or a value kept in an entry.
MAX_FILTER_CHARS: Final = 4096
MAX_DN_CHARS: Final = 1024
VALUE_CHARS: Final = 256
# Attributes listed per message, values listed per attribute (the real counts are kept beside them).
MAX_ATTRIBUTES: Final = 64
MAX_VALUES: Final = 16
# DNs of a search's entries and URIs of its references listed (`entries` keeps the real count).
MAX_ENTRY_DNS: Final = 20
MAX_REFERRALS: Final = 8
MAX_CONTROLS: Final = 16
# Bytes scanned for the next LDAPMessage after a capture gap before the flow is given up.
MAX_RESYNC_SCAN: Final = 64 * 1024
# The redaction marker (`wiretide.dissector.redact.MARKER`).
MARKER: Final = "[REDACTED]"

STARTTLS_OID: Final = "1.3.6.1.4.1.1466.20037"
NOTICE_OF_DISCONNECTION_OID: Final = "1.3.6.1.4.1.1466.20036"

# RFC 4511 §4.2 .. §4.14 and Appendix B: the protocolOp tags (APPLICATION class), each with the
# operation it belongs to, its ASN.1 name (Wireshark's spelling) and whether the client sends it.
OPS: Final[dict[int, tuple[str, str, bool]]] = {
    0x60: ("bind", "bindRequest", True),
    0x61: ("bind", "bindResponse", False),
    0x42: ("unbind", "unbindRequest", True),
    0x63: ("search", "searchRequest", True),
    0x64: ("search", "searchResEntry", False),
    0x65: ("search", "searchResDone", False),
    0x73: ("search", "searchResRef", False),
    0x66: ("modify", "modifyRequest", True),
    0x67: ("modify", "modifyResponse", False),
    0x68: ("add", "addRequest", True),
    0x69: ("add", "addResponse", False),
    0x4A: ("delete", "delRequest", True),
    0x6B: ("delete", "delResponse", False),
    0x6C: ("modDN", "modDNRequest", True),
    0x6D: ("modDN", "modDNResponse", False),
    0x6E: ("compare", "compareRequest", True),
    0x6F: ("compare", "compareResponse", False),
    0x50: ("abandon", "abandonRequest", True),
    0x77: ("extended", "extendedReq", True),
    0x78: ("extended", "extendedResp", False),
    0x79: ("intermediate", "intermediateResponse", False),
}
_REQUEST_TAGS: Final = frozenset(t for t, (_, _, req) in OPS.items() if req)
_RESPONSE_TAGS: Final = frozenset(t for t, (_, _, req) in OPS.items() if not req)
# Responses that belong to an operation without ending it (RFC 4511 §4.5.2, §4.13).
_SEARCH_ENTRY: Final = 0x64
_SEARCH_REF: Final = 0x73
_INTERMEDIATE: Final = 0x79
# Requests never answered (RFC 4511 §4.3, §4.11): entries of their own.
_UNANSWERED: Final = frozenset({0x42, 0x50})

SCOPES: Final = {0: "baseObject", 1: "singleLevel", 2: "wholeSubtree", 3: "subordinateSubtree"}
_SCOPE_SHORT: Final = {0: "base", 1: "one", 2: "sub", 3: "children"}
DEREF: Final = {0: "neverDerefAliases", 1: "derefInSearching", 2: "derefFindingBaseObj", 3: "derefAlways"}
MODIFY_OPERATIONS: Final = {0: "add", 1: "delete", 2: "replace", 3: "increment"}
# Bind authentication choices (RFC 4511 §4.2; [9]-[11] are Microsoft's "sicily" NTLM binds).
_AUTH: Final = {
    0x80: "simple", 0xA3: "sasl", 0x89: "sicilyPackageDiscovery", 0x8A: "sicilyNegotiate",
    0x8B: "sicilyResponse",
}  # fmt: skip

# Extended operations and unsolicited notifications by OID (RFC 4511 §4.12, §4.4.1; RFC 3062, 4532,
# 3909, 2589, 5805, 4531; [MS-ADTS] 3.1.1.3.4.2).
EXTENDED_OPS: Final = {
    STARTTLS_OID: "StartTLS",
    NOTICE_OF_DISCONNECTION_OID: "Notice of Disconnection",
    "1.3.6.1.4.1.4203.1.11.1": "Password Modify",
    "1.3.6.1.4.1.4203.1.11.3": "Who am I?",
    "1.3.6.1.1.8": "Cancel",
    "1.3.6.1.4.1.1466.101.119.1": "Dynamic Refresh",
    "1.3.6.1.1.21.1": "Start Transaction",
    "1.3.6.1.1.21.2": "Aborted Transaction",
    "1.3.6.1.1.21.3": "End Transaction",
    "1.3.6.1.1.19": "Turn",
    "1.3.6.1.4.1.4203.1.9.1.4": "Sync Info",
    "1.2.840.113556.1.4.1781": "Fast Bind",
    "1.2.840.113556.1.4.2212": "Batch Request",
}
# Controls by OID (RFC 2696, 2891, 3296, 4527, 4528, 4533, 4370; [MS-ADTS] 3.1.1.3.4.1).
CONTROLS: Final = {
    "1.2.840.113556.1.4.319": "pagedResults",
    "1.2.840.113556.1.4.473": "serverSort",
    "1.2.840.113556.1.4.474": "serverSortResponse",
    "2.16.840.1.113730.3.4.2": "manageDsaIT",
    "2.16.840.1.113730.3.4.9": "virtualListView",
    "2.16.840.1.113730.3.4.10": "virtualListViewResponse",
    "2.16.840.1.113730.3.4.18": "proxiedAuthorization",
    "1.3.6.1.1.12": "assertion",
    "1.3.6.1.1.13.1": "preRead",
    "1.3.6.1.1.13.2": "postRead",
    "1.3.6.1.1.22": "dontUseCopy",
    "1.3.6.1.4.1.4203.1.9.1.1": "syncRequest",
    "1.3.6.1.4.1.4203.1.9.1.2": "syncState",
    "1.3.6.1.4.1.4203.1.9.1.3": "syncDone",
    "1.3.6.1.4.1.4203.1.10.1": "subentries",
    "1.3.6.1.4.1.42.2.27.8.5.1": "passwordPolicy",
    "1.3.6.1.4.1.4203.666.5.12": "relax",
    "1.2.826.0.1.3344810.2.3": "matchedValues",
    "1.2.840.113556.1.4.1413": "permissiveModify",
    "1.2.840.113556.1.4.801": "sdFlags",
    "1.2.840.113556.1.4.528": "notification",
    "1.2.840.113556.1.4.417": "showDeleted",
    "1.2.840.113556.1.4.1339": "domainScope",
    "1.2.840.113556.1.4.529": "extendedDn",
    "1.2.840.113556.1.4.1340": "searchOptions",
}
# Attributes whose values are secrets (lower-case): never kept, in a filter, an add, a modify or a
# compare (`compare userPassword` is a password check).
SECRET_ATTRIBUTES: Final = frozenset(
    {
        "userpassword", "unicodepwd", "authpassword", "sambantpassword", "sambalmpassword",
        "krbprincipalkey", "dbcspwd", "supplementalcredentials", "ntpwdhistory", "lmpwdhistory",
        "msds-managedpassword", "ms-mcs-admpwd", "mslaps-password", "mslaps-encryptedpassword",
        "userpkcs12", "clearpassword", "olcrootpw",
    }
)  # fmt: skip

# RFC 4515 §3: characters escaped in an assertion value — `*()\\` and NUL must be; the other control
# characters are too, so that what is shown can be read.
_ESCAPES: Final = {
    **{b: f"\\{b:02x}" for b in (*range(0x20), 0x7F)},
    ord("("): "\\28", ord(")"): "\\29", ord("*"): "\\2a", ord("\\"): "\\5c",
}  # fmt: skip
_SPECIAL: Final = frozenset(_ESCAPES)

# Filter choices (RFC 4511 §4.5.1.7).
_AND, _OR, _NOT = 0xA0, 0xA1, 0xA2
_EQUALITY, _SUBSTRINGS, _GREATER, _LESS, _PRESENT, _APPROX, _EXTENSIBLE = (
    0xA3, 0xA4, 0xA5, 0xA6, 0x87, 0xA8, 0xA9,
)  # fmt: skip
_RELATIONS: Final = {_EQUALITY: "=", _GREATER: ">=", _LESS: "<=", _APPROX: "~="}


class _Cut(Exception):
    """A filter deeper than MAX_FILTER_DEPTH (rendered as `(…)`)."""


def _secret(attribute: str) -> bool:
    base = attribute.split(";", 1)[0].lower()
    return base in SECRET_ATTRIBUTES


def escape_value(raw: bytes) -> str:
    """An assertion value as RFC 4515 text: `*()\\` and NUL escaped, bytes that are not UTF-8 as \\xx."""
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"\\{b:02x}" if b >= 0x80 or b in _SPECIAL else chr(b) for b in raw)
    for b in raw:
        if b in _SPECIAL:
            return value.translate(_ESCAPES)
    return value


def _dn(data: bytes, s: int, e: int) -> str:
    return text(data, s, e, MAX_DN_CHARS)


def render_filter(data: bytes, ident: int, s: int, e: int, depth: int = 0) -> str:
    """One Filter element (its identifier and contents) as RFC 4515 text. Raises BerError."""
    if depth > MAX_FILTER_DEPTH:
        raise _Cut
    if ident in (_AND, _OR):
        inner = "".join(render_filter(data, i, cs, ce, depth + 1) for i, cs, ce in children(data, s, e))
        return f"({'&' if ident == _AND else '|'}{inner})"
    if ident == _NOT:
        i, cs, ce = header(data, s, e)
        return f"(!{render_filter(data, i, cs, ce, depth + 1)})"
    if ident in _RELATIONS:
        as_, ae = expect(data, s, e, OCTET_STRING)
        vs, ve = expect(data, ae, e, OCTET_STRING)
        attribute = text(data, as_, ae, VALUE_CHARS)
        value = MARKER if _secret(attribute) else escape_value(data[vs:ve])
        return f"({attribute}{_RELATIONS[ident]}{value})"
    if ident == _PRESENT:
        return f"({text(data, s, e, VALUE_CHARS)}=*)"
    if ident == _SUBSTRINGS:
        as_, ae = expect(data, s, e, OCTET_STRING)
        ss, se = expect(data, ae, e, SEQUENCE)
        attribute = text(data, as_, ae, VALUE_CHARS)
        initial = final = ""
        middle: list[str] = []
        for i, cs, ce in children(data, ss, se):
            value = MARKER if _secret(attribute) else escape_value(data[cs:ce])
            if i == 0x80:
                initial = value
            elif i == 0x81:
                middle.append(value)
            elif i == 0x82:
                final = value
            else:
                raise BerError(f"substring choice 0x{i:02x}")
        return f"({attribute}={initial}*{''.join(m + '*' for m in middle)}{final})"
    if ident == _EXTENSIBLE:
        rule = attribute = value = ""
        dn_attributes = False
        for i, cs, ce in children(data, s, e):
            if i == 0x81:
                rule = text(data, cs, ce, VALUE_CHARS)
            elif i == 0x82:
                attribute = text(data, cs, ce, VALUE_CHARS)
            elif i == 0x83:
                value = MARKER if _secret(attribute) else escape_value(data[cs:ce])
            elif i == 0x84:
                dn_attributes = boolean(data, cs, ce)
        return f"({attribute}{':dn' if dn_attributes else ''}{':' + rule if rule else ''}:={value})"
    raise BerError(f"filter choice 0x{ident:02x}")


def _value(raw: bytes) -> Any:
    """An attribute value: text when it is UTF-8, else `{"base64": ...}` (both cut at VALUE_CHARS)."""
    cut = raw[:VALUE_CHARS]
    try:
        return cut.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(cut).decode("ascii")}


def _attribute(data: bytes, s: int, e: int, clip: bool) -> dict[str, Any]:
    """A PartialAttribute / Attribute: {type, values (at most MAX_VALUES), values_count}."""
    ts_, te = expect(data, s, e, OCTET_STRING, clip)
    name = text(data, ts_, te, VALUE_CHARS)
    out: dict[str, Any] = {"type": name}
    if te >= e:
        return out
    vs, ve = expect(data, te, e, 0x31, clip)
    values = children(data, vs, ve, clip)
    if _secret(name):
        out["values"] = [MARKER] if values else []
    else:
        out["values"] = [_value(data[cs:ce]) for _, cs, ce in values[:MAX_VALUES]]
    out["values_count"] = len(values)
    return out


def _controls(data: bytes, s: int, e: int, clip: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ident, cs, ce in children(data, s, e, clip)[:MAX_CONTROLS]:
        if ident != SEQUENCE:
            raise BerError("control is not a SEQUENCE")
        parts = children(data, cs, ce, clip)
        if not parts or parts[0][0] != OCTET_STRING:
            raise BerError("control without its type")
        oid = text(data, parts[0][1], parts[0][2], VALUE_CHARS)
        control: dict[str, Any] = {"oid": oid}
        if oid in CONTROLS:
            control["name"] = CONTROLS[oid]
        control["critical"] = any(i == BOOLEAN and boolean(data, a, b) for i, a, b in parts[1:])
        out.append(control)
    return out


def _result(data: bytes, parts: list[tuple[int, int, int]], out: dict[str, Any]) -> int:
    """LDAPResult (RFC 4511 §4.1.9) into `out`; returns where the operation's own fields start."""
    if len(parts) < 3 or parts[0][0] != ENUMERATED:
        raise BerError("LDAPResult without resultCode, matchedDN and diagnosticMessage")
    code = integer(data, parts[0][1], parts[0][2])
    out["result_code"] = code
    out["result"] = LDAP_RESULT_CODES.get(code, str(code))
    matched = _dn(data, parts[1][1], parts[1][2])
    if matched:
        out["matched_dn"] = matched
    message = text(data, parts[2][1], parts[2][2], VALUE_CHARS * 4)
    if message:
        out["diagnostic_message"] = message
    i = 3
    if len(parts) > 3 and parts[3][0] == 0xA3:  # referral [3] SEQUENCE OF URI
        uris = children(data, parts[3][1], parts[3][2])
        out["referral"] = [text(data, s, e, VALUE_CHARS) for _, s, e in uris[:MAX_REFERRALS]]
        i = 4
    return i


def _request(data: bytes, tag: int, s: int, e: int, clip: bool, req: dict[str, Any]) -> None:
    """The operation's fields of a request into `req` (raises BerError; what was read stays)."""
    if tag == 0x4A:  # DelRequest ::= [APPLICATION 10] LDAPDN
        req["dn"] = _dn(data, s, e)
        return
    if tag == 0x50:  # AbandonRequest ::= [APPLICATION 16] MessageID
        req["abandon_id"] = integer(data, s, e)
        return
    if tag == 0x42:  # UnbindRequest ::= [APPLICATION 2] NULL
        return
    parts = children(data, s, e, clip)
    if tag == 0x63:
        _search(data, parts, req)
    elif tag == 0x60:
        _bind(data, parts, req)
    elif tag in (0x66, 0x68):
        if not parts or parts[0][0] != OCTET_STRING:
            raise BerError("modify/add without its DN")
        req["dn"] = _dn(data, parts[0][1], parts[0][2])
        if len(parts) < 2:
            return
        items = children(data, parts[1][1], parts[1][2], clip)
        listed: list[dict[str, Any]] = []
        for ident, cs, ce in items[:MAX_ATTRIBUTES]:
            if ident != SEQUENCE:
                raise BerError("change/attribute is not a SEQUENCE")
            if tag == 0x66:  # change ::= SEQUENCE { operation ENUMERATED, modification PartialAttribute }
                os_, oe = expect(data, cs, ce, ENUMERATED, clip)
                code = integer(data, os_, oe)
                ms, me = expect(data, oe, ce, SEQUENCE, clip)
                change = {"operation": MODIFY_OPERATIONS.get(code, str(code))}
                change.update(_attribute(data, ms, me, clip))
                listed.append(change)
            else:
                listed.append(_attribute(data, cs, ce, clip))
        key = "changes" if tag == 0x66 else "attributes"
        req[key] = listed
        if len(items) > len(listed):
            req[f"{key}_count"] = len(items)
    elif tag == 0x6C:  # ModifyDNRequest
        if len(parts) < 3:
            raise BerError("modDN without entry, newrdn and deleteoldrdn")
        req["dn"] = _dn(data, parts[0][1], parts[0][2])
        req["new_rdn"] = _dn(data, parts[1][1], parts[1][2])
        req["delete_old_rdn"] = boolean(data, parts[2][1], parts[2][2])
        if len(parts) > 3 and parts[3][0] == 0x80:
            req["new_superior"] = _dn(data, parts[3][1], parts[3][2])
    elif tag == 0x6E:  # CompareRequest
        if len(parts) < 2 or parts[1][0] != SEQUENCE:
            raise BerError("compare without entry and assertion")
        req["dn"] = _dn(data, parts[0][1], parts[0][2])
        as_, ae = expect(data, parts[1][1], parts[1][2], OCTET_STRING, clip)
        vs, ve = expect(data, ae, parts[1][2], OCTET_STRING, clip)
        attribute = text(data, as_, ae, VALUE_CHARS)
        req["attribute"] = attribute
        req["value"] = MARKER if _secret(attribute) else _value(data[vs:ve])
    elif tag == 0x77:  # ExtendedRequest
        for ident, cs, ce in parts:
            if ident == 0x80:
                oid = text(data, cs, ce, VALUE_CHARS)
                req["oid"] = oid
                if oid in EXTENDED_OPS:
                    req["name"] = EXTENDED_OPS[oid]
            elif ident == 0x81:  # never kept: Password Modify's carries the old and new passwords
                req["value_size"] = ce - cs


def _bind(data: bytes, parts: list[tuple[int, int, int]], req: dict[str, Any]) -> None:
    if len(parts) < 3 or parts[0][0] != INTEGER:
        raise BerError("bind without version, name and authentication")
    req["version"] = integer(data, parts[0][1], parts[0][2])
    req["dn"] = _dn(data, parts[1][1], parts[1][2])
    ident, cs, ce = parts[2]
    kind = _AUTH.get(ident, f"[{ident & 0x1F}]")
    req["authentication"] = kind
    if ident == 0x80:
        if ce > cs:
            req["password"] = MARKER
        else:  # RFC 4513 §5.1.1/§5.1.2: anonymous (no name) or unauthenticated (a name) bind
            req["anonymous" if not req["dn"] else "unauthenticated"] = True
    elif ident == 0xA3:  # SaslCredentials ::= SEQUENCE { mechanism LDAPString, credentials OPTIONAL }
        sasl = children(data, cs, ce)
        if not sasl or sasl[0][0] != OCTET_STRING:
            raise BerError("SASL bind without its mechanism")
        req["mechanism"] = text(data, sasl[0][1], sasl[0][2], VALUE_CHARS)
        if len(sasl) > 1:
            req["credentials"] = MARKER
            req["credentials_size"] = sasl[1][2] - sasl[1][1]
    elif ce > cs:
        req["credentials"] = MARKER
        req["credentials_size"] = ce - cs


def _search(data: bytes, parts: list[tuple[int, int, int]], req: dict[str, Any]) -> None:
    if len(parts) < 6 or parts[0][0] != OCTET_STRING or parts[1][0] != ENUMERATED:
        raise BerError("search without base, scope and limits")
    req["dn"] = _dn(data, parts[0][1], parts[0][2])
    scope = integer(data, parts[1][1], parts[1][2])
    req["scope"] = SCOPES.get(scope, str(scope))
    deref = integer(data, parts[2][1], parts[2][2])
    req["deref_aliases"] = DEREF.get(deref, str(deref))
    req["size_limit"] = integer(data, parts[3][1], parts[3][2])
    req["time_limit"] = integer(data, parts[4][1], parts[4][2])
    req["types_only"] = boolean(data, parts[5][1], parts[5][2])
    if len(parts) < 7:
        return
    ident, fs, fe = parts[6]
    try:
        rendered = render_filter(data, ident, fs, fe)
    except _Cut:
        rendered = "(…)"
        req["filter_too_deep"] = True
    except RecursionError:  # pragma: no cover - MAX_FILTER_DEPTH keeps far below the limit
        rendered = "(…)"
        req["filter_too_deep"] = True
    if len(rendered) > MAX_FILTER_CHARS:
        rendered = rendered[:MAX_FILTER_CHARS] + "…"
        req["filter_truncated"] = True
    req["filter"] = rendered
    if len(parts) > 7 and parts[7][0] == SEQUENCE:
        names = children(data, parts[7][1], parts[7][2])
        req["attributes"] = [text(data, s, e, VALUE_CHARS) for _, s, e in names[:MAX_ATTRIBUTES]]
        if len(names) > MAX_ATTRIBUTES:
            req["attributes_count"] = len(names)


def _scan_resync(data: bytes, start: int) -> int:
    """The offset of the first plausible LDAPMessage at or after `start` (-1 when none in reach):
    SEQUENCE, a definite length, an INTEGER messageID of 1-4 octets and a known protocolOp."""
    stop = min(len(data), start + MAX_RESYNC_SCAN)
    pos = data.find(b"\x30", start, stop)
    while pos >= 0:
        try:
            _, cs, ce = header(data, pos, len(data), clip=True)
            ms, me = expect(data, cs, ce, INTEGER, clip=True)
            if 1 <= me - ms <= 4 and integer(data, ms, me) >= 0 and me < ce and data[me] in OPS:
                return pos
        except BerError:
            pass
        pos = data.find(b"\x30", pos + 1, stop)
    return -1


class _Op:
    """A request the server has yet to finish answering: what its response parts add up to."""

    __slots__ = (
        "dns",
        "entries",
        "intermediate",
        "messages",
        "oid",
        "operation",
        "refs",
        "rsize",
        "rts",
        "uris",
    )

    def __init__(self, operation: str, oid: str | None) -> None:
        self.operation = operation
        self.oid = oid
        self.entries = 0
        self.refs = 0
        self.intermediate = 0
        self.messages = 0
        self.rsize = 0
        self.rts = 0
        self.dns: list[str] = []
        self.uris: list[str] = []


class _Direction:
    __slots__ = ("buf", "lost", "skip")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.skip = 0  # bytes of an over-cap message (or SASL buffer) still to pass over
        self.lost = False  # after a capture gap: looking for the next LDAPMessage


class LdapSession:
    """Both directions of one LDAP connection (TCP) or CLDAP flow (UDP, `datagrams=True`)."""

    __slots__ = ("c", "counters", "datagrams", "dead", "keep", "ops", "s", "sealed", "starttls", "upgraded")

    def __init__(self, config: SessionConfig, datagrams: bool = False) -> None:
        self.keep = max(config.body_cap, MIN_KEEP)
        self.datagrams = datagrams
        self.c = _Direction()
        self.s = _Direction()
        self.ops: OrderedDict[int, _Op] = OrderedDict()
        self.counters: dict[str, int] = {}
        self.dead = False
        self.starttls: int | None = None  # the messageID of a pending StartTLS request
        self.upgraded = False  # StartTLS succeeded: the rest of the flow is TLS
        self.sealed = [0, 0, 0, 0]  # SASL buffers counted unread: client n, bytes, server n, bytes

    # ---- the Session interface ---------------------------------------------------------------

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        out: list[Event] = []
        if self.dead or not data:
            return out
        if self.datagrams:
            self._frames(from_client, data, ts, out, datagram=True)
            return out
        d = self.c if from_client else self.s
        if d.skip:
            n = len(data)
            if n <= d.skip:
                d.skip -= n
                return out
            data = data[d.skip :]
            d.skip = 0
        if d.buf:
            d.buf += data
            data = bytes(d.buf)
            d.buf.clear()
        if d.lost:
            pos = _scan_resync(data, 0)
            if pos < 0:
                if len(data) > MAX_RESYNC_SCAN:
                    return self._violation(out, "no LDAPMessage found after a capture gap")
                d.buf += data
                return out
            d.lost = False
            self._count("resynced")
            data = data[pos:]
        rest = self._frames(from_client, data, ts, out)
        if rest is not None and not self.dead:
            d.buf += rest
        return out

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        if self.dead:
            return []
        d = self.c if from_client else self.s
        self._count("gaps")
        if d.skip and size <= d.skip and not d.buf:
            d.skip -= size  # inside a message already read as far as kept: only its tail is lost
            return []
        d.skip = 0
        d.buf.clear()
        d.lost = True
        return []

    def close(self, ts: int) -> list[Event]:
        out: list[Event] = []
        if self.dead:
            return out
        self.dead = True
        for d, side in ((self.c, "client"), (self.s, "server")):
            if d.buf:
                self._count(f"{side}_cut_message")
        sealed = self.sealed
        if sealed[0] or sealed[2]:
            fields = {
                "operation": "sasl_sealed", "client_buffers": sealed[0], "client_bytes": sealed[1],
                "server_buffers": sealed[2], "server_bytes": sealed[3],
            }  # fmt: skip
            out.append(Message(True, ts, ts, sealed[1] + sealed[3], fields, standalone=True))
        for msgid, op in self.ops.items():
            if op.messages:  # answered in part (a search cut short): what was answered goes out
                out.append(self._response(msgid, op, {}, ts, 0, "closed"))
        self.ops.clear()
        return out

    # ---- framing -----------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def _violation(self, out: list[Event], reason: str) -> list[Event]:
        self.dead = True
        out.append(Violation(f"ldap: {reason}"))
        return out

    def _frames(
        self, from_client: bool, data: bytes, ts: int, out: list[Event], datagram: bool = False
    ) -> bytes | None:
        """Read whole LDAPMessages (and SASL buffers) from `data`; returns the bytes of an incomplete
        one to keep for the next chunk (None when there are none)."""
        keep = self.keep
        size = len(data)
        pos = 0
        d = self.c if from_client else self.s
        while pos < size:
            if from_client and self.starttls is not None and data[pos] == 0x16:
                return data[pos:]  # a ClientHello racing the StartTLS answer: the TLS session's
            first = data[pos]
            if first == 0x30:
                try:
                    _, start, _ = header(data, pos, size, clip=True)
                    length = (
                        int.from_bytes(data[pos + 2 : start], "big")
                        if data[pos + 1] & 0x80
                        else data[pos + 1]
                    )
                except BerError as exc:
                    if str(exc) == "cut length" and not datagram:
                        return data[pos:]
                    self._count("framing_errors")
                    if datagram:
                        return None
                    self._violation(out, f"LDAPMessage header: {exc}")
                    return None
                total = start - pos + length
                if length > MAX_MESSAGE:
                    self._count("length_bombs")
                    if datagram:
                        return None
                    self._violation(out, f"LDAPMessage of {length} bytes")
                    return None
                if size - pos >= total:
                    self._message(data, pos, start, pos + total, from_client, ts, total, False, False, out)
                    pos += total
                    if self.upgraded:
                        # The server's bytes after its StartTLS answer are already TLS records.
                        out.append(Upgrade("tls", bytes(self.c.buf), data[pos:] if not from_client else b""))
                        self.c.buf.clear()
                        return None
                elif datagram:  # a datagram ends inside the message: what it holds is read
                    self._count("cut_datagrams")
                    self._message(data, pos, start, size, from_client, ts, size - pos, True, False, out)
                    return None
                elif total > keep:
                    if size - pos < keep:
                        return data[pos:]
                    self._message(data, pos, start, pos + keep, from_client, ts, total, True, False, out)
                    d.skip = total - (size - pos)
                    self._count("oversized_messages")
                    return None
                else:
                    return data[pos:]
            elif first == 0 and not datagram:  # RFC 4422 §3.7: a SASL buffer, 4-octet length first
                if size - pos < 4:
                    return data[pos:]
                length = _U32.unpack_from(data, pos)[0]
                if length == 0 or length > MAX_SASL_BUFFER:
                    self._count("length_bombs")
                    self._violation(out, f"SASL buffer of {length} bytes")
                    return None
                total = 4 + length
                if total > max(keep, 64 * 1024):
                    self._sealed(from_client, total)
                    self._count("sasl_oversized")
                    if size - pos >= total:
                        pos += total
                        continue
                    d.skip = total - (size - pos)
                    return None
                if size - pos < total:
                    return data[pos:]
                self._sasl(data, pos + 4, pos + total, from_client, ts, out)
                pos += total
            else:
                self._count("framing_errors")
                if datagram:
                    return None
                self._violation(out, f"0x{first:02x} where an LDAPMessage starts")
                return None
            if self.dead:
                return None
        return None

    def _sealed(self, from_client: bool, size: int) -> None:
        i = 0 if from_client else 2
        self.sealed[i] += 1
        self.sealed[i + 1] += size

    def _sasl(self, data: bytes, start: int, stop: int, from_client: bool, ts: int, out: list[Event]) -> None:
        """One SASL buffer: a Kerberos wrap token (RFC 4121 §4.2.6.2) without confidentiality is
        unwrapped (undoing its right rotation, dropping its EC checksum octets) and its LDAPMessages
        read; anything else (sealed, NTLM, the RFC 1964 token) is counted."""
        token = data[start:stop]
        if len(token) > 16 and token[0] == 0x05 and token[1] == 0x04 and not token[2] & 0x02:
            ec = _U16.unpack_from(token, 4)[0]
            rrc = _U16.unpack_from(token, 6)[0]
            body = token[16:]
            if body:
                rrc %= len(body)
                body = body[rrc:] + body[:rrc]
            plain = body[: len(body) - ec] if ec <= len(body) else b""
            if plain[:1] == b"\x30":
                self._count("sasl_integrity_buffers")
                pos = 0
                n = len(plain)
                while pos < n and not self.dead:
                    try:
                        _, cs, ce = header(plain, pos, n)
                    except BerError:
                        self._count("malformed")
                        break
                    self._message(plain, pos, cs, ce, from_client, ts, ce - pos, False, True, out)
                    pos = ce
                return
        self._sealed(from_client, stop - start + 4)

    # ---- one LDAPMessage ---------------------------------------------------------------------

    def _message(
        self,
        data: bytes,
        pos: int,
        start: int,
        stop: int,
        from_client: bool,
        ts: int,
        size: int,
        cut: bool,
        sasl: bool,
        out: list[Event],
    ) -> None:
        """LDAPMessage ::= SEQUENCE { messageID, protocolOp, controls [0] OPTIONAL } (RFC 4511 §4.1.1)
        whose contents are data[start:stop]; `cut` when the bytes end before the message does."""
        try:
            ms, me = expect(data, start, stop, INTEGER, cut)
            msgid = integer(data, ms, me)
            tag, os_, oe = header(data, me, stop, cut)
            if tag == OCTET_STRING:  # CLDAP as RFC 1798 sends it: a `user` LDAPDN before the operation
                tag, os_, oe = header(data, oe, stop, cut)
        except BerError:
            self._count("malformed")
            return
        op = OPS.get(tag)
        if op is None or op[2] != from_client:
            self._count("malformed" if op is None else "wrong_direction")
            return
        operation, name, _ = op
        fields: dict[str, Any] = {"message_id": msgid, "operation": operation, "protocol_op": name}
        if sasl:
            fields["sasl_wrapped"] = True
        try:
            if from_client:
                _request(data, tag, os_, oe, cut, fields)
            elif tag not in (_SEARCH_ENTRY, _SEARCH_REF, _INTERMEDIATE):
                parts = children(data, os_, oe, cut)
                i = _result(data, parts, fields)
                for ident, cs, ce in parts[i:]:
                    if ident == 0x87:  # BindResponse serverSaslCreds: a credential, never kept
                        fields["server_sasl_creds"] = MARKER
                    elif ident == 0x8A:
                        oid = text(data, cs, ce, VALUE_CHARS)
                        fields["oid"] = oid
                        if oid in EXTENDED_OPS:
                            fields["name"] = EXTENDED_OPS[oid]
                    elif ident == 0x8B:
                        fields["value_size"] = ce - cs
            if oe < stop:
                ident, cs, ce = header(data, oe, stop, cut)
                if ident == 0xA0:
                    fields["controls"] = _controls(data, cs, ce, cut)
        except BerError as exc:
            if cut:
                fields["truncated"] = True
            else:
                fields["malformed"] = str(exc)
                self._count("malformed")
        if cut and from_client:
            fields["truncated"] = True
        if from_client:
            self._on_request(tag, msgid, fields, ts, size, cut, out)
        else:
            self._on_response(data, tag, os_, oe, cut, msgid, fields, ts, size, out)

    def _on_request(
        self, tag: int, msgid: int, fields: dict[str, Any], ts: int, size: int, cut: bool, out: list[Event]
    ) -> None:
        standalone = tag in _UNANSWERED
        out.append(Message(True, ts, ts, size, fields, key=msgid, standalone=standalone, truncated=cut))
        if standalone:
            if tag == 0x50:
                self.ops.pop(fields.get("abandon_id", -1), None)
            return
        oid = fields.get("oid")
        self.ops.pop(msgid, None)
        self.ops[msgid] = _Op(fields["operation"], oid if type(oid) is str else None)
        if len(self.ops) > MAX_PENDING:
            self.ops.popitem(last=False)
            self._count("pending_dropped")
        if oid == STARTTLS_OID:
            self.starttls = msgid

    def _on_response(
        self,
        data: bytes,
        tag: int,
        s: int,
        e: int,
        cut: bool,
        msgid: int,
        fields: dict[str, Any],
        ts: int,
        size: int,
        out: list[Event],
    ) -> None:
        if msgid == 0 and tag == 0x78:  # RFC 4511 §4.4: an unsolicited notification
            fields["operation"] = "notification"
            out.append(Message(False, ts, ts, size, fields, key=0, standalone=True))
            if fields.get("oid") == NOTICE_OF_DISCONNECTION_OID:
                self._count("notice_of_disconnection")
            return
        op = self.ops.get(msgid)
        if tag in (_SEARCH_ENTRY, _SEARCH_REF, _INTERMEDIATE):
            if op is None:
                op = _Op("search" if tag != _INTERMEDIATE else "intermediate", None)
                self.ops[msgid] = op
                if len(self.ops) > MAX_PENDING:
                    self.ops.popitem(last=False)
                    self._count("pending_dropped")
            if not op.messages:
                op.rts = ts
            op.messages += 1
            op.rsize += size
            try:
                if tag == _SEARCH_ENTRY:
                    op.entries += 1
                    if len(op.dns) < MAX_ENTRY_DNS:
                        ds, de = expect(data, s, e, OCTET_STRING, cut)
                        op.dns.append(_dn(data, ds, de))
                elif tag == _SEARCH_REF:
                    op.refs += 1
                    if len(op.uris) < MAX_REFERRALS:
                        us, ue = expect(data, s, e, OCTET_STRING, cut)
                        op.uris.append(text(data, us, ue, VALUE_CHARS))
                else:
                    op.intermediate += 1
            except BerError:
                self._count("malformed")
            return
        if op is not None:
            del self.ops[msgid]
            out.append(self._response(msgid, op, fields, ts, size, None))
            if op.oid == STARTTLS_OID and msgid == self.starttls:
                self.starttls = None
                if fields.get("result_code") == 0:
                    self._upgrade(out)
            return
        fields["message_count"] = 1
        out.append(Message(False, ts, ts, size, fields, key=msgid))

    def _response(
        self, msgid: int, op: _Op, fields: dict[str, Any], ts: int, size: int, closed: str | None
    ) -> Message:
        """The entry's response: the final message's fields plus what the earlier parts added."""
        if closed is not None:
            fields = {"message_id": msgid, "operation": op.operation, "incomplete": True}
        if op.operation == "search" or op.entries or op.refs:
            fields["entries"] = op.entries
            fields["references"] = op.refs
            if op.dns:
                fields["entry_dns"] = op.dns
            if op.uris:
                fields["reference_uris"] = op.uris
        if op.intermediate:
            fields["intermediate"] = op.intermediate
        fields["message_count"] = op.messages + (0 if closed else 1)
        first = op.rts if op.messages else ts
        return Message(False, first, ts, op.rsize + size, fields, key=msgid)

    def _upgrade(self, out: list[Event]) -> None:
        """StartTLS succeeded (RFC 4511 §4.14.2): the next bytes both ways are the TLS handshake
        (`_frames` hands them over in the Upgrade event)."""
        if self.datagrams:
            return
        self.dead = True
        self.upgraded = True
        self._count("starttls")


def _tcp_session(config: SessionConfig) -> LdapSession:
    return LdapSession(config)


def _udp_session(config: SessionConfig) -> LdapSession:
    return LdapSession(config, datagrams=True)


# ---- detection ---------------------------------------------------------------------------------


def _looks_like(data: bytes, tags: frozenset[int]) -> Verdict:
    """An LDAPMessage header at the start of `data` whose protocolOp is one of `tags`."""
    n = len(data)
    if not n:
        return Verdict.MAYBE
    if data[0] != 0x30:
        return Verdict.NO
    if n < 2:
        return Verdict.MAYBE
    first = data[1]
    if first == 0x80 or first > 0x84:
        return Verdict.NO
    start = 2 + (first & 0x7F if first & 0x80 else 0)
    if n < start + 3:
        return Verdict.MAYBE
    length = int.from_bytes(data[2:start], "big") if first & 0x80 else first
    if length < 5 or length > MAX_MESSAGE:
        return Verdict.NO
    if data[start] != INTEGER or not 1 <= data[start + 1] <= 4:
        return Verdict.NO
    at = start + 2 + data[start + 1]
    if n <= at:
        return Verdict.MAYBE
    if data[start + 2] & 0x80:  # a negative messageID
        return Verdict.NO
    tag = data[at]
    if tag == OCTET_STRING:  # CLDAP (RFC 1798): skip its `user` DN when it is short-form
        if n <= at + 1 or data[at + 1] >= 0x80:
            return Verdict.MAYBE if n <= at + 1 else Verdict.NO
        at += 2 + data[at + 1]
        if n <= at:
            return Verdict.MAYBE
        tag = data[at]
    return Verdict.YES if tag in tags else Verdict.NO


def probe(client: bytes, server: bytes) -> Verdict:
    """A client whose first bytes are an LDAPMessage carrying a request (or a server's carrying a
    response, when the client's were not captured). Never raises."""
    if client:
        return _looks_like(client, _REQUEST_TAGS)
    if server:
        found = _looks_like(server, _RESPONSE_TAGS)
        return found
    return Verdict.MAYBE


# ---- presentation ------------------------------------------------------------------------------


def present(req: Message | None, resp: Message | None) -> Presented:
    r = req.fields if req is not None else {}
    p = resp.fields if resp is not None else {}
    operation = r.get("operation") or p.get("operation")
    dn = r.get("dn")
    status = p.get("result_code")
    msgid = r.get("message_id", p.get("message_id"))
    parts = [str(operation)]
    if operation == "search":
        parts.append(f'"{dn}"' if dn is not None else "?")
        scope = r.get("scope")
        if scope is not None:
            parts.append(_SCOPE_SHORT.get(next((k for k, v in SCOPES.items() if v == scope), -1), scope))
        if r.get("filter"):
            parts.append(r["filter"])
    elif operation == "bind":
        parts.append(f'"{dn}"' if dn else '""')
        auth = r.get("authentication")
        if auth == "sasl":
            parts.append(f"SASL {r.get('mechanism', '')}".strip())
        elif auth is not None:
            parts.append(auth)
    elif operation in ("extended", "notification"):
        oid = r.get("oid") or p.get("oid")
        name = r.get("name") or p.get("name")
        parts.append(name or oid or "?")
    elif operation == "abandon":
        parts.append(str(r.get("abandon_id")))
    elif operation == "sasl_sealed":
        parts.append(f"{r.get('client_buffers', 0)}+{r.get('server_buffers', 0)} buffers")
    elif dn is not None:
        parts.append(f'"{dn}"')
    summary = " ".join(parts)
    if "entries" in p:
        summary += f" → {p['entries']} entr{'y' if p['entries'] == 1 else 'ies'}"
        if p.get("references"):
            summary += f", {p['references']} ref{'s' if p['references'] != 1 else ''}"
    if type(status) is int and status != 0:
        summary += f" → {p.get('result', status)}"
    version = r.get("version")
    return Presented(
        method=str(operation) if operation else None,
        path=dn if type(dn) is str else None,
        status=status if type(status) is int else None,
        summary=summary,
        version=str(version) if type(version) is int else None,
        stream=str(msgid) if type(msgid) is int else None,
    )


# Result codes that are not errors (RFC 4511 Appendix A.1).
_NOT_ERRORS: Final = frozenset({0, 5, 6, 10, 14})


def classify(request: dict[str, Any] | None, response: dict[str, Any] | None) -> dict[str, Any]:
    """An error result code makes an error entry typed by its RFC name; the places the parser
    replaced by the marker are listed in `redacted`."""
    over: dict[str, Any] = {}
    if response is not None:
        code = response.get("result_code")
        if type(code) is int and code not in _NOT_ERRORS:
            name = response.get("result") or str(code)
            over["error"] = {"type": name, "message": response.get("diagnostic_message") or name}
        if "server_sasl_creds" in response:
            over["redacted"] = ["response.server_sasl_creds"]
    if request is not None:
        places = [f"request.{k}" for k in ("password", "credentials", "value") if request.get(k) == MARKER]
        for key in ("attributes", "changes"):
            items = request.get(key)
            if type(items) is list:
                places.extend(
                    f"request.{key}.{i}.values" for i, a in enumerate(items) if a.get("values") == [MARKER]
                )
        flt = request.get("filter")
        if type(flt) is str and MARKER in flt:
            places.append("request.filter")
        if places:
            over["redacted"] = [*over.get("redacted", ()), *places]
    return over


SPEC: Final = ProtocolSpec(
    name="ldap",
    transports=("tcp",),
    ports=(389, 3268, 1389, 10389),
    probe=probe,
    session=_tcp_session,
    present=present,
    matcher="key",
    classify=classify,
)

UDP_SPEC: Final = ProtocolSpec(
    name="cldap",
    transports=("udp",),
    ports=(389,),
    probe=probe,
    session=_udp_session,
    present=present,
    matcher="key",
    unanswered_error="timeout",
    classify=classify,
    protocol="ldap",
)
