"""Diameter (RFC 6733) messages as bytes, for the tests' clients and peers: a small encoder, written
from the RFC (header §3, AVPs §4.1, padding to 4 octets), independent of the dissector's decoder."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

FLAG_R, FLAG_P, FLAG_E, FLAG_T = 0x80, 0x40, 0x20, 0x10
AVP_V, AVP_M = 0x80, 0x40
VENDOR_3GPP = 10415
# AVP codes the tests use (RFC 6733 §4.5, RFC 4006 §8).
SESSION_ID, ORIGIN_HOST, ORIGIN_REALM, DESTINATION_REALM, DESTINATION_HOST = 263, 264, 296, 283, 293
RESULT_CODE, AUTH_APPLICATION_ID, VENDOR_ID, PRODUCT_NAME, HOST_IP_ADDRESS = 268, 258, 266, 269, 257
EXPERIMENTAL_RESULT, EXPERIMENTAL_RESULT_CODE, ORIGIN_STATE_ID = 297, 298, 278
CC_REQUEST_TYPE, CC_REQUEST_NUMBER, USER_NAME, USER_PASSWORD, SUBSCRIPTION_ID = 416, 415, 1, 2, 443
SUBSCRIPTION_ID_TYPE, SUBSCRIPTION_ID_DATA, DISCONNECT_CAUSE = 450, 444, 273


def avp(code: int, data: bytes, vendor: int = 0, mandatory: bool = True) -> bytes:
    """One AVP: header, optional Vendor-ID, data, zero padding to a multiple of 4."""
    flags = (AVP_M if mandatory else 0) | (AVP_V if vendor else 0)
    head = 12 if vendor else 8
    length = head + len(data)
    out = struct.pack("!II", code, (flags << 24) | length)
    if vendor:
        out += struct.pack("!I", vendor)
    return out + data + b"\x00" * (-length % 4)


def utf8(code: int, text: str, vendor: int = 0) -> bytes:
    return avp(code, text.encode(), vendor)


def u32(code: int, value: int, vendor: int = 0) -> bytes:
    return avp(code, struct.pack("!I", value), vendor)


def grouped(code: int, members: Iterable[bytes], vendor: int = 0) -> bytes:
    return avp(code, b"".join(members), vendor)


def address(code: int, ipv4: bytes) -> bytes:
    return avp(code, b"\x00\x01" + ipv4)


# The base protocol's own commands (CER/CEA, DWR/DWA, DPR/DPA) are never proxiable (RFC 6733 §5.3-5.5:
# their headers carry no PXY); a peer treats one with the P bit as a message to route.
PEER_ONLY: frozenset[int] = frozenset({257, 280, 282})


def message(
    code: int,
    app: int,
    request: bool,
    hbh: int,
    e2e: int,
    avps: Iterable[bytes],
    error: bool = False,
    proxiable: bool | None = None,
) -> bytes:
    """A whole message: version 1, its length, flags (R, P, E), command code, ids, AVPs. The P bit is
    set unless asked otherwise or the command is one of PEER_ONLY."""
    body = b"".join(avps)
    if proxiable is None:
        proxiable = code not in PEER_ONLY
    flags = (FLAG_R if request else 0) | (FLAG_P if proxiable else 0) | (FLAG_E if error else 0)
    length = 20 + len(body)
    return struct.pack("!IIIII", (1 << 24) | length, (flags << 24) | code, app, hbh, e2e) + body


def parse_header(data: bytes) -> tuple[int, int, int, int, int, int]:
    """(length, flags, command code, application id, hop-by-hop, end-to-end) of a message's header."""
    word0, word1, app, hbh, e2e = struct.unpack_from("!IIIII", data, 0)
    return word0 & 0xFFFFFF, word1 >> 24, word1 & 0xFFFFFF, app, hbh, e2e


