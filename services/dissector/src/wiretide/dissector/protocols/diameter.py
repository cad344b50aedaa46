"""Diameter (RFC 6733) over TCP and SCTP: messages framed by their length, AVPs decoded with a
dictionary of the base protocol and the common 3GPP applications, requests and answers paired by
hop-by-hop and end-to-end identifier, Result-Code (or Experimental-Result-Code) as the status.

Rule: every message is read within its own length and every AVP within its parent's: an AVP length
below its header or beyond its parent ends that level's walk (counted as malformed), never the
session; grouped AVPs nest at most MAX_DEPTH deep, at most MAX_AVPS are decoded per message and at
most the body cap of rendered values is kept, the rest counted. A message larger than the kept part
is streamed past, never held. Secrets (User-Password, CHAP and EAP keys, the 3GPP authentication
vectors' XRES, KASME, CK, IK, Kc, SRES) are replaced while decoding, before an entry exists.

Either end may send requests (a PCRF's Re-Auth-Request, a peer's Device-Watchdog-Request): a message
is a request by its R flag, and an answer pairs with the request that went the other way with the
same identifiers.

Messages are read with `struct` in place rather than with dpkt's `diameter.Diameter`: dpkt ignores
AVP padding (it reads the AVP after a padded one from the padding), does not decode values or
grouped AVPs, and has no bounds on a message's AVP count or nesting.
"""

from __future__ import annotations

import datetime
import socket
import struct
from typing import Any, Final

from wiretide.common.protocols import DIAMETER_3GPP_RESULT_CODES, DIAMETER_RESULT_CODES
from wiretide.dissector.api import Event, Message, Presented, ProtocolSpec, SessionConfig, Verdict, Violation

_HEADER = struct.Struct(
    "!IIIII"
)  # version+length, flags+command code, application id, hop-by-hop, end-to-end
_AVP = struct.Struct("!II")  # code, flags+length
_U32 = struct.Struct("!I")
_I32 = struct.Struct("!i")
_U64 = struct.Struct("!Q")
_I64 = struct.Struct("!q")
_F32 = struct.Struct("!f")
_F64 = struct.Struct("!d")
HEADER_LEN: Final = 20
AVP_HEADER: Final = 8
AVP_VENDOR_HEADER: Final = 12
# Command flags (RFC 6733 §3): Request, Proxiable, Error, potentially reTransmitted; the rest reserved.
FLAG_R: Final = 0x80
FLAG_P: Final = 0x40
FLAG_E: Final = 0x20
FLAG_T: Final = 0x10
# AVP flags (§4.1): Vendor-specific, Mandatory, Protected (deprecated).
AVP_V: Final = 0x80
AVP_M: Final = 0x40
AVP_P: Final = 0x20

# Bytes of one message kept and decoded beyond the body cap's worth of values (its AVP headers); the
# rest of a larger message is passed over and the message flagged `truncated`.
MESSAGE_MARGIN: Final = 64 * 1024
# AVPs decoded per message (a CCA with many Multiple-Services-Credit-Control has ~100); the rest counted.
MAX_AVPS: Final = 1024
# Grouped AVP nesting decoded (3GPP's deepest real ones are ~5 levels: Subscription-Data →
# APN-Configuration-Profile → APN-Configuration → EPS-Subscribed-QoS-Profile → ARP).
MAX_DEPTH: Final = 8
# Characters of one value kept (an OctetString shows as hex: 2 characters per byte).
MAX_VALUE_CHARS: Final = 1024
# Bytes a direction may skip looking for the next header after a capture gap.
MAX_RESYNC: Final = 64 * 1024
REDACTED: Final = "[REDACTED]"
VENDOR_3GPP: Final = 10415

# ---- the dictionary ----------------------------------------------------------------------------

# Commands (RFC 6733 §3.1, RFC 4006, RFC 4005/7155, RFC 4072, 3GPP TS 29.229 Cx, 29.329 Sh, 29.272
# S6a/S6d/S13, 29.219 Sy): code → (name, request abbreviation, answer abbreviation).
COMMANDS: Final[dict[int, tuple[str, str, str]]] = {
    257: ("Capabilities-Exchange", "CER", "CEA"), 258: ("Re-Auth", "RAR", "RAA"),
    265: ("AA", "AAR", "AAA"), 268: ("Diameter-EAP", "DER", "DEA"), 271: ("Accounting", "ACR", "ACA"),
    272: ("Credit-Control", "CCR", "CCA"), 274: ("Abort-Session", "ASR", "ASA"),
    275: ("Session-Termination", "STR", "STA"), 280: ("Device-Watchdog", "DWR", "DWA"),
    282: ("Disconnect-Peer", "DPR", "DPA"), 300: ("User-Authorization", "UAR", "UAA"),
    301: ("Server-Assignment", "SAR", "SAA"), 302: ("Location-Info", "LIR", "LIA"),
    303: ("Multimedia-Auth", "MAR", "MAA"), 304: ("Registration-Termination", "RTR", "RTA"),
    305: ("Push-Profile", "PPR", "PPA"), 306: ("User-Data", "UDR", "UDA"),
    307: ("Profile-Update", "PUR", "PUA"), 308: ("Subscribe-Notifications", "SNR", "SNA"),
    309: ("Push-Notification", "PNR", "PNA"), 316: ("Update-Location", "ULR", "ULA"),
    317: ("Cancel-Location", "CLR", "CLA"), 318: ("Authentication-Information", "AIR", "AIA"),
    319: ("Insert-Subscriber-Data", "IDR", "IDA"), 320: ("Delete-Subscriber-Data", "DSR", "DSA"),
    321: ("Purge-UE", "PUR", "PUA"), 322: ("Reset", "RSR", "RSA"), 323: ("Notify", "NOR", "NOA"),
    324: ("ME-Identity-Check", "ECR", "ECA"), 8388635: ("Spending-Limit", "SLR", "SLA"),
    8388636: ("Spending-Status-Notification", "SNR", "SNA"),
}  # fmt: skip
# Application ids (IANA "Application IDs"; 3GPP TS 29.230 §7): id → (name, short label for `path`).
APPLICATIONS: Final[dict[int, tuple[str, str]]] = {
    0: ("Diameter Common Messages", "base"), 1: ("NASREQ", "NASREQ"), 2: ("Mobile IPv4", "MIPv4"),
    3: ("Diameter Base Accounting", "accounting"), 4: ("Diameter Credit Control", "Gy/Ro"),
    5: ("Diameter EAP", "EAP"), 6: ("Diameter SIP", "SIP"), 16777216: ("3GPP Cx", "Cx"),
    16777217: ("3GPP Sh", "Sh"), 16777222: ("3GPP Gq", "Gq"), 16777236: ("3GPP Rx", "Rx"),
    16777238: ("3GPP Gx", "Gx"), 16777251: ("3GPP S6a/S6d", "S6a"), 16777252: ("3GPP S13", "S13"),
    16777255: ("3GPP SLg", "SLg"), 16777264: ("3GPP SWm", "SWm"), 16777265: ("3GPP SWx", "SWx"),
    16777266: ("3GPP Gxx", "Gxx"), 16777267: ("3GPP S9", "S9"), 16777272: ("3GPP S6b", "S6b"),
    16777291: ("3GPP SLh", "SLh"), 16777302: ("3GPP Sy", "Sy"), 4294967295: ("Relay", "relay"),
}  # fmt: skip
VENDORS: Final[dict[int, str]] = {0: "IETF", 5535: "3GPP2", 10415: "3GPP", 13019: "ETSI"}

