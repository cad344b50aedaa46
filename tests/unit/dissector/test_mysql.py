"""MySQL/MariaDB transcripts over the protocol's own packet bytes: the login (greeting, HandshakeResponse
with attributes, the auth response never shown), COM_QUERY with result sets (EOF and DEPRECATE_EOF
styles), OK and ERR, prepared statements remembered per flow, multi-result sets, 16 MiB continuation
packets, the SSL upgrade into TLS, passwords in SQL redacted, detection, and bad input."""

from __future__ import annotations

import itertools
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.common.protocols import is_error, status_text
from wiretide.dissector.api import Message, SessionConfig, Verdict, Violation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols import mysql
from wiretide.dissector.protocols.mysql import MysqlSession, probe, redact_sql, sql_verb
from wiretide.dissector.redact import MARKER
from wiretide.dissector.registry import default_registry
from wiretide.tracer.spans import SpanIds, spans_from_entry

from .builders import Conversation
from .test_tls import hello_body, record

PROTOCOL_41, SECURE, WITH_DB, PLUGIN_AUTH = 1 << 9, 1 << 15, 1 << 3, 1 << 19
ATTRS, LENENC_AUTH, DEPRECATE_EOF, SSL = 1 << 20, 1 << 21, 1 << 24, 1 << 11
CLIENT = PROTOCOL_41 | SECURE | WITH_DB | PLUGIN_AUTH | ATTRS | LENENC_AUTH
SERVER = CLIENT | DEPRECATE_EOF | SSL | (1 << 16) | (1 << 17)
SECRET = b"\x8e\x11sEcReTsCrAmBlE\x00\x01\x02\x03\x04\x05"  # the auth response: must never show


def pkt(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def lenenc(n: int) -> bytes:
    if n < 0xFB:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    return b"\xfd" + n.to_bytes(3, "little")


def lstr(b: bytes) -> bytes:
    return lenenc(len(b)) + b


def greeting(version: bytes = b"5.5.5-10.11.6-MariaDB-0+deb12u1", caps: int = SERVER) -> bytes:
    return pkt(
        0,
        b"\x0a" + version + b"\0" + struct.pack("<I", 42) + b"saltsalt\0"
        + struct.pack("<HBHH", caps & 0xFFFF, 45, 2, caps >> 16) + bytes([21]) + b"\0" * 10
        + b"moresaltmore\0" + b"mysql_native_password\0",
    )  # fmt: skip


def login(caps: int = CLIENT, user: bytes = b"app", db: bytes = b"shop") -> bytes:
    attrs = lstr(b"_client_name") + lstr(b"pymysql") + lstr(b"program_name") + lstr(b"shop-api")
    return pkt(
        1,
        struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23 + user + b"\0" + lstr(SECRET) + db + b"\0"
        + b"mysql_native_password\0" + lstr(attrs),
    )  # fmt: skip


def ok(seq: int, affected: int = 0, insert_id: int = 0, status: int = 2, header: int = 0) -> bytes:
    return pkt(seq, bytes([header]) + lenenc(affected) + lenenc(insert_id) + struct.pack("<HH", status, 0))


def eof(seq: int, status: int = 2) -> bytes:
    return pkt(seq, b"\xfe\x00\x00" + struct.pack("<H", status))


def err(seq: int, code: int, state: bytes, msg: bytes) -> bytes:
    return pkt(seq, b"\xff" + struct.pack("<H", code) + b"#" + state + msg)


def coldef(name: bytes) -> bytes:
    return (
        lstr(b"def") + lstr(b"shop") + lstr(b"t") + lstr(b"t") + lstr(name) + lstr(name) + b"\x0c"
        + struct.pack("<HIBHB", 45, 80, 253, 0, 0) + b"\0\0"
    )  # fmt: skip


def result(
    names: list[bytes], rows: list[list[bytes]], classic: bool, status: int = 2, seq: int = 1
) -> bytes:
    """A text result set: column count, definitions, [EOF], rows, then EOF or (DEPRECATE_EOF) OK/0xFE."""
    out = [pkt(seq, lenenc(len(names)))]
    seq += 1
    for n in names:
        out.append(pkt(seq, coldef(n)))
        seq += 1
    if classic:
        out.append(eof(seq))
        seq += 1
    for row in rows:
        out.append(pkt(seq & 0xFF, b"".join(lstr(v) for v in row)))
        seq += 1
    out.append(eof(seq & 0xFF, status) if classic else ok(seq & 0xFF, status=status, header=0xFE))
    return b"".join(out)


def query(sql: str | bytes, code: int = 3) -> bytes:
    return pkt(0, bytes([code]) + (sql.encode() if isinstance(sql, str) else sql))


def entries(*turns: tuple[bool, bytes], port: int = 3306, handshake: bool = True) -> list[dict[str, Any]]:
    conv = Conversation(sport=port)
    if handshake:
        conv.handshake()
    for from_client, data in turns:
        conv.send(from_client, data)
    conv.close()
    p = Pipeline(default_registry())
    return p.feed(conv.columns()) + p.finish()


def rows(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["protocol"], e["method"], e["status"], e["summary"]) for e in found]


