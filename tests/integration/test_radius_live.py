"""Live RADIUS between real peers in two network namespaces: a throwaway FreeRADIUS server (its own
configuration in a temporary directory, in the foreground) answering `radclient` (PAP, CHAP, a wrong
password, EAP-Identity, Status-Server, accounting Start/Stop, CoA, and a request signed with the wrong
secret that the server drops, so radclient retransmits it) and `pyrad` (PAP with a WISPr attribute,
accounting), captured by `wiretide capture` on the server's veth and dissected offline.

The entries are the clients' own record — every identifier and code radclient printed, every reply
pyrad got — and no password, nor the CHAP answer, is in any of them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import NetPair, inside, veth_pair
from tests.helpers.tcpdump import Watched, dissect
from tests.integration.test_http2_live import Capture
from wiretide.dissector.redact import MARKER

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and AF_PACKET"),
    pytest.mark.skipif(
        shutil.which("freeradius") is None or shutil.which("radclient") is None,
        reason="freeradius and radclient are not installed (Makefile APT_PACKAGES: freeradius, -utils)",
    ),
]

SECRET = "live-radius-secret"
PASSWORD = "wonderland-pw-1"
READY_TIMEOUT_S = 30.0
SUBNET = "10.83.0"

RADIUSD_CONF = """
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {dir}
raddbdir = {dir}
radacctdir = {dir}
name = freeradius
confdir = {dir}
modconfdir = {dir}
run_dir = {dir}
db_dir = {dir}
libdir = /usr/lib/freeradius
pidfile = {dir}/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
	destination = stderr
}}
security {{
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = yes
}}
thread pool {{
	start_servers = 1
	max_servers = 2
	min_spare_servers = 1
	max_spare_servers = 2
}}
client nas {{
	ipaddr = {nas}
	secret = {secret}
	require_message_authenticator = no
}}
modules {{
	always ok {{
		rcode = ok
	}}
	pap {{
	}}
	chap {{
	}}
	eap {{
		default_eap_type = md5
		md5 {{
		}}
	}}
	files {{
		filename = {dir}/users
		acctusersfile = {dir}/acct_users
	}}
}}
server default {{
	listen {{
		type = auth
		ipaddr = {server}
		port = 1812
	}}
	listen {{
		type = acct
		ipaddr = {server}
		port = 1813
	}}
	listen {{
		type = coa
		ipaddr = {server}
		port = 3799
	}}
	authorize {{
		eap {{
			ok = return
		}}
		files
		pap
		chap
	}}
	authenticate {{
		Auth-Type PAP {{
			pap
		}}
		Auth-Type CHAP {{
			chap
		}}
		eap
	}}
	accounting {{
		ok
	}}
	recv-coa {{
		ok
	}}
	send-coa {{
		ok
	}}
	post-auth {{
		Post-Auth-Type REJECT {{
			ok
		}}
	}}
}}
"""
USERS = (
    f'alice\tCleartext-Password := "{PASSWORD}"\n\tReply-Message := "Hello, alice", Session-Timeout := 3600\n'
)
# pyrad's own dictionary format (a few attributes: what this test sends and expects back).
PYRAD_DICTIONARY = """
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string encrypt=1
ATTRIBUTE NAS-IP-Address 4 ipaddr
ATTRIBUTE Reply-Message 18 string
ATTRIBUTE Session-Timeout 27 integer
ATTRIBUTE Calling-Station-Id 31 string
ATTRIBUTE NAS-Identifier 32 string
ATTRIBUTE Acct-Status-Type 40 integer
ATTRIBUTE Acct-Session-Id 44 string
VALUE Acct-Status-Type Start 1
VALUE Acct-Status-Type Stop 2
VENDOR WISPr 14122
BEGIN-VENDOR WISPr
ATTRIBUTE WISPr-Location-Name 2 string
END-VENDOR WISPr
"""

_SENT = re.compile(r"^Sent (\S+) Id (\d+) from [\d.]+:(\d+) to ")
_RECEIVED = re.compile(r"^Received (\S+) Id (\d+) from ")


def radclient(
    pair: NetPair, command: str, attrs: str, port: int, secret: str = SECRET, retries: int = 1
) -> str:
    argv = ["radclient", "-x", "-r", str(retries), "-t", "1", f"{pair.ip_b}:{port}", command, secret]
    done = pair.run(pair.ns_a, argv, input=attrs.encode(), capture_output=True, timeout=60)
    return done.stdout.decode()


def record(output: str) -> list[tuple[int, int, str, str | None]]:
    """radclient's own record: (source port, identifier, what it sent, what it received) per request."""
    out: dict[tuple[int, int], list[Any]] = {}
    for line in output.splitlines():
        sent = _SENT.match(line)
        if sent:
            key = (int(sent[3]), int(sent[2]))
            out.setdefault(key, [sent[1], None])
        got = _RECEIVED.match(line)
        if got:
            for (_, ident), value in out.items():
                if ident == int(got[2]) and value[1] is None:
                    value[1] = got[1]
    return [(port, ident, v[0], v[1]) for (port, ident), v in out.items()]


