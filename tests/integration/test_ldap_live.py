"""Live LDAP between real peers in two network namespaces: a throwaway `slapd` (its own slapd.conf, an
mdb database filled by `slapadd`, a certificate from a test CA) answering OpenLDAP's `ldapsearch`,
`ldapadd`, `ldapmodify`, `ldapdelete` (also `-ZZ`, StartTLS) and the `ldap3` Python client (simple bind,
searches, compare, Who am I?, StartTLS with SNI), captured by `wiretide capture` on the server's veth
and dissected offline. The entries are what the clients did — operation by operation, with their
result codes and entry counts — the password is in none of them, and each StartTLS is followed into
its TLS handshake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import NetPair, veth_pair
from tests.helpers.tcpdump import dissect
from tests.helpers.wait import wait_for
from tests.integration.test_http2_live import Capture, stop

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and AF_PACKET"),
    pytest.mark.skipif(
        any(not Path(b).exists() for b in ("/usr/sbin/slapd", "/usr/sbin/slapadd", "/usr/bin/ldapsearch")),
        reason="slapd and ldap-utils are not installed (Makefile APT_PACKAGES)",
    ),
]

SUFFIX = "dc=example,dc=com"
ADMIN = f"cn=admin,{SUFFIX}"
PASSWORD = "live-ldap-s3cret"
PEOPLE = f"ou=People,{SUFFIX}"
READY_TIMEOUT_S = 20.0
SNI = "ldap.wiretide.test"

TREE = f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: {PEOPLE}
objectClass: organizationalUnit
ou: People
""" + "".join(
    f"""
dn: uid={uid},{PEOPLE}
objectClass: inetOrgPerson
uid: {uid}
cn: {uid.title()}
sn: {uid.title()}
mail: {uid}@example.com
"""
    for uid in ("alice", "bob", "carol")
)

CONF = """include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {dir}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {dir}/ca.pem
TLSCertificateFile {dir}/server.pem
TLSCertificateKeyFile {dir}/server.key
database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "{admin}"
rootpw {password}
directory {dir}/db
"""