LOGIN = ((False, greeting()), (True, login()), (False, ok(2)))


def test_the_login_names_server_user_database_and_attributes_never_the_auth_response() -> None:
    found = entries(*LOGIN)
    assert rows(found) == [("mysql", "CONNECT", 0, "CONNECT app@shop [10.11.6-MariaDB-0+deb12u1]")]
    req, resp = found[0]["request"], found[0]["response"]
    assert req["user"] == "app" and req["database"] == "shop" and req["db_system"] == "mariadb"
    assert req["attributes"] == {"_client_name": "pymysql", "program_name": "shop-api"}
    assert req["auth_plugin"] == "mysql_native_password" and "DEPRECATE_EOF" not in req["capabilities"]
    assert resp["server_version"] == "10.11.6-MariaDB-0+deb12u1" and resp["connection_id"] == 42
    assert "SSL" in resp["capabilities"] and resp["auth_plugin"] == "mysql_native_password"
    assert "sEcReT" not in repr(found) and "salt" not in repr(found)


def test_a_mysql_greeting_is_mysql_and_an_access_denied_login_is_an_error() -> None:
    found = entries(
        (False, greeting(b"8.4.3")), (True, login()), (False, err(2, 1045, b"28000", b"Access denied"))
    )
    assert rows(found) == [("mysql", "CONNECT", 1045, "CONNECT app@shop [8.4.3]")]
    assert found[0]["request"]["db_system"] == "mysql" and is_error(found[0])
    assert found[0]["response"]["error"] == {"code": 1045, "sqlstate": "28000", "message": "Access denied"}


def test_queries_give_result_set_counts_ok_counts_and_err_codes() -> None:
    found = entries(
        *LOGIN,
        (True, query("SELECT id, v FROM t")),
        (False, result([b"id", b"v"], [[b"1", b"a"], [b"2", b"b"]], True)),
        (True, query("INSERT INTO t(v) VALUES ('c')")), (False, ok(1, affected=1, insert_id=3)),
        (True, query("SELEC oops")),
        (False, err(1, 1064, b"42000", b"You have an error in your SQL syntax")),
        (True, query("  /* hint */ (select 1)")), (False, result([b"1"], [[b"1"]], True)),
    )  # fmt: skip
    assert rows(found)[1:] == [
        ("mysql", "SELECT", 0, "SELECT id, v FROM t"),
        ("mysql", "INSERT", 0, "INSERT INTO t(v) VALUES ('c')"),
        ("mysql", "SELEC", 1064, "SELEC oops"),
        ("mysql", "SELECT", 0, "  /* hint */ (select 1)"),
    ]
    select, insert, bad = found[1], found[2], found[3]
    assert select["request"] == {
        "command": "COM_QUERY",
        "query": "SELECT id, v FROM t",
        "db_system": "mariadb",
    }
    assert select["response"] == {"columns": 2, "rows": 2, "column_names": ["id", "v"]}
    assert insert["response"]["affected_rows"] == 1 and insert["response"]["last_insert_id"] == 3
    assert bad["response"]["error"]["sqlstate"] == "42000" and is_error(bad) and status_text(bad) == "1064"
    assert not is_error(select) and all(e["error"] is None for e in found)


def test_deprecate_eof_result_sets_and_multi_results_are_counted_whole() -> None:
    more = 2 | mysql.SERVER_MORE_RESULTS_EXISTS
    found = entries(
        *LOGIN,
        (True, query("CALL two()")),
        (False, result([b"a"], [[b"1"]] * 3, False, status=more)
         + result([b"b", b"c"], [[b"x", b"\xfe" * 1]], False, status=more, seq=6) + ok(10)),
        (True, query("SELECT 1")), (False, result([b"1"], [], False)),
    )  # fmt: skip
    call, empty = found[1]["response"], found[2]["response"]
    assert (call["columns"], call["rows"], call["result_sets"]) == (1, 4, 2)
    assert call["column_names"] == ["a"]
    assert (empty["columns"], empty["rows"]) == (1, 0)


