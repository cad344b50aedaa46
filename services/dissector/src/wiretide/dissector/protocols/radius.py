"""RADIUS over UDP (RFC 2865 access, RFC 2866 accounting, RFC 5176 dynamic authorization, RFC 5997
Status-Server): requests and their answers paired by identifier, attributes named from a dictionary.

Rule: one datagram is one message, read in one bounded walk over its attributes (RFC 2865 §5) that
stops at the first attribute whose length is below 2 or runs past the packet — so a length 0/1 loop or
a lying length costs one step and is reported, never looped on. Secrets are replaced by the
redaction marker while parsing, before an entry exists: User-Password, CHAP-Password and its
challenge, Tunnel-Password, ARAP secrets, Digest responses and HA1, Message-Authenticator and the
MS-CHAP/MPPE attributes (RFC 2548); only their presence is kept.

Pairing follows RFC 2865 §3 / RFC 5080 §2.2.2: within one flow (the NAS's address and port and the
server's) a request is known by its identifier, and a retransmission repeats both identifier and
Request Authenticator. So a request repeating the outstanding identifier *and* authenticator is a
retransmission — counted on the request (`retransmissions`), never an entry of its own — while a new
authenticator under the same identifier is a new request and leaves the earlier one unanswered. A
response repeating the identifier and Response Authenticator of the answer already paired is a
duplicate response (the server's cache answering the retransmission): counted, not an entry.
The Response Authenticator itself (MD5 over the packet and the shared secret) cannot be checked
without the secret, which a passive observer does not have.

EAP (RFC 3579): the EAP-Message attributes of a packet are joined and the EAP header read — code,
identifier, method type by name, the identity of an Identity response, TLS-based methods' flags —
never the method's payload (nothing is decrypted or shown of it).

dpkt's `radius` module is not used: it reads attributes up to the end of the datagram rather than the
header's Length (padding is read as attributes), accepts an attribute whose length runs past the
packet without saying so, stops silently at a length below 2, raises on a lone trailing byte, has
no vendor-specific decoding or names beyond attribute 63, and builds an object per packet (DESIGN.md
§6: ~40k/s). The walk here is a few index reads per attribute on the datagram itself.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Final

from wiretide.dissector.api import Event, Message, Presented, ProtocolSpec, SessionConfig, Verdict, Violation

# What replaces a secret: the dissector's redaction marker (redact.MARKER; a test holds them equal).
REDACTED: Final = "[REDACTED]"
HEADER_LEN: Final = 20
# RFC 2865 §3: "The minimum length is 20 and maximum length is 4096." (RFC 7930 allows 65535 only
# over TCP/TLS, which is not read here.) A probe wants the UDP limit; a pinned flow reads up to 65535.
MAX_LENGTH_UDP: Final = 4096
# Attributes listed per message; a 4096-byte packet holds at most 2038 (each at least 2 bytes), and
# the rest beyond this are counted in `attributes_count`, not listed.
MAX_ATTRIBUTES: Final = 256
# Identifiers remembered per flow: the identifier is one octet, so this is the whole space.
IDENTIFIERS: Final = 256

# Packet codes (IANA "RADIUS Packet Type Codes"): RFC 2865 §4, RFC 2866 §4, RFC 5997, RFC 5176 §3.
CODES: Final[dict[int, str]] = {
    1: "Access-Request", 2: "Access-Accept", 3: "Access-Reject", 4: "Accounting-Request",
    5: "Accounting-Response", 6: "Accounting-Status", 7: "Password-Request", 8: "Password-Ack",
    9: "Password-Reject", 10: "Accounting-Message", 11: "Access-Challenge", 12: "Status-Server",
    13: "Status-Client", 40: "Disconnect-Request", 41: "Disconnect-ACK", 42: "Disconnect-NAK",
    43: "CoA-Request", 44: "CoA-ACK", 45: "CoA-NAK",
}  # fmt: skip
REQUESTS: Final = frozenset({1, 4, 6, 7, 10, 12, 40, 43})
RESPONSES: Final = frozenset({2, 3, 5, 8, 9, 11, 13, 41, 42, 44, 45})
# Answers that refuse (the protocol table's error codes for RADIUS).
REFUSALS: Final = frozenset({3, 9, 42, 45})

# Value types: s text, o octets (hex), i 32-bit integer (named when the attribute has values), a IPv4
# address, 6 IPv6 address, p IPv6 prefix, f interface id, d date, q 64-bit integer, ts/ti tagged
# text/integer (RFC 2868 §3), x secret (never shown), e EAP-Message, v Vendor-Specific.
_S, _O, _I, _A, _A6, _P, _F, _D, _Q, _TS, _TI, _X, _E, _V = (
    "s", "o", "i", "a", "6", "p", "f", "d", "q", "ts", "ti", "x", "e", "v"
)  # fmt: skip

# The standard attributes (IANA "RADIUS Attribute Types": RFC 2865-2869, 3162, 3576, 4072, 4372, 4675,
# 4818, 5090, 5176, 5580, 6572, 6911, 7268).
ATTRIBUTES: Final[dict[int, tuple[str, str]]] = {
    1: ("User-Name", _S), 2: ("User-Password", _X), 3: ("CHAP-Password", _X),
    4: ("NAS-IP-Address", _A), 5: ("NAS-Port", _I), 6: ("Service-Type", _I),
    7: ("Framed-Protocol", _I), 8: ("Framed-IP-Address", _A), 9: ("Framed-IP-Netmask", _A),
    10: ("Framed-Routing", _I), 11: ("Filter-Id", _S), 12: ("Framed-MTU", _I),
    13: ("Framed-Compression", _I), 14: ("Login-IP-Host", _A), 15: ("Login-Service", _I),
    16: ("Login-TCP-Port", _I), 18: ("Reply-Message", _S), 19: ("Callback-Number", _S),
    20: ("Callback-Id", _S), 22: ("Framed-Route", _S), 23: ("Framed-IPX-Network", _I),
    24: ("State", _O), 25: ("Class", _O), 26: ("Vendor-Specific", _V), 27: ("Session-Timeout", _I),
    28: ("Idle-Timeout", _I), 29: ("Termination-Action", _I), 30: ("Called-Station-Id", _S),
    31: ("Calling-Station-Id", _S), 32: ("NAS-Identifier", _S), 33: ("Proxy-State", _O),
    34: ("Login-LAT-Service", _S), 35: ("Login-LAT-Node", _S), 36: ("Login-LAT-Group", _O),
    37: ("Framed-AppleTalk-Link", _I), 38: ("Framed-AppleTalk-Network", _I),
    39: ("Framed-AppleTalk-Zone", _S), 40: ("Acct-Status-Type", _I), 41: ("Acct-Delay-Time", _I),
    42: ("Acct-Input-Octets", _I), 43: ("Acct-Output-Octets", _I), 44: ("Acct-Session-Id", _S),
    45: ("Acct-Authentic", _I), 46: ("Acct-Session-Time", _I), 47: ("Acct-Input-Packets", _I),
    48: ("Acct-Output-Packets", _I), 49: ("Acct-Terminate-Cause", _I),
    50: ("Acct-Multi-Session-Id", _S), 51: ("Acct-Link-Count", _I), 52: ("Acct-Input-Gigawords", _I),
    53: ("Acct-Output-Gigawords", _I), 55: ("Event-Timestamp", _D), 56: ("Egress-VLANID", _I),
    57: ("Ingress-Filters", _I), 58: ("Egress-VLAN-Name", _S), 59: ("User-Priority-Table", _O),
    60: ("CHAP-Challenge", _X), 61: ("NAS-Port-Type", _I), 62: ("Port-Limit", _I),
    63: ("Login-LAT-Port", _S), 64: ("Tunnel-Type", _TI), 65: ("Tunnel-Medium-Type", _TI),
    66: ("Tunnel-Client-Endpoint", _TS), 67: ("Tunnel-Server-Endpoint", _TS),
    68: ("Acct-Tunnel-Connection", _S), 69: ("Tunnel-Password", _X), 70: ("ARAP-Password", _X),
    71: ("ARAP-Features", _X), 72: ("ARAP-Zone-Access", _I), 73: ("ARAP-Security", _I),
    74: ("ARAP-Security-Data", _X), 75: ("Password-Retry", _I), 76: ("Prompt", _I),
    77: ("Connect-Info", _S), 78: ("Configuration-Token", _S), 79: ("EAP-Message", _E),
    80: ("Message-Authenticator", _X), 81: ("Tunnel-Private-Group-Id", _TS),
    82: ("Tunnel-Assignment-Id", _TS), 83: ("Tunnel-Preference", _TI),
    84: ("ARAP-Challenge-Response", _X), 85: ("Acct-Interim-Interval", _I),
    86: ("Acct-Tunnel-Packets-Lost", _I), 87: ("NAS-Port-Id", _S), 88: ("Framed-Pool", _S),
    89: ("Chargeable-User-Identity", _S), 90: ("Tunnel-Client-Auth-Id", _TS),
    91: ("Tunnel-Server-Auth-Id", _TS), 92: ("NAS-Filter-Rule", _S), 94: ("Originating-Line-Info", _O),
    95: ("NAS-IPv6-Address", _A6), 96: ("Framed-Interface-Id", _F), 97: ("Framed-IPv6-Prefix", _P),
    98: ("Login-IPv6-Host", _A6), 99: ("Framed-IPv6-Route", _S), 100: ("Framed-IPv6-Pool", _S),
    101: ("Error-Cause", _I), 102: ("EAP-Key-Name", _O), 103: ("Digest-Response", _X),
    104: ("Digest-Realm", _S), 105: ("Digest-Nonce", _S), 106: ("Digest-Response-Auth", _X),
    107: ("Digest-Nextnonce", _S), 108: ("Digest-Method", _S), 109: ("Digest-URI", _S),
    110: ("Digest-Qop", _S), 111: ("Digest-Algorithm", _S), 112: ("Digest-Entity-Body-Hash", _O),
    113: ("Digest-CNonce", _S), 114: ("Digest-Nonce-Count", _S), 115: ("Digest-Username", _S),
    116: ("Digest-Opaque", _S), 117: ("Digest-Auth-Param", _S), 118: ("Digest-AKA-Auts", _O),
    119: ("Digest-Domain", _S), 120: ("Digest-Stale", _S), 121: ("Digest-HA1", _X),
    122: ("SIP-AOR", _S), 123: ("Delegated-IPv6-Prefix", _P), 124: ("MIP6-Feature-Vector", _O),
    125: ("MIP6-Home-Link-Prefix", _O), 126: ("Operator-Name", _S), 127: ("Location-Information", _O),
    128: ("Location-Data", _O), 129: ("Basic-Location-Policy-Rules", _O),
    130: ("Extended-Location-Policy-Rules", _O), 131: ("Location-Capable", _I),
    132: ("Requested-Location-Info", _I), 133: ("Framed-Management-Protocol", _I),
    134: ("Management-Transport-Protection", _I), 135: ("Management-Policy-Id", _S),
    136: ("Management-Privilege-Level", _I), 144: ("DS-Lite-Tunnel-Name", _S),
    145: ("Mobile-Node-Identifier", _O), 146: ("Service-Selection", _S),
    147: ("PMIP6-Home-LMA-IPv6-Address", _A6), 148: ("PMIP6-Visited-LMA-IPv6-Address", _A6),
    149: ("PMIP6-Home-LMA-IPv4-Address", _A), 150: ("PMIP6-Visited-LMA-IPv4-Address", _A),
    151: ("PMIP6-Home-HN-Prefix", _P), 152: ("PMIP6-Visited-HN-Prefix", _P),
    153: ("PMIP6-Home-Interface-ID", _F), 154: ("PMIP6-Visited-Interface-ID", _F),
    163: ("EAP-Lower-Layer", _I), 164: ("GSS-Acceptor-Service-Name", _S),
    165: ("GSS-Acceptor-Host-Name", _S), 166: ("GSS-Acceptor-Service-Specifics", _S),
    167: ("GSS-Acceptor-Realm-Name", _S), 168: ("Framed-IPv6-Address", _A6),
    169: ("DNS-Server-IPv6-Address", _A6), 170: ("Route-IPv6-Information", _P),
    171: ("Delegated-IPv6-Prefix-Pool", _S), 172: ("Stateful-IPv6-Address-Pool", _S),
    174: ("Allowed-Called-Station-Id", _S), 175: ("EAP-Peer-Id", _O), 176: ("EAP-Server-Id", _O),
    177: ("Mobility-Domain-Id", _I), 178: ("Preauth-Timeout", _I), 179: ("Network-Id-Name", _O),
    180: ("EAPoL-Announcement", _O), 181: ("WLAN-HESSID", _S), 182: ("WLAN-Venue-Info", _I),
    183: ("WLAN-Venue-Language", _O), 184: ("WLAN-Venue-Name", _S), 185: ("WLAN-Reason-Code", _I),
    186: ("WLAN-Pairwise-Cipher", _I), 187: ("WLAN-Group-Cipher", _I), 188: ("WLAN-AKM-Suite", _I),
    189: ("WLAN-Group-Mgmt-Cipher", _I), 190: ("WLAN-RF-Band", _I),
}  # fmt: skip

# Vendor-Specific sub-attributes (RFC 2865 §5.26's suggested format: type, length, value) of the
# common vendors: Microsoft (RFC 2548), Cisco, WISPr (Wi-Fi Alliance), 3GPP (TS 29.061 §16.4.7).
MICROSOFT: Final = 311
CISCO: Final = 9
WISPR: Final = 14122
THREE_GPP: Final = 10415
VENDORS: Final[dict[int, str]] = {
    9: "Cisco", 311: "Microsoft", 529: "Ascend", 2011: "Huawei", 2636: "Juniper", 3076: "Altiga",
    4874: "ERX", 5535: "3GPP2", 8164: "Starent", 10415: "3GPP", 12356: "Fortinet", 14122: "WISPr",
    14179: "Airespace", 14988: "Mikrotik", 25053: "Ruckus", 25506: "H3C",
}  # fmt: skip
VENDOR_ATTRIBUTES: Final[dict[tuple[int, int], tuple[str, str]]] = {
    # Microsoft (RFC 2548): every MS-CHAP/MPPE value is a secret or derived from one.
    (311, 1): ("MS-CHAP-Response", _X), (311, 2): ("MS-CHAP-Error", _S), (311, 3): ("MS-CHAP-CPW-1", _X),
    (311, 4): ("MS-CHAP-CPW-2", _X), (311, 5): ("MS-CHAP-LM-Enc-PW", _X),
    (311, 6): ("MS-CHAP-NT-Enc-PW", _X), (311, 7): ("MS-MPPE-Encryption-Policy", _I),
    (311, 8): ("MS-MPPE-Encryption-Types", _I), (311, 9): ("MS-RAS-Vendor", _I),
    (311, 10): ("MS-CHAP-Domain", _S), (311, 11): ("MS-CHAP-Challenge", _X),
    (311, 12): ("MS-CHAP-MPPE-Keys", _X), (311, 13): ("MS-BAP-Usage", _I),
    (311, 14): ("MS-Link-Utilization-Threshold", _I), (311, 15): ("MS-Link-Drop-Time-Limit", _I),
    (311, 16): ("MS-MPPE-Send-Key", _X), (311, 17): ("MS-MPPE-Recv-Key", _X),
    (311, 18): ("MS-RAS-Version", _S), (311, 19): ("MS-Old-ARAP-Password", _X),
    (311, 20): ("MS-New-ARAP-Password", _X), (311, 21): ("MS-ARAP-PW-Change-Reason", _I),
    (311, 22): ("MS-Filter", _O), (311, 23): ("MS-Acct-Auth-Type", _I), (311, 24): ("MS-Acct-EAP-Type", _I),
    (311, 25): ("MS-CHAP2-Response", _X), (311, 26): ("MS-CHAP2-Success", _X),
    (311, 27): ("MS-CHAP2-CPW", _X), (311, 28): ("MS-Primary-DNS-Server", _A),
    (311, 29): ("MS-Secondary-DNS-Server", _A), (311, 30): ("MS-Primary-NBNS-Server", _A),
    (311, 31): ("MS-Secondary-NBNS-Server", _A), (311, 34): ("MS-RAS-Client-Name", _S),
    (311, 35): ("MS-RAS-Client-Version", _S), (311, 36): ("MS-Quarantine-IPFilter", _O),
    (311, 37): ("MS-Quarantine-Session-Timeout", _I), (311, 40): ("MS-User-Security-Identity", _S),
    (311, 41): ("MS-Identity-Type", _I), (311, 42): ("MS-Service-Class", _S),
    (311, 44): ("MS-Quarantine-User-Class", _S), (311, 45): ("MS-Quarantine-State", _I),
    (311, 46): ("MS-Quarantine-Grace-Time", _I), (311, 47): ("MS-Network-Access-Server-Type", _I),
    (311, 48): ("MS-AFW-Zone", _I), (311, 49): ("MS-AFW-Protection-Level", _I),
    (311, 50): ("MS-Machine-Name", _S), (311, 56): ("MS-RAS-Correlation", _O),
    (311, 58): ("MS-HCAP-User-Groups", _S), (311, 59): ("MS-HCAP-Location-Group-Name", _S),
    (311, 60): ("MS-HCAP-User-Name", _S), (311, 61): ("MS-User-IPv4-Address", _A),
    (311, 62): ("MS-User-IPv6-Address", _A6),
    # Cisco (its dictionary.cisco).
    (9, 1): ("Cisco-AVPair", _S), (9, 2): ("Cisco-NAS-Port", _S), (9, 23): ("h323-remote-address", _S),
    (9, 24): ("h323-conf-id", _S), (9, 25): ("h323-setup-time", _S), (9, 26): ("h323-call-origin", _S),
    (9, 27): ("h323-call-type", _S), (9, 28): ("h323-connect-time", _S),
    (9, 29): ("h323-disconnect-time", _S), (9, 30): ("h323-disconnect-cause", _S),
    (9, 31): ("h323-voice-quality", _S), (9, 33): ("h323-gw-id", _S),
    (9, 35): ("h323-incoming-conf-id", _S), (9, 101): ("h323-credit-amount", _S),
    (9, 102): ("h323-credit-time", _S), (9, 103): ("h323-return-code", _S),
    (9, 187): ("Cisco-Multilink-ID", _I), (9, 188): ("Cisco-Num-In-Multilink", _I),
    (9, 190): ("Cisco-Pre-Input-Octets", _I), (9, 191): ("Cisco-Pre-Output-Octets", _I),
    (9, 192): ("Cisco-Pre-Input-Packets", _I), (9, 193): ("Cisco-Pre-Output-Packets", _I),
    (9, 194): ("Cisco-Maximum-Time", _I), (9, 195): ("Cisco-Disconnect-Cause", _I),
    (9, 250): ("Cisco-Account-Info", _S), (9, 252): ("Cisco-Command-Code", _O),
    # WISPr (Wi-Fi Alliance WISPr 1.0, appendix D).
    (14122, 1): ("WISPr-Location-ID", _S), (14122, 2): ("WISPr-Location-Name", _S),
    (14122, 3): ("WISPr-Logoff-URL", _S), (14122, 4): ("WISPr-Redirection-URL", _S),
    (14122, 5): ("WISPr-Bandwidth-Min-Up", _I), (14122, 6): ("WISPr-Bandwidth-Min-Down", _I),
    (14122, 7): ("WISPr-Bandwidth-Max-Up", _I), (14122, 8): ("WISPr-Bandwidth-Max-Down", _I),
    (14122, 9): ("WISPr-Session-Terminate-Time", _S),
    (14122, 10): ("WISPr-Session-Terminate-End-Of-Day", _S),
    (14122, 11): ("WISPr-Billing-Class-Of-Service", _S),
    # 3GPP (TS 29.061 §16.4.7, Table 16.4.7.1).
    (10415, 1): ("3GPP-IMSI", _S), (10415, 2): ("3GPP-Charging-Id", _I), (10415, 3): ("3GPP-PDP-Type", _I),
    (10415, 4): ("3GPP-Charging-Gateway-Address", _A), (10415, 5): ("3GPP-GPRS-Negotiated-QoS-Profile", _S),
    (10415, 6): ("3GPP-SGSN-Address", _A), (10415, 7): ("3GPP-GGSN-Address", _A),
    (10415, 8): ("3GPP-IMSI-MCC-MNC", _S), (10415, 9): ("3GPP-GGSN-MCC-MNC", _S),
    (10415, 10): ("3GPP-NSAPI", _S), (10415, 11): ("3GPP-Session-Stop-Indicator", _O),
    (10415, 12): ("3GPP-Selection-Mode", _S), (10415, 13): ("3GPP-Charging-Characteristics", _S),
    (10415, 14): ("3GPP-Charging-Gateway-IPv6-Address", _A6), (10415, 15): ("3GPP-SGSN-IPv6-Address", _A6),
    (10415, 16): ("3GPP-GGSN-IPv6-Address", _A6), (10415, 17): ("3GPP-IPv6-DNS-Servers", _O),
    (10415, 18): ("3GPP-SGSN-MCC-MNC", _S), (10415, 19): ("3GPP-Teardown-Indicator", _O),
    (10415, 20): ("3GPP-IMEISV", _S), (10415, 21): ("3GPP-RAT-Type", _I),
    (10415, 22): ("3GPP-User-Location-Info", _O), (10415, 23): ("3GPP-MS-TimeZone", _O),
    (10415, 24): ("3GPP-Camel-Charging-Info", _O), (10415, 25): ("3GPP-Packet-Filter", _O),
    (10415, 26): ("3GPP-Negotiated-DSCP", _O), (10415, 27): ("3GPP-Allocate-IP-Type", _O),
    (10415, 28): ("External-Identifier", _S),
}  # fmt: skip

# Named integer values (RFC 2865 §5, RFC 2866 §5, RFC 2868 §3, RFC 4675, RFC 5176 §3.6, 3GPP 29.061).
VALUES: Final[dict[str, dict[int, str]]] = {
    "Service-Type": {
        1: "Login", 2: "Framed", 3: "Callback-Login", 4: "Callback-Framed", 5: "Outbound",
        6: "Administrative", 7: "NAS-Prompt", 8: "Authenticate-Only", 9: "Callback-NAS-Prompt",
        10: "Call-Check", 11: "Callback-Administrative", 12: "Voice", 13: "Fax", 14: "Modem-Relay",
        15: "IAPP-Register", 16: "IAPP-AP-Check", 17: "Authorize-Only", 18: "Framed-Management",
    },
    "Framed-Protocol": {
        1: "PPP", 2: "SLIP", 3: "ARAP", 4: "Gandalf-SLML", 5: "Xylogics-IPX-SLIP", 6: "X.75-Synchronous",
        7: "GPRS-PDP-Context",
    },
    "Framed-Routing": {0: "None", 1: "Broadcast", 2: "Listen", 3: "Broadcast-Listen"},
    "Framed-Compression": {0: "None", 1: "Van-Jacobson-TCP-IP", 2: "IPX-Header-Compression", 3: "Stac-LZS"},
    "Login-Service": {
        0: "Telnet", 1: "Rlogin", 2: "TCP-Clear", 3: "PortMaster", 4: "LAT", 5: "X25-PAD", 6: "X25-T3POS",
        8: "TCP-Clear-Quiet",
    },
    "Termination-Action": {0: "Default", 1: "RADIUS-Request"},
    "Acct-Status-Type": {
        1: "Start", 2: "Stop", 3: "Interim-Update", 7: "Accounting-On", 8: "Accounting-Off",
        9: "Tunnel-Start", 10: "Tunnel-Stop", 11: "Tunnel-Reject", 12: "Tunnel-Link-Start",
        13: "Tunnel-Link-Stop", 14: "Tunnel-Link-Reject", 15: "Failed",
    },
    "Acct-Authentic": {1: "RADIUS", 2: "Local", 3: "Remote", 4: "Diameter"},
    "Acct-Terminate-Cause": {
        1: "User-Request", 2: "Lost-Carrier", 3: "Lost-Service", 4: "Idle-Timeout", 5: "Session-Timeout",
        6: "Admin-Reset", 7: "Admin-Reboot", 8: "Port-Error", 9: "NAS-Error", 10: "NAS-Request",
        11: "NAS-Reboot", 12: "Port-Unneeded", 13: "Port-Preempted", 14: "Port-Suspended",
        15: "Service-Unavailable", 16: "Callback", 17: "User-Error", 18: "Host-Request",
        19: "Supplicant-Restart", 20: "Reauthentication-Failure", 21: "Port-Reinitialized",
        22: "Port-Administratively-Disabled",
    },
    "NAS-Port-Type": {
        0: "Async", 1: "Sync", 2: "ISDN", 3: "ISDN-V120", 4: "ISDN-V110", 5: "Virtual", 6: "PIAFS",
        7: "HDLC-Clear-Channel", 8: "X.25", 9: "X.75", 10: "G.3-Fax", 11: "SDSL", 12: "ADSL-CAP",
        13: "ADSL-DMT", 14: "IDSL", 15: "Ethernet", 16: "xDSL", 17: "Cable", 18: "Wireless-Other",
        19: "Wireless-802.11", 20: "Token-Ring", 21: "FDDI", 22: "Wireless-CDMA2000",
        23: "Wireless-UMTS", 24: "Wireless-1X-EV", 25: "IAPP", 26: "FTTP", 27: "Wireless-802.16",
        28: "Wireless-802.20", 29: "Wireless-802.22", 30: "PPPoA", 31: "PPPoEoA", 32: "PPPoEoE",
        33: "PPPoEoVLAN", 34: "PPPoEoQinQ", 35: "xPON", 36: "Wireless-XGP",
    },
    "Tunnel-Type": {
        1: "PPTP", 2: "L2F", 3: "L2TP", 4: "ATMP", 5: "VTP", 6: "AH", 7: "IP-IP", 8: "MIN-IP-IP", 9: "ESP",
        10: "GRE", 11: "DVS", 12: "IP-in-IP", 13: "VLAN",
    },
    "Tunnel-Medium-Type": {
        1: "IPv4", 2: "IPv6", 3: "NSAP", 4: "HDLC", 5: "BBN-1822", 6: "IEEE-802", 7: "E.163", 8: "E.164",
        9: "F.69", 10: "X.121", 11: "IPX", 12: "Appletalk", 13: "DecNet-IV", 14: "Banyan-Vines",
        15: "E.164-NSAP",
    },
    "Ingress-Filters": {1: "Enabled", 2: "Disabled"},
    "Prompt": {0: "No-Echo", 1: "Echo"},
    "Error-Cause": {
        201: "Residual-Session-Context-Removed", 202: "Invalid-EAP-Packet", 401: "Unsupported-Attribute",
        402: "Missing-Attribute", 403: "NAS-Identification-Mismatch", 404: "Invalid-Request",
        405: "Unsupported-Service", 406: "Unsupported-Extension", 407: "Invalid-Attribute-Value",
        501: "Administratively-Prohibited", 502: "Request-Not-Routable", 503: "Session-Context-Not-Found",
        504: "Session-Context-Not-Removable", 505: "Other-Proxy-Processing-Error",
        506: "Resources-Unavailable", 507: "Request-Initiated",
        508: "Multiple-Session-Selection-Unsupported", 509: "Location-Info-Required",
    },
    "MS-MPPE-Encryption-Policy": {1: "Encryption-Allowed", 2: "Encryption-Required"},
    "3GPP-PDP-Type": {
        0: "IPv4", 1: "PPP", 2: "IPv6", 3: "IPv4v6", 4: "Non-IP", 5: "Unstructured", 6: "Ethernet",
    },
    "3GPP-RAT-Type": {
        1: "UTRAN", 2: "GERAN", 3: "WLAN", 4: "GAN", 5: "HSPA-Evolution", 6: "EUTRAN", 7: "Virtual",
        8: "EUTRAN-NB-IoT", 9: "LTE-M", 10: "NR",
    },
}  # fmt: skip

# EAP (RFC 3748 §4, RFC 5296 §5): codes and method types (IANA "Method Types").
EAP_CODES: Final[dict[int, str]] = {
    1: "Request",
    2: "Response",
    3: "Success",
    4: "Failure",
    5: "Initiate",
    6: "Finish",
}
EAP_TYPES: Final[dict[int, str]] = {
    1: "Identity", 2: "Notification", 3: "Nak", 4: "MD5-Challenge", 5: "OTP", 6: "GTC", 9: "RSA",
    13: "EAP-TLS", 17: "LEAP", 18: "EAP-SIM", 21: "EAP-TTLS", 23: "EAP-AKA", 25: "PEAP",
    26: "MSCHAPv2", 29: "EAP-MSCHAPv2", 43: "EAP-FAST", 47: "EAP-PSK", 48: "EAP-SAKE", 49: "EAP-IKEv2",
    50: "EAP-AKA'", 51: "EAP-GPSK", 52: "EAP-pwd", 53: "EAP-EKE", 54: "EAP-PT-EAP", 55: "TEAP",
    56: "EAP-NOOB", 254: "Expanded", 255: "Experimental",
}  # fmt: skip
# Methods that carry TLS records (RFC 5216 §3.1 flags: L length included, M more fragments, S start).
_EAP_TLS_METHODS: Final = frozenset({13, 21, 25, 43, 55})
# Longest EAP identity or notification text kept (RFC 3748 allows any; user names are short).
MAX_EAP_TEXT: Final = 253

_U16_MAX: Final = 0xFFFF


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _integer(name: str, value: bytes) -> Any:
    if len(value) != 4:
        return value.hex()  # RFC 2865 §5: an integer is 4 octets; a wrong size is shown as sent
    number = int.from_bytes(value, "big")
    names = VALUES.get(name)
    if names is not None:
        return names.get(number, number)
    return number


def _value(name: str, kind: str, value: bytes) -> tuple[str, Any]:
    """(display name, value) of one attribute's value; a secret never gets past this function."""
    if kind == _S:
        return name, _text(value)
    if kind == _I:
        return name, _integer(name, value)
    if kind == _A:
        return name, socket.inet_ntop(socket.AF_INET, value) if len(value) == 4 else value.hex()
    if kind == _X:
        return name, REDACTED
    if kind == _A6:
        return name, socket.inet_ntop(socket.AF_INET6, value) if len(value) == 16 else value.hex()
    if kind == _P:
        # RFC 3162 §2.3: reserved octet, prefix length, then up to 16 octets of prefix.
        if 2 <= len(value) <= 18 and value[1] <= 128:
            prefix = (value[2:] + bytes(16))[:16]
            return name, f"{socket.inet_ntop(socket.AF_INET6, prefix)}/{value[1]}"
        return name, value.hex()
    if kind == _D:
        if len(value) == 4:
            return name, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int.from_bytes(value, "big")))
        return name, value.hex()
    if kind == _F:
        return name, ":".join(value[i : i + 2].hex() for i in range(0, len(value), 2))
    if kind in (_TS, _TI):
        # RFC 2868 §3: a first octet 0x01-0x1F is a tag (for an integer always present, 0 = none).
        tag = 0
        if value and (kind == _TI or value[0] <= 0x1F):
            tag = value[0]
            value = value[1:]
            if kind == _TI:
                value = b"\0" + value  # the integer is the remaining 3 octets
        shown = f"{name}:{tag}" if tag else name
        return shown, (_text(value) if kind == _TS else _integer(name, value))
    return name, value.hex()


