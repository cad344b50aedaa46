"""PostgreSQL transcripts over real protocol-3 bytes: startup (passwords never kept), simple and
extended query (prepared statements remembered, pipelined batches, an error aborting the rest of its
batch), COPY both ways, notices and notifications, SSLRequest answered 'S' (into TLS) or 'N', detection
by content and mid-stream, and bad input (lying lengths, unknown types, truncation, random bytes)."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.common import protocols
from wiretide.dissector.api import Message, SessionConfig, Upgrade, Verdict, Violation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols import postgresql
from wiretide.dissector.protocols.postgresql import PostgresSession, main_table, probe, redact_sql, sql_verb
from wiretide.dissector.redact import MARKER
from wiretide.dissector.registry import default_registry

from .builders import Conversation

# ---- a builder of protocol-3 messages (protocol-message-formats.html) ------------------------------


def msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def startup(**params: str) -> bytes:
    body = struct.pack("!i", 196608) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


SSL_REQUEST = struct.pack("!ii", 8, 80877103)
GSSENC_REQUEST = struct.pack("!ii", 8, 80877104)


def query(sql: str) -> bytes:
    return msg(b"Q", cstr(sql))


def parse(sql: str, name: str = "", types: int = 0) -> bytes:
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!h", types) + b"\0\0\0\x17" * types)


def bind(params: list[bytes | None], statement: str = "", portal: str = "") -> bytes:
    values = b"".join(struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p for p in params)
    return msg(
        b"B", cstr(portal) + cstr(statement) + b"\0\0" + struct.pack("!h", len(params)) + values + b"\0\0"
    )


def describe(portal: str = "") -> bytes:
    return msg(b"D", b"P" + cstr(portal))


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return msg(b"E", cstr(portal) + struct.pack("!i", max_rows))


SYNC = msg(b"S")
PARSE_OK, BIND_OK, NO_DATA = msg(b"1"), msg(b"2"), msg(b"n")


def auth(code: int, extra: bytes = b"") -> bytes:
    return msg(b"R", struct.pack("!i", code) + extra)


def param_status(name: str, value: str) -> bytes:
    return msg(b"S", cstr(name) + cstr(value))


def ready(status: bytes = b"I") -> bytes:
    return msg(b"Z", status)


def row_desc(*names: str) -> bytes:
    return msg(b"T", struct.pack("!h", len(names)) + b"".join(cstr(n) + b"\0" * 18 for n in names))


def data_row(*values: str) -> bytes:
    cols = b"".join(struct.pack("!i", len(v)) + v.encode() for v in values)
    return msg(b"D", struct.pack("!h", len(values)) + cols)


def complete(tag: str) -> bytes:
    return msg(b"C", cstr(tag))


def error(code: str, message: str, severity: str = "ERROR") -> bytes:
    return msg(
        b"E", b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(code) + b"M" + cstr(message) + b"\0"
    )


def notice(message: str) -> bytes:
    return msg(b"N", b"SNOTICE\0VNOTICE\0C00000\0M" + cstr(message) + b"\0")


HELLO = startup(user="alice", database="shop", application_name="billing")
WELCOME = (
    auth(10, b"SCRAM-SHA-256\0\0") + auth(11, b"r=nonce,s=salt,i=4096") + auth(12, b"v=signature") + auth(0)
    + param_status("server_version", "16.2") + msg(b"K", struct.pack("!ii", 4242, 987654321)) + ready()
)  # fmt: skip
SCRAM_FIRST = msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", 20) + b"n,,n=,r=clientnonce0")
SCRAM_FINAL = msg(b"p", b"c=biws,r=nonce,p=proof-of-the-password")


def entries(*turns: tuple[bool, bytes], port: int = 5432, handshake: bool = True) -> list[dict[str, Any]]:
    conv = Conversation(sport=port)
    if handshake:
        conv.handshake()
    for from_client, data in turns:
        conv.send(from_client, data)
    conv.close()
    p = Pipeline(default_registry())
    return p.feed(conv.columns()) + p.finish()


def logged_in(*turns: tuple[bool, bytes], port: int = 5432) -> list[dict[str, Any]]:
    found = entries(
        (True, HELLO), (False, WELCOME[:9]), (True, SCRAM_FIRST), (False, WELCOME[9:]), *turns, port=port
    )
    assert found[0]["method"] == "STARTUP"
    return found[1:]


def rows(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["protocol"], e["method"], e["path"], e["status"], e["summary"]) for e in found]


# ---- startup ---------------------------------------------------------------------------------------


def test_the_startup_is_an_entry_with_user_database_and_application_and_no_secret() -> None:
    found = entries(
        (True, HELLO), (False, WELCOME[:9]), (True, SCRAM_FIRST + SCRAM_FINAL), (False, WELCOME[9:])
    )
    (start,) = found
    assert (start["method"], start["path"], start["status"]) == ("STARTUP", "shop", 0)
    assert start["request"] == {
        "type": "startup", "protocol_version": "3.0", "user": "alice", "database": "shop",
        "application_name": "billing", "auth_responses": 2,
    }  # fmt: skip
    resp = start["response"]
    assert resp["authentication"] == ["sasl SCRAM-SHA-256", "sasl-continue", "sasl-final", "ok"]
    assert resp["parameters"] == {"server_version": "16.2"} and resp["process_id"] == 4242
    text = repr(start)
    for secret in ("proof-of-the-password", "clientnonce0", "salt", "signature", "987654321"):
        assert secret not in text


def test_a_wrong_password_is_an_error_entry_with_its_sqlstate() -> None:
    cleartext = msg(b"p", cstr("hunter2"))
    (start,) = entries(
        (True, HELLO), (False, auth(3)), (True, cleartext),
        (False, error("28P01", 'password authentication failed for user "alice"', "FATAL")),
    )  # fmt: skip
    assert start["error"] == {"type": "28P01", "message": 'password authentication failed for user "alice"'}
    assert start["status"] is None and protocols.status_text(start) == "28P01" and protocols.is_error(start)
    assert start["response"]["authentication"] == ["cleartext"] and "hunter2" not in repr(start)


# ---- simple query ----------------------------------------------------------------------------------


def test_a_simple_query_is_one_entry_with_its_tag_columns_and_rows() -> None:
    (sel,) = logged_in(
        (True, query("SELECT id, name FROM public.users WHERE id < 3")),
        (
            False,
            row_desc("id", "name") + data_row("1", "a") + data_row("2", "b") + complete("SELECT 2") + ready(),
        ),
    )
    assert rows([sel]) == [
        ("postgresql", "SELECT", "public.users", 0, "SELECT id, name FROM public.users WHERE id < 3")
    ]
    assert sel["response"] == {
        "columns": ["id", "name"], "rows": 2, "command_tag": "SELECT 2", "rows_affected": 2,
        "transaction_status": "idle",
    }  # fmt: skip
    assert protocols.status_text(sel) == "OK" and not protocols.is_error(sel)


def test_a_multi_statement_query_keeps_every_tag_and_a_notice_is_counted() -> None:
    (q,) = logged_in(
        (True, query("BEGIN; UPDATE accounts SET n = n + 1; COMMIT")),
        (
            False,
            complete("BEGIN")
            + notice("something to note")
            + complete("UPDATE 4")
            + complete("COMMIT")
            + ready(),
        ),
    )
    assert (q["method"], q["path"]) == ("COMMIT", "accounts")  # the last tag names what was done
    assert q["response"]["commands"] == ["BEGIN", "UPDATE 4", "COMMIT"]
    assert (
        q["response"]["notices"] == 1
        and q["response"]["notice_messages"][0]["message"] == "something to note"
    )


def test_an_error_response_is_an_error_entry_whose_status_text_is_the_sqlstate() -> None:
    (q,) = logged_in(
        (True, query("INSERT INTO users VALUES (1)")),
        (False, error("23505", "duplicate key value violates unique constraint") + ready(b"E")),
    )
    assert q["error"] == {"type": "23505", "message": "duplicate key value violates unique constraint"}
    assert q["response"]["error"]["severity"] == "ERROR" and q["response"]["transaction_status"] == "failed"
    assert (q["method"], q["path"], q["status"]) == ("INSERT", "users", None)
    assert protocols.status_text(q) == "23505" and protocols.is_error(q)


def test_a_password_literal_in_sql_is_redacted() -> None:
    (q,) = logged_in(
        (True, query("ALTER ROLE app PASSWORD 'top''secret'")), (False, complete("ALTER ROLE") + ready())
    )
    assert q["request"]["query"] == f"ALTER ROLE app PASSWORD '{MARKER}'" and "secret" not in repr(q)
    assert q["redacted"] == ["request.query", "summary"]
    assert postgresql.MARKER == MARKER


# ---- extended query --------------------------------------------------------------------------------


def test_a_named_statement_executed_three_times_is_three_entries_with_its_sql() -> None:
    sql = "SELECT name FROM items WHERE id = $1"
    turns: list[tuple[bool, bytes]] = [
        (True, parse(sql, "s1", 1) + bind([b"1"], "s1") + describe() + execute() + SYNC),
        (False, PARSE_OK + BIND_OK + row_desc("name") + data_row("a") + complete("SELECT 1") + ready()),
    ]
    for i in (2, 3):
        turns += [
            (True, bind([str(i).encode()], "s1") + execute() + SYNC),
            (False, BIND_OK + data_row("x") + complete("SELECT 1") + ready()),
        ]
    found = logged_in(*turns)
    assert [(e["method"], e["path"], e["summary"], e["response"]["rows"]) for e in found] == [
        ("SELECT", "items", sql, 1)
    ] * 3
    assert {e["request"]["statement"] for e in found} == {"s1"}
    assert found[0]["request"] == {"type": "execute", "query": sql, "statement": "s1", "parameters": 1}
    assert found[0]["response"]["columns"] == ["name"]
    assert "'1'" not in repr(found)  # parameter values are not kept


def test_a_pipelined_batch_pairs_each_execute_and_an_error_aborts_the_rest_up_to_sync() -> None:
    batch = (
        parse("INSERT INTO t VALUES ($1)") + bind([b"1"]) + execute()
        + parse("INSERT INTO t VALUES ($1)") + bind([b"1"]) + execute()
        + parse("DELETE FROM t") + bind([]) + execute() + SYNC
        + query("SELECT 1")
    )  # fmt: skip
    answer = (
        PARSE_OK + BIND_OK + complete("INSERT 0 1") + PARSE_OK + BIND_OK
        + error("23505", "duplicate key") + ready(b"I")
        + row_desc("?column?") + data_row("1") + complete("SELECT 1") + ready()
    )  # fmt: skip
    found = logged_in((True, batch), (False, answer))
    assert [(e["method"], e["error"] and e["error"]["type"]) for e in found] == [
        ("INSERT", None), ("INSERT", "23505"), ("DELETE", "aborted"), ("SELECT", None),
    ]  # fmt: skip
    assert found[0]["response"]["rows_affected"] == 1 and found[2]["response"] == {"aborted": True}


def test_an_error_at_sync_itself_is_an_error_entry_of_its_own() -> None:
    found = logged_in(
        (True, parse("INSERT INTO t VALUES (1)") + bind([]) + execute() + SYNC),
        (False, PARSE_OK + BIND_OK + complete("INSERT 0 1") + error("23503", "deferred fk violated")),
        (False, ready()),
    )
    kinds = [(e["method"], e["error"] and e["error"]["type"]) for e in found]
    assert kinds == [("INSERT", None), ("ERROR", "23503")]
    assert found[1]["request"] is None and found[1]["summary"] == "23503 deferred fk violated"


def test_a_parse_that_fails_without_an_execute_is_an_entry_of_its_own() -> None:
    (bad,) = logged_in(
        (True, parse("SELEC 1", "s9") + describe() + SYNC),
        (False, error("42601", 'syntax error at or near "SELEC"') + ready()),
    )
    assert (bad["method"], bad["request"]["type"], bad["error"]["type"]) == ("SELEC", "parse", "42601")


def test_a_suspended_portal_and_an_empty_query_complete_their_executes() -> None:
    found = logged_in(
        (True, parse("SELECT g FROM generate_series(1, 5) g") + bind([]) + execute(max_rows=2) + SYNC),
        (False, PARSE_OK + BIND_OK + data_row("1") + data_row("2") + msg(b"s") + ready(b"T")),
        (True, parse("") + bind([]) + execute() + SYNC),
        (False, PARSE_OK + BIND_OK + msg(b"I") + ready()),
    )
    assert found[0]["response"]["suspended"] is True and found[0]["response"]["rows"] == 2
    assert found[0]["request"]["max_rows"] == 2 and found[1]["response"]["command_tag"] == ""


# ---- COPY, notifications, cancel -------------------------------------------------------------------


def test_copy_in_and_out_count_messages_and_bytes_and_take_rows_from_the_tag() -> None:
    rows_in = [b"1\ta\n", b"2\tb\n", b"3\tc\n"]
    found = logged_in(
        (True, query("COPY t FROM STDIN")),
        (False, msg(b"G", b"\0\0\x02\0\0\0\0")),
        (True, b"".join(msg(b"d", r) for r in rows_in) + msg(b"c")),
        (False, complete("COPY 3") + ready()),
        (True, query("COPY t TO STDOUT")),
        (False, msg(b"H", b"\0\0\x02\0\0\0\0") + b"".join(msg(b"d", r) for r in rows_in) + msg(b"c")
         + complete("COPY 3") + ready()),
    )  # fmt: skip
    copy_in, copy_out = found
    assert (
        copy_in["request"]["copy"] == {"messages": 3, "bytes": 12}
        and copy_in["response"]["rows_affected"] == 3
    )
    assert copy_in["response"]["copy"] == {"direction": "in", "format": "text"}
    assert copy_out["response"]["copy"] == {"direction": "out", "format": "text", "messages": 3, "bytes": 12}
    assert (copy_in["path"], copy_out["path"]) == ("t", "t")


def test_a_notification_is_a_standalone_entry() -> None:
    found = logged_in(
        (True, query("LISTEN jobs")),
        (False, complete("LISTEN") + ready()),
        (False, msg(b"A", struct.pack("!i", 77) + cstr("jobs") + cstr("job 7 done"))),
    )
    note = found[-1]
    assert (note["method"], note["path"], note["status"], note["error"]) == ("NOTIFICATION", "jobs", 0, None)
    assert note["request"] is None and note["response"]["payload"] == "job 7 done"


def test_a_cancel_request_keeps_the_pid_and_not_the_key() -> None:
    (cancel,) = entries((True, struct.pack("!iiii", 16, 80877102, 4242, 123456789)))
    assert (cancel["method"], cancel["request"]["process_id"], cancel["error"]) == ("CANCEL", 4242, None)
    assert "123456789" not in repr(cancel)


# ---- SSLRequest ------------------------------------------------------------------------------------

CLIENT_HELLO = bytes.fromhex(
    "16030100" "2f" "01" "00002b" "0303" + "11" * 32 + "00" + "0002" "1301" "0100" "0000"
)  # fmt: skip


def test_an_ssl_request_answered_s_hands_the_connection_to_tls() -> None:
    s = PostgresSession(SessionConfig())
    assert s.feed(True, SSL_REQUEST, 1) == []
    events = s.feed(False, b"S", 2)
    assert [type(e) for e in events] == [Message, Message, Upgrade]
    answer = events[1]
    assert isinstance(answer, Message) and answer.fields == {"answer": "S", "encrypted": True}
    assert events[2] == Upgrade("tls", b"", b"")
    found = entries((True, SSL_REQUEST), (False, b"S"), (True, CLIENT_HELLO))
    assert [(e["protocol"], e["method"]) for e in found] == [
        ("postgresql", "SSLRequest"),
        ("tls", "handshake"),
    ]


def test_an_ssl_request_answered_n_goes_on_in_plaintext() -> None:
    found = entries(
        (True, GSSENC_REQUEST), (False, b"N"), (True, SSL_REQUEST), (False, b"N"), (True, HELLO),
        (False, auth(0) + ready()), (True, query("SELECT 1")),
        (False, data_row("1") + complete("SELECT 1") + ready()),
    )  # fmt: skip
    assert [(e["method"], e["response"].get("answer")) for e in found] == [
        ("GSSENCRequest", "N"), ("SSLRequest", "N"), ("STARTUP", None), ("SELECT", None),
    ]  # fmt: skip


# ---- detection -------------------------------------------------------------------------------------


def test_detection_is_by_content_on_any_port() -> None:
    found = logged_in((True, query("SELECT 1")), (False, complete("SELECT 1") + ready()), port=6000)
    assert rows(found) == [("postgresql", "SELECT", None, 0, "SELECT 1")]
    assert probe(HELLO, b"") == Verdict.YES and probe(SSL_REQUEST, b"") == Verdict.YES
    assert probe(HELLO[:6], b"") == Verdict.MAYBE and probe(b"", b"") == Verdict.MAYBE
    assert (
        probe(b"GET / HTTP/1.1\r\n", b"") == Verdict.NO and probe(b"POST /x HTTP/1.1\r\n", b"") == Verdict.NO
    )
    assert probe(struct.pack("!ii", 12, 196608) + b"xyz\0", b"") == Verdict.NO  # no user: not a startup


def test_a_connection_picked_up_mid_stream_is_found_from_a_query_or_a_parse() -> None:
    assert probe(query("SELECT 1"), b"") == Verdict.YES
    assert probe(parse("SELECT $1", "s", 1), b"") == Verdict.YES
    assert probe(bind([b"1", None], "s"), b"") == Verdict.YES
    assert probe(query("SELECT 1")[:7], b"") == Verdict.MAYBE
    found = entries(
        (True, query("SELECT now()")), (False, data_row("x") + complete("SELECT 1") + ready()),
        port=7777, handshake=False,
    )  # fmt: skip
    assert rows(found) == [("postgresql", "SELECT", None, 0, "SELECT now()")]


def test_verbs_and_tables_are_read_past_comments_and_quotes() -> None:
    assert sql_verb("  /* hi */ -- x\n select 1") == "SELECT"
    assert main_table('DELETE FROM "Order Items" WHERE x') == '"Order Items"'
    assert main_table("CREATE TABLE IF NOT EXISTS s.t (a int)") == "s.t"
    assert main_table("SELECT * FROM (SELECT 1) q") is None
    assert redact_sql("CREATE USER u WITH PASSWORD 'x'") == f"CREATE USER u WITH PASSWORD '{MARKER}'"


# ---- bad input and bounds --------------------------------------------------------------------------


def session() -> PostgresSession:
    return PostgresSession(SessionConfig(body_cap=1024))


def test_lying_lengths_and_unknown_types_are_violations() -> None:
    for client, data in (
        (True, b"Q\0\0\0\x02"),  # shorter than the length field itself
        (True, b"Q\x7f\xff\xff\xff"),  # beyond the backend's 1 GiB limit
        (True, query("x").replace(b"Q", b"q", 1)),  # no frontend message 'q'
        (False, b"!\0\0\0\x04"),
        (True, struct.pack("!ii", 20000, 196608)),  # a startup packet over 10000 bytes
    ):
        s = session()
        if client and data[0] != 0:
            s.c.typed = True
        events = s.feed(client, data, 0)
        assert events and isinstance(events[-1], Violation), data


def test_a_huge_query_is_kept_up_to_the_cap_and_huge_rows_are_counted_unbuffered() -> None:
    s = session()
    s.c.typed = True
    big = "SELECT '" + "x" * 100_000 + "'"
    out = s.feed(True, query(big)[:50_000], 0) + s.feed(True, query(big)[50_000:], 1)
    assert out == [] and len(s.c.buf) == 0
    row = data_row("y" * 200_000)
    out = s.feed(False, row_desc("v") + row[:1000], 2)
    assert len(s.s.buf) == 0 and s.s.skip == len(row) - 1000
    out += s.feed(False, row[1000:] + complete("SELECT 1") + ready(), 3)
    req, resp = out
    assert isinstance(req, Message) and isinstance(resp, Message)
    assert req.fields["query_truncated"] is True and len(req.fields["query"]) < 1100
    assert resp.fields["rows"] == 1


def test_the_statement_table_is_bounded() -> None:
    s = session()
    s.c.typed = True
    for i in range(postgresql.MAX_STATEMENTS + 50):
        s.feed(True, parse(f"SELECT {i}", f"s{i}"), 0)
    assert len(s.statements) == postgresql.MAX_STATEMENTS and "s0" not in s.statements


def test_a_truncated_conversation_hands_out_its_pending_query_unanswered() -> None:
    found = logged_in((True, query("SELECT pg_sleep(60)")))
    assert found[0]["error"]["type"] == "unmatched" and found[0]["response"] is None


CONV: list[tuple[bool, bytes]] = [
    (True, HELLO), (False, WELCOME[:9]), (True, SCRAM_FIRST), (False, WELCOME[9:]),
    (True, query("SELECT a FROM t")),
    (False, row_desc("a") + data_row("1") * 3 + complete("SELECT 3") + ready()),
    (True, parse("UPDATE t SET a = $1", "u", 1) + bind([b"9"], "u") + execute() + SYNC),
    (False, PARSE_OK + BIND_OK + complete("UPDATE 3") + ready()),
    (True, query("SELECT * FROM nope")), (False, error("42P01", "no such table") + ready()),
]  # fmt: skip


def _run(turns: list[tuple[bool, list[bytes]]]) -> list[Any]:
    s = session()
    out = []
    for from_client, chunks in turns:
        for chunk in chunks:
            out += s.feed(from_client, chunk, 0)
    out += s.close(1)
    return [(e.is_request, e.key, e.fields) if isinstance(e, Message) else e for e in out]


def _chunk(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.integers(0, 10_000), max_size=6), min_size=len(CONV), max_size=len(CONV)))
def test_any_chunking_of_the_same_bytes_gives_the_same_entries(cuts: list[list[int]]) -> None:
    whole = _run([(c, [d]) for c, d in CONV])
    assert len(whole) == 8
    assert _run([(c, _chunk(d, cut)) for (c, d), cut in zip(CONV, cuts, strict=True)]) == whole


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.booleans())
def test_random_bytes_never_raise(a: bytes, b: bytes, client: bool) -> None:
    probe(a, b)
    probe(b"Q" + a, b"Z" + b)
    s = session()
    s.feed(client, a, 0)
    s.feed(not client, b, 0)
    s.gap(client, 10, 0)
    s.close(1)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 200), st.integers(0, len(CONV) - 1))
def test_a_conversation_with_random_bytes_spliced_in_never_raises(noise: bytes, at: int, turn: int) -> None:
    s = session()
    for i, (client, data) in enumerate(CONV):
        s.feed(client, data[:at] + noise + data[at:] if i == turn else data, i)
    s.close(99)


def test_the_span_of_a_failed_query_carries_the_postgresql_system_and_the_sqlstate() -> None:
    from wiretide.tracer.spans import describe

    (q,) = logged_in((True, query("SELECT * FROM nope")), (False, error("42P01", "no such table") + ready()))
    span = describe(q)
    assert span.name == "SELECT" and span.server_error == span.client_error == "42P01"
    assert span.attributes["db.system.name"] == "postgresql"
    assert span.attributes["db.response.status_code"] == "42P01"
    assert span.attributes["db.query.text"] == "SELECT * FROM nope"