def test_a_prepared_statement_is_remembered_and_each_execution_shows_its_sql() -> None:
    sql = "SELECT v FROM t WHERE id = ?"
    prepare_ok = pkt(1, b"\x00" + struct.pack("<IHHBH", 7, 1, 1, 0, 0))
    answer = prepare_ok + pkt(2, coldef(b"?")) + eof(3) + pkt(4, coldef(b"v")) + eof(5)
    execute = pkt(0, b"\x17" + struct.pack("<IBI", 7, 0, 1) + b"\x00\x01\x03\x00" + struct.pack("<i", 1))
    binary_rows = pkt(1, b"\x01") + pkt(2, coldef(b"v")) + eof(3) + pkt(4, b"\x00\x00" + lstr(b"a")) + eof(5)
    found = entries(
        *LOGIN,
        (True, query(sql, code=0x16)), (False, answer),
        *[turn for _ in range(3) for turn in ((True, execute), (False, binary_rows))],
        (True, pkt(0, b"\x19" + struct.pack("<I", 7))),
        (True, query("SELECT 2")), (False, result([b"2"], [[b"2"]], True)),
    )  # fmt: skip
    assert [(e["method"], e["status"], e["stream"]) for e in found[1:]] == [
        ("COM_STMT_PREPARE", 0, "7"), ("SELECT", 0, "7"), ("SELECT", 0, "7"), ("SELECT", 0, "7"),
        ("COM_STMT_CLOSE", None, "7"), ("SELECT", 0, None),
    ]  # fmt: skip
    prepared, first_run, closed = found[1], found[2], found[5]
    assert prepared["response"] == {
        "statement_id": 7, "columns": 1, "params": 1, "warnings": 0, "column_names": ["v"]
    }  # fmt: skip
    assert first_run["request"]["query"] == sql and first_run["summary"] == sql
    assert first_run["response"] == {"columns": 1, "rows": 1, "column_names": ["v"]}
    assert closed["request"]["command"] == "COM_STMT_CLOSE" and closed["error"] is None  # never answered
    assert found[6]["response"]["rows"] == 1  # the pairing went on in order after the close


def test_ping_init_db_quit_and_other_commands_are_named() -> None:
    found = entries(
        *LOGIN,
        (True, pkt(0, b"\x0e")), (False, ok(1)),
        (True, pkt(0, b"\x02inventory")), (False, ok(1)),
        (True, pkt(0, b"\x09")), (False, pkt(1, b"Uptime: 5  Threads: 1")),
        (True, pkt(0, b"\x1f")), (False, ok(1)),
        (True, pkt(0, b"\x01")),
    )  # fmt: skip
    assert rows(found)[1:] == [
        ("mysql", "COM_PING", 0, "COM_PING"),
        ("mysql", "COM_INIT_DB", 0, "COM_INIT_DB inventory"),
        ("mysql", "COM_STATISTICS", 0, "COM_STATISTICS"),
        ("mysql", "COM_RESET_CONNECTION", 0, "COM_RESET_CONNECTION"),
        ("mysql", "COM_QUIT", None, "COM_QUIT"),
    ]
    assert found[3]["response"]["text"] == "Uptime: 5  Threads: 1" and found[5]["error"] is None


def test_a_16_mib_query_is_joined_from_continuation_packets_and_kept_to_the_cap() -> None:
    sql = b"INSERT INTO blob_t VALUES ('" + b"x" * (mysql.MAX_PAYLOAD + 100) + b"')"
    payload = b"\x03" + sql
    wire = pkt(0, payload[: mysql.MAX_PAYLOAD]) + pkt(1, payload[mysql.MAX_PAYLOAD :])
    s = MysqlSession(SessionConfig(body_cap=1000))
    events = [e for i in range(0, len(wire), 65536) for e in s.feed(True, wire[i : i + 65536], 0)]
    events += s.feed(False, ok(2, affected=1), 1)
    req, resp = [e for e in events if isinstance(e, Message)]
    assert req.size == len(wire) and req.fields["query_truncated"] is True
    assert req.fields["query"].startswith("INSERT INTO blob_t") and len(req.fields["query"]) == 1000
    assert resp.fields["affected_rows"] == 1
    assert len(s.client.buf) == 0 and s.client.head is None  # nothing of it is held


