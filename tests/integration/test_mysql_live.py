"""MySQL live: a throwaway MariaDB server on loopback, real clients (PyMySQL, mysql-connector-python's
pure-Python server-side prepares, the `mariadb` CLI, PyMySQL over TLS), captured by tcpdump and
dissected offline. The entries equal the clients' own record — queries, row and affected-row counts,
the ERR code, each execution of a prepared statement — and the commands equal tshark's. No shared
capture of MySQL exists: this is the real-capture test."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.tcpdump import dissect, loopback_capture
from tests.helpers.wait import wait_for
from wiretide.dissector.protocols.mysql import COMMANDS

SERVER_BIN = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump on loopback and mariadbd --user=mysql need root"),
    pytest.mark.skipif(
        not (os.path.exists(SERVER_BIN) and shutil.which("mariadb-install-db") and shutil.which("mariadb")),
        reason="needs mariadb-server and mariadb-client (the Makefile's APT_PACKAGES)",
    ),
    pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump"),
]
pymysql = pytest.importorskip("pymysql")
connector = pytest.importorskip("mysql.connector")

PREPARED_SQL = "SELECT ? + 1 AS n, 'x' AS s"
END_MARKER = "zq9x-end-of-capture"


@dataclass
class Server:
    port: int
    root: Path


@dataclass
class Record:
    """What the clients themselves saw."""

    version: str = ""
    queries: list[tuple[str, int, int]] = field(default_factory=list)  # (sql, status, rows|affected)
    insert_id: int = 0
    prepared_rows: list[int] = field(default_factory=list)
    cli_rows: int = -1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        return s.recv(5)[4:5] == b"\x0a"  # the greeting's protocol version
    return False


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="wt-mariadb-"))  # not under pytest's 0700 tmp: mysql reads it
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    shutil.chown(data, "mysql", "mysql")
    for name in ("key.pem", "cert.pem"):
        shutil.chown(root / name, "mysql", "mysql")
    init = subprocess.run(
        ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=mysql",
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        capture_output=True, timeout=300,
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"mariadb-install-db failed: {init.stderr.decode(errors='replace')[-300:]}")
    port = _free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below, after the server
    proc = subprocess.Popen(
        [SERVER_BIN, "--no-defaults", f"--datadir={data}", f"--port={port}", "--bind-address=127.0.0.1",
         f"--socket={data / 'mysqld.sock'}", "--user=mysql", "--skip-name-resolve",
         f"--ssl-cert={root / 'cert.pem'}", f"--ssl-key={root / 'key.pem'}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        try:
            wait_for("mariadbd to answer", lambda: proc.poll() is not None or _answers(port), timeout=120)
        except AssertionError:
            pytest.skip("mariadbd did not start: " + (root / "server.log").read_text(errors="replace")[-300:])
        if proc.poll() is not None:
            pytest.skip("mariadbd exited: " + (root / "server.log").read_text(errors="replace")[-300:])
        yield Server(port, root)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _workload(port: int, record: Record) -> None:
    """Real clients doing real work; each writes down what it saw. The server offers TLS, which these
    clients take by default: all but one are told not to."""
    conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password="", ssl_disabled=True)
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        record.version = cur.fetchone()[0]
        record.queries.append(("SELECT VERSION()", 0, cur.rowcount))
        for sql in (
            "CREATE DATABASE shop",
            "CREATE TABLE shop.t (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT)",
        ):
            cur.execute(sql)
            record.queries.append((sql, 0, cur.rowcount))
        conn.select_db("shop")  # COM_INIT_DB
        cur.execute("INSERT INTO t (v) VALUES ('a'), ('b'), ('c')")
        record.queries.append(("INSERT INTO t (v) VALUES ('a'), ('b'), ('c')", 0, cur.rowcount))
        record.insert_id = cur.lastrowid
        conn.commit()  # COM_QUERY COMMIT: the CLI below reads the rows
        cur.execute("SELECT id, v FROM t")
        record.queries.append(("SELECT id, v FROM t", 0, len(cur.fetchall())))
        try:
            cur.execute("SELEC oops")
        except pymysql.err.ProgrammingError as exc:
            record.queries.append(("SELEC oops", exc.args[0], 0))
        conn.ping(reconnect=False)
    conn.close()

    prepared = connector.connect(
        host="127.0.0.1", port=port, user="root", password="", use_pure=True, ssl_disabled=True
    )
    cur = prepared.cursor(prepared=True)
    for i in range(3):
        cur.execute(PREPARED_SQL, (i,))
        record.prepared_rows.append(len(cur.fetchall()))
    cur.close()
    prepared.close()

    cli = subprocess.run(
        ["mariadb", "--no-defaults", "--batch", "-h127.0.0.1", f"-P{port}", "-uroot", "--skip-ssl",
         "shop", "-e",
         "PREPARE s FROM 'SELECT v FROM t WHERE id = ?'; EXECUTE s USING 2"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    record.cli_rows = len(cli.stdout.splitlines()) - 1  # --batch: a header line, then one per row

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    secure = pymysql.connect(host="localhost", port=port, user="root", password="", ssl=context)
    with secure.cursor() as cur:
        cur.execute("SELECT 1")
    secure.close()

    last = pymysql.connect(host="127.0.0.1", port=port, user="root", password="", ssl_disabled=True)
    with last.cursor() as cur:
        cur.execute(f"SELECT '{END_MARKER}'")
    last.close()


@pytest.fixture(scope="module")
def captured(server: Server) -> tuple[Path, Record]:
    pcap = server.root / "mysql.pcap"
    record = Record()
    with loopback_capture(pcap, server.port):
        _workload(server.port, record)
        # tcpdump -U writes each packet as it comes: the marker's answer comes after all the rest.
        wait_for(
            "the last answer in the capture",
            lambda: (pcap.stat().st_size, pcap.read_bytes().count(END_MARKER.encode())),
            lambda seen: seen[1] >= 2,
        )
    return pcap, record


def test_entries_equal_what_the_clients_saw(captured: tuple[Path, Record]) -> None:
    pcap, record = captured
    found = dissect(pcap)
    mysql = [e for e in found if e["protocol"] == "mysql"]
    assert mysql and all(e["error"] is None for e in mysql), [e["error"] for e in mysql if e["error"]]
    logins = [e for e in mysql if e["method"] == "CONNECT"]
    assert len(logins) == 5
    assert all(e["request"]["user"] == "root" for e in logins if not e["request"].get("ssl"))
    assert all(e["response"]["server_version"] == record.version for e in logins)
    assert all(e["request"]["db_system"] == "mariadb" for e in mysql)
    by_sql = {e["request"].get("query"): e for e in mysql if e["request"]["command"] == "COM_QUERY"}
    for sql, status, count in record.queries:
        entry = by_sql[sql]
        assert entry["status"] == status, sql
        resp = entry["response"]
        if status:
            assert resp["error"]["code"] == status and resp["error"]["sqlstate"] == "42000"
        elif "rows" in resp:
            assert resp["rows"] == count, sql
        else:
            assert resp["affected_rows"] == count, sql
    assert (
        by_sql["INSERT INTO t (v) VALUES ('a'), ('b'), ('c')"]["response"]["last_insert_id"]
        == record.insert_id
    )
    assert [e["method"] for e in mysql if e["request"]["command"] == "COM_INIT_DB"] == ["COM_INIT_DB"]
    assert any(e["method"] == "COM_PING" and e["status"] == 0 for e in mysql)
    # Server-side prepares: one prepare, each execution an entry showing the SQL, then the close.
    stmt = [e for e in mysql if e["request"]["command"].startswith("COM_STMT_") and e["request"].get("query")]
    executes = [e for e in stmt if e["request"]["command"] == "COM_STMT_EXECUTE"]
    assert [e["response"]["rows"] for e in executes] == record.prepared_rows == [1, 1, 1]
    assert all(e["method"] == "SELECT" and e["summary"] == PREPARED_SQL for e in executes)
    prepare = next(e for e in stmt if e["request"]["command"] == "COM_STMT_PREPARE")
    assert prepare["response"]["params"] == 1 and prepare["response"]["column_names"] == ["n", "s"]
    assert any(e["request"]["command"] == "COM_STMT_CLOSE" for e in stmt)
    # The CLI's text PREPARE/EXECUTE are queries.
    assert by_sql["EXECUTE s USING 2"]["response"]["rows"] == record.cli_rows == 1


def test_the_ssl_upgrade_hands_the_flow_to_tls(captured: tuple[Path, Record]) -> None:
    found = dissect(captured[0])
    upgraded = [e for e in found if e["protocol"] == "mysql" and e["request"].get("ssl")]
    assert len(upgraded) == 1 and upgraded[0]["method"] == "CONNECT"
    flow = upgraded[0]["flow_id"]
    tls = [e for e in found if e["protocol"] == "tls" and e["flow_id"] == flow]
    assert tls and tls[0]["tls"]["sni"] == "localhost" and tls[0]["tls"]["ja3"]


def test_commands_equal_tsharks(captured: tuple[Path, Record], server: Server) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    pcap = captured[0]
    done = subprocess.run(
        ["tshark", "-r", str(pcap), "-d", f"tcp.port=={server.port},mysql", "-Y", "mysql.command",
         "-T", "fields", "-e", "mysql.command"],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    theirs = [int(x.split(",")[0]) for x in done.stdout.decode().split()]
    ours = [e for e in dissect(pcap) if e["protocol"] == "mysql" and e["method"] != "CONNECT"]
    assert len(ours) == len(theirs)
    codes = {name: code for code, name in COMMANDS.items()}
    assert [codes[e["request"]["command"]] for e in ours] == theirs