# AVP data types (§4.2, §4.3): what the bytes of a value are.
OCTETS, UTF8, IDENTITY, URI, U32, U64, I32, I64, F32, F64, GROUPED, ADDRESS, TIME, ENUM, FILTER, APP = range(
    16
)
# (code, vendor) → (name, type). Base protocol (RFC 6733 §4.5), its RADIUS-compatible AVPs (RFC 7155),
# credit control (RFC 4006), EAP (RFC 4072), and 3GPP (vendor 10415) TS 29.061, 29.212 Gx, 29.214 Rx,
# 29.229 Cx, 29.272 S6a, 32.299 Ro/Gy.
_BASE: Final[dict[int, tuple[str, int]]] = {
    1: ("User-Name", UTF8), 2: ("User-Password", OCTETS), 4: ("NAS-IP-Address", OCTETS),
    5: ("NAS-Port", U32), 6: ("Service-Type", ENUM), 7: ("Framed-Protocol", ENUM),
    8: ("Framed-IP-Address", OCTETS), 25: ("Class", OCTETS), 27: ("Session-Timeout", U32),
    30: ("Called-Station-Id", UTF8), 31: ("Calling-Station-Id", UTF8), 32: ("NAS-Identifier", UTF8),
    33: ("Proxy-State", OCTETS), 44: ("Accounting-Session-Id", OCTETS),
    50: ("Acct-Multi-Session-Id", UTF8), 55: ("Event-Timestamp", TIME), 61: ("NAS-Port-Type", ENUM),
    85: ("Acct-Interim-Interval", U32), 97: ("Framed-IPv6-Prefix", OCTETS),
    257: ("Host-IP-Address", ADDRESS), 258: ("Auth-Application-Id", APP),
    259: ("Acct-Application-Id", APP), 260: ("Vendor-Specific-Application-Id", GROUPED),
    261: ("Redirect-Host-Usage", ENUM), 262: ("Redirect-Max-Cache-Time", U32),
    263: ("Session-Id", UTF8), 264: ("Origin-Host", IDENTITY), 265: ("Supported-Vendor-Id", U32),
    266: ("Vendor-Id", U32), 267: ("Firmware-Revision", U32), 268: ("Result-Code", U32),
    269: ("Product-Name", UTF8), 270: ("Session-Binding", U32), 271: ("Session-Server-Failover", ENUM),
    272: ("Multi-Round-Time-Out", U32), 273: ("Disconnect-Cause", ENUM),
    274: ("Auth-Request-Type", ENUM), 276: ("Auth-Grace-Period", U32),
    277: ("Auth-Session-State", ENUM), 278: ("Origin-State-Id", U32), 279: ("Failed-AVP", GROUPED),
    280: ("Proxy-Host", IDENTITY), 281: ("Error-Message", UTF8), 282: ("Route-Record", IDENTITY),
    283: ("Destination-Realm", IDENTITY), 284: ("Proxy-Info", GROUPED),
    285: ("Re-Auth-Request-Type", ENUM), 287: ("Accounting-Sub-Session-Id", U64),
    291: ("Authorization-Lifetime", U32), 292: ("Redirect-Host", URI),
    293: ("Destination-Host", IDENTITY), 294: ("Error-Reporting-Host", IDENTITY),
    295: ("Termination-Cause", ENUM), 296: ("Origin-Realm", IDENTITY),
    297: ("Experimental-Result", GROUPED), 298: ("Experimental-Result-Code", U32),
    299: ("Inband-Security-Id", U32), 402: ("CHAP-Auth", GROUPED), 403: ("CHAP-Algorithm", ENUM),
    404: ("CHAP-Ident", OCTETS), 405: ("CHAP-Response", OCTETS), 411: ("CC-Correlation-Id", OCTETS),
    412: ("CC-Input-Octets", U64), 413: ("CC-Money", GROUPED), 414: ("CC-Output-Octets", U64),
    415: ("CC-Request-Number", U32), 416: ("CC-Request-Type", ENUM),
    417: ("CC-Service-Specific-Units", U64), 418: ("CC-Session-Failover", ENUM),
    419: ("CC-Sub-Session-Id", U64), 420: ("CC-Time", U32), 421: ("CC-Total-Octets", U64),
    422: ("Check-Balance-Result", ENUM), 423: ("Cost-Information", GROUPED), 424: ("Cost-Unit", UTF8),
    425: ("Currency-Code", U32), 426: ("Credit-Control", ENUM),
    427: ("Credit-Control-Failure-Handling", ENUM), 428: ("Direct-Debiting-Failure-Handling", ENUM),
    429: ("Exponent", I32), 430: ("Final-Unit-Indication", GROUPED),
    431: ("Granted-Service-Unit", GROUPED), 432: ("Rating-Group", U32),
    433: ("Redirect-Address-Type", ENUM), 434: ("Redirect-Server", GROUPED),
    435: ("Redirect-Server-Address", UTF8), 436: ("Requested-Action", ENUM),
    437: ("Requested-Service-Unit", GROUPED), 438: ("Restriction-Filter-Rule", FILTER),
    439: ("Service-Identifier", U32), 440: ("Service-Parameter-Info", GROUPED),
    441: ("Service-Parameter-Type", U32), 442: ("Service-Parameter-Value", OCTETS),
    443: ("Subscription-Id", GROUPED), 444: ("Subscription-Id-Data", UTF8),
    445: ("Unit-Value", GROUPED), 446: ("Used-Service-Unit", GROUPED), 447: ("Value-Digits", I64),
    448: ("Validity-Time", U32), 449: ("Final-Unit-Action", ENUM), 450: ("Subscription-Id-Type", ENUM),
    451: ("Tariff-Time-Change", TIME), 452: ("Tariff-Change-Usage", ENUM),
    453: ("G-S-U-Pool-Identifier", U32), 454: ("CC-Unit-Type", ENUM),
    455: ("Multiple-Services-Indicator", ENUM), 456: ("Multiple-Services-Credit-Control", GROUPED),
    457: ("G-S-U-Pool-Reference", GROUPED), 458: ("User-Equipment-Info", GROUPED),
    459: ("User-Equipment-Info-Type", ENUM), 460: ("User-Equipment-Info-Value", OCTETS),
    461: ("Service-Context-Id", UTF8), 462: ("EAP-Payload", OCTETS),
    463: ("EAP-Reissued-Payload", OCTETS), 464: ("EAP-Master-Session-Key", OCTETS),
    480: ("Accounting-Record-Type", ENUM), 483: ("Accounting-Realtime-Required", ENUM),
    485: ("Accounting-Record-Number", U32),
}  # fmt: skip
_3GPP: Final[dict[int, tuple[str, int]]] = {
    1: ("3GPP-IMSI", UTF8), 2: ("3GPP-Charging-Id", U32), 3: ("3GPP-PDP-Type", ENUM),
    6: ("3GPP-SGSN-Address", OCTETS), 8: ("3GPP-IMSI-MCC-MNC", UTF8), 9: ("3GPP-GGSN-MCC-MNC", UTF8),
    10: ("3GPP-NSAPI", UTF8), 12: ("3GPP-Selection-Mode", UTF8),
    13: ("3GPP-Charging-Characteristics", UTF8), 18: ("3GPP-SGSN-MCC-MNC", UTF8),
    21: ("3GPP-RAT-Type", OCTETS), 22: ("3GPP-User-Location-Info", OCTETS),
    23: ("3GPP-MS-TimeZone", OCTETS), 504: ("AF-Application-Identifier", OCTETS),
    505: ("AF-Charging-Identifier", OCTETS), 507: ("Flow-Description", FILTER),
    509: ("Flow-Number", U32), 510: ("Flows", GROUPED), 511: ("Flow-Status", ENUM),
    512: ("Flow-Usage", ENUM), 513: ("Specific-Action", ENUM),
    515: ("Max-Requested-Bandwidth-DL", U32), 516: ("Max-Requested-Bandwidth-UL", U32),
    517: ("Media-Component-Description", GROUPED), 518: ("Media-Component-Number", U32),
    519: ("Media-Sub-Component", GROUPED), 520: ("Media-Type", ENUM),
    600: ("Visited-Network-Identifier", OCTETS), 601: ("Public-Identity", UTF8),
    602: ("Server-Name", UTF8), 603: ("Server-Capabilities", GROUPED),
    604: ("Mandatory-Capability", U32), 605: ("Optional-Capability", U32), 606: ("User-Data", OCTETS),
    607: ("SIP-Number-Auth-Items", U32), 608: ("SIP-Authentication-Scheme", UTF8),
    609: ("SIP-Authenticate", OCTETS), 610: ("SIP-Authorization", OCTETS),
    611: ("SIP-Authentication-Context", OCTETS), 612: ("SIP-Auth-Data-Item", GROUPED),
    613: ("SIP-Item-Number", U32), 614: ("Server-Assignment-Type", ENUM),
    615: ("Deregistration-Reason", GROUPED), 616: ("Reason-Code", ENUM), 617: ("Reason-Info", UTF8),
    618: ("Charging-Information", GROUPED), 623: ("User-Authorization-Type", ENUM),
    624: ("User-Data-Already-Available", ENUM), 625: ("Confidentiality-Key", OCTETS),
    626: ("Integrity-Key", OCTETS), 628: ("Supported-Features", GROUPED),
    629: ("Feature-List-ID", U32), 630: ("Feature-List", U32), 872: ("Reporting-Reason", ENUM),
    873: ("Service-Information", GROUPED), 874: ("PS-Information", GROUPED),
    1000: ("Bearer-Usage", ENUM), 1001: ("Charging-Rule-Install", GROUPED),
    1002: ("Charging-Rule-Remove", GROUPED), 1003: ("Charging-Rule-Definition", GROUPED),
    1004: ("Charging-Rule-Base-Name", UTF8), 1005: ("Charging-Rule-Name", OCTETS),
    1006: ("Event-Trigger", ENUM), 1007: ("Metering-Method", ENUM), 1008: ("Offline", ENUM),
    1009: ("Online", ENUM), 1010: ("Precedence", U32), 1011: ("Reporting-Level", ENUM),
    1016: ("QoS-Information", GROUPED), 1018: ("Charging-Rule-Report", GROUPED),
    1019: ("PCC-Rule-Status", ENUM), 1020: ("Bearer-Identifier", OCTETS),
    1021: ("Bearer-Operation", ENUM), 1023: ("Bearer-Control-Mode", ENUM),
    1024: ("Network-Request-Support", ENUM), 1025: ("Guaranteed-Bitrate-DL", U32),
    1026: ("Guaranteed-Bitrate-UL", U32), 1027: ("IP-CAN-Type", ENUM),
    1028: ("QoS-Class-Identifier", ENUM), 1032: ("RAT-Type", ENUM),
    1033: ("Event-Report-Indication", GROUPED), 1034: ("Allocation-Retention-Priority", GROUPED),
    1040: ("APN-Aggregate-Max-Bitrate-DL", U32), 1041: ("APN-Aggregate-Max-Bitrate-UL", U32),
    1045: ("Session-Release-Cause", ENUM), 1046: ("Priority-Level", U32),
    1047: ("Pre-emption-Capability", ENUM), 1048: ("Pre-emption-Vulnerability", ENUM),
    1049: ("Default-EPS-Bearer-QoS", GROUPED), 1050: ("AN-GW-Address", ADDRESS),
    1066: ("Monitoring-Key", OCTETS), 1067: ("Usage-Monitoring-Information", GROUPED),
    1068: ("Usage-Monitoring-Level", ENUM), 1069: ("Usage-Monitoring-Report", ENUM),
    1070: ("Usage-Monitoring-Support", ENUM), 1400: ("Subscription-Data", GROUPED),
    1401: ("Terminal-Information", GROUPED), 1402: ("IMEI", UTF8), 1403: ("Software-Version", UTF8),
    1405: ("ULR-Flags", U32), 1406: ("ULA-Flags", U32), 1407: ("Visited-PLMN-Id", OCTETS),
    1408: ("Requested-EUTRAN-Authentication-Info", GROUPED),
    1409: ("Requested-UTRAN-GERAN-Authentication-Info", GROUPED),
    1410: ("Number-Of-Requested-Vectors", U32), 1411: ("Re-Synchronization-Info", OCTETS),
    1412: ("Immediate-Response-Preferred", U32), 1413: ("Authentication-Info", GROUPED),
    1414: ("E-UTRAN-Vector", GROUPED), 1415: ("UTRAN-Vector", GROUPED),
    1416: ("GERAN-Vector", GROUPED), 1417: ("Network-Access-Mode", ENUM), 1418: ("HPLMN-ODB", U32),
    1419: ("Item-Number", U32), 1420: ("Cancellation-Type", ENUM), 1421: ("DSR-Flags", U32),
    1422: ("DSA-Flags", U32), 1423: ("Context-Identifier", U32), 1424: ("Subscriber-Status", ENUM),
    1425: ("Operator-Determined-Barring", U32), 1426: ("Access-Restriction-Data", U32),
    1427: ("APN-OI-Replacement", UTF8), 1428: ("All-APN-Configurations-Included-Indicator", ENUM),
    1429: ("APN-Configuration-Profile", GROUPED), 1430: ("APN-Configuration", GROUPED),
    1431: ("EPS-Subscribed-QoS-Profile", GROUPED), 1432: ("VPLMN-Dynamic-Address-Allowed", ENUM),
    1433: ("STN-SR", OCTETS), 1434: ("Alert-Reason", ENUM), 1435: ("AMBR", GROUPED),
    1438: ("PDN-GW-Allocation-Type", ENUM), 1447: ("XRES", OCTETS), 1448: ("AUTN", OCTETS),
    1449: ("RAND", OCTETS), 1450: ("KASME", OCTETS), 1453: ("Kc", OCTETS), 1454: ("SRES", OCTETS),
    1456: ("PDN-Type", ENUM), 1490: ("IDR-Flags", U32),
}  # fmt: skip
# Values that are keys or credentials: never kept (RFC 7155 §4.4.2/§4.4.3, RFC 4072 §4.1.3; the 3GPP
# authentication vectors' expected response and derived keys, TS 29.272 §7.3.18-7.3.24, 29.229 §6.3.27).
SECRETS: Final = frozenset({(2, 0), (405, 0), (464, 0), (1447, VENDOR_3GPP), (1450, VENDOR_3GPP),
                            (1453, VENDOR_3GPP), (1454, VENDOR_3GPP), (625, VENDOR_3GPP),
                            (626, VENDOR_3GPP), (610, VENDOR_3GPP)})  # fmt: skip