def test_ssl_request_hands_the_flow_to_tls_which_reports_sni() -> None:
    ssl_request = pkt(1, struct.pack("<IIB", CLIENT | SSL, 1 << 24, 45) + b"\0" * 23)
    hello = record(1, hello_body(sni="db.internal", alpn=()))
    found = entries(
        (False, greeting()), (True, ssl_request + hello), (False, b"\x16\x03\x03\x00\x02\x02\x00")
    )
    assert [(e["protocol"], e["method"]) for e in found][:2] == [
        ("mysql", "CONNECT"),
        ("tls", found[1]["method"]),
    ]
    connect, tls = found[0], found[1]
    assert connect["request"]["ssl"] is True and connect["summary"].endswith(
        "(TLS) [10.11.6-MariaDB-0+deb12u1]"
    )
    assert connect["response"]["server_version"] == "10.11.6-MariaDB-0+deb12u1"
    assert tls["tls"]["sni"] == "db.internal"


def test_passwords_in_sql_are_redacted_before_any_entry_exists() -> None:
    assert mysql.REDACTED == MARKER
    found = entries(
        *LOGIN,
        (True, query("CREATE USER 'bob'@'%' IDENTIFIED BY 'Zq9xS3cret'")), (False, ok(1)),
        (True, query("SET PASSWORD FOR bob = PASSWORD('Zq9xOther')")), (False, ok(1)),
        (True, query("ALTER USER bob IDENTIFIED WITH mysql_native_password AS '*ABCDEF'")), (False, ok(1)),
    )  # fmt: skip
    assert "Zq9x" not in repr(found) and "ABCDEF" not in repr(found)
    assert found[1]["summary"] == f"CREATE USER 'bob'@'%' IDENTIFIED BY '{MARKER}'"
    assert redact_sql("SELECT password FROM users") == "SELECT password FROM users"


def test_found_by_content_on_any_port_and_picked_up_mid_connection() -> None:
    found = entries(*LOGIN, (True, query("SELECT 1")), (False, result([b"1"], [[b"1"]], True)), port=13306)
    assert rows(found)[1] == ("mysql", "SELECT", 0, "SELECT 1")
    tail = pkt(7, b"\x01\x02\x03") + eof(8)  # the end of an answer whose command was not captured
    found = entries(
        (False, tail), (True, query("SELECT 2")), (False, result([b"2"], [[b"2"]], True)), handshake=False
    )
    assert rows(found) == [("mysql", "SELECT", 0, "SELECT 2")]
    assert found[0]["request"].get("db_system") is None and found[0]["error"] is None


