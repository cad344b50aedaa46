"""SMTP, IMAP and POP3 transcripts over the bytes the protocols' RFCs show (greetings, multi-line and
intermediate replies, literals, dot-terminated listings): commands paired with their replies, credentials
never kept, STARTTLS/STLS handing the flow to the TLS dissector — and bad input never raising."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.dissector.api import SessionConfig, Verdict
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols.mail import (
    ImapSession,
    Pop3Session,
    SmtpSession,
    probe_imap,
    probe_pop3,
    probe_smtp,
)
from wiretide.dissector.redact import MARKER
from wiretide.dissector.registry import default_registry

from .builders import T0, Conversation
from .test_tls import hello_body, record

SECRET = "hunter2-mail"


def run(port: int, *turns: tuple[bool, bytes]) -> list[dict[str, Any]]:
    conv = Conversation(sport=port).handshake()
    for from_client, data in turns:
        conv.send(from_client, data)
    conv.close()
    p = Pipeline(default_registry())
    return p.feed(conv.columns()) + p.finish()


def rows(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["protocol"], e["method"], e["status"]) for e in found]


def test_an_smtp_session_pairs_every_command_with_its_reply_and_counts_the_message() -> None:
    found = run(
        2525,
        (False, b"220 mx.example.com ESMTP ready\r\n"),
        (True, b"EHLO client.example\r\n"),
        (False, b"250-mx.example.com\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n"),
        (True, b"AUTH PLAIN AGFsaWNlAGh1bnRlcjItbWFpbA==\r\n"),
        (False, b"235 2.7.0 Authentication successful\r\n"),
        (
            True,
            b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<nobody@example.com>\r\n",
        ),
        (False, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <nobody@example.com>: unknown user\r\n"),
        (True, b"DATA\r\n"),
        (False, b"354 End data with <CR><LF>.<CR><LF>\r\n"),
        (True, b"Subject: hello\r\nFrom: alice@example.com\r\n\r\nHi Bob,\r\n..dots\r\n.\r\n"),
        (False, b"250 2.0.0 Ok: queued as 12345\r\n"),
        (True, b"QUIT\r\n"),
        (False, b"221 2.0.0 Bye\r\n"),
    )
    assert rows(found) == [
        ("smtp", "greeting", 220), ("smtp", "EHLO", 250), ("smtp", "AUTH", 235), ("smtp", "MAIL", 250),
        ("smtp", "RCPT", 250), ("smtp", "RCPT", 550), ("smtp", "DATA", 250), ("smtp", "QUIT", 221),
    ]  # fmt: skip
    greeting, ehlo, auth, mail, rcpt, bad, data, _ = found
    assert greeting["error"] is None and greeting["request"] is None
    assert ehlo["response"]["extensions"] == ["PIPELINING", "AUTH PLAIN LOGIN", "STARTTLS"]
    assert auth["request"]["args"] == f"PLAIN {MARKER}" and "request.args" in auth["redacted"]
    assert "AGFsaWNl" not in repr(found)
    assert mail["path"] == "alice@example.com" and rcpt["path"] == "bob@example.com"
    assert bad["response"]["enhanced_code"] == "5.1.1"
    assert bad["error"] == {"type": "5.1.1", "message": "<nobody@example.com>: unknown user"}
    assert data["request"]["headers"] == {"subject": "hello", "from": "alice@example.com"}
    assert data["request"]["message_lines"] == 5 and data["response"]["intermediate"] == 354


def test_an_smtp_auth_login_exchange_keeps_no_credential_line() -> None:
    found = run(
        25,
        (False, b"220 mx ESMTP\r\n"), (True, b"EHLO c\r\n"), (False, b"250 mx\r\n"),
        (True, b"AUTH LOGIN\r\n"), (False, b"334 VXNlcm5hbWU6\r\n"), (True, b"YWxpY2U=\r\n"),
        (False, b"334 UGFzc3dvcmQ6\r\n"), (True, b"aHVudGVyMi1tYWls\r\n"), (False, b"535 5.7.8 failed\r\n"),
    )  # fmt: skip
    auth = found[-1]
    assert auth["method"] == "AUTH" and auth["status"] == 535
    assert auth["request"]["auth_lines"] == 2 and auth["response"]["challenges"] == 2
    assert "aHVudGVy" not in repr(found) and "YWxpY2U" not in repr(found)


def test_smtp_starttls_hands_the_connection_to_tls() -> None:
    found = run(
        587,
        (False, b"220 mx ESMTP\r\n"), (True, b"EHLO c\r\n"), (False, b"250-mx\r\n250 STARTTLS\r\n"),
        (True, b"STARTTLS\r\n"), (False, b"220 2.0.0 Ready to start TLS\r\n"),
        (True, record(1, hello_body("mx.example.com"))),
    )  # fmt: skip
    assert [e["protocol"] for e in found] == ["smtp", "smtp", "smtp", "tls"]
    assert found[-1]["tls"]["sni"] == "mx.example.com" and found[-1]["tls"]["ja4"]


def test_an_imap_session_pairs_by_tag_counts_untagged_responses_and_skips_literals() -> None:
    body = b"Subject: x\r\n\r\nhello\r\n"
    found = run(
        143,
        (False, b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"),
        (True, b'a1 LOGIN alice "' + SECRET.encode() + b'"\r\n'),
        (False, b"a1 OK LOGIN completed\r\n"),
        (True, b"a2 SELECT INBOX\r\n"),
        (False, b"* 2 EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen)\r\na2 OK [READ-WRITE] SELECT completed\r\n"),
        (True, b"a3 UID FETCH 1 BODY[]\r\n"),
        (False, b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(body) + body + b")\r\na3 OK done\r\n"),
        (True, b"a4 SELECT Nope\r\n"),
        (False, b"a4 NO [NONEXISTENT] no such mailbox\r\n"),
        (True, b"a5 LOGOUT\r\n"),
        (False, b"* BYE bye\r\na5 OK LOGOUT completed\r\n"),
    )
    assert rows(found) == [
        ("imap", "greeting", 0), ("imap", "LOGIN", 0), ("imap", "SELECT", 0), ("imap", "UID FETCH", 0),
        ("imap", "SELECT", 1), ("imap", "LOGOUT", 0),
    ]  # fmt: skip
    _, login, select, fetch, nope, _ = found
    assert SECRET not in repr(found) and login["request"]["args"] == f"alice {MARKER}"
    assert select["path"] == "INBOX" and select["response"]["untagged"] == {
        "EXISTS": 1,
        "RECENT": 1,
        "FLAGS": 1,
    }
    assert select["response"]["code"] == "READ-WRITE" and select["stream"] == "a2"
    assert fetch["response"]["literal_bytes"] == len(body) and fetch["response"]["untagged"] == {"FETCH": 1}
    assert nope["error"] == {"type": "NONEXISTENT", "message": "no such mailbox"}
    assert nope["response"]["completion"] == "NO"


def test_imap_starttls_and_a_client_literal() -> None:
    found = run(
        143,
        (False, b"* OK IMAP4rev1 ready\r\n"),
        (True, b"t1 LOGIN {5}\r\n"), (False, b"+ go ahead\r\n"), (True, b"alice {8}\r\n"),
        (False, b"+ go ahead\r\n"), (True, b"password\r\n"), (False, b"t1 OK done\r\n"),
        (True, b"t2 STARTTLS\r\n"), (False, b"t2 OK begin TLS\r\n"),
        (True, record(1, hello_body("imap.test"))),
    )  # fmt: skip
    assert [e["protocol"] for e in found] == ["imap", "imap", "imap", "tls"]
    assert "password" not in repr(found[1]["request"]) and found[1]["request"]["literal_bytes"] == 13
    assert found[-1]["tls"]["sni"] == "imap.test"


def test_a_pop3_session_reads_listings_and_never_keeps_the_password() -> None:
    found = run(
        110,
        (False, b"+OK POP3 ready\r\n"),
        (True, b"CAPA\r\n"), (False, b"+OK\r\nUSER\r\nSTLS\r\n.\r\n"),
        (True, b"USER alice\r\n"), (False, b"+OK\r\n"),
        (True, f"PASS {SECRET}\r\n".encode()), (False, b"+OK logged in\r\n"),
        (True, b"RETR 1\r\n"), (False, b"+OK 20 octets\r\nSubject: x\r\n\r\n..body\r\n.\r\n"),
        (True, b"DELE 9\r\n"), (False, b"-ERR no such message\r\n"),
        (True, b"STLS\r\n"), (False, b"+OK begin TLS\r\n"), (True, record(1, hello_body("pop.test"))),
    )  # fmt: skip
    assert rows(found) == [
        ("pop3", "greeting", 0), ("pop3", "CAPA", 0), ("pop3", "USER", 0), ("pop3", "PASS", 0),
        ("pop3", "RETR", 0), ("pop3", "DELE", 1), ("pop3", "STLS", 0), ("tls", "handshake", None),
    ]  # fmt: skip
    assert SECRET not in repr(found) and found[3]["request"]["args"] == MARKER
    assert found[1]["response"]["lines"] == ["USER", "STLS"] and found[4]["response"]["line_count"] == 3
    assert found[5]["error"] == {"type": "ERR", "message": "no such message"}
    assert found[-1]["tls"]["sni"] == "pop.test"


def test_the_probes_tell_mail_protocols_from_each_other_and_from_ftp() -> None:
    assert probe_smtp(b"EHLO x\r\n", b"220 mx ESMTP\r\n") == Verdict.YES
    assert probe_smtp(b"", b"220 ftp.example.com FTP server\r\n") == Verdict.MAYBE
    assert probe_smtp(b"USER anonymous\r\n", b"220 ftp ready\r\n") == Verdict.NO
    assert probe_imap(b"a1 CAPABILITY\r\n", b"* OK ready\r\n") == Verdict.YES
    assert probe_imap(b"", b"+OK POP3\r\n") == Verdict.NO
    assert probe_pop3(b"CAPA\r\n", b"+OK POP3 ready\r\n") == Verdict.YES
    assert probe_pop3(b"CAPA\r\n", b"* OK IMAP\r\n") == Verdict.NO
    found = run(2110, (False, b"+OK ready\r\n"), (True, b"USER a\r\n"), (False, b"+OK\r\n"))
    assert [e["protocol"] for e in found] == ["pop3", "pop3"]


def test_an_overlong_line_is_a_violation_not_a_buffer() -> None:
    s = SmtpSession(SessionConfig())
    s.feed(False, b"220 mx ESMTP\r\n", T0)
    out = s.feed(True, b"A" * (70 * 1024), T0)
    assert out and type(out[-1]).__name__ == "Violation"
    assert not s.c.buf


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=400))
def test_random_bytes_never_raise(client: bytes, server: bytes) -> None:
    for session in (SmtpSession, ImapSession, Pop3Session):
        s = session(SessionConfig())
        s.feed(False, server, T0)
        s.feed(True, client, T0)
        s.feed(False, b"* OK x\r\n+OK\r\n250 ok\r\n" + server, T0)
        s.gap(True, 5, T0)
        s.close(T0)
    for p in (probe_smtp, probe_imap, probe_pop3):
        p(client, server)