def find_avp(data: bytes, code: int) -> bytes | None:
    """The data of the first top-level AVP `code` of a message (vendor 0), or None."""
    pos = 20
    end = parse_header(data)[0]
    while pos + 8 <= end:
        acode, word = struct.unpack_from("!II", data, pos)
        flags, length = word >> 24, word & 0xFFFFFF
        if length < 8:
            return None
        head = 12 if flags & AVP_V else 8
        if acode == code and not flags & AVP_V:
            return data[pos + head : pos + length]
        pos += (length + 3) & ~3
    return None


# ---- a peer and a client over TCP, for the live test (each run in its own network namespace) --------

CCR, ULR, CER, DWR, DPR, RAR = 272, 316, 257, 280, 282, 258
GX, S6A = 16777238, 16777251
UNKNOWN_IMSI = "001019999999999"  # the peer answers Update-Location for it with 5001 (user unknown)
BIG_AVP = 1066  # Monitoring-Key (3GPP), an OctetString: carries the client's large payload


def _identity(host: str) -> list[bytes]:
    return [utf8(ORIGIN_HOST, f"{host}.wiretide.test"), utf8(ORIGIN_REALM, "wiretide.test")]


def read_message(sock: Any) -> bytes | None:
    """One whole message from a stream socket, or None at its end."""
    head = _read(sock, 4)
    if head is None:
        return None
    rest = _read(sock, (int.from_bytes(head, "big") & 0xFFFFFF) - 4)
    return None if rest is None else head + rest


