"""Real LDAP captures (shared/pcaps/ldap): the LDAPMessages of every file — requests and responses —
equal tshark's (`ldap.protocolOp` of its `ldap` and `cldap` dissectors, SASL integrity-wrapped ones
included), and what each capture holds comes out as its own entries: StartTLS followed into the TLS
handshake, Active Directory's GSS-SPNEGO bind, CLDAP's rootDSE ping, referrals, simple binds without
their passwords."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.pcaps import files_or_missing, needs_pcaps, require_pcaps
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

from .pcaps import PCAPS, read_columns

TSHARK = shutil.which("tshark")
# RFC 4511 protocolOp numbers a client sends (bind, unbind, search, modify, add, del, modDN, compare,
# abandon, extended); every other one is the server's.
REQUEST_OPS = frozenset({0, 2, 3, 6, 8, 10, 12, 14, 16, 23})

pytestmark = [needs_pcaps, pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")]


def captures() -> list[Path]:
    return files_or_missing(sorted((PCAPS / "ldap").glob("*.pcap*")))


def tshark_counts(path: Path) -> tuple[int, int]:
    """(requests, responses): the LDAPMessages tshark dissects, by their protocolOp."""
    assert TSHARK is not None
    out = subprocess.run(
        [TSHARK, "-r", str(path), "-Y", "ldap || cldap", "-T", "fields", "-E", "occurrence=a",
         "-e", "ldap.protocolOp"],
        capture_output=True, check=True, timeout=120, text=True,
    ).stdout  # fmt: skip
    ops = [int(op) for line in out.split() for op in line.split(",") if op]
    requests = sum(1 for op in ops if op in REQUEST_OPS)
    return requests, len(ops) - requests


def ours(path: Path) -> list[dict[str, Any]]:
    p = Pipeline(default_registry())
    return p.feed(read_columns(path)) + p.finish()


def our_counts(found: list[dict[str, Any]]) -> tuple[int, int]:
    ldap = [e for e in found if e["protocol"] == "ldap"]
    requests = sum(1 for e in ldap if e["request"] is not None and "message_id" in e["request"])
    responses = sum(e["response"]["message_count"] for e in ldap if e["response"] is not None)
    return requests, responses


@pytest.mark.parametrize("path", captures(), ids=lambda p: p.name)
def test_ldap_messages_equal_tsharks(path: Path) -> None:
    require_pcaps(path)
    found = ours(path)
    assert our_counts(found) == tshark_counts(path)
    ldap = [e for e in found if e["protocol"] == "ldap"]
    assert ldap, "the capture's LDAP traffic became LDAP entries"
    assert all(e["error"] is None for e in ldap if e["method"] != "unbind")


def test_starttls_is_followed_into_the_tls_handshake() -> None:
    path = PCAPS / "ldap" / "zeek_ldap-starttls.pcap"
    require_pcaps(path)
    found = ours(path)
    assert [(e["protocol"], e["method"]) for e in found] == [("ldap", "extended"), ("tls", "handshake")]
    starttls, tls = found
    assert starttls["request"]["oid"] == "1.3.6.1.4.1.1466.20037" and starttls["status"] == 0
    assert tls["tls"]["sni"] == "ubuntu-01.example.com" and tls["tls"]["version"] == "1.3"
    assert tls["tls"]["ja3"] and tls["tls"]["ja4"] and tls["flow_id"] == starttls["flow_id"]


def test_active_directory_captures_show_binds_searches_and_referrals() -> None:
    path = PCAPS / "ldap" / "zeek_aduser1.pcap"
    require_pcaps(path)
    bind, search = [e for e in ours(path) if e["protocol"] == "ldap"]
    assert bind["request"]["mechanism"] == "GSS-SPNEGO" and bind["request"]["credentials"] == "[REDACTED]"
    assert search["request"]["filter"] == (
        "(&(sAMAccountName=*)(mail=*)(!(UserAccountControl:1.2.840.113556.1.4.803:=2)))"
    )
    assert search["response"]["entries"] == 3 and search["response"]["references"] == 3
    assert search["response"]["entry_dns"][0] == "CN=User0,CN=Users,DC=ADHACKING,DC=local"


def test_a_sasl_integrity_protected_modify_is_read() -> None:
    path = PCAPS / "ldap" / "zeek_modify-request.pcapng"
    require_pcaps(path)
    found = [e for e in ours(path) if e["protocol"] == "ldap"]
    modify = next(e for e in found if e["method"] == "modify")
    assert modify["request"]["sasl_wrapped"] is True and modify["status"] == 0
    assert modify["request"]["changes"][0]["type"] == "msDS-SupportedEncryptionTypes"
    assert modify["request"]["controls"][0]["name"] == "permissiveModify"


def test_cldap_and_simple_binds() -> None:
    cldap, simple = PCAPS / "ldap" / "suricata_ldap-udp_cldap.pcap", PCAPS / "ldap" / "zeek_simpleauth.pcap"
    require_pcaps(cldap, simple)
    (ping,) = ours(cldap)
    assert ping["transport"] == "udp" and ping["request"]["scope"] == "baseObject"
    assert ping["response"]["entries"] == 1
    binds = [e for e in ours(simple) if e["method"] == "bind"]
    assert len(binds) == 2 and all(e["request"]["password"] == "[REDACTED]" for e in binds)
    assert all(e["dst"]["port"] == 3268 for e in binds)  # the Global Catalog port
