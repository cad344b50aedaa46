"""Live PostgreSQL traffic between a real server and real clients: a throwaway cluster (`initdb`,
`pg_ctl`, run as the `postgres` user because the server refuses root) listening on 127.0.0.1, `psql`
and psycopg 3 as clients, tcpdump on `lo` filtered to the server's port, the capture dissected
offline. The entries must equal the clients' own record: statements, row counts, an error with its
SQLSTATE, a prepared statement executed three times, COPY in and out, a notification, a TLS
connection followed from SSLRequest into its handshake, and no password anywhere."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.tcpdump import dissect, loopback_capture

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root for tcpdump on lo and to run postgres as its user"
    ),
]
pytest.importorskip("psycopg", reason="psycopg (dev group) not installed")

READY_TIMEOUT_S = 30.0
PASSWORD = "Wt-s3cret-Pw-7x"  # SCRAM-SHA-256: must never appear in an entry
SERVER_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))

CLIENT = """
import json, sys
import psycopg

dsn = sys.argv[1]
rec = {}
with psycopg.connect(dsn, application_name="wt-live", sslmode="disable", autocommit=True) as conn:
    cur = conn.cursor()
    cur.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
    cur.execute("INSERT INTO items VALUES (%s, %s), (%s, %s), (%s, %s)", (1, "a", 2, "b", 3, "c"))
    rec["inserted"] = cur.rowcount
    cur.execute("SELECT id, name FROM items WHERE id > %s ORDER BY id", (0,))
    rec["selected"] = len(cur.fetchall())
    rec["prepared"] = []
    for i in (1, 2, 3):
        cur.execute("SELECT name FROM items WHERE id = %s", (i,), prepare=True)
        rec["prepared"].append(cur.fetchone()[0])
    try:
        cur.execute("SELECT * FROM missing_table")
    except psycopg.Error as exc:
        rec["sqlstate"] = exc.sqlstate
        rec["error"] = exc.diag.message_primary
    with cur.copy("COPY items (id, name) FROM STDIN") as copy:
        for i in range(10, 15):
            copy.write_row((i, f"n{i}"))
    rec["copied_in"] = cur.rowcount
    copied = []
    with cur.copy("COPY items TO STDOUT") as copy:
        for row in copy.rows():
            copied.append(row)
    rec["copied_out"] = len(copied)
    cur.execute("LISTEN jobs")
    cur.execute("NOTIFY jobs, 'hello'")
    rec["notified"] = [n.payload for n in conn.notifies(timeout=5, stop_after=1)]
tls = dsn.replace("host=127.0.0.1", "host=localhost hostaddr=127.0.0.1")
with psycopg.connect(tls, sslmode="require", application_name="wt-tls") as conn:
    rec["tls"] = conn.execute("SELECT 42").fetchone()[0]
rec["libpq"] = psycopg.pq.version()
print(json.dumps(rec), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Cluster:
    port: int
    dsn: str


def _as_postgres(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, timeout=120, **kw)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not SERVER_BINS:
        pytest.skip("PostgreSQL server not installed (Makefile APT_PACKAGES: postgresql)")
    if shutil.which("runuser") is None:
        pytest.skip("runuser missing: cannot run postgres as a non-root user")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no `postgres` user to run the server as (the Debian package creates it)")
    bindir = SERVER_BINS[-1].parent
    # Not under pytest's tmp_path: its parents are root-only, and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="wt-pg-"))
    try:
        yield from _serve(bindir, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _serve(bindir: Path, base: Path) -> Iterator[Cluster]:
    base.chmod(0o755)
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    key, cert = base / "server.key", base / "server.crt"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot make a server certificate: {made.stderr.decode()[-300:]}")
    key.chmod(0o600)
    postgres = pwd.getpwnam("postgres")
    for path in (base, sock, pwfile, key, cert):
        os.chown(path, postgres.pw_uid, postgres.pw_gid)
    init = _as_postgres(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "wt",
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
        ],
        check=False,
    )
    if init.returncode != 0:
        pytest.skip(f"initdb failed: {init.stderr.decode()[-500:]}")
    port = _free_port()
    opts = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c ssl=on "
        f"-c ssl_cert_file={cert} -c ssl_key_file={key} -c fsync=off"
    )
    start = _as_postgres(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(base / "log"),
            "-w",
            "-t",
            "60",
            "start",
        ],
        check=False,
    )
    if start.returncode != 0:
        log = (base / "log").read_text() if (base / "log").exists() else ""
        pytest.skip(f"the PostgreSQL server did not start: {start.stderr.decode()[-300:]} {log[-500:]}")
    try:
        yield Cluster(port, f"host=127.0.0.1 port={port} user=wt dbname=postgres password={PASSWORD}")
    finally:
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], check=False)


def tshark_types(pcap: Path, port: int) -> Counter[str]:
    """How many messages of each kind tshark's pgsql dissector sees (decoding the port as pgsql)."""
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-d", f"tcp.port=={port},pgsql", "-Y", "pgsql",
         "-T", "fields", "-e", "pgsql.type"],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    return Counter(kind for line in out.stdout.decode().splitlines() for kind in line.split(",") if kind)


