"""TLS handshake metadata without decryption (RFC 8446, RFC 5246): SNI, versions, ALPN, ciphers,
JA3/JA4 fingerprints and, up to TLS 1.2, the server certificate's subject and issuer.

Rule: only plaintext handshake records are parsed, each direction on its own bounded buffer; once a
direction turns encrypted its bytes are skipped. The flow is marked TLS (a `FlowMark`) so that later
plaintext (eBPF) can be attached to it.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Final

from wiretide.dissector.api import (
    Event,
    FlowMark,
    Message,
    Presented,
    ProtocolSpec,
    SessionConfig,
    Verdict,
    Violation,
)

# RFC 8446 §5.1 record content types.
CHANGE_CIPHER_SPEC: Final = 20
ALERT: Final = 21
HANDSHAKE: Final = 22
APPLICATION_DATA: Final = 23
# RFC 8446 §4 handshake types.
CLIENT_HELLO: Final = 1
SERVER_HELLO: Final = 2
CERTIFICATE: Final = 11
SERVER_HELLO_DONE: Final = 14
# RFC 8446 §5.1: a record never exceeds 2^14 bytes (+2048 for ciphertext expansion).
MAX_RECORD: Final = (1 << 14) + 2048
# Handshake bytes buffered per direction (a long certificate chain fits; more is hostile).
MAX_HANDSHAKE_BUFFER: Final = 256 * 1024
# RFC 8446 §4.1.3: a ServerHello with this random is a HelloRetryRequest.
HRR_RANDOM: Final = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

EXT_SNI: Final = 0
EXT_GROUPS: Final = 10
EXT_POINT_FORMATS: Final = 11
EXT_SIG_ALGS: Final = 13
EXT_ALPN: Final = 16
EXT_SUPPORTED_VERSIONS: Final = 43

VERSIONS: Final = {
    0x0002: "SSLv2",
    0x0300: "SSLv3",
    0x0301: "1.0",
    0x0302: "1.1",
    0x0303: "1.2",
    0x0304: "1.3",
}
_JA4_VERSION: Final = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2"}
CIPHERS: Final = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
    0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    0x0005: "TLS_RSA_WITH_RC4_128_SHA",
    0x0004: "TLS_RSA_WITH_RC4_128_MD5",
}
_X509_NAMES: Final = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
}

_U16 = struct.Struct("!H")


def is_grease(v: int) -> bool:
    """RFC 8701: 0x?A?A values with equal bytes are reserved noise."""
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


class _Reader:
    """Bounds-checked reads over one handshake body; `bad` flips instead of raising past the end."""

    __slots__ = ("bad", "data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.bad = False

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            self.bad = True
            self.pos = len(self.data)
            return b""
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        b = self.take(1)
        return b[0] if b else 0

    def u16(self) -> int:
        b = self.take(2)
        return (b[0] << 8) | b[1] if b else 0

    def vec(self, lenbytes: int) -> bytes:
        n = int.from_bytes(self.take(lenbytes), "big") if lenbytes else 0
        return self.take(n)


def _u16s(data: bytes) -> list[int]:
    return [(data[i] << 8) | data[i + 1] for i in range(0, len(data) - 1, 2)]


def _extensions(r: _Reader) -> list[tuple[int, bytes]]:
    if r.pos >= len(r.data):
        return []
    block = _Reader(r.vec(2))
    out = []
    while block.pos < len(block.data) and not block.bad:
        etype = block.u16()
        out.append((etype, block.vec(2)))
    return out


def _alpn_list(data: bytes) -> list[str]:
    r = _Reader(data)
    inner = _Reader(r.vec(2))
    out = []
    while inner.pos < len(inner.data) and not inner.bad:
        out.append(inner.vec(1).decode("ascii", "replace"))
    return out


def _sni(data: bytes) -> str | None:
    r = _Reader(data)
    inner = _Reader(r.vec(2))
    while inner.pos < len(inner.data) and not inner.bad:
        kind = inner.u8()
        name = inner.vec(2)
        if kind == 0:
            return name.decode("ascii", "replace")
    return None


def _ja4_alpn(alpn: list[str]) -> str:
    if not alpn or not alpn[0]:
        return "00"
    v = alpn[0]
    if v[0].isalnum() and v[-1].isalnum() and v.isascii():
        return v[0] + v[-1]
    h = v.encode("latin-1", "replace").hex()
    return h[0] + h[-1]


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "000000000000"


def client_hello(body: bytes) -> dict[str, Any] | None:
    """ClientHello (RFC 8446 §4.1.2) → fields with JA3 and JA4; None when malformed."""
    r = _Reader(body)
    legacy = r.u16()
    r.take(32)
    r.vec(1)  # legacy_session_id
    ciphers = _u16s(r.vec(2))
    r.vec(1)  # compression methods
    exts = _extensions(r)
    if r.bad:
        return None
    ext_types = [t for t, _ in exts]
    by_type = dict(exts)
    groups = _u16s(_Reader(by_type.get(EXT_GROUPS, b"")).vec(2)) if EXT_GROUPS in by_type else []
    points = list(_Reader(by_type[EXT_POINT_FORMATS]).vec(1)) if EXT_POINT_FORMATS in by_type else []
    sig_algs = _u16s(_Reader(by_type[EXT_SIG_ALGS]).vec(2)) if EXT_SIG_ALGS in by_type else []
    versions = (
        list(_Reader(by_type[EXT_SUPPORTED_VERSIONS]).vec(1)) if EXT_SUPPORTED_VERSIONS in by_type else []
    )
    offered = [v for v in _u16s(bytes(versions)) if not is_grease(v)]
    alpn = _alpn_list(by_type[EXT_ALPN]) if EXT_ALPN in by_type else []
    sni = _sni(by_type[EXT_SNI]) if EXT_SNI in by_type else None
    c = [x for x in ciphers if not is_grease(x)]
    e = [x for x in ext_types if not is_grease(x)]
    g = [x for x in groups if not is_grease(x)]
    # JA3: version,ciphers,extensions,groups,point formats — decimal, '-' joined, GREASE removed.
    ja3_text = ",".join(
        [
            str(legacy),
            "-".join(map(str, c)),
            "-".join(map(str, e)),
            "-".join(map(str, g)),
            "-".join(map(str, points)),
        ]
    )
    # JA4 (FoxIO): t + version + d|i + counts + ALPN, sorted-cipher hash, sorted-extension+sigalg hash.
    top = max(offered) if offered else legacy
    ja4_a = (
        f"t{_JA4_VERSION.get(top, '00')}{'d' if sni is not None else 'i'}"
        f"{min(len(c), 99):02d}{min(len(e), 99):02d}{_ja4_alpn(alpn)}"
    )
    ja4_b = _sha12(",".join(sorted(f"{x:04x}" for x in c)))
    ext_part = ",".join(sorted(f"{x:04x}" for x in e if x not in (EXT_SNI, EXT_ALPN)))
    sig_part = ",".join(f"{x:04x}" for x in sig_algs)
    ja4_c = _sha12(f"{ext_part}_{sig_part}" if sig_part else ext_part)
    return {
        "handshake": "client_hello",
        "version": VERSIONS.get(legacy, hex(legacy)),
        "supported_versions": [VERSIONS.get(v, hex(v)) for v in offered],
        "sni": sni,
        "alpn": alpn,
        "cipher_suites": [f"0x{x:04x}" for x in c],
        "extensions": e,
        "groups": g,
        "signature_algorithms": [f"0x{x:04x}" for x in sig_algs],
        "ja3": hashlib.md5(ja3_text.encode(), usedforsecurity=False).hexdigest(),
        "ja3_string": ja3_text,
        "ja4": f"{ja4_a}_{ja4_b}_{ja4_c}",
    }


def server_hello(body: bytes) -> dict[str, Any] | None:
    """ServerHello (RFC 8446 §4.1.3) → chosen version, cipher, ALPN; HelloRetryRequest flagged."""
    r = _Reader(body)
    legacy = r.u16()
    random = r.take(32)
    r.vec(1)
    cipher = r.u16()
    r.u8()
    exts = dict(_extensions(r))
    if r.bad:
        return None
    version = legacy
    sv = exts.get(EXT_SUPPORTED_VERSIONS)
    if sv is not None and len(sv) >= 2:
        version = _U16.unpack_from(sv)[0]
    alpn = _alpn_list(exts[EXT_ALPN]) if EXT_ALPN in exts else []
    return {
        "handshake": "server_hello",
        "version": VERSIONS.get(version, hex(version)),
        "version_code": version,
        "cipher": CIPHERS.get(cipher, f"0x{cipher:04x}"),
        "cipher_suite": f"0x{cipher:04x}",
        "alpn": alpn[0] if alpn else None,
        "hello_retry_request": random == HRR_RANDOM,
    }


# ---- X.509 (just enough DER to name subject and issuer) --------------------------------------


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at pos (X.690 §8.1); ValueError if bad."""
    if pos + 2 > len(data):
        raise ValueError("short DER")
    tag = data[pos]
    ln = data[pos + 1]
    pos += 2
    if ln & 0x80:
        n = ln & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad DER length")
        ln = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + ln > len(data):
        raise ValueError("DER runs past the data")
    return tag, pos, pos + ln


