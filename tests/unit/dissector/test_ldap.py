"""LDAP transcripts: requests encoded by the `ldap3` client's own ASN.1 (pyasn1's BER encoder), answers
built element by element, through the whole pipeline — bind with the password never kept, search with
its filter as RFC 4515 text and its entries counted, modify/add/delete/modDN/compare/abandon/extended,
result codes as errors by their RFC names, unsolicited notifications, StartTLS handing the flow to the
TLS dissector, SASL integrity-wrapped bodies read and sealed ones counted, CLDAP over UDP — and bad
input: BER length bombs, indefinite lengths, deep nesting, truncated PDUs, lying lengths, random bytes.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():  # ldap3 2.9 imports names pyasn1 0.6 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    from ldap3 import BASE, DEREF_NEVER, SUBTREE
    from ldap3.operation.abandon import abandon_operation
    from ldap3.operation.add import add_operation
    from ldap3.operation.bind import bind_operation
    from ldap3.operation.compare import compare_operation
    from ldap3.operation.delete import delete_operation
    from ldap3.operation.extended import extended_operation
    from ldap3.operation.modify import modify_operation
    from ldap3.operation.modifyDn import modify_dn_operation
    from ldap3.operation.search import search_operation
    from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp, UnbindRequest
    from pyasn1.codec.ber import encoder

from wiretide.dissector.api import Message, SessionConfig, Upgrade, Verdict, Violation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols import ldap
from wiretide.dissector.protocols._ber import BerError, header
from wiretide.dissector.protocols.ldap import LdapSession, probe
from wiretide.dissector.redact import MARKER
from wiretide.dissector.registry import default_registry

from .builders import T0, Conversation, columns, udp_frame
from .test_tls import hello_body, record

PASSWORD = "s3cret-bind-pw"


# ---- bytes ------------------------------------------------------------------------------------


def wire(message_id: int, op_name: str, op: Any) -> bytes:
    """One LDAPMessage as ldap3 sends it (its BaseStrategy.send: LDAPMessage + ProtocolOp, BER)."""
    msg = LDAPMessage()
    msg["messageID"] = MessageID(message_id)
    msg["protocolOp"] = ProtocolOp().setComponentByName(op_name, op)
    return bytes(encoder.encode(msg))


def length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return bytes([tag]) + length(len(body)) + body


def octets(value: str | bytes, tag: int = 0x04) -> bytes:
    return tlv(tag, value.encode() if isinstance(value, str) else value)


def integer(value: int, tag: int = 0x02) -> bytes:
    return tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def message(message_id: int, op: bytes, controls: bytes = b"") -> bytes:
    return tlv(0x30, integer(message_id), op, controls)


def result(tag: int, code: int = 0, matched: str = "", diagnostic: str = "", extra: bytes = b"") -> bytes:
    return tlv(tag, integer(code, 0x0A), octets(matched), octets(diagnostic), extra)


def entry(dn: str, **attributes: list[str]) -> bytes:
    attrs = b"".join(
        tlv(0x30, octets(name), tlv(0x31, *(octets(v) for v in values)))
        for name, values in attributes.items()
    )
    return tlv(0x64, octets(dn), tlv(0x30, attrs))


def search(
    message_id: int, base: str, flt: str, scope: str = SUBTREE, attrs: list[str] | None = None
) -> bytes:
    op = search_operation(base, flt, scope, DEREF_NEVER, attrs or [], 0, 0, False, True, True)
    return wire(message_id, "searchRequest", op)


def simple_bind(message_id: int, dn: str, password: str | None = PASSWORD) -> bytes:
    return wire(message_id, "bindRequest", bind_operation(3, "SIMPLE", dn, password))


def unbind(message_id: int) -> bytes:
    return wire(message_id, "unbindRequest", UnbindRequest())


def ldap_entries(*turns: tuple[bool, bytes], port: int = 389, mss: int = 1400) -> list[dict[str, Any]]:
    conv = Conversation(sport=port).handshake()
    for from_client, data in turns:
        conv.send(from_client, data, mss)
    conv.close()
    p = Pipeline(default_registry())
    return p.feed(conv.columns()) + p.finish()


def only_ldap(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in found if e["protocol"] == "ldap"]


def session_events(*turns: tuple[bool, bytes]) -> list[Any]:
    s = LdapSession(SessionConfig())
    out: list[Any] = []
    for from_client, data in turns:
        out.extend(s.feed(from_client, data, T0))
    out.extend(s.close(T0))
    return out


# ---- transcripts ------------------------------------------------------------------------------


def test_a_simple_bind_and_a_search_become_two_entries_and_the_password_is_in_neither() -> None:
    found = ldap_entries(
        (True, simple_bind(1, "cn=admin,dc=example,dc=com")),
        (False, message(1, result(0x61))),
        (True, search(2, "dc=example,dc=com", "(&(objectClass=person)(uid=jdoe))", attrs=["cn", "mail"])),
        (False, message(2, entry("uid=jdoe,dc=example,dc=com", cn=["John"], mail=["j@example.com"]))
         + message(2, entry("uid=jdoe2,dc=example,dc=com", cn=["John 2"]))
         + message(2, result(0x65))),
        (True, unbind(3)),
    )  # fmt: skip
    rows = [(e["protocol"], e["method"], e["path"], e["status"]) for e in found]
    assert rows == [
        ("ldap", "bind", "cn=admin,dc=example,dc=com", 0),
        ("ldap", "search", "dc=example,dc=com", 0),
        ("ldap", "unbind", None, None),
    ]
    bind, srch, unb = found
    assert PASSWORD not in repr(found)
    assert bind["request"]["password"] == MARKER and bind["request"]["authentication"] == "simple"
    assert "request.password" in bind["redacted"] and bind["version"] == "3" and bind["stream"] == "1"
    assert srch["request"]["filter"] == "(&(objectClass=person)(uid=jdoe))"
    assert srch["request"]["scope"] == "wholeSubtree" and srch["request"]["attributes"] == ["cn", "mail"]
    assert srch["response"]["entries"] == 2 and srch["response"]["references"] == 0
    assert srch["response"]["entry_dns"] == ["uid=jdoe,dc=example,dc=com", "uid=jdoe2,dc=example,dc=com"]
    assert srch["response"]["message_count"] == 3 and srch["response"]["result"] == "success"
    assert "mail" not in repr(srch["response"]) and "John" not in repr(srch["response"])  # values never kept
    assert srch["summary"] == 'search "dc=example,dc=com" sub (&(objectClass=person)(uid=jdoe)) → 2 entries'
    assert srch["error"] is None and unb["error"] is None and unb["request"]["protocol_op"] == "unbindRequest"


def test_a_failed_bind_is_an_error_typed_by_its_rfc_name() -> None:
    found = ldap_entries(
        (True, simple_bind(1, "cn=admin,dc=example,dc=com", "wrong")),
        (False, message(1, result(0x61, 49, diagnostic="invalid credentials"))),
    )
    (bind,) = found
    assert bind["status"] == 49 and bind["response"]["result"] == "invalidCredentials"
    assert bind["error"] == {"type": "invalidCredentials", "message": "invalid credentials"}
    assert bind["summary"].endswith("→ invalidCredentials")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (0, False),
        (5, False),
        (6, False),
        (10, False),
        (14, False),
        (32, True),
        (50, True),
        (53, True),
        (80, True),
    ],
)
def test_the_rfcs_non_error_result_codes_are_not_errors_and_the_others_are(code: int, error: bool) -> None:
    (found,) = ldap_entries(
        (True, wire(4, "compareRequest", compare_operation("cn=a,dc=x", "cn", "a", True))),
        (False, message(4, result(0x6F, code))),
    )
    assert found["status"] == code
    assert (found["error"] is not None) is error


def test_anonymous_and_sasl_binds_keep_the_mechanism_but_never_the_credentials() -> None:
    sasl = wire(2, "bindRequest", bind_operation(3, "SASL", "", None, "DIGEST-MD5", b"response=deadbeef"))
    found = ldap_entries(
        (True, wire(1, "bindRequest", bind_operation(3, "ANONYMOUS"))), (False, message(1, result(0x61))),
        (True, sasl), (False, message(2, result(0x61, 14, extra=octets(b"challenge-secret", 0x87)))),
    )  # fmt: skip
    anon, digest = found
    assert anon["request"]["anonymous"] is True and "password" not in anon["request"]
    assert digest["request"]["mechanism"] == "DIGEST-MD5" and digest["request"]["credentials"] == MARKER
    assert digest["response"]["server_sasl_creds"] == MARKER and digest["error"] is None  # 14: in progress
    assert "deadbeef" not in repr(found) and "challenge-secret" not in repr(found)
    assert digest["summary"].startswith('bind "" SASL DIGEST-MD5')


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("(cn=*)", "(cn=*)"),
        ("(cn=J*n*e)", "(cn=J*n*e)"),
        ("(cn=*oh*)", "(cn=*oh*)"),
        ("(!(uid>=m))", "(!(uid>=m))"),
        ("(|(a<=1)(b~=x)(c=y))", "(|(a<=1)(b~=x)(c=y))"),
        ("(cn:caseExactMatch:=Fred)", "(cn:caseExactMatch:=Fred)"),
        ("(o:dn:=Ace)", "(o:dn:=Ace)"),
        (r"(cn=a\2ab\28c\29\5c)", r"(cn=a\2ab\28c\29\5c)"),
        ("(userPassword=hunter2)", f"(userPassword={MARKER})"),
    ],
)
def test_filters_are_rendered_as_rfc_4515_text(text: str, shown: str) -> None:
    (found,) = ldap_entries((True, search(7, "dc=x", text)), (False, message(7, result(0x65))))
    assert found["request"]["filter"] == shown
    assert "hunter2" not in repr(found)


def test_writes_show_their_dn_changes_and_values_except_passwords() -> None:
    mod = modify_operation(
        "uid=a,dc=x",
        {"mail": [("MODIFY_REPLACE", ["a@x"])], "userPassword": [("MODIFY_REPLACE", ["pw1"])]},
        True,
    )
    add = add_operation(
        "uid=b,dc=x", {"objectClass": ["top", "person"], "sn": ["B"], "userPassword": ["pw2"]}, True
    )
    found = ldap_entries(
        (True, wire(2, "modifyRequest", mod)), (False, message(2, result(0x67))),
        (True, wire(3, "addRequest", add)), (False, message(3, result(0x69, 68))),
        (True, wire(4, "delRequest", delete_operation("uid=c,dc=x"))), (False, message(4, result(0x6B, 32))),
        (True, wire(5, "modDNRequest", modify_dn_operation("uid=d,dc=x", "uid=e", True, "ou=p,dc=x"))),
        (False, message(5, result(0x6D))),
        (True, wire(6, "compareRequest", compare_operation("uid=a,dc=x", "userPassword", "pw3", True))),
        (False, message(6, result(0x6F, 5))),
    )  # fmt: skip
    assert [(e["method"], e["path"], e["status"]) for e in found] == [
        ("modify", "uid=a,dc=x", 0), ("add", "uid=b,dc=x", 68), ("delete", "uid=c,dc=x", 32),
        ("modDN", "uid=d,dc=x", 0), ("compare", "uid=a,dc=x", 5),
    ]  # fmt: skip
    modify, added, deleted, moddn, compare = found
    changes = {c["type"]: c for c in modify["request"]["changes"]}
    assert changes["mail"] == {"operation": "replace", "type": "mail", "values": ["a@x"], "values_count": 1}
    assert changes["userPassword"]["values"] == [MARKER]
    attributes = {a["type"]: a["values"] for a in added["request"]["attributes"]}
    assert attributes == {"objectClass": ["top", "person"], "sn": ["B"], "userPassword": [MARKER]}
    assert added["error"]["type"] == "entryAlreadyExists" and deleted["response"]["result"] == "noSuchObject"
    assert moddn["request"] | {} == {
        "message_id": 5, "operation": "modDN", "protocol_op": "modDNRequest", "dn": "uid=d,dc=x",
        "new_rdn": "uid=e", "delete_old_rdn": True, "new_superior": "ou=p,dc=x",
    }  # fmt: skip
    assert compare["request"]["value"] == MARKER and compare["error"] is None  # compareFalse
    assert not any(p in repr(found) for p in ("pw1", "pw2", "pw3"))
    assert set(modify["redacted"]) == {"request.changes.1.values"}


def test_extended_operations_are_named_by_oid_and_their_request_values_never_kept() -> None:
    whoami = wire(2, "extendedReq", extended_operation("1.3.6.1.4.1.4203.1.11.3"))
    passwd = wire(3, "extendedReq", extended_operation("1.3.6.1.4.1.4203.1.11.1", b"\x30\x05\x81\x03new"))
    found = ldap_entries(
        (True, whoami), (False, message(2, result(0x78, extra=octets("dn:cn=admin,dc=x", 0x8B)))),
        (True, passwd), (False, message(3, result(0x78, 50))),
        (True, wire(4, "abandonRequest", abandon_operation(3))),
    )  # fmt: skip
    who, pw, abandon = found
    assert who["request"]["name"] == "Who am I?" and who["summary"] == "extended Who am I?"
    assert pw["request"]["value_size"] == 7 and "new" not in repr(pw["request"])
    assert pw["error"]["type"] == "insufficientAccessRights"
    assert (
        abandon["method"] == "abandon" and abandon["request"]["abandon_id"] == 3 and abandon["error"] is None
    )


def test_an_unsolicited_notice_of_disconnection_is_an_entry_of_its_own() -> None:
    notice = result(
        0x78, 52, diagnostic="shutting down", extra=octets(ldap.NOTICE_OF_DISCONNECTION_OID, 0x8A)
    )
    found = ldap_entries((True, search(1, "dc=x", "(cn=*)")), (False, message(0, notice)))
    kinds = [(e["method"], e["request"] is None, e["error"]) for e in found]
    assert ("notification", True, {"type": "unavailable", "message": "shutting down"}) in kinds
    assert ("search", False, {"type": "unmatched", "message": "no response seen"}) in kinds


def test_search_references_and_controls_are_listed() -> None:
    paged = tlv(0xA0, tlv(0x30, octets("1.2.840.113556.1.4.319"), tlv(0x01, b"\xff"), octets(b"\x30\x00")))
    ref = tlv(0x73, octets("ldap://other.example/dc=x"))
    found = ldap_entries(
        (True, search(9, "dc=x", "(cn=*)")[:0] + message(9, tlv(0x63, *_raw_search("dc=x")), paged)),
        (False, message(9, ref) + message(9, ref) + message(9, result(0x65))),
    )
    (srch,) = found
    assert srch["request"]["controls"] == [
        {"oid": "1.2.840.113556.1.4.319", "name": "pagedResults", "critical": True}
    ]
    assert srch["response"]["references"] == 2 and srch["response"]["entries"] == 0
    assert srch["response"]["reference_uris"] == ["ldap://other.example/dc=x"] * 2
    assert srch["summary"].endswith("→ 0 entries, 2 refs")


def _raw_search(base: str) -> tuple[bytes, ...]:
    return (
        octets(base), integer(2, 0x0A), integer(0, 0x0A), integer(0), integer(0), tlv(0x01, b"\x00"),
        octets("objectClass", 0x87), tlv(0x30),
    )  # fmt: skip


def test_a_search_answered_in_many_segments_is_one_entry_whatever_the_segment_size() -> None:
    answer = b"".join(message(3, entry(f"uid=u{i},dc=x", cn=["x" * 300])) for i in range(40))
    answer += message(3, result(0x65))
    for mss in (1, 7, 100, 1400):
        (found,) = ldap_entries((True, search(3, "dc=x", "(cn=*)")), (False, answer), mss=mss)
        assert (
            found["response"]["entries"] == 40 and len(found["response"]["entry_dns"]) == ldap.MAX_ENTRY_DNS
        )


def test_starttls_hands_the_connection_to_the_tls_dissector() -> None:
    hello = record(1, hello_body("ldap.example.com"))
    found = ldap_entries(
        (True, wire(1, "extendedReq", extended_operation(ldap.STARTTLS_OID))),
        (False, message(1, result(0x78))),
        (True, hello),
    )
    assert [e["protocol"] for e in found] == ["ldap", "tls"]
    starttls, tls = found
    assert starttls["request"]["name"] == "StartTLS" and starttls["status"] == 0
    assert tls["tls"]["sni"] == "ldap.example.com" and tls["tls"]["ja3"] and tls["tls"]["ja4"]


def test_a_refused_starttls_keeps_the_flow_ldap() -> None:
    found = ldap_entries(
        (True, wire(1, "extendedReq", extended_operation(ldap.STARTTLS_OID))),
        (False, message(1, result(0x78, 2, diagnostic="unsupported"))),
        (True, search(2, "dc=x", "(cn=*)")),
        (False, message(2, result(0x65))),
    )
    assert [(e["protocol"], e["method"], e["status"]) for e in found] == [
        ("ldap", "extended", 2),
        ("ldap", "search", 0),
    ]


def test_sasl_integrity_wrapped_messages_are_read_and_sealed_ones_counted() -> None:
    inner = search(5, "dc=x", "(cn=*)")
    checksum = b"C" * 12
    rotated = checksum + inner  # RFC 4121: RRC = EC = 12 rotates the checksum to the front
    token = b"\x05\x04\x04\xff" + (12).to_bytes(2, "big") + (12).to_bytes(2, "big") + bytes(8) + rotated
    sealed_token = b"\x05\x04\x06\xff" + bytes(12) + b"\x99" * 40
    frame = lambda t: len(t).to_bytes(4, "big") + t  # noqa: E731
    answer_plain = message(5, result(0x65))
    answer_token = (
        b"\x05\x04\x05\xff" + (12).to_bytes(2, "big") + (0).to_bytes(2, "big") + bytes(8) + answer_plain
    )
    answer_token += checksum
    gssapi = wire(1, "bindRequest", bind_operation(3, "SASL", "", None, "GSSAPI", b"krb5-ap-req"))
    found = ldap_entries(
        (True, gssapi), (False, message(1, result(0x61))),
        (True, frame(token)), (False, frame(answer_token)), (True, frame(sealed_token)),
    )  # fmt: skip
    srch = next(e for e in found if e["method"] == "search")
    assert srch["request"]["sasl_wrapped"] is True and srch["status"] == 0 and srch["error"] is None
    sealed = next(e for e in found if e["method"] == "sasl_sealed")
    assert sealed["request"]["client_buffers"] == 1 and sealed["request"]["client_bytes"] == 4 + len(
        sealed_token
    )


def test_cldap_over_udp_pairs_a_search_with_its_entry_and_done_in_one_datagram() -> None:
    request = search(
        1, "", "(&(DnsDomain=example.com)(NtVer=\\06\\00\\00\\00))", scope=BASE, attrs=["Netlogon"]
    )
    reply = message(1, entry("", Netlogon=["x"])) + message(1, result(0x65))
    frames = [
        (T0, udp_frame("10.0.0.1", 52000, "10.0.0.2", 389, request)),
        (T0 + 1_000_000, udp_frame("10.0.0.2", 389, "10.0.0.1", 52000, reply)),
    ]
    p = Pipeline(default_registry())
    (found,) = p.feed(columns(frames)) + p.finish()
    assert found["protocol"] == "ldap" and found["transport"] == "udp" and found["method"] == "search"
    assert found["request"]["filter"] == r"(&(DnsDomain=example.com)(NtVer=\06\00\00\00))"
    assert found["response"]["entries"] == 1 and found["elapsed_us"] == 1000


def test_an_unanswered_cldap_query_is_a_timeout() -> None:
    frames = [(T0, udp_frame("10.0.0.1", 52000, "10.0.0.2", 389, search(1, "", "(cn=*)", scope=BASE)))]
    p = Pipeline(default_registry())
    (found,) = p.feed(columns(frames)) + p.finish()
    assert found["protocol"] == "ldap" and found["error"]["type"] == "timeout"


# ---- detection --------------------------------------------------------------------------------


def test_the_probe_claims_ldap_requests_on_any_port_and_refuses_other_ber() -> None:
    assert probe(search(1, "dc=x", "(cn=*)"), b"") == Verdict.YES
    assert probe(b"", message(1, result(0x61))) == Verdict.YES
    assert probe(b"\x30", b"") == Verdict.MAYBE
    snmp = tlv(0x30, integer(1), octets("public"), tlv(0xA0, integer(1)))
    assert probe(snmp, b"") == Verdict.NO
    assert probe(b"GET / HTTP/1.1\r\n", b"") == Verdict.NO
    assert probe(message(1, result(0x61)), b"") == Verdict.NO  # a response is no request
    found = ldap_entries((True, simple_bind(1, "cn=a")), (False, message(1, result(0x61))), port=7389)
    assert [e["protocol"] for e in found] == ["ldap"]


# ---- bad input --------------------------------------------------------------------------------


def test_a_length_bomb_is_a_counted_violation_not_a_buffer() -> None:
    bomb = b"\x30\x84\x7f\xff\xff\xff\x02\x01\x01\x63"
    events = session_events((True, bomb + b"\x00" * 100))
    assert [type(e) for e in events] == [Violation] and "bytes" in events[0].reason
    found = ldap_entries((True, simple_bind(1, "cn=a")), (False, message(1, result(0x61))), (True, bomb))
    assert [e["protocol"] for e in found] == ["ldap", "tcp"]
    assert found[1]["error"]["type"] == "dissection"


def test_indefinite_lengths_and_long_length_forms_are_refused() -> None:
    with pytest.raises(BerError, match="indefinite"):
        header(b"\x30\x80\x02\x01\x01\x00\x00", 0, 7)
    with pytest.raises(BerError, match="octets"):
        header(b"\x30\x85\x00\x00\x00\x00\x01\x00", 0, 8)
    events = session_events((True, b"\x30\x80\x02\x01\x01\x42\x00\x00\x00"))
    assert [type(e) for e in events] == [Violation]


def test_a_lying_inner_length_is_counted_and_the_next_message_still_read() -> None:
    liar = message(1, tlv(0x63, octets("dc=x")[:1] + b"\x7f" + b"dc=x"))  # a DN claiming 127 bytes
    s = LdapSession(SessionConfig())
    events = s.feed(True, liar + simple_bind(2, "cn=a"), T0)
    binds = [e for e in events if getattr(e, "fields", {}).get("operation") == "bind"]
    searches = [e for e in events if getattr(e, "fields", {}).get("operation") == "search"]
    assert len(binds) == 1 and searches[0].fields["malformed"]
    assert not any(isinstance(e, Violation) for e in events)


def test_deep_filter_nesting_is_cut_not_recursed() -> None:
    flt = octets("cn", 0x87)
    for _ in range(5000):
        flt = tlv(0xA2, flt)
    body = octets("dc=x") + integer(2, 0x0A) + integer(0, 0x0A) + integer(0) + integer(0) + tlv(0x01, b"\x00")
    (found,) = ldap_entries(
        (True, message(1, tlv(0x63, body + flt + tlv(0x30)))), (False, message(1, result(0x65)))
    )
    assert found["request"]["filter"] == "(…)" and found["request"]["filter_too_deep"] is True


def test_a_message_beyond_the_cap_keeps_its_head_and_skips_its_tail() -> None:
    big = add_operation("uid=big,dc=x", {"jpegPhoto": [b"\xff" * 300_000], "sn": ["B"]}, True)
    found = ldap_entries(
        (True, wire(1, "addRequest", big)), (False, message(1, result(0x69))),
        (True, search(2, "dc=x", "(cn=*)")), (False, message(2, result(0x65))),
    )  # fmt: skip
    add, srch = found
    assert add["path"] == "uid=big,dc=x" and add["request"]["truncated"] is True
    assert add["size"]["request"] > 300_000 and srch["status"] == 0


def test_a_capture_gap_inside_a_message_resynchronises_at_the_next_one() -> None:
    s = LdapSession(SessionConfig())
    first = search(1, "dc=x", "(cn=*)")
    out = s.feed(True, first[:10], T0)
    out += s.gap(True, len(first) - 10, T0)
    out += s.feed(True, b"\x00junk" + simple_bind(2, "cn=a"), T0)
    assert not any(isinstance(e, Violation) for e in out)
    assert [e.fields["operation"] for e in out if isinstance(e, Message)] == ["bind"]
    assert s.counters["resynced"] == 1


def test_the_pipeline_survives_random_junk_after_a_valid_message() -> None:
    found = ldap_entries(
        (True, simple_bind(1, "cn=a")), (False, message(1, result(0x61))), (True, b"\x99" * 50)
    )
    assert [e["protocol"] for e in found] == ["ldap", "tcp"]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes_never_raise(data: bytes, from_client: bool) -> None:
    for datagrams in (False, True):
        s = LdapSession(SessionConfig(body_cap=4096), datagrams=datagrams)
        s.feed(from_client, data, T0)
        s.feed(not from_client, data, T0)
        s.gap(from_client, 10, T0)
        s.close(T0)
    probe(data, data)


_TRANSCRIPT = (
    simple_bind(1, "cn=admin,dc=x")
    + search(2, "dc=x", "(|(cn=a*)(!(sn=b)))")
    + wire(3, "extendedReq", extended_operation("1.3.6.1.4.1.4203.1.11.3"))
)


@settings(max_examples=120, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(_TRANSCRIPT)), st.integers(min_value=0, max_value=255), st.data()
)
def test_any_chunking_gives_the_same_messages_and_mutations_never_raise(
    cut: int, byte: int, data: Any
) -> None:
    whole = session_events((True, _TRANSCRIPT))
    s = LdapSession(SessionConfig())
    split = s.feed(True, _TRANSCRIPT[:cut], T0) + s.feed(True, _TRANSCRIPT[cut:], T0) + s.close(T0)
    assert [getattr(e, "fields", None) for e in split] == [getattr(e, "fields", None) for e in whole]
    pos = data.draw(st.integers(min_value=0, max_value=len(_TRANSCRIPT) - 1))
    mutated = _TRANSCRIPT[:pos] + bytes([byte]) + _TRANSCRIPT[pos + 1 :]
    for stop in (len(mutated), pos + 1):  # whole, and truncated right after the mutation
        s = LdapSession(SessionConfig())
        s.feed(True, mutated[:stop], T0)
        s.close(T0)


def test_the_upgrade_event_carries_a_client_hello_that_raced_the_answer() -> None:
    s = LdapSession(SessionConfig())
    s.feed(True, wire(1, "extendedReq", extended_operation(ldap.STARTTLS_OID)), T0)
    s.feed(True, b"\x16\x03\x01\x00\x05hello", T0)
    out = s.feed(False, message(1, result(0x78)) + b"\x16\x03\x03", T0)
    upgrade = out[-1]
    assert isinstance(upgrade, Upgrade) and upgrade.client_rest.startswith(b"\x16\x03\x01")
    assert upgrade.server_rest == b"\x16\x03\x03"