def start_server(pair: NetPair, conf: Path) -> Watched:
    conf.mkdir()
    (conf / "radiusd.conf").write_text(
        RADIUSD_CONF.format(dir=conf, nas=pair.ip_a, server=pair.ip_b, secret=SECRET)
    )
    (conf / "users").write_text(USERS)
    (conf / "acct_users").write_text("")
    (conf / "dictionary").write_text("")
    server = Watched(
        pair.popen(
            pair.ns_b,
            # -X: foreground, one process, debug log — to stdout, which the shell turns to stderr.
            ["sh", "-c", 'exec freeradius -X -d "$1" >&2', "sh", str(conf)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
    )
    server.wait_for(b"Ready to process requests", READY_TIMEOUT_S)
    return server


def pyrad_exchanges(pair: NetPair, dictionary: Path) -> list[tuple[int, str, str]]:
    """An Access-Request (PAP, with a WISPr attribute) and an accounting Start from pyrad: (identifier,
    request, reply) as pyrad saw them."""
    import pyrad.packet
    from pyrad.client import Client
    from pyrad.dictionary import Dictionary

    names = {pyrad.packet.AccessAccept: "Access-Accept", pyrad.packet.AccessReject: "Access-Reject",
             pyrad.packet.AccountingResponse: "Accounting-Response"}  # fmt: skip
    seen: list[tuple[int, str, str]] = []
    with inside(pair.ns_a):  # pyrad's sockets are opened here, so they live in the client's namespace
        client = Client(server=pair.ip_b, secret=SECRET.encode(), dict=Dictionary(str(dictionary)))
        client.timeout = 5
        client.retries = 1
        try:
            req = client.CreateAuthPacket(code=pyrad.packet.AccessRequest, User_Name="alice")
            req["User-Password"] = req.PwCrypt(PASSWORD)
            req["NAS-Identifier"] = "pyrad-nas"
            req["Calling-Station-Id"] = "02-00-00-00-00-01"
            req["WISPr-Location-Name"] = "Lab"
            reply = client.SendPacket(req)
            seen.append((req.id, "Access-Request", names[reply.code]))
            acct = client.CreateAcctPacket(User_Name="alice")
            acct["Acct-Status-Type"] = "Start"
            acct["Acct-Session-Id"] = "pyrad-1"
            reply = client.SendPacket(acct)
            seen.append((acct.id, "Accounting-Request", names[reply.code]))
        finally:
            client._CloseSocket()  # pyrad has no public close
    return seen


def test_radclient_and_pyrad_against_freeradius_give_entries_equal_to_their_own_record(
    tmp_path: Path,
) -> None:
    out = tmp_path / "radius.pcapng"
    dictionary = tmp_path / "pyrad.dictionary"
    dictionary.write_text(PYRAD_DICTIONARY)
    outputs: list[str] = []
    with veth_pair(SUBNET) as pair:
        server = start_server(pair, tmp_path / "raddb")
        try:
            capture = Capture(pair, out)
            try:
                outputs.append(
                    radclient(pair, "auth", f"User-Name = alice, User-Password = {PASSWORD}", 1812)
                )
                outputs.append(radclient(pair, "auth", "User-Name = alice, User-Password = not-it", 1812))
                outputs.append(
                    radclient(pair, "auth", f"User-Name = alice, CHAP-Password = {PASSWORD}", 1812)
                )
                outputs.append(
                    radclient(
                        pair,
                        "auth",
                        # EAP-Response/Identity "alice" (RFC 3748 §5.1)
                        "User-Name = alice, Message-Authenticator = 0x00, "
                        "EAP-Message = 0x0201000a01616c696365",
                        1812,
                    )
                )
                outputs.append(radclient(pair, "status", "Message-Authenticator = 0x00", 1812))
                for status in ("Start", "Stop"):
                    attrs = f"User-Name = alice, Acct-Status-Type = {status}, Acct-Session-Id = s-1"
                    outputs.append(radclient(pair, "acct", attrs, 1813))
                outputs.append(radclient(pair, "coa", "User-Name = alice, Acct-Session-Id = s-1", 3799))
                # Signed with the wrong secret: the server drops it (bad Message-Authenticator), and
                # radclient sends the very same packet twice more before it gives up.
                dropped = radclient(
                    pair,
                    "auth",
                    "User-Name = alice, User-Password = x, Message-Authenticator = 0x00",
                    1812,
                    secret="not-the-secret",
                    retries=3,
                )
                ours = pyrad_exchanges(pair, dictionary)
            finally:
                capture.stop()
        finally:
            server.stop()

    found = [e for e in dissect(out) if e["protocol"] == "radius"]
    text = repr(found)
    assert PASSWORD not in text and SECRET not in text

    answered = [r for o in outputs for r in record(o)]
    assert len(answered) == 8 and all(r[3] is not None for r in answered), outputs
    by_flow = {(e["src"]["port"], int(e["stream"])): e for e in found}
    for port, ident, sent, received in answered:
        e = by_flow[port, ident]
        assert (e["method"], e["response"]["code_name"]) == (sent, received)
        assert e["error"] is None and e["elapsed_us"] > 0
    shown = {(r[2], r[3]) for r in answered}
    assert ("Access-Request", "Access-Reject") in shown and ("Access-Request", "Access-Challenge") in shown
    assert ("CoA-Request", "CoA-ACK") in shown and ("Status-Server", "Access-Accept") in shown

    [(dport, dident, _, none)] = record(dropped)
    assert none is None and dropped.count(f"Id {dident} ") >= 3, dropped
    lost = by_flow[dport, dident]
    assert lost["request"]["retransmissions"] == 2 and lost["error"]["type"] == "timeout"

    pyrad_entries = {
        (int(e["stream"]), e["method"], e["response"]["code_name"])
        for e in found
        if (
            e["request"]["attributes"].get("NAS-Identifier") == "pyrad-nas"
            or e["request"]["attributes"].get("Acct-Session-Id") == "pyrad-1"
        )
    }
    assert len(ours) == 2 and pyrad_entries == set(ours)

    for e in found:
        a = e["request"]["attributes"]
        for secret in ("User-Password", "CHAP-Password", "Message-Authenticator"):
            assert a.get(secret) in (None, MARKER)
    pap = next(e for e in found if e["request"]["attributes"].get("NAS-Identifier") == "pyrad-nas")
    assert pap["request"]["attributes"]["WISPr-Location-Name"] == "Lab"
    assert pap["response"]["attributes"]["Reply-Message"] == "Hello, alice"
    assert "request.attributes.User-Password" in pap["redacted"]
    eap = next(e for e in found if "eap" in e["request"])
    assert eap["request"]["eap"]["identity"] == "alice"
    assert eap["response"]["eap"]["type_name"] == "MD5-Challenge"
    chap = next(e for e in found if "CHAP-Password" in e["request"]["attributes"])
    assert chap["status"] == 2