# Enumerated values by AVP (code, vendor) → value → name.
ENUMS: Final[dict[tuple[int, int], dict[int, str]]] = {
    (416, 0): {1: "INITIAL_REQUEST", 2: "UPDATE_REQUEST", 3: "TERMINATION_REQUEST", 4: "EVENT_REQUEST"},
    (274, 0): {1: "AUTHENTICATE_ONLY", 2: "AUTHORIZE_ONLY", 3: "AUTHORIZE_AUTHENTICATE"},
    (277, 0): {0: "STATE_MAINTAINED", 1: "NO_STATE_MAINTAINED"},
    (273, 0): {0: "REBOOTING", 1: "BUSY", 2: "DO_NOT_WANT_TO_TALK_TO_YOU"},
    (285, 0): {0: "AUTHORIZE_ONLY", 1: "AUTHORIZE_AUTHENTICATE"},
    (295, 0): {1: "DIAMETER_LOGOUT", 2: "DIAMETER_SERVICE_NOT_PROVIDED", 3: "DIAMETER_BAD_ANSWER",
               4: "DIAMETER_ADMINISTRATIVE", 5: "DIAMETER_LINK_BROKEN", 6: "DIAMETER_AUTH_EXPIRED",
               7: "DIAMETER_USER_MOVED", 8: "DIAMETER_SESSION_TIMEOUT"},
    (480, 0): {1: "EVENT_RECORD", 2: "START_RECORD", 3: "INTERIM_RECORD", 4: "STOP_RECORD"},
    (450, 0): {0: "END_USER_E164", 1: "END_USER_IMSI", 2: "END_USER_SIP_URI", 3: "END_USER_NAI",
               4: "END_USER_PRIVATE"},
    (436, 0): {0: "DIRECT_DEBITING", 1: "REFUND_ACCOUNT", 2: "CHECK_BALANCE", 3: "PRICE_ENQUIRY"},
    (449, 0): {0: "TERMINATE", 1: "REDIRECT", 2: "RESTRICT_ACCESS"},
    (455, 0): {0: "MULTIPLE_SERVICES_NOT_SUPPORTED", 1: "MULTIPLE_SERVICES_SUPPORTED"},
    (459, 0): {0: "IMEISV", 1: "MAC", 2: "EUI64", 3: "MODIFIED_EUI64"},
    (1027, VENDOR_3GPP): {0: "3GPP-GPRS", 1: "DOCSIS", 2: "xDSL", 3: "WiMAX", 4: "3GPP2", 5: "3GPP-EPS",
                          6: "Non-3GPP-EPS", 7: "FBA", 8: "3GPP-5GS", 9: "Non-3GPP-5GS"},
    (1032, VENDOR_3GPP): {0: "WLAN", 1: "VIRTUAL", 1000: "UTRAN", 1001: "GERAN", 1002: "GAN",
                          1003: "HSPA_EVOLUTION", 1004: "EUTRAN", 1005: "EUTRAN-NB-IoT", 1006: "NR",
                          2000: "CDMA2000_1X", 2001: "HRPD", 2002: "UMB", 2003: "EHRPD"},
    (1420, VENDOR_3GPP): {0: "MME_UPDATE_PROCEDURE", 1: "SGSN_UPDATE_PROCEDURE",
                          2: "SUBSCRIPTION_WITHDRAWAL", 3: "UPDATE_PROCEDURE_IWF",
                          4: "INITIAL_ATTACH_PROCEDURE"},
    (1424, VENDOR_3GPP): {0: "SERVICE_GRANTED", 1: "OPERATOR_DETERMINED_BARRING"},
    (1456, VENDOR_3GPP): {0: "IPv4", 1: "IPv6", 2: "IPv4v6", 3: "IPv4_OR_IPv6"},
    (614, VENDOR_3GPP): {0: "NO_ASSIGNMENT", 1: "REGISTRATION", 2: "RE_REGISTRATION",
                         3: "UNREGISTERED_USER", 4: "TIMEOUT_DEREGISTRATION", 5: "USER_DEREGISTRATION"},
    (623, VENDOR_3GPP): {0: "REGISTRATION", 1: "DE_REGISTRATION", 2: "REGISTRATION_AND_CAPABILITIES"},
}  # fmt: skip
# Top-level AVPs copied into the message object under these keys (the rest stay in `avps`).
_PROMOTED: Final[dict[int, str]] = {
    263: "session_id", 264: "origin_host", 296: "origin_realm", 293: "destination_host",
    283: "destination_realm", 1: "user_name", 415: "cc_request_number", 281: "error_message",
}  # fmt: skip
_TIME_EPOCH: Final = 2_208_988_800  # seconds from 1900-01-01 (RFC 5905's era 0) to 1970-01-01