def _read(sock: Any, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            return None
        data += more
    return data


def result_of(msg: bytes) -> int | None:
    """An answer's Result-Code, else the Experimental-Result-Code inside its Experimental-Result."""
    found = find_avp(msg, RESULT_CODE)
    if found is not None:
        return int.from_bytes(found, "big")
    group = find_avp(msg, EXPERIMENTAL_RESULT)
    if group is None:
        return None
    pos = 0
    while pos + 8 <= len(group):
        code, word = struct.unpack_from("!II", group, pos)
        if code == EXPERIMENTAL_RESULT_CODE:
            return int.from_bytes(group[pos + 8 : pos + 12], "big")
        pos += ((word & 0xFFFFFF) + 3) & ~3
    return None


def _answer(request: bytes) -> bytes:
    _, _, code, app, hbh, e2e = parse_header(request)
    session = find_avp(request, SESSION_ID)
    avps = [avp(SESSION_ID, session)] if session is not None else []
    user = find_avp(request, USER_NAME)
    if code == ULR and user == UNKNOWN_IMSI.encode():
        result = [
            grouped(EXPERIMENTAL_RESULT, [u32(VENDOR_ID, VENDOR_3GPP), u32(EXPERIMENTAL_RESULT_CODE, 5001)])
        ]
    else:
        result = [u32(RESULT_CODE, 2001)]
    extra = [u32(AUTH_APPLICATION_ID, GX), utf8(PRODUCT_NAME, "wiretide-peer")] if code == CER else []
    kind = find_avp(request, CC_REQUEST_TYPE)
    if kind is not None:
        extra.append(avp(CC_REQUEST_TYPE, kind))
    return message(code, app, False, hbh, e2e, [*avps, *result, *_identity("peer"), *extra])


def serve(host: str, port: int) -> None:
    """A Diameter peer: answers every request (CEA, CCA, ULA — 5001 for UNKNOWN_IMSI — DWA, DPA) and,
    after the first Credit-Control-Request of a connection, sends a Re-Auth-Request of its own."""
    import socket

    server = socket.create_server((host, port))
    print("listening", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            sent_rar = False
            while (msg := read_message(conn)) is not None:
                _, flags, code, app, _, _ = parse_header(msg)
                if not flags & FLAG_R:
                    continue  # the client's answer to our Re-Auth-Request
                conn.sendall(_answer(msg))
                if code == CCR and not sent_rar:
                    sent_rar = True
                    session = find_avp(msg, SESSION_ID) or b""
                    rar = message(RAR, app, True, 0x5000, 0x5000,
                                  [avp(SESSION_ID, session), *_identity("peer"), u32(285, 0)])  # fmt: skip
                    conn.sendall(rar)
                if code == DPR:
                    break


def client(host: str, port: int, big: int) -> dict[str, Any]:
    """A Diameter client's session against `serve`; what it did, as it saw it: per request it sent,
    [abbreviation, hop-by-hop id, result]; per request it received, the same."""
    import socket

    sent: list[list[Any]] = []
    received: list[list[Any]] = []
    sock = socket.create_connection((host, port), timeout=30)
    session = "client.wiretide.test;1;1"
    base = [avp(SESSION_ID, session.encode()), *_identity("client"), utf8(DESTINATION_REALM, "wiretide.test")]

    def exchange(batch: list[tuple[str, bytes]]) -> None:
        sock.sendall(b"".join(m for _, m in batch))
        waiting = {parse_header(m)[4]: name for name, m in batch}
        while waiting:
            msg = read_message(sock)
            assert msg is not None, "the peer closed the connection"
            _, flags, code, app, hbh, e2e = parse_header(msg)
            if flags & FLAG_R:  # the peer's own request: answer it
                received.append(["RAR", hbh, 2001])
                answer = [avp(SESSION_ID, session.encode()), u32(RESULT_CODE, 2001), *_identity("client")]
                sock.sendall(message(code, app, False, hbh, e2e, answer))
                continue
            sent.append([waiting.pop(hbh), hbh, result_of(msg)])

    exchange([("CER", message(CER, 0, True, 1, 1, [*_identity("client"), u32(AUTH_APPLICATION_ID, GX)]))])
    exchange([
        ("CCR", message(CCR, GX, True, 2, 2, [*base, u32(AUTH_APPLICATION_ID, GX), u32(CC_REQUEST_TYPE, 1),
                                               u32(CC_REQUEST_NUMBER, 0)])),
        ("CCR", message(CCR, GX, True, 3, 3, [*base, u32(AUTH_APPLICATION_ID, GX), u32(CC_REQUEST_TYPE, 2),
                                               u32(CC_REQUEST_NUMBER, 1)])),
    ])  # fmt: skip
    exchange([("ULR", message(ULR, S6A, True, 4, 4, [*base, utf8(USER_NAME, UNKNOWN_IMSI)]))])
    payload = avp(BIG_AVP, b"\xab" * big, VENDOR_3GPP)
    update = [*base, u32(CC_REQUEST_TYPE, 2), u32(CC_REQUEST_NUMBER, 2), payload]
    exchange([("CCR", message(CCR, GX, True, 5, 5, update))])
    exchange([("DWR", message(DWR, 0, True, 6, 6, _identity("client")))])
    exchange([("DPR", message(DPR, 0, True, 7, 7, [*_identity("client"), u32(DISCONNECT_CAUSE, 0)]))])
    sock.close()
    return {"sent": sent, "received": received}


# ---- a client against freeDiameterd (the stock daemon, no extensions: only the base protocol) -------

UNKNOWN_COMMAND = 9999  # in no dictionary: the daemon answers 3001 (DIAMETER_COMMAND_UNSUPPORTED)
FD_PEER = "peer.wiretide.test"  # the daemon's Identity in the test's configuration
FD_CLIENT = "client.wiretide.test"  # the one peer the configuration knows
FD_STRANGER = "stranger.wiretide.test"  # a peer it does not know: its CER is refused (3010)
FD_HBH_STRANGER = 0x100


def _cer(host: str, own_ip: str, hbh: int) -> bytes:
    import socket

    avps = [
        utf8(ORIGIN_HOST, host), utf8(ORIGIN_REALM, "wiretide.test"),
        address(HOST_IP_ADDRESS, socket.inet_aton(own_ip)), u32(VENDOR_ID, 0),
        utf8(PRODUCT_NAME, "wiretide-client"), u32(AUTH_APPLICATION_ID, GX),
    ]  # fmt: skip
    return message(CER, 0, True, hbh, hbh, avps)


def freediameter_client(host: str, port: int, own_ip: str, watchdog_timeout: float) -> dict[str, Any]:
    """A client's sessions against freeDiameterd, and what it saw of them. First a peer the daemon does
    not know sends its CER (refused; the daemon closes). Then the known peer: CER, DWR, two Gx
    Credit-Control-Requests pipelined (one for the daemon itself — an application it does not serve —
    one for its realm — nowhere to route it), a command in no dictionary, then it waits for the daemon's
    own Device-Watchdog-Request, answers it, and disconnects (DPR).
    `sent`: per request sent, [command code, hop-by-hop id, result, E bit of the answer];
    `received`: per request the daemon sent, [command code, hop-by-hop id, result answered]."""
    import socket

    sent: list[list[Any]] = []
    received: list[list[Any]] = []
    record: dict[str, Any] = {"sent": sent, "received": received}

    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(_cer(FD_STRANGER, own_ip, FD_HBH_STRANGER))
        cea = read_message(sock)
        assert cea is not None, "no answer to the stranger's CER"
        sent.append([CER, FD_HBH_STRANGER, result_of(cea), bool(parse_header(cea)[1] & FLAG_E)])
        record["stranger_closed"] = read_message(sock) is None

    sock = socket.create_connection((host, port), timeout=30)
    me = [utf8(ORIGIN_HOST, FD_CLIENT), utf8(ORIGIN_REALM, "wiretide.test")]

    def answer_peer(msg: bytes) -> None:
        _, _, code, app, hbh, e2e = parse_header(msg)
        received.append([code, hbh, 2001])
        sock.sendall(message(code, app, False, hbh, e2e, [u32(RESULT_CODE, 2001), *me]))

    def exchange(*batch: bytes) -> None:
        sock.sendall(b"".join(batch))
        waiting = {parse_header(m)[4]: parse_header(m)[2] for m in batch}
        while waiting:
            msg = read_message(sock)
            assert msg is not None, "the daemon closed the connection"
            _, flags, _, _, hbh, _ = parse_header(msg)
            if flags & FLAG_R:
                answer_peer(msg)
                continue
            sent.append([waiting.pop(hbh), hbh, result_of(msg), bool(flags & FLAG_E)])

    def ccr(hbh: int, number: int, *target: bytes) -> bytes:
        avps = [avp(SESSION_ID, f"{FD_CLIENT};1;{number}".encode()), *me, *target,
                u32(AUTH_APPLICATION_ID, GX), u32(CC_REQUEST_TYPE, 1), u32(CC_REQUEST_NUMBER, 0)]  # fmt: skip
        return message(CCR, GX, True, hbh, hbh, avps)

    realm = utf8(DESTINATION_REALM, "wiretide.test")
    exchange(_cer(FD_CLIENT, own_ip, 1))
    exchange(message(DWR, 0, True, 2, 2, me))
    exchange(ccr(3, 1, realm, utf8(DESTINATION_HOST, FD_PEER)), ccr(4, 2, realm))
    exchange(message(UNKNOWN_COMMAND, 0, True, 5, 5, me, proxiable=False))
    # The daemon's watchdog fires after Tw of silence (RFC 3539 §3.4.1): wait for its DWR.
    sock.settimeout(watchdog_timeout)
    while not received:
        msg = read_message(sock)
        assert msg is not None, "the daemon closed the connection"
        assert parse_header(msg)[1] & FLAG_R, "an answer to nothing"
        answer_peer(msg)
    sock.settimeout(30)
    exchange(message(DPR, 0, True, 6, 6, [*me, u32(DISCONNECT_CAUSE, 0)]))
    sock.close()
    return record