def _add(attrs: dict[str, Any], name: str, value: Any) -> None:
    """An attribute that repeats (Reply-Message, Class, Proxy-State, VSAs) becomes a list in order."""
    old = attrs.get(name)
    if old is None:
        attrs[name] = value
    elif type(old) is list:
        old.append(value)
    else:
        attrs[name] = [old, value]


def _vendor(attrs: dict[str, Any], value: bytes) -> None:
    """A Vendor-Specific attribute (RFC 2865 §5.26): vendor id, then sub-attributes in the suggested
    type/length/value format; a VSA whose contents do not tile that way is kept whole, as hex."""
    if len(value) < 4:
        _add(attrs, "Vendor-Specific", value.hex())
        return
    vendor = int.from_bytes(value[:4], "big")
    vname = VENDORS.get(vendor, f"Vendor-{vendor}")
    pos, end = 4, len(value)
    subs: list[tuple[int, bytes]] = []
    while pos < end:
        if end - pos < 2 or value[pos + 1] < 2 or pos + value[pos + 1] > end:
            _add(attrs, vname, value[4:].hex())  # another vendor format (USR, Lucent…): as sent
            return
        length = value[pos + 1]
        subs.append((value[pos], value[pos + 2 : pos + length]))
        pos += length
    for vtype, data in subs:
        known = VENDOR_ATTRIBUTES.get((vendor, vtype))
        if known is None:
            _add(attrs, f"{vname}-Attr-{vtype}", data.hex())
        else:
            shown, val = _value(known[0], known[1], data)
            _add(attrs, shown, val)