def test_psycopg_and_psql_sessions_become_entries_equal_to_the_clients_own_record(
    cluster: Cluster, tmp_path: Path
) -> None:
    if shutil.which("psql") is None:
        pytest.skip("psql missing (Makefile APT_PACKAGES: postgresql-client)")
    pcap = tmp_path / "pg.pcap"
    with loopback_capture(pcap, cluster.port, READY_TIMEOUT_S):
        client = subprocess.run(
            [sys.executable, "-c", CLIENT, cluster.dsn], capture_output=True, timeout=120, check=False
        )
        psql = subprocess.run(
            ["psql", cluster.dsn + " sslmode=disable application_name=psql-live", "-X", "-A", "-t",
             "-c", "SELECT count(*) FROM items", "-c", "SELECT 1/0"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    assert client.returncode == 0, client.stderr.decode()[-2000:]
    rec = json.loads(client.stdout.decode().strip().splitlines()[-1])
    assert psql.stdout.decode().split() == ["8"] and b"22012" not in psql.stdout
    entries = dissect(pcap)
    assert PASSWORD not in json.dumps(entries)
    tcp = [e for e in entries if e["transport"] == "tcp"]
    assert {e["protocol"] for e in tcp} == {"postgresql", "tls"}, [e["summary"] for e in tcp]
    pg = [e for e in entries if e["protocol"] == "postgresql"]
    by_sql = {e["request"].get("query"): e for e in pg if e["request"] and e["request"].get("query")}

    # Startups: user, database, application name; SCRAM offered, never shown.
    startups = [e for e in pg if e["method"] == "STARTUP"]
    assert sorted(s["request"]["application_name"] for s in startups) == [
        "psql-live",
        "wt-live",
    ]  # wt-tls: encrypted
    for s in startups:
        assert s["request"]["user"] == "wt" and s["request"]["database"] == "postgres"
    plain = next(s for s in startups if s["request"]["application_name"] == "wt-live")
    assert plain["status"] == 0 and plain["response"]["authentication"][0].startswith("sasl SCRAM-SHA-256")
    assert plain["response"]["authentication"][-1] == "ok" and plain["request"]["auth_responses"] == 2

    create = by_sql["CREATE TABLE items (id int PRIMARY KEY, name text)"]
    assert (create["method"], create["path"], create["status"]) == ("CREATE", "items", 0)
    insert = by_sql["INSERT INTO items VALUES ($1, $2), ($3, $4), ($5, $6)"]
    assert insert["response"]["rows_affected"] == rec["inserted"] == 3
    assert insert["request"]["parameters"] == 6 and insert["path"] == "items"
    select = by_sql["SELECT id, name FROM items WHERE id > $1 ORDER BY id"]
    assert select["response"]["rows"] == rec["selected"] == 3
    assert select["response"]["columns"] == ["id", "name"]

    prepared = [
        e for e in pg if e["request"] and e["request"].get("query") == "SELECT name FROM items WHERE id = $1"
    ]
    assert len(prepared) == len(rec["prepared"]) == 3
    assert len({e["request"]["statement"] for e in prepared}) == 1 and prepared[0]["request"]["statement"]
    assert [e["response"]["rows"] for e in prepared] == [1, 1, 1]

    failed = by_sql["SELECT * FROM missing_table"]
    assert (
        failed["error"] == {"type": rec["sqlstate"], "message": rec["error"]} and rec["sqlstate"] == "42P01"
    )
    assert failed["status"] is None and failed["response"]["error"]["severity"] == "ERROR"

    copy_in = by_sql["COPY items (id, name) FROM STDIN"]
    assert copy_in["response"]["rows_affected"] == rec["copied_in"] == 5
    assert copy_in["request"]["copy"]["bytes"] == sum(len(f"{i}\tn{i}\n") for i in range(10, 15))
    copy_out = by_sql["COPY items TO STDOUT"]
    assert copy_out["response"]["copy"]["messages"] == rec["copied_out"] == 8
    assert copy_out["response"]["rows_affected"] == 8 and copy_out["response"]["copy"]["direction"] == "out"

    (note,) = [e for e in pg if e["method"] == "NOTIFICATION"]
    assert (note["path"], [note["response"]["payload"]]) == ("jobs", rec["notified"])

    # psql speaks the simple protocol: one entry per -c, the division by zero with its SQLSTATE.
    count = by_sql["SELECT count(*) FROM items"]
    assert count["response"]["command_tag"] == "SELECT 1" and count["response"]["rows"] == 1
    div = by_sql["SELECT 1/0"]
    assert div["error"]["type"] == "22012" and div["method"] == "SELECT"

    # sslmode=require: SSLRequest answered 'S', then the TLS handshake with the host name as SNI.
    (ssl,) = [e for e in pg if e["method"] == "SSLRequest"]
    assert ssl["response"]["answer"] == "S" and rec["tls"] == 42
    hellos = [e for e in entries if e["protocol"] == "tls"]  # a HelloRetryRequest makes it two
    assert hellos and {(e["tls"]["sni"], e["src"]["port"]) for e in hellos} == {
        ("localhost", ssl["src"]["port"])
    }
    if rec["libpq"] >= 170000:  # libpq 17 offers ALPN "postgresql" (and PostgreSQL 17 requires it)
        assert hellos[0]["request"]["alpn"] == ["postgresql"]
    assert [e["summary"] for e in pg if e["error"] and e is not failed and e is not div] == []

    # The same capture through tshark's pgsql dissector: the same messages, counted by kind.
    if shutil.which("tshark") is not None:
        seen = tshark_types(pcap, cluster.port)
        assert seen["Simple query"] + seen["Execute"] == sum(
            1 for e in pg if e["request"] and e["request"]["type"] in ("query", "execute")
        )
        assert seen["Startup message"] == len(startups) and seen["SSL request"] == 1
        assert seen["Data row"] == sum(e["response"].get("rows", 0) for e in pg if e["response"])
        assert seen["Error"] == sum(1 for e in pg if e["response"] and "error" in e["response"])
        assert seen["Notification"] == 1
        assert (
            seen["Copy data"]
            == copy_in["request"]["copy"]["messages"] + copy_out["response"]["copy"]["messages"]
        )