def _oid(raw: bytes) -> str:
    if not raw:
        return ""
    parts = [raw[0] // 40, raw[0] % 40]
    v = 0
    for b in raw[1:]:
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(v)
            v = 0
    return ".".join(map(str, parts))


def _name(data: bytes, start: int, end: int) -> str:
    out = []
    pos = start
    while pos < end:
        _, s_start, s_end = _der(data, pos)  # SET
        pos = s_end
        inner = s_start
        while inner < s_end:
            _, a_start, a_end = _der(data, inner)  # SEQUENCE {oid, value}
            inner = a_end
            _, o_start, o_end = _der(data, a_start)
            _, v_start, v_end = _der(data, o_end)
            key = _X509_NAMES.get(_oid(data[o_start:o_end]))
            if key:
                out.append(f"{key}={data[v_start:v_end].decode('utf-8', 'replace')}")
    return ", ".join(out)


def certificate_names(der: bytes) -> dict[str, str] | None:
    """Subject and issuer of one certificate (RFC 5280 §4.1); None when it does not parse."""
    try:
        _, c_start, _ = _der(der, 0)  # Certificate
        _, t_start, t_end = _der(der, c_start)  # tbsCertificate
        pos = t_start
        tag, _, end = _der(der, pos)
        if tag == 0xA0:  # [0] version
            pos = end
        pos = _der(der, pos)[2]  # serialNumber
        pos = _der(der, pos)[2]  # signature
        _, i_start, i_end = _der(der, pos)
        issuer = _name(der, i_start, i_end)
        pos = _der(der, i_end)[2]  # validity
        _, s_start, s_end = _der(der, pos)
        subject = _name(der, s_start, s_end)
    except (ValueError, IndexError):
        return None
    return {"subject": subject, "issuer": issuer}


def certificates(body: bytes) -> list[dict[str, str]]:
    """TLS ≤ 1.2 Certificate message (RFC 5246 §7.4.2): a 3-byte-length list of DER certificates."""
    r = _Reader(body)
    chain = _Reader(r.vec(3))
    out: list[dict[str, str]] = []
    while chain.pos < len(chain.data) and not chain.bad and len(out) < 10:
        names = certificate_names(chain.vec(3))
        if names is not None:
            out.append(names)
    return out


# ---- the session -----------------------------------------------------------------------------


class _Direction:
    __slots__ = ("encrypted", "fields", "first_ts", "hs", "is_client", "rec", "size")

    def __init__(self, is_client: bool) -> None:
        self.is_client = is_client
        self.rec = bytearray()
        self.hs = bytearray()
        self.encrypted = False
        self.fields: dict[str, Any] | None = None
        self.first_ts = 0
        self.size = 0


class TlsSession:
    __slots__ = ("client", "emitted", "hrr", "server")

    def __init__(self, config: SessionConfig) -> None:
        self.client = _Direction(True)
        self.server = _Direction(False)
        self.emitted = False
        self.hrr = False

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        d = self.client if from_client else self.server
        out: list[Event] = []
        if d.encrypted:
            return out
        rec = d.rec
        rec += data
        while len(rec) >= 5:
            ctype = rec[0]
            if ctype & 0x80 and d.fields is None:
                self._sslv2(d, rec, ts, out)
                return out
            length = (rec[3] << 8) | rec[4]
            if ctype not in (CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, 24) or rec[1] != 3:
                out.append(Violation("tls: not a TLS record"))
                rec.clear()
                return out
            if length > MAX_RECORD:
                out.append(Violation("tls: record too long"))
                rec.clear()
                return out
            if len(rec) < 5 + length:
                break
            body = bytes(rec[5 : 5 + length])
            del rec[: 5 + length]
            d.size += 5 + length
            if ctype == HANDSHAKE and not d.encrypted:
                self._handshake(d, body, ts, out)
            elif ctype == CHANGE_CIPHER_SPEC and self.hrr:
                continue  # TLS 1.3 middlebox compatibility CCS (RFC 8446 appendix D.4): still plaintext
            elif ctype in (CHANGE_CIPHER_SPEC, APPLICATION_DATA):
                d.encrypted = True
                if not from_client:
                    self._emit_server(ts, out)
            elif ctype == ALERT and not d.encrypted and len(body) >= 2 and d.fields is not None:
                d.fields["alert"] = {"level": body[0], "description": body[1]}
        if d.encrypted:
            rec.clear()
        return out

    def _sslv2(self, d: _Direction, rec: bytearray, ts: int, out: list[Event]) -> None:
        # SSL 2.0 CLIENT-HELLO (type 1) / SERVER-HELLO (type 4): 2-byte header with the high bit set.
        n = ((rec[0] & 0x7F) << 8) | rec[1]
        if len(rec) < 2 + n or n < 9:
            return
        if not d.is_client:
            if rec[2] != 4:
                out.append(Violation("tls: not an SSLv2 SERVER-HELLO"))
                return
            version = (rec[5] << 8) | rec[6]
            d.fields = {
                "handshake": "server_hello",
                "version": VERSIONS.get(version, hex(version)),
                "cipher": None,
                "alpn": None,
                "hello_retry_request": False,
            }
            d.size = 2 + n
            d.first_ts = ts
            self._emit_server(ts, out)
            return
        if rec[2] != CLIENT_HELLO:
            out.append(Violation("tls: not an SSLv2 CLIENT-HELLO"))
            return
        version = (rec[3] << 8) | rec[4]
        spec_len = (rec[5] << 8) | rec[6]
        specs = bytes(rec[11 : 11 + spec_len])
        ciphers = [int.from_bytes(specs[i : i + 3], "big") for i in range(0, len(specs) - 2, 3)]
        fields = {
            "handshake": "client_hello",
            "version": VERSIONS.get(version, hex(version)),
            "sslv2_record": True,
            "sni": None,
            "alpn": [],
            "cipher_suites": [f"0x{x:06x}" for x in ciphers],
        }
        del rec[: 2 + n]
        self.client.fields = fields
        self.client.encrypted = True
        out.append(Message(is_request=True, ts_first=ts, ts_last=ts, size=2 + n, fields=fields))

    def _handshake(self, d: _Direction, body: bytes, ts: int, out: list[Event]) -> None:
        hs = d.hs
        if not hs:
            d.first_ts = ts
        hs += body
        if len(hs) > MAX_HANDSHAKE_BUFFER:
            out.append(Violation("tls: handshake message too large"))
            hs.clear()
            d.encrypted = True
            return
        while len(hs) >= 4:
            htype = hs[0]
            n = int.from_bytes(hs[1:4], "big")
            if len(hs) < 4 + n:
                return
            msg = bytes(hs[4 : 4 + n])
            del hs[: 4 + n]
            if htype == CLIENT_HELLO and d.is_client:
                fields = client_hello(msg)
                if fields is None:
                    out.append(Violation("tls: malformed ClientHello"))
                    return
                d.fields = fields
                out.append(
                    Message(is_request=True, ts_first=d.first_ts, ts_last=ts, size=n + 4, fields=fields)
                )
                self.emitted = False
            elif htype == SERVER_HELLO and not d.is_client:
                fields = server_hello(msg)
                if fields is None:
                    out.append(Violation("tls: malformed ServerHello"))
                    return
                d.fields = fields
                d.size = n + 4
                self.emitted = False
                self.hrr = fields["hello_retry_request"]
                if self.hrr or fields["version_code"] == 0x0304:
                    # TLS 1.3: everything after the ServerHello is encrypted (RFC 8446 §2).
                    self._emit_server(ts, out)
                    if not fields["hello_retry_request"]:
                        d.encrypted = True
            elif htype == CERTIFICATE and not d.is_client and d.fields is not None:
                chain = certificates(msg)
                if chain:
                    d.fields["certificates"] = chain
                    d.fields["subject"] = chain[0]["subject"]
                    d.fields["issuer"] = chain[0]["issuer"]
            elif htype == SERVER_HELLO_DONE and not d.is_client:
                self._emit_server(ts, out)

    def _emit_server(self, ts: int, out: list[Event]) -> None:
        s = self.server
        if self.emitted or s.fields is None:
            return
        self.emitted = True
        fields = s.fields
        c = self.client.fields or {}
        mark: dict[str, Any] = {
            "sni": c.get("sni"),
            "version": fields["version"],
            "alpn": fields.get("alpn"),
            "cipher": fields.get("cipher"),
            "ja3": c.get("ja3"),
            "ja4": c.get("ja4"),
            "decrypted": False,
        }
        if "subject" in fields:
            mark["subject"] = fields["subject"]
            mark["issuer"] = fields["issuer"]
        out.append(FlowMark("tls", mark))
        out.append(Message(is_request=False, ts_first=s.first_ts, ts_last=ts, size=s.size, fields=fields))
        if not fields.get("hello_retry_request"):
            s.fields = None
            s.encrypted = True

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        d = self.client if from_client else self.server
        d.rec.clear()
        d.hs.clear()
        d.encrypted = True  # cannot find record boundaries again; the handshake is what mattered
        return []

    def close(self, ts: int) -> list[Event]:
        out: list[Event] = []
        self._emit_server(ts, out)
        if not self.emitted and self.client.fields is not None:
            c = self.client.fields
            mark = {"sni": c.get("sni"), "version": None, "alpn": None, "cipher": None}
            mark |= {"ja3": c.get("ja3"), "ja4": c.get("ja4"), "decrypted": False}
            out.insert(0, FlowMark("tls", mark))
        return out


def _looks_like_hello(data: bytes, htype: int) -> Verdict:
    if len(data) < 6:
        if not data or data[0] == HANDSHAKE:
            return Verdict.MAYBE
        return Verdict.NO
    if data[0] == HANDSHAKE and data[1] == 3 and data[2] <= 4 and data[5] == htype:
        return Verdict.YES
    return Verdict.NO


def probe(client: bytes, server: bytes) -> Verdict:
    """A handshake record carrying a ClientHello (or a ServerHello from the other side), any port."""
    v = _looks_like_hello(client, CLIENT_HELLO) if client else Verdict.MAYBE
    if v == Verdict.YES:
        return v
    # SSL 2.0-format ClientHello (RFC 6101 appendix E.2): 2-byte header with the high bit set.
    if len(client) >= 5 and client[0] & 0x80 and client[2] == CLIENT_HELLO and client[3] in (0, 3):
        return Verdict.YES
    if server:
        sv = _looks_like_hello(server, SERVER_HELLO)
        if sv == Verdict.YES:
            return sv
        v = max(v, sv) if client else sv
    return v


def present(req: Message | None, resp: Message | None) -> Presented:
    c = req.fields if req is not None else {}
    s = resp.fields if resp is not None else {}
    version = s.get("version") or c.get("version")
    sni = c.get("sni")
    summary = f"TLS {version or '?'} {sni or '(no SNI)'}"
    if s.get("alpn"):
        summary += f" {s['alpn']}"
    if s.get("hello_retry_request"):
        summary += " HelloRetryRequest"
    return Presented(method="handshake", path=sni, summary=summary, version=version)


SPEC: Final = ProtocolSpec(
    name="tls",
    transports=("tcp",),
    ports=(443, 8443, 6443, 993, 995, 465, 636, 853),
    probe=probe,
    session=TlsSession,
    present=present,
    matcher="fifo",
)