def eap_summary(data: bytes) -> dict[str, Any] | None:
    """The EAP header of the joined EAP-Message attributes (RFC 3748 §4); never the method's data."""
    if len(data) < 4:
        return {"size": len(data), "malformed": "shorter than an EAP header"}
    code = data[0]
    length = int.from_bytes(data[2:4], "big")
    out: dict[str, Any] = {
        "code": code,
        "code_name": EAP_CODES.get(code, str(code)),
        "id": data[1],
        "length": length,
    }
    if length != len(data):
        out["size"] = len(data)  # RFC 3579 §3.1: fragments of one packet; a mismatch is shown
    if code in (1, 2) and len(data) >= 5:
        etype = data[4]
        out["type"] = etype
        out["type_name"] = EAP_TYPES.get(etype, str(etype))
        body = data[5 : min(length, len(data))]
        if etype == 1 and code == 2:
            out["identity"] = _text(body[:MAX_EAP_TEXT])
        elif etype == 2:
            out["notification"] = _text(body[:MAX_EAP_TEXT])
        elif etype == 3 and code == 2:
            out["desired"] = [EAP_TYPES.get(t, str(t)) for t in body[:16]]
        elif etype in _EAP_TLS_METHODS and body:
            flags = body[0]
            out["flags"] = {
                "length_included": bool(flags & 0x80),
                "more_fragments": bool(flags & 0x40),
                "start": bool(flags & 0x20),
            }
    return out


