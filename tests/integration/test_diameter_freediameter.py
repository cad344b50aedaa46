"""Live Diameter over TCP against the real peer from Debian: freeDiameterd (the stock daemon, no
extensions loaded, so it serves only the base protocol) in one network namespace, a client written here
(tests/helpers/diameter.py) in the other. The daemon's configuration, written per test, knows one peer
(the client, plain TCP) and carries a throwaway certificate (freeDiameter does not start without TLS
credentials, even when no peer uses TLS).

What the daemon answers: a CER from a peer it does not know with 3010 (DIAMETER_UNKNOWN_PEER), then it
closes; the known client's CER and DWR with 2001; a Gx Credit-Control-Request addressed to the daemon
with 3007 (DIAMETER_APPLICATION_UNSUPPORTED) and one for its realm with 3002 (DIAMETER_UNABLE_TO_DELIVER),
both pipelined; a command in no dictionary with 3001 (DIAMETER_COMMAND_UNSUPPORTED); its own DWR after
Tw of silence, which the client answers; the DPR with 2001. tcpdump captures the server's veth and the
capture is dissected offline: the entries are what the client itself recorded, exchange by exchange.
The responder test (test_diameter_live.py) covers what this daemon cannot (Gx/S6a answers, a peer's
Re-Auth-Request, large messages)."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import diameter as dia
from tests.helpers.diameter_capture import PORT, capture_client, first_whole_capture
from tests.helpers.netns import NetPair, veth_pair
from tests.helpers.tcpdump import Watched, dissect
from tests.helpers.wait import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and tcpdump"),
    pytest.mark.skipif(
        shutil.which("freeDiameterd") is None,
        reason="freeDiameterd is not installed (Debian package freediameterd)",
    ),
]

# A port nothing listens on in the client's namespace: the daemon's own attempts to connect to its
# configured peer are refused at once (and stay outside the capture filter).
REFUSED_PORT = 3999
TW_S = 6  # the daemon's watchdog timer, the least RFC 3539 allows: its DWR comes after 4-8 s of silence
READY_TIMEOUT_S = 30.0
WATCHDOG_WAIT_S = 60.0
TSHARK = shutil.which("tshark")
DIAMETER_NAMES = {257: "CER", 280: "DWR", 272: "CCR", 282: "DPR", dia.UNKNOWN_COMMAND: "cmd-9999-R"}


def _credentials(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key for the daemon's Identity."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dia.FD_PEER)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "peer.cert.pem", directory / "peer.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _config(pair: NetPair, directory: Path) -> Path:
    cert, key = _credentials(directory)
    conf = directory / "freeDiameter.conf"
    conf.write_text(
        f'Identity = "{dia.FD_PEER}";\n'
        'Realm = "wiretide.test";\n'
        f"Port = {PORT};\n"
        "SecPort = 0;\n"  # no TLS listener
        "No_SCTP;\n"  # this kernel has no SCTP sockets
        "No_IPv6;\n"
        f"TwTimer = {TW_S};\n"
        f'TLS_Cred = "{cert}", "{key}";\n'
        f'TLS_CA = "{cert}";\n'
        f'ConnectPeer = "{dia.FD_CLIENT}" {{ No_TLS; ConnectTo = "{pair.ip_a}"; port = {REFUSED_PORT}; }};\n'
    )
    return conf


def _tshark_messages(pcap: Path) -> list[tuple[int, int, bool]]:
    """(command code, hop-by-hop id, request?) of every Diameter message tshark finds in the capture."""
    assert TSHARK is not None
    fields = ("diameter.cmd.code", "diameter.hopbyhopid", "diameter.flags.request")
    argv = [
        TSHARK,
        "-r",
        str(pcap),
        "-Y",
        "diameter",
        "-T",
        "fields",
        *(x for f in fields for x in ("-e", f)),
    ]
    out = subprocess.run(argv, capture_output=True, check=True, timeout=120).stdout.decode()
    found = []
    for line in out.splitlines():
        codes, hbhs, requests = (column.split(",") for column in line.split("\t"))
        for code, hbh, request in zip(codes, hbhs, requests, strict=True):
            found.append((int(code), int(hbh, 16), request in ("1", "True")))
    return found


def _listening(pair: NetPair) -> bool:
    done = pair.run(pair.ns_b, ["ss", "-Htln", f"sport = :{PORT}"], capture_output=True, timeout=10)
    return bool(done.stdout.strip())


def _session(pair: NetPair, conf: Path, pcap: Path) -> tuple[tuple[dict[str, Any], str], int]:
    """The client's session against the daemon, captured: ((what the client recorded, the daemon's
    log), drops)."""
    # The daemon logs to stdout: sent to stderr, where Watched reads it.
    daemon = Watched(
        pair.popen(
            pair.ns_b,
            ["sh", "-c", 'exec freeDiameterd -c "$0" 1>&2', str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    )
    try:
        daemon.wait_for(b"daemon initialized", READY_TIMEOUT_S)
        wait_for("freeDiameterd listening", lambda: _listening(pair), timeout=READY_TIMEOUT_S)
        args = (pair.ip_b, PORT, pair.ip_a, WATCHDOG_WAIT_S)
        run = capture_client(
            pair, pcap, "freediameter_client", args, timeout=180, ready_timeout=READY_TIMEOUT_S
        )
    finally:
        log = daemon.stop()
    return (run.record(log[-3000:]), log), run.dropped


def test_freediameterd_answers_become_one_entry_per_exchange(tmp_path: Path) -> None:
    with veth_pair("10.82.0") as pair:
        conf = _config(pair, tmp_path)
        (record, log), pcap = first_whole_capture(
            tmp_path, "freediameter", lambda pcap: _session(pair, conf, pcap)
        )
    entries = dissect(pcap)

    # What the daemon did, as the client saw it (so a change in freeDiameter shows here first).
    assert record["sent"][0] == [257, dia.FD_HBH_STRANGER, 3010, True] and record["stranger_closed"]
    assert sorted(record["sent"][1:]) == [[257, 1, 2001, False], [272, 3, 3007, True], [272, 4, 3002, True],
                                          [280, 2, 2001, False], [282, 6, 2001, False],
                                          [dia.UNKNOWN_COMMAND, 5, 3001, True]]  # fmt: skip
    assert [code for code, _, _ in record["received"]] == [280], log[-3000:]

    found = [e for e in entries if e["protocol"] == "diameter"]
    assert [e for e in entries if e["transport"] == "tcp" and e["protocol"] != "diameter"] == []
    assert all(e["error"] is None for e in found)
    assert all(e["response"] is not None for e in found)  # every request paired with its answer
    client = sorted(
        [e["request"]["command_code"], int(e["request"]["hop_by_hop_id"], 16), e["status"],
         "E" in e["response"]["flags"]]
        for e in found if e["request"].get("sender") != "server"
    )  # fmt: skip
    assert client == sorted(record["sent"])
    assert all(e["method"] == DIAMETER_NAMES[e["request"]["command_code"]] for e in found)
    daemon = [
        [e["request"]["command_code"], int(e["request"]["hop_by_hop_id"], 16), e["status"]]
        for e in found
        if e["request"].get("sender") == "server"
    ]
    assert daemon == record["received"]  # the daemon's own request, paired with the client's answer
    assert {e["src"]["ip"] for e in found} == {pair.ip_a}  # the side that opened the connection
    assert len({e["flow_id"] for e in found}) == 2  # the stranger's connection and the client's

    if TSHARK is not None:  # the same messages as tshark reads them, each request and its answer
        ours = [(e["request"]["command_code"], int(e["request"]["hop_by_hop_id"], 16), request)
                for e in found for request in (True, False)]  # fmt: skip
        assert sorted(ours) == sorted(_tshark_messages(pcap))

    by_hbh = {
        int(e["request"]["hop_by_hop_id"], 16): e for e in found if e["request"].get("sender") != "server"
    }
    assert by_hbh[dia.FD_HBH_STRANGER]["summary"] == "CER base → DIAMETER_UNKNOWN_PEER (3010)"
    assert by_hbh[3]["summary"] == "CCR Gx INITIAL_REQUEST → DIAMETER_APPLICATION_UNSUPPORTED (3007)"
    assert by_hbh[4]["summary"] == "CCR Gx INITIAL_REQUEST → DIAMETER_UNABLE_TO_DELIVER (3002)"
    assert by_hbh[5]["summary"] == "cmd-9999-R base → DIAMETER_COMMAND_UNSUPPORTED (3001)"
    cea = by_hbh[1]["response"]
    assert cea["origin_host"] == dia.FD_PEER and cea["command"] == "CEA"