def test_probe_answers() -> None:
    assert probe(b"", greeting()) == Verdict.YES
    assert probe(query("SELECT 1"), b"") == Verdict.YES
    assert probe(pkt(0, b"\x0e"), ok(1)) == Verdict.YES
    assert probe(b"", greeting()[:3]) == Verdict.MAYBE
    assert probe(query("select 1")[:4], b"") == Verdict.MAYBE
    assert probe(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n") == Verdict.NO
    assert probe(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc", b"") == Verdict.NO
    assert probe(pkt(0, b"\x03\x00\x01\xff"), b"") == Verdict.NO  # COM_QUERY that is not SQL
    assert probe(pkt(0, b"\x0e"), ok(5)) == Verdict.NO  # an answer must follow with sequence id 1
    assert probe(pkt(3, b"\x03SELECT 1"), b"") == Verdict.NO
    assert probe(b"", pkt(0, b"\x09" + b"8.0\0")) == Verdict.NO  # protocol 9 is not dissected
    assert sql_verb("-- c\n# d\n  WITH x AS (SELECT 1) SELECT * FROM x") == "WITH"


# ---- bad input ---------------------------------------------------------------------------------


def session() -> MysqlSession:
    return MysqlSession(SessionConfig())


def test_unknown_commands_lying_column_counts_and_gaps_are_violations() -> None:
    assert any(isinstance(e, Violation) for e in session().feed(True, pkt(0, b"\x77abc"), 0))
    s = session()
    s.feed(True, query("SELECT 1"), 0)
    assert any(isinstance(e, Violation) for e in s.feed(False, pkt(1, b"\xfd\xff\xff\xff"), 1))
    s = session()
    assert s.feed(True, query("SELECT 1")[:6], 0) == []  # a truncated packet waits
    assert [type(e) for e in s.gap(True, 100, 1)] == [Violation]
    assert any(isinstance(e, Violation) for e in session().feed(False, pkt(0, b"\x0b5.0\0"), 0))


def test_a_lying_length_never_grows_the_buffer_past_the_hold_size() -> None:
    s = MysqlSession(SessionConfig(body_cap=1024))
    s.feed(True, query("SELECT 1"), 0)
    claim = (0xFFFFF0).to_bytes(3, "little") + b"\x01"  # a header promising ~16 MiB
    for i in range(40):
        s.feed(False, (claim if i == 0 else b"") + b"\x00" * 65536, i)
        assert len(s.server.buf) <= mysql.MIN_HOLD + 4
    assert s.close(99) == []  # still inside the first (never finished) packet: nothing to show


def test_a_result_set_cut_by_the_end_of_the_capture_is_shown_truncated() -> None:
    s = session()
    s.feed(True, query("SELECT v FROM t"), 0)
    s.feed(False, result([b"v"], [[b"a"]] * 5, True)[:-9], 1)
    (msg,) = s.close(2)
    assert isinstance(msg, Message) and msg.truncated and msg.fields["rows"] == 5


# ---- properties --------------------------------------------------------------------------------

STREAM_C = (
    login() + query("SELECT id, v FROM t") + query("INSERT INTO t VALUES (1)") + query("x", code=0x16)
    + pkt(0, b"\x17" + struct.pack("<IBI", 1, 0, 1)) + pkt(0, b"\x0e") + query("SELEC")
)  # fmt: skip
STREAM_S = (
    greeting() + ok(2) + result([b"id", b"v"], [[b"1", b"a"]] * 3, True) + ok(1, affected=1)
    + pkt(1, b"\x00" + struct.pack("<IHHBH", 1, 1, 0, 0, 0)) + pkt(2, coldef(b"a")) + eof(3)
    + result([b"a"], [[b"\x00\x00\x01"]], True) + ok(1) + err(1, 1064, b"42000", b"syntax")
)  # fmt: skip


def _run(chunks_c: list[bytes], chunks_s: list[bytes]) -> list[tuple[bool, dict[str, Any]]]:
    """Feeds each direction's chunks interleaved as a capture would: the client's first when due."""
    s = session()
    out: list[tuple[bool, dict[str, Any]]] = []
    for c in chunks_s[:1]:
        out += [(m.is_request, m.fields) for m in s.feed(False, c, 0) if isinstance(m, Message)]
    for c in chunks_c:
        out += [(m.is_request, m.fields) for m in s.feed(True, c, 0) if isinstance(m, Message)]
    for c in chunks_s[1:]:
        out += [(m.is_request, m.fields) for m in s.feed(False, c, 0) if isinstance(m, Message)]
    return out


def _chunk(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


GREETING_LEN = len(greeting())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=12), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_chunking_of_the_same_bytes_gives_the_same_messages(cut_c: list[int], cut_s: list[int]) -> None:
    whole = _run([STREAM_C], [greeting(), STREAM_S[GREETING_LEN:]])
    assert len(whole) == 14
    assert [f.get("error", {}).get("code") for r, f in whole if not r][-1] == 1064
    server = [greeting(), *_chunk(STREAM_S[GREETING_LEN:], cut_s)]
    assert _run(_chunk(STREAM_C, cut_c), server) == whole


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.booleans())
def test_random_bytes_never_raise(a: bytes, b: bytes, client: bool) -> None:
    probe(a, b)
    s = session()
    s.feed(client, a, 0)
    s.feed(not client, b, 0)
    s.close(1)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, len(STREAM_S)), st.integers(0, len(STREAM_C)))
def test_packets_with_random_bytes_spliced_in_never_raise(noise: bytes, at_s: int, at_c: int) -> None:
    s = session()
    s.feed(False, STREAM_S[:GREETING_LEN], 0)
    s.feed(True, STREAM_C[:at_c] + noise + STREAM_C[at_c:], 0)
    s.feed(False, STREAM_S[GREETING_LEN:at_s] + noise + STREAM_S[at_s:], 0)
    s.close(1)


def test_spans_name_mariadb_from_the_greeting_and_carry_the_err_code() -> None:
    found = entries(
        *LOGIN,
        (True, query("SELEC oops")), (False, err(1, 1064, b"42000", b"You have an error")),
    )  # fmt: skip
    (client,) = spans_from_entry(found[1], SpanIds(1))[:1]
    attrs = client.attributes
    assert attrs["db.system.name"] == "mariadb" and attrs["db.response.status_code"] == "1064"
    assert attrs["db.query.text"] == "SELEC oops" and client.error
    mid = entries((True, query("SELECT 2")), (False, result([b"2"], [[b"2"]], True)), handshake=False)
    assert spans_from_entry(mid[0], SpanIds(1))[0].attributes["db.system.name"] == "mysql"  # the row's