def parse(data: bytes) -> tuple[dict[str, Any], bool, str | None]:
    """One datagram → (fields, truncated, problem). `data` is at least a header with a known code and
    a Length of at least 20; the walk stops at the first bad attribute and names it in `problem`."""
    code, ident = data[0], data[1]
    length = (data[2] << 8) | data[3]
    truncated = length > len(data)  # RFC 2865 §3: shorter than Length — cut by the capture (snaplen)
    end = min(length, len(data))
    attrs: dict[str, Any] = {}
    eap = bytearray()
    eap_parts = 0
    problem: str | None = None
    count = 0
    pos = HEADER_LEN
    while pos < end:
        if end - pos < 2:
            if not truncated:
                problem = f"a lone byte after the last attribute at offset {pos}"
            break
        atype, alen = data[pos], data[pos + 1]
        if alen < 2:  # RFC 2865 §5: the length includes type and length, so at least 2
            problem = f"attribute {atype} at offset {pos} has length {alen}"
            break
        if pos + alen > end:
            if not truncated:
                problem = f"attribute {atype} at offset {pos} claims {alen} bytes, {end - pos} are left"
            break
        value = data[pos + 2 : pos + alen]
        pos += alen
        count += 1
        if count > MAX_ATTRIBUTES:
            continue
        known = ATTRIBUTES.get(atype)
        if known is None:
            _add(attrs, f"Attribute-{atype}", value.hex())
            continue
        name, kind = known
        # The common kinds inline (this loop runs per attribute); the rest in `_value`.
        if kind == _S:
            val: Any = value.decode("utf-8", "replace")
        elif kind == _X:
            val = REDACTED
        elif kind == _I and alen == 6 and name not in VALUES:
            val = int.from_bytes(value, "big")
        elif kind == _V:
            _vendor(attrs, value)
            continue
        elif kind == _E:
            eap += value
            eap_parts += 1
            continue
        else:
            name, val = _value(name, kind, value)
        if name in attrs:
            _add(attrs, name, val)
        else:
            attrs[name] = val
    fields: dict[str, Any] = {
        "code": code,
        "code_name": CODES.get(code, str(code)),
        "id": ident,
        "length": length,
        "authenticator": data[4:HEADER_LEN].hex(),
        "attributes": attrs,
    }
    if count > MAX_ATTRIBUTES:
        fields["attributes_count"] = count
    if eap_parts:
        summary = eap_summary(bytes(eap))
        if summary is not None:
            summary["fragments"] = eap_parts
            fields["eap"] = summary
    if problem is not None:
        fields["malformed"] = problem
    return fields, truncated, problem


