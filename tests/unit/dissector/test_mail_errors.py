"""Refusals in SMTP, IMAP and POP3 are the entries' errors, typed by the codes the servers give (RFC 3463
enhanced status codes, RFC 5530 IMAP response codes, RFC 2449/3206 POP3 extended response codes), and a
greeting is judged like a reply: an IMAP `* BYE` or an SMTP 554 greeting turns the client away."""

from __future__ import annotations

from .test_mail import rows, run


def test_smtp_refusals_are_typed_by_their_enhanced_code_else_the_reply_code() -> None:
    found = run(
        25,
        (False, b"220 mx ESMTP\r\n"), (True, b"EHLO c\r\n"), (False, b"250 mx\r\n"),
        (True, b"MAIL FROM:<a@example.com>\r\n"), (False, b"451 4.3.0 try again later\r\n"),
        (True, b"VRFY bob\r\n"), (False, b"502 not implemented\r\n"),
        (True, b"NOOP\r\n"), (False, b"250 2.0.0 Ok\r\n"),
    )  # fmt: skip
    assert rows(found) == [
        ("smtp", "greeting", 220), ("smtp", "EHLO", 250), ("smtp", "MAIL", 451), ("smtp", "VRFY", 502),
        ("smtp", "NOOP", 250),
    ]  # fmt: skip
    greeting, ehlo, mail, vrfy, noop = found
    assert mail["error"] == {"type": "4.3.0", "message": "try again later"}
    assert vrfy["error"] == {"type": "502", "message": "not implemented"}
    assert greeting["error"] is ehlo["error"] is noop["error"] is None


def test_an_smtp_greeting_that_turns_the_client_away_is_an_error() -> None:
    found = run(
        25, (False, b"554 5.3.2 mx: no service here\r\n"), (True, b"EHLO c\r\n"), (False, b"503 no\r\n")
    )
    assert rows(found)[0] == ("smtp", "greeting", 554)
    assert found[0]["error"] == {"type": "5.3.2", "message": "mx: no service here"}


def test_imap_greetings_have_a_status_and_refusals_are_typed_by_their_response_code() -> None:
    found = run(
        143,
        (False, b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        (True, b"a1 LOGIN alice secret\r\n"),
        (False, b"a1 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"),
        (True, b"a2 FROB\r\n"), (False, b"a2 BAD unknown command\r\n"),
        (True, b"a3 NOOP\r\n"), (False, b"a3 OK done\r\n"),
    )  # fmt: skip
    assert rows(found) == [
        ("imap", "greeting", 0), ("imap", "LOGIN", 1), ("imap", "FROB", 2), ("imap", "NOOP", 0),
    ]  # fmt: skip
    greeting, login, frob, noop = found
    assert login["error"] == {"type": "AUTHENTICATIONFAILED", "message": "Invalid credentials"}
    assert frob["error"] == {"type": "BAD", "message": "unknown command"}
    assert greeting["error"] is noop["error"] is None
    assert "secret" not in repr(found)
    turned_away = run(143, (False, b"* BYE [UNAVAILABLE] IMAP server too busy\r\n"))
    assert rows(turned_away) == [("imap", "greeting", 1)]
    assert turned_away[0]["error"] == {"type": "UNAVAILABLE", "message": "IMAP server too busy"}
    assert greeting["response"]["capabilities"] == "IMAP4rev1" and greeting["response"]["text"] == "ready"


def test_pop3_refusals_are_typed_by_their_extended_response_code() -> None:
    found = run(
        110,
        (False, b"+OK ready\r\n"), (True, b"USER alice\r\n"), (False, b"+OK\r\n"),
        (True, b"PASS secret\r\n"), (False, b"-ERR [IN-USE] mailbox locked\r\n"),
        (True, b"PASS secret\r\n"), (False, b"-ERR\r\n"),
    )  # fmt: skip
    assert rows(found) == [
        ("pop3", "greeting", 0),
        ("pop3", "USER", 0),
        ("pop3", "PASS", 1),
        ("pop3", "PASS", 1),
    ]
    assert found[2]["error"] == {"type": "IN-USE", "message": "[IN-USE] mailbox locked"}
    assert found[3]["error"] == {"type": "ERR", "message": ""}
    assert found[0]["error"] is found[1]["error"] is None and "secret" not in repr(found)