def avp_info(code: int, vendor: int) -> tuple[str, int] | None:
    """The dictionary's (name, type) of an AVP; None for one it does not know."""
    if vendor == 0:
        return _BASE.get(code)
    if vendor == VENDOR_3GPP:
        return _3GPP.get(code)
    return None


def command_abbreviation(code: int, request: bool) -> str:
    """`CCR`/`CCA` for a known command, else `cmd-<code>-R`/`cmd-<code>-A`."""
    known = COMMANDS.get(code)
    if known is None:
        return f"cmd-{code}-{'R' if request else 'A'}"
    return known[1] if request else known[2]


def application_label(app: int) -> str:
    known = APPLICATIONS.get(app)
    return known[1] if known is not None else f"app-{app}"


def _flags(flags: int, letters: str) -> str:
    return "".join(ch for bit, ch in zip((0x80, 0x40, 0x20, 0x10), letters, strict=False) if flags & bit)


# Flag letters by flag byte, computed once (per AVP on the hot path).
_AVP_FLAGS: Final = tuple(_flags(f, "VMP") for f in range(256))
_CMD_FLAGS: Final = tuple(_flags(f, "RPET") for f in range(256))


class _Budget:
    """What one message may still decode: AVPs and characters of values."""

    __slots__ = ("avps", "chars", "deep", "dropped", "malformed", "redacted")

    def __init__(self, chars: int) -> None:
        self.avps = 0
        self.chars = chars
        self.dropped = 0  # AVPs beyond MAX_AVPS, or values beyond the character budget
        self.deep = 0  # grouped AVPs beyond MAX_DEPTH, kept undecoded
        self.malformed: str | None = None
        self.redacted: list[str] = []


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _octets(raw: bytes) -> str:
    """An OctetString: as text when it is printable UTF-8, else as hex."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()
    return text if text.isprintable() else raw.hex()


def _value(raw: bytes, kind: int, code: int, vendor: int) -> tuple[Any, str | None]:
    """(value, name of an enumerated value / application / result) of one AVP's data."""
    n = len(raw)
    if kind in (U32, ENUM, APP) and n == 4:
        v = _U32.unpack(raw)[0]
        if kind == ENUM:
            names = ENUMS.get((code, vendor))
            return v, names.get(v) if names is not None else None
        if kind == APP:
            app = APPLICATIONS.get(v)
            return v, app[0] if app is not None else None
        if code == 268 and vendor == 0:
            return v, DIAMETER_RESULT_CODES.get(v)
        if code in (266, 265) and vendor == 0:
            return v, VENDORS.get(v)
        return v, None
    if kind == I32 and n == 4:
        return _I32.unpack(raw)[0], None
    if kind == U64 and n == 8:
        return _U64.unpack(raw)[0], None
    if kind == I64 and n == 8:
        return _I64.unpack(raw)[0], None
    if kind == F32 and n == 4:
        return _F32.unpack(raw)[0], None
    if kind == F64 and n == 8:
        return _F64.unpack(raw)[0], None
    if kind == TIME and n == 4:
        secs = _U32.unpack(raw)[0] - _TIME_EPOCH
        if secs < 0:
            secs += 1 << 32  # RFC 6733 §4.3.1: from 2036 the value wraps (era 1)
        stamp = datetime.datetime.fromtimestamp(secs, datetime.UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), None
    if kind == ADDRESS and n >= 2:
        family = (raw[0] << 8) | raw[1]
        if family == 1 and n == 6:
            return socket.inet_ntop(socket.AF_INET, raw[2:]), None
        if family == 2 and n == 18:
            return socket.inet_ntop(socket.AF_INET6, raw[2:]), None
        return raw.hex(), None
    if kind in (UTF8, IDENTITY, URI, FILTER):
        return _text(raw), None
    if kind == OCTETS and code in (4, 8) and vendor == 0 and n in (4, 16):
        return socket.inet_ntop(socket.AF_INET if n == 4 else socket.AF_INET6, raw), None
    return _octets(raw), None