def _header_ok(data: bytes, codes: frozenset[int], max_length: int) -> bool:
    if len(data) < HEADER_LEN or data[0] not in codes:
        return False
    length = (data[2] << 8) | data[3]
    return HEADER_LEN <= length <= max_length


class RadiusSession:
    """Both directions of one NAS ↔ server flow. `ids` holds, per identifier (at most 256), the last
    request's authenticator, its transaction number, the Response Authenticator of its answer once
    paired (to tell a duplicate response), and its fields while it waits (to count retransmissions)."""

    __slots__ = ("counters", "ids", "transactions")

    def __init__(self, config: SessionConfig) -> None:
        # identifier → [request authenticator, transaction, response authenticator | None, fields | None]
        self.ids: dict[int, list[Any]] = {}
        self.transactions = 0
        self.counters: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        code = data[0] if data else -1
        request = code in REQUESTS
        if not _header_ok(data, REQUESTS if request else RESPONSES, _U16_MAX):
            if not self.ids:  # nothing on this flow was RADIUS yet: it is not RADIUS
                return [Violation("radius: not a RADIUS packet")]
            self._count("malformed_headers")  # counted and skipped: the next datagram may be fine
            return []
        fields, truncated, problem = parse(data)
        if problem is not None:
            self._count("malformed")
        if "eap" in fields:
            self._count("eap_messages")
        ident: int = data[1]
        auth = data[4:HEADER_LEN]
        state = self.ids.get(ident)
        size = len(data)
        if request:
            if problem is not None:
                # RFC 2865 §3: the server silently discards it, so nothing will answer: an entry of
                # its own (with the dissection error), never waiting for an answer.
                return [Message(True, ts, ts, size, fields, standalone=True)]
            if state is not None and state[0] == auth:
                self._count("retransmissions")  # same identifier and authenticator (RFC 5080 §2.2.2)
                waiting = state[3]
                if waiting is not None:
                    waiting["retransmissions"] = waiting.get("retransmissions", 0) + 1
                return []
            if state is not None and state[2] is None:
                number = state[1]  # reused before an answer: the matcher hands the old one back
            else:
                self.transactions += 1
                number = self.transactions
            self.ids[ident] = [auth, number, None, fields]
            return [Message(True, ts, ts, size, fields, key=(ident, number), truncated=truncated)]
        if state is None:
            return [Message(False, ts, ts, size, fields, key=(ident, None), truncated=truncated)]
        if state[2] is not None:
            if state[2] == auth:
                self._count("duplicate_responses")  # the server's cache answering a retransmission
                return []
            return [Message(False, ts, ts, size, fields, key=(ident, None), truncated=truncated)]
        state[2] = auth
        state[3] = None
        return [Message(False, ts, ts, size, fields, key=(ident, state[1]), truncated=truncated)]

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        return []

    def close(self, ts: int) -> list[Event]:
        return []