LDAP3_CLIENT = """
import json, ssl, sys, warnings
warnings.simplefilter("ignore")
from ldap3 import NONE, Server, Connection, Tls, SUBTREE
host, ca, sni, admin, password, people = sys.argv[1:7]
tls = Tls(ca_certs_file=ca, validate=ssl.CERT_REQUIRED, sni=sni)
conn = Connection(Server(host, port=389, tls=tls, get_info=NONE), admin, password)
record = []
def note(operation, entries=None):
    record.append([operation, conn.result["result"], entries])
conn.bind(); note("bind")
conn.search(people, "(&(objectClass=inetOrgPerson)(|(uid=a*)(uid=b*)))", SUBTREE, attributes=["cn"])
note("search", len(conn.entries))
conn.compare("uid=alice," + people, "sn", "Alice"); note("compare")
conn.extend.standard.who_am_i(); note("extended")
conn.search("ou=Nowhere," + people, "(objectClass=*)"); note("search", len(conn.entries))
conn.start_tls(); note("extended")
conn.search(people, "(uid=carol)", SUBTREE); note("search", len(conn.entries))
conn.unbind()
print(json.dumps(record))
"""


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def certificates(d: Path, ip: str) -> None:
    """A test CA and a server certificate it signed, for the server's address and SNI."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=Wiretide test CA",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={SNI}",
            "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))  # fmt: skip
    (d / "san.ext").write_text(f"subjectAltName=DNS:{SNI},IP:{ip}\n")
    ca = ["-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"), "-CAcreateserial"]
    openssl("x509", "-req", "-in", str(d / "server.csr"), *ca, "-days", "1", "-extfile", str(d / "san.ext"),
            "-out", str(d / "server.pem"))  # fmt: skip


def tool(
    pair: NetPair, d: Path, *argv: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "LDAPTLS_CACERT": str(d / "ca.pem"), "LDAPCONF": "/dev/null"}
    return pair.run(pair.ns_a, list(argv), input=stdin, capture_output=True, timeout=60, env=env)


def test_openldap_tools_and_ldap3_become_ldap_entries_operation_by_operation(tmp_path: Path) -> None:
    out = tmp_path / "ldap.pcapng"
    with veth_pair("10.81.0") as pair:
        url = f"ldap://{pair.ip_b}"
        (tmp_path / "db").mkdir()
        certificates(tmp_path, pair.ip_b)
        conf = tmp_path / "slapd.conf"
        conf.write_text(CONF.format(dir=tmp_path, suffix=SUFFIX, admin=ADMIN, password=PASSWORD))
        subprocess.run(["slapadd", "-f", str(conf), "-l", "/dev/stdin"], input=TREE.encode(), check=True,
                       capture_output=True, timeout=60)  # fmt: skip
        server = pair.popen(
            pair.ns_b, ["slapd", "-f", str(conf), "-h", f"{url}/", "-d", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(
                "slapd answering",
                lambda: (
                    tool(pair, tmp_path, "ldapsearch", "-x", "-H", url, "-b", "", "-s", "base").returncode
                    == 0
                ),
                timeout=READY_TIMEOUT_S,
            )
            capture = Capture(pair, out)
            try:
                auth = ["-x", "-H", url, "-D", ADMIN, "-w", PASSWORD]
                listed = tool(
                    pair, tmp_path, "ldapsearch", *auth, "-b", PEOPLE, "(objectClass=inetOrgPerson)", "cn"
                )
                assert listed.returncode == 0 and b"numEntries: 3" in listed.stdout
                dave = f"dn: uid=dave,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: dave\ncn: Dave\nsn: Dave\n"
                assert tool(pair, tmp_path, "ldapadd", *auth, stdin=dave.encode()).returncode == 0
                change = f"dn: uid=dave,{PEOPLE}\nchangetype: modify\nreplace: mail\nmail: dave@example.com\n"
                assert tool(pair, tmp_path, "ldapmodify", *auth, stdin=change.encode()).returncode == 0
                assert tool(pair, tmp_path, "ldapdelete", *auth, f"uid=dave,{PEOPLE}").returncode == 0
                wrong = tool(
                    pair, tmp_path, "ldapsearch", "-x", "-H", url, "-D", ADMIN, "-w", "nope", "-b", SUFFIX
                )
                assert wrong.returncode == 49
                missing = tool(pair, tmp_path, "ldapsearch", *auth, "-b", f"dc=nowhere,{SUFFIX}")
                assert missing.returncode == 32
                tls = tool(pair, tmp_path, "ldapsearch", *auth, "-ZZ", "-b", PEOPLE, "(uid=bob)")
                assert tls.returncode == 0 and b"numEntries: 1" in tls.stdout, tls.stderr
                client = pair.run(
                    pair.ns_a,
                    [sys.executable, "-c", LDAP3_CLIENT, pair.ip_b, str(tmp_path / "ca.pem"), SNI, ADMIN,
                     PASSWORD, PEOPLE],
                    capture_output=True, timeout=60,
                )  # fmt: skip
                assert client.returncode == 0, client.stderr.decode()[-2000:]
                record: list[list[Any]] = json.loads(client.stdout)
            finally:
                capture.stop()
        finally:
            stop(server)

    found = dissect(out)
    assert PASSWORD not in repr(found)
    ldap = [e for e in found if e["protocol"] == "ldap"]
    ops = Counter((e["method"], e["status"]) for e in ldap)
    # The OpenLDAP tools: 6 binds (one failing with invalidCredentials), searches, add, modify, delete.
    assert ops["bind", 0] == 5 + 1 and ops["bind", 49] == 1  # + ldap3's bind (-ZZ binds inside TLS)
    assert ops["add", 0] == 1 and ops["modify", 0] == 1 and ops["delete", 0] == 1
    assert ops["search", 32] == 1 + 1  # ldapsearch's missing base, ldap3's
    searches = [e for e in ldap if e["method"] == "search" and e["status"] == 0]
    counts = sorted(e["response"]["entries"] for e in searches if e["path"] == PEOPLE)
    # ldapsearch listed 3; ldap3 found 2 (a*|b*) in the clear; the TLS searches are not readable.
    assert counts == [2, 3]
    add = next(e for e in ldap if e["method"] == "add")
    assert (
        add["path"] == f"uid=dave,{PEOPLE}"
        and {"type": "uid", "values": ["dave"], "values_count": 1} in add["request"]["attributes"]
    )
    modify = next(e for e in ldap if e["method"] == "modify")
    assert modify["request"]["changes"][0]["operation"] == "replace"
    failed = next(e for e in ldap if e["status"] == 49)
    assert failed["error"]["type"] == "invalidCredentials" and failed["request"]["password"] == "[REDACTED]"
    # ldap3's own record, in the clear part of its connection, equals the entries of its flow.
    flow = [e for e in ldap if e["flow_id"] == next(x["flow_id"] for x in ldap if x["method"] == "compare")]
    mine = [[e["method"], e["status"], e["response"].get("entries")] for e in flow if e["method"] != "unbind"]
    assert mine == record[:6], (mine, record)
    assert flow[3]["request"]["name"] == "Who am I?" and flow[5]["request"]["name"] == "StartTLS"
    # Both StartTLS upgrades are followed into their handshakes: ldapsearch -ZZ (no SNI: an address) and
    # ldap3 (SNI given).
    starttls = [e for e in ldap if e.get("request") and e["request"].get("name") == "StartTLS"]
    assert len(starttls) == 2 and all(e["status"] == 0 for e in starttls)
    handshakes = {e["flow_id"]: e for e in found if e["protocol"] == "tls"}
    assert all(e["flow_id"] in handshakes for e in starttls)
    assert handshakes[flow[0]["flow_id"]]["tls"]["sni"] == SNI
    assert all(h["tls"]["ja3"] and h["tls"]["ja4"] for h in handshakes.values())