def decode_avps(
    data: bytes, pos: int, end: int, depth: int, budget: _Budget, top: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The AVPs in `data[pos:end]` (§4.1): each within its own length, padded to 4 octets. A length
    below the header or beyond `end` stops this level (the message says `malformed`)."""
    out: list[dict[str, Any]] = []
    while pos < end:
        if end - pos < AVP_HEADER:
            budget.malformed = budget.malformed or "AVP header cut short"
            break
        code, word = _AVP.unpack_from(data, pos)
        flags = word >> 24
        length = word & 0xFFFFFF
        head = AVP_VENDOR_HEADER if flags & AVP_V else AVP_HEADER
        if length < head:
            budget.malformed = budget.malformed or f"AVP {code} length {length} below its header"
            break
        stop = pos + length
        if stop > end:
            budget.malformed = budget.malformed or f"AVP {code} length {length} beyond its parent"
            break
        vendor = _U32.unpack_from(data, pos + 8)[0] if flags & AVP_V else 0
        nxt = pos + ((length + 3) & ~3)
        budget.avps += 1
        if budget.avps > MAX_AVPS:
            budget.dropped += 1
            pos = nxt
            continue
        info = _BASE.get(code) if not vendor else _3GPP.get(code) if vendor == VENDOR_3GPP else None
        item: dict[str, Any] = {"code": code}
        if info is not None:
            item["name"] = info[0]
        if vendor:
            item["vendor"] = vendor
        avp_flags = _AVP_FLAGS[flags]
        if avp_flags:
            item["flags"] = avp_flags
        raw = data[pos + head : stop]
        kind = info[1] if info is not None else OCTETS
        if (code, vendor) in SECRETS:
            item["value"] = REDACTED
            budget.redacted.append(info[0] if info is not None else str(code))
        elif kind == GROUPED:
            if depth >= MAX_DEPTH:
                budget.deep += 1
                item["size"] = len(raw)
            else:
                item["avps"] = decode_avps(data, pos + head, stop, depth + 1, budget, None)
                if top is not None and code == 297 and vendor == 0:
                    _experimental(item["avps"], top)
        else:
            value: Any
            name: str | None
            if kind in (UTF8, IDENTITY):  # the most common kinds, without the call
                value, name = raw.decode("utf-8", "replace"), None
            else:
                value, name = _value(raw, kind, code, vendor)
            if type(value) is str:
                if len(value) > MAX_VALUE_CHARS:
                    value = value[:MAX_VALUE_CHARS]
                    item["truncated"] = True
                if budget.chars < len(value):
                    budget.dropped += 1
                    item["size"] = len(raw)
                    value = None
                else:
                    budget.chars -= len(value)
            if value is not None:
                item["value"] = value
            if name is not None:
                item["text"] = name
            if top is not None and vendor == 0:
                key = _PROMOTED.get(code)
                if key is not None and value is not None and key not in top:
                    top[key] = value
                elif code == 268 and type(value) is int:
                    top["result_code"] = value
                elif code == 416 and name is not None:
                    top["cc_request_type"] = name
                elif code in (258, 259) and type(value) is int and "auth_application_id" not in top:
                    top["auth_application_id"] = value
        out.append(item)
        pos = nxt
    return out


def _experimental(avps: list[dict[str, Any]], top: dict[str, Any]) -> None:
    """Experimental-Result (§7.6): its Vendor-Id and Experimental-Result-Code."""
    vendor = code = None
    for avp in avps:
        if avp.get("vendor"):
            continue
        if avp["code"] == 266 and type(avp.get("value")) is int:
            vendor = avp["value"]
        elif avp["code"] == 298 and type(avp.get("value")) is int:
            code = avp["value"]
    if code is None:
        return
    top["experimental_result_vendor"] = vendor
    if vendor == VENDOR_3GPP:
        top["experimental_result_code"] = code
        name = DIAMETER_3GPP_RESULT_CODES.get(code)
        if name is not None:
            top["experimental_result"] = name
    else:
        top["experimental_result_other"] = code


def parse_message(data: bytes, size: int, body_cap: int) -> dict[str, Any]:
    """The message object of one Diameter message: `data` is its first bytes (all of them unless it
    was cut), `size` its length on the wire."""
    word0, word1, app, hbh, e2e = _HEADER.unpack_from(data, 0)
    flags = word1 >> 24
    code = word1 & 0xFFFFFF
    request = bool(flags & FLAG_R)
    known = COMMANDS.get(code)
    fields: dict[str, Any] = {
        "version": word0 >> 24,
        "command": command_abbreviation(code, request),
        "command_code": code,
        "command_name": f"{known[0]}-{'Request' if request else 'Answer'}" if known else None,
        "flags": _CMD_FLAGS[flags],
        "application_id": app,
        "application": APPLICATIONS[app][0] if app in APPLICATIONS else None,
        "hop_by_hop_id": f"0x{hbh:08x}",
        "end_to_end_id": f"0x{e2e:08x}",
    }
    budget = _Budget(body_cap)
    end = min(len(data), size)
    fields["avps"] = decode_avps(data, HEADER_LEN, end, 0, budget, fields)
    fields["avp_count"] = budget.avps
    if budget.dropped:
        fields["avps_dropped"] = budget.dropped
    if budget.deep:
        fields["avps_too_deep"] = budget.deep
    if len(data) < size:
        fields["truncated"] = True
    elif budget.malformed is not None:
        fields["malformed"] = budget.malformed
    if budget.redacted:
        fields["redacted_avps"] = budget.redacted
    return fields


# ---- detection -----------------------------------------------------------------------------------


def _plausible(data: bytes, request: bool) -> Verdict:
    """Whether `data` starts with a Diameter message (a request or an answer as asked)."""
    if not data:
        return Verdict.MAYBE
    if data[0] != 1:
        return Verdict.NO
    if len(data) < HEADER_LEN:
        return Verdict.MAYBE
    word0, word1, _, _, _ = _HEADER.unpack_from(data, 0)
    length = word0 & 0xFFFFFF
    flags = word1 >> 24
    if length < HEADER_LEN or length % 4 or flags & 0x0F or bool(flags & FLAG_R) != request:
        return Verdict.NO
    if flags & FLAG_R and flags & FLAG_E:  # §3: the E bit is never set in a request
        return Verdict.NO
    end = min(len(data), length)
    pos = HEADER_LEN
    count = 0
    while pos + AVP_HEADER <= end:
        _, word = _AVP.unpack_from(data, pos)
        alen = word & 0xFFFFFF
        if alen < (AVP_VENDOR_HEADER if word >> 24 & AVP_V else AVP_HEADER) or word >> 24 & 0x1F:
            return Verdict.NO
        if pos + alen > length:
            return Verdict.NO
        count += 1
        pos += (alen + 3) & ~3
    if len(data) >= length:
        return Verdict.YES if pos == length else Verdict.NO
    # A message longer than the probes see: its AVPs so far are consistent.
    return Verdict.YES if count >= 2 and (word1 & 0xFFFFFF) in COMMANDS else Verdict.MAYBE


def probe(client: bytes, server: bytes) -> Verdict:
    """A request from the client (or, before it sends, an answer from the server)."""
    if client:
        return _plausible(client, True)
    return _plausible(server, False)


# ---- the session ---------------------------------------------------------------------------------


class _Direction:
    __slots__ = ("buf", "cut", "skip", "synced", "ts")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.skip = 0  # bytes of an oversized message still to pass over
        self.cut: tuple[bytes, int, int] | None = None  # the kept head of it: (bytes, size, ts)
        self.synced = True  # False after a gap: look for the next header
        self.ts = 0


class DiameterSession:
    """Both directions of one Diameter connection (or SCTP association)."""

    __slots__ = ("body_cap", "counters", "dirs", "keep")

    def __init__(self, config: SessionConfig) -> None:
        self.dirs = (_Direction(), _Direction())  # [server, client] by `from_client`
        self.body_cap = config.body_cap
        self.keep = config.body_cap + MESSAGE_MARGIN
        self.counters: dict[str, int] = {}

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        d = self.dirs[from_client]
        out: list[Event] = []
        if d.skip:
            take = min(d.skip, len(data))
            d.skip -= take
            data = data[take:]
            if not d.skip and d.cut is not None:
                head, size, first = d.cut
                d.cut = None
                out.append(self._message(from_client, head, size, first, ts))
            if not data:
                return out
        buf = d.buf
        if not buf:
            d.ts = ts
        buf += data
        while True:
            if not d.synced and not self._resync(d):
                break
            if len(buf) < HEADER_LEN:
                break
            word0, word1 = _AVP.unpack_from(buf, 0)
            length = word0 & 0xFFFFFF
            if word0 >> 24 != 1 or length < HEADER_LEN or length % 4 or word1 >> 24 & 0x0F:
                out.append(Violation(f"not a Diameter header (version {word0 >> 24}, length {length})"))
                buf.clear()
                return out
            if length > self.keep:
                if len(buf) < self.keep:
                    break
                # Keep the head, pass over the rest (never held whole).
                head = bytes(buf[: self.keep])
                rest = length - len(buf)
                if rest > 0:
                    del buf[:]
                    d.skip = rest
                    d.cut = (head, length, d.ts)
                    self._count("oversized")
                    break
                del buf[:length]
                out.append(self._message(from_client, head, length, d.ts, ts))
                d.ts = ts
                continue
            if len(buf) < length:
                break
            raw = bytes(buf[:length])
            del buf[:length]
            out.append(self._message(from_client, raw, length, d.ts, ts))
            d.ts = ts
        return out

    def _resync(self, d: _Direction) -> bool:
        """After a gap: drop bytes up to the next plausible header (request or answer); False when none
        is in sight yet."""
        buf = d.buf
        start = 0
        while True:
            at = buf.find(b"\x01", start)
            if at < 0 or at > MAX_RESYNC:
                self._count("resync_skipped_bytes", len(buf) if at < 0 else at)
                if at < 0:
                    buf.clear()
                else:
                    del buf[:at]
                return False
            window = bytes(buf[at : at + 4096])
            if _plausible(window, True) == Verdict.YES or _plausible(window, False) == Verdict.YES:
                if at:
                    self._count("resync_skipped_bytes", at)
                    del buf[:at]
                d.synced = True
                return True
            if len(buf) - at < HEADER_LEN + AVP_HEADER:
                if at:
                    del buf[:at]
                return False
            start = at + 1

    def _message(
        self, from_client: bool, raw: bytes, size: int, first: int, last: int, lost: bool = False
    ) -> Message:
        """A message from its bytes (its head only, when it was larger than kept or `lost` its tail to
        a capture gap: only the latter makes the entry a dissection error)."""
        fields = parse_message(raw, size, self.body_cap)
        request = "R" in fields["flags"]
        self._count("requests" if request else "answers")
        if fields.get("malformed"):
            self._count("malformed")
        hbh = fields["hop_by_hop_id"]
        e2e = fields["end_to_end_id"]
        if not request:
            fields["sender"] = "client" if from_client else "server"
        elif not from_client:
            fields["sender"] = "server"  # a request the server sent (RAR, ASR, DWR …)
        # An answer goes the other way from its request: key both by the request's direction.
        key = (from_client if request else not from_client, hbh, e2e)
        return Message(request, first, last, size, fields, key=key, truncated=lost)

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        d = self.dirs[from_client]
        out: list[Event] = []
        self._count("gaps")
        if d.skip:
            if size < d.skip:
                d.skip -= size
                return out
            size -= d.skip
            d.skip = 0
            if d.cut is not None:
                head, length, first = d.cut
                d.cut = None
                out.append(self._message(from_client, head, length, first, ts, lost=True))
            if not size:
                return out
        buf = d.buf
        if len(buf) >= HEADER_LEN and buf[0] == 1 and d.synced:
            length = _U32.unpack_from(buf, 0)[0] & 0xFFFFFF
            have = len(buf)
            if length >= HEADER_LEN and have + size <= length:
                # The gap fell inside this message: keep its head, pass over what is left of it.
                out.append(self._message(from_client, bytes(buf[: self.keep]), length, d.ts, ts, lost=True))
                buf.clear()
                d.skip = length - have - size
                return out
        buf.clear()
        d.synced = False
        return out

    def close(self, ts: int) -> list[Event]:
        out: list[Event] = []
        for from_client in (True, False):
            d = self.dirs[from_client]
            if d.cut is not None:
                head, size, first = d.cut
                d.cut = None
                out.append(self._message(from_client, head, size, first, ts))
            elif len(d.buf) >= HEADER_LEN and d.synced and d.buf[0] == 1:
                length = _U32.unpack_from(d.buf, 0)[0] & 0xFFFFFF
                if length >= HEADER_LEN:  # the connection ended inside this message
                    out.append(
                        self._message(from_client, bytes(d.buf[: self.keep]), length, d.ts, ts, lost=True)
                    )
            d.buf.clear()
        return out


# ---- presentation --------------------------------------------------------------------------------


def status_of(fields: dict[str, Any] | None) -> int | None:
    """An answer's outcome: its Result-Code, else its Experimental-Result-Code."""
    if not fields:
        return None
    code = fields.get("result_code")
    if type(code) is int:
        return code
    code = fields.get("experimental_result_code", fields.get("experimental_result_other"))
    return code if type(code) is int else None


def result_name(fields: dict[str, Any] | None) -> str | None:
    if not fields:
        return None
    if type(fields.get("result_code")) is int:
        return DIAMETER_RESULT_CODES.get(fields["result_code"])
    name = fields.get("experimental_result")
    return name if type(name) is str else None


def present(req: Message | None, resp: Message | None) -> Presented:
    rf = req.fields if req is not None else None
    sf = resp.fields if resp is not None else None
    first = rf if rf is not None else sf
    assert first is not None
    code = first["command_code"]
    method = command_abbreviation(code, True)
    app = first["application_id"]
    path = application_label(app)
    status = status_of(sf)
    summary = f"{method} {path}"
    detail = first.get("cc_request_type")
    if type(detail) is str:
        summary += f" {detail}"
    if rf is None:
        summary = f"{command_abbreviation(code, False)} {path} (request not captured)"
    if status is not None:
        name = result_name(sf)
        summary += f" → {name} ({status})" if name else f" → {status}"
    return Presented(
        method=method, path=path, status=status, summary=summary, version="1",
        stream=first["hop_by_hop_id"],
    )  # fmt: skip


def classify(request: dict[str, Any] | None, response: dict[str, Any] | None) -> dict[str, Any]:
    """Secret AVPs the parser replaced are listed in the entry's `redacted`."""
    places = [
        f"{side}.avps.{name}"
        for side, fields in (("request", request), ("response", response))
        if fields
        for name in fields.get("redacted_avps") or ()
    ]
    return {"redacted": places} if places else {}


SPEC: Final = ProtocolSpec(
    name="diameter",
    transports=("tcp", "sctp"),
    ports=(3868,),
    probe=probe,
    session=DiameterSession,
    present=present,
    matcher="key",
    classify=classify,
)