def _tiles(data: bytes) -> bool:
    """The attributes fill the packet exactly up to its Length (the probe's evidence)."""
    length = (data[2] << 8) | data[3]
    pos = HEADER_LEN
    while pos < length:
        if length - pos < 2 or data[pos + 1] < 2 or pos + data[pos + 1] > length:
            return False
        pos += data[pos + 1]
    return True


def probe(client: bytes, server: bytes) -> Verdict:
    """A request from the client or an answer from the server, by header and attribute layout."""
    if (
        client
        and _header_ok(client, REQUESTS, MAX_LENGTH_UDP)
        and len(client) >= (client[2] << 8 | client[3])
    ):
        return Verdict.YES if _tiles(client) else Verdict.NO
    if (
        server
        and _header_ok(server, RESPONSES, MAX_LENGTH_UDP)
        and len(server) >= (server[2] << 8 | server[3])
    ):
        return Verdict.YES if _tiles(server) else Verdict.NO
    return Verdict.NO


def _attr(fields: dict[str, Any], name: str) -> Any:
    value = fields["attributes"].get(name)
    return value[0] if type(value) is list else value


def present(req: Message | None, resp: Message | None) -> Presented:
    first = req if req is not None else resp
    assert first is not None
    f = first.fields
    user = _attr(f, "User-Name")
    if user is None and resp is not None:
        user = _attr(resp.fields, "User-Name")
    path = user if type(user) is str else None
    parts = [f["code_name"]]
    status_type = _attr(f, "Acct-Status-Type")
    if status_type is not None:
        parts.append(str(status_type))
    if path is not None:
        parts.append(path)
    eap = f.get("eap")
    if eap is not None:
        parts.append(f"[EAP {eap.get('type_name') or eap.get('code_name')}]")
    summary = " ".join(parts)
    status = None
    if resp is not None:
        status = resp.fields["code"]
        if req is not None:
            summary += f" → {resp.fields['code_name']}"
            message = _attr(resp.fields, "Reply-Message")
            cause = _attr(resp.fields, "Error-Cause")
            if status in REFUSALS and (message is not None or cause is not None):
                summary += f": {message if message is not None else cause}"
    if f.get("retransmissions"):
        summary += f" ({f['retransmissions']} retransmissions)"
    return Presented(method=f["code_name"], path=path, status=status, summary=summary, stream=str(f["id"]))


def classify(request: dict[str, Any] | None, response: dict[str, Any] | None) -> dict[str, Any]:
    """A packet whose attributes broke off is an entry with a dissection error; every secret the
    parser replaced is listed in `redacted`."""
    over: dict[str, Any] = {}
    places: list[str] = []
    for side, fields in (("request", request), ("response", response)):
        if fields is None:
            continue
        problem = fields.get("malformed")
        if problem is not None and "error" not in over:
            over["error"] = {"type": "dissection", "message": f"radius: {problem}"}
        for name, value in fields["attributes"].items():
            if value == REDACTED or (type(value) is list and REDACTED in value):
                places.append(f"{side}.attributes.{name}")
    if places:
        over["redacted"] = places
    return over


SPEC: Final = ProtocolSpec(
    name="radius",
    transports=("udp",),
    # 1812/1813 (RFC 2865/2866), the older 1645/1646, 3799 dynamic authorization (RFC 5176), 1700 (Cisco CoA).
    ports=(1812, 1813, 1645, 1646, 3799, 1700),
    probe=probe,
    session=RadiusSession,
    present=present,
    matcher="key",
    unanswered_error="timeout",
    classify=classify,
)
