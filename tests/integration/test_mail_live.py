"""Live SMTP, IMAP and POP3 between real clients and small mail servers written here, in two network
namespaces: `curl` (smtp://, imap://, pop3:// with --ssl-reqd and a test CA, so STARTTLS/STLS before
anything else, and once more in the clear with AUTH) and Python's `smtplib`, `imaplib` and `poplib` (in
the clear with AUTH/LOGIN/APOP, then STARTTLS/STLS with SNI and ALPN), captured by tcpdump on the
server's veth and dissected offline. The entries of each connection are what its client's own trace
says it did — command by command, with the final reply codes — until STARTTLS/STLS, after which each
upgraded connection is a TLS handshake with SNI, ALPN, JA3 and JA4. No credential, in any encoding,
is in any entry.

There is no mail server in this machine's Debian set, so the servers are written here (the ssl module
for STARTTLS); they answer as RFC 5321/9051/1939 say, which is all the clients and the dissector see."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import NetPair, inside, veth_pair
from tests.helpers.tcpdump import Watched, dissect, tcpdump_argv
from tests.helpers.wait import wait_for
from wiretide.dissector.redact import MARKER

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and AF_PACKET"),
    pytest.mark.skipif(
        any(shutil.which(b) is None for b in ("curl", "tcpdump", "openssl")),
        reason="curl, tcpdump and openssl are needed (Makefile APT_PACKAGES)",
    ),
]

HOST = "mail.wiretide.test"  # the name the server's certificate carries, sent as SNI
USER = "alice"
PASSWORD = "live-mail-s3cret"
WRONG = "not-the-mail-pass"
APOP_STAMP = "<1896.697170952@mail.wiretide.test>"
SMTP_PORT, IMAP_PORT, POP3_PORT = 25, 143, 110
IO_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 90
MESSAGE = (
    "From: Alice <alice@example.com>\r\n"
    "To: Bob <bob@example.com>\r\n"
    "Subject: live mail test\r\n"
    "Message-ID: <live-1@example.com>\r\n"
    "\r\n"
    "Hello Bob,\r\n"
    ".a line that starts with a dot\r\n"
    "Alice\r\n"
)
# Every form in which a credential crosses the wire in the clear: as typed, SASL PLAIN, AUTH LOGIN's
# base64 lines, and APOP's digest.
SECRETS = [
    PASSWORD,
    WRONG,
    base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
    base64.b64encode(f"\0{USER}\0{WRONG}".encode()).decode(),
    base64.b64encode(PASSWORD.encode()).decode(),
    base64.b64encode(WRONG.encode()).decode(),
    hashlib.md5(f"{APOP_STAMP}{PASSWORD}".encode(), usedforsecurity=False).hexdigest(),
]


# ---- the servers --------------------------------------------------------------------------------


class Conn:
    """One accepted connection: CRLF lines in, CRLF lines out, upgraded in place by STARTTLS."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        sock.settimeout(IO_TIMEOUT_S)
        self.sock = sock
        self.context = context
        self.rfile = sock.makefile("rb")
        self.tls = False

    def line(self) -> bytes | None:
        raw = self.rfile.readline(65536)
        return raw.rstrip(b"\r\n") if raw else None

    def read(self, n: int) -> bytes:
        return self.rfile.read(n)

    def send(self, *lines: str | bytes) -> None:
        self.sock.sendall(b"".join((x.encode() if isinstance(x, str) else x) + b"\r\n" for x in lines))

    def starttls(self) -> None:
        self.rfile.close()
        self.sock = self.context.wrap_socket(self.sock, server_side=True)
        self.rfile = self.sock.makefile("rb")
        self.tls = True


def plain_ok(encoded: bytes) -> bool:
    """A SASL PLAIN response (RFC 4616) naming USER with PASSWORD."""
    try:
        return base64.b64decode(encoded, validate=True) == f"\0{USER}\0{PASSWORD}".encode()
    except ValueError:
        return False


def b64_is(encoded: bytes | None, value: str) -> bool:
    try:
        return encoded is not None and base64.b64decode(encoded, validate=True) == value.encode()
    except ValueError:
        return False


def serve_smtp(c: Conn) -> None:
    """RFC 5321 with STARTTLS (RFC 3207), AUTH PLAIN/LOGIN (RFC 4954), PIPELINING."""
    c.send(f"220 {HOST} ESMTP Wiretide test server")
    queued = 0
    while (line := c.line()) is not None:
        verb, _, arg = line.decode().partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            extensions = ["PIPELINING", "SIZE 10485760", "8BITMIME", "ENHANCEDSTATUSCODES"]
            extensions += [] if c.tls else ["STARTTLS"]
            extensions += ["AUTH PLAIN LOGIN"]
            c.send(
                f"250-{HOST} greets {arg}", *(f"250-{x}" for x in extensions[:-1]), f"250 {extensions[-1]}"
            )
        elif verb == "HELO":
            c.send(f"250 {HOST}")
        elif verb == "STARTTLS" and not c.tls:
            c.send("220 2.0.0 Ready to start TLS")
            c.starttls()
        elif verb == "AUTH":
            mechanism, _, initial = arg.partition(" ")
            if mechanism.upper() == "PLAIN":
                if not initial:
                    c.send("334 ")
                    initial = (c.line() or b"").decode()
                ok = plain_ok(initial.encode())
            elif mechanism.upper() == "LOGIN":
                user = initial.encode() if initial else None
                if user is None:
                    c.send("334 VXNlcm5hbWU6")
                    user = c.line()
                c.send("334 UGFzc3dvcmQ6")
                ok = b64_is(user, USER) and b64_is(c.line(), PASSWORD)
            else:
                c.send("504 5.5.4 Unrecognized authentication type")
                continue
            c.send(
                "235 2.7.0 Authentication successful"
                if ok
                else "535 5.7.8 Authentication credentials invalid"
            )
        elif verb == "MAIL":
            c.send("250 2.1.0 Ok")
        elif verb == "RCPT":
            known = "<bob@example.com>" in arg.lower()
            c.send("250 2.1.5 Ok" if known else f"550 5.1.1 {arg[3:]}: Recipient address rejected")
        elif verb == "DATA":
            c.send("354 End data with <CR><LF>.<CR><LF>")
            while c.line() not in (None, b"."):
                pass
            queued += 1
            c.send(f"250 2.0.0 Ok: queued as Q{queued}")
        elif verb in ("RSET", "NOOP"):
            c.send("250 2.0.0 Ok")
        elif verb == "VRFY":
            c.send("252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery")
        elif verb == "QUIT":
            c.send("221 2.0.0 Bye")
            return
        else:
            c.send("502 5.5.2 Error: command not recognized")


_LITERAL = re.compile(rb"\{(\d+)(\+?)\}$")
_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"|(\S+)')


def imap_command(c: Conn) -> tuple[list[bytes], int] | None:
    """The tokens of one command (quoted strings unquoted, literals read, RFC 9051 §4.3) and the
    number of literal bytes."""
    tokens: list[bytes] = []
    literal_bytes = 0
    line = c.line()
    if line is None:
        return None
    while True:
        m = _LITERAL.search(line)
        head = line[: m.start()] if m else line
        tokens += [
            q.replace(b"\\\\", b"\\").replace(b'\\"', b'"') if q else a for q, a in _TOKEN.findall(head)
        ]
        if m is None:
            return tokens, literal_bytes
        if not m.group(2):
            c.send("+ Ready for literal data")
        literal = c.read(int(m.group(1)))
        tokens.append(literal)
        literal_bytes += len(literal)
        line = c.line() or b""


def serve_imap(c: Conn) -> None:
    """IMAP4rev1 (RFC 3501/9051) with STARTTLS, LOGIN, AUTHENTICATE PLAIN (SASL-IR), literals."""
    c.send("* OK Wiretide test IMAP4rev1 server ready")
    authenticated = False
    while (command := imap_command(c)) is not None:
        tokens, _ = command
        if len(tokens) < 2:
            c.send("* BAD Missing command")
            continue
        tag, verb, args = tokens[0].decode(), tokens[1].decode().upper(), tokens[2:]
        if verb == "UID" and args:
            verb, args = f"UID {args[0].decode().upper()}", args[1:]
        if verb == "CAPABILITY":
            caps = "IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN" + ("" if c.tls else " STARTTLS")
            c.send(f"* CAPABILITY {caps}", f"{tag} OK CAPABILITY completed")
        elif verb == "STARTTLS" and not c.tls:
            c.send(f"{tag} OK Begin TLS negotiation now")
            c.starttls()
        elif verb == "LOGIN" and len(args) == 2:
            authenticated = args[0] == USER.encode() and args[1] == PASSWORD.encode()
            c.send(
                f"{tag} OK Logged in"
                if authenticated
                else f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials"
            )
        elif verb == "AUTHENTICATE" and args and args[0].upper() == b"PLAIN":
            response = args[1] if len(args) > 1 else None
            if response is None:
                c.send("+ ")
                response = c.line() or b"*"
            if response == b"*":
                c.send(f"{tag} BAD Authentication cancelled")
                continue
            authenticated = plain_ok(response)
            c.send(
                f"{tag} OK Logged in"
                if authenticated
                else f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials"
            )
        elif not authenticated and verb not in ("NOOP", "LOGOUT"):
            c.send(f"{tag} BAD Not authenticated")
        elif verb in ("SELECT", "EXAMINE"):
            if args and args[0].upper() == b"INBOX":
                c.send(
                    "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)", "* 1 EXISTS", "* 0 RECENT",
                    "* OK [UIDVALIDITY 1] UIDs valid", "* OK [UIDNEXT 2] Predicted next UID",
                    f"{tag} OK [{'READ-WRITE' if verb == 'SELECT' else 'READ-ONLY'}] {verb} completed",
                )  # fmt: skip
            else:
                c.send(f"{tag} NO [NONEXISTENT] Unknown mailbox")
        elif verb == "LIST":
            c.send('* LIST (\\HasNoChildren) "/" INBOX', f"{tag} OK LIST completed")
        elif verb in ("FETCH", "UID FETCH"):
            item = "RFC822" if b"RFC822" in b" ".join(args).upper() else "BODY[]"
            body = MESSAGE.encode()
            c.sock.sendall(f"* 1 FETCH (UID 1 {item} {{{len(body)}}}\r\n".encode() + body + b")\r\n")
            c.send(f"{tag} OK {verb} completed")
        elif verb == "APPEND":
            c.send(f"{tag} OK [APPENDUID 1 2] APPEND completed")
        elif verb in ("NOOP", "CLOSE", "CHECK"):
            c.send(f"{tag} OK {verb} completed")
        elif verb == "LOGOUT":
            c.send("* BYE Logging out", f"{tag} OK LOGOUT completed")
            return
        else:
            c.send(f"{tag} BAD Unknown command")


def serve_pop3(c: Conn) -> None:
    """POP3 (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595), AUTH PLAIN (RFC 5034), APOP."""
    c.send(f"+OK Wiretide test POP3 server ready {APOP_STAMP}")
    body = MESSAGE.encode()
    lines = [b"." + x if x.startswith(b".") else x for x in body.rstrip(b"\r\n").split(b"\r\n")]
    authenticated = False
    while (line := c.line()) is not None:
        verb, _, arg = line.decode().partition(" ")
        verb = verb.upper()
        if verb == "CAPA":
            c.send(
                "+OK Capability list follows",
                "USER",
                "SASL PLAIN",
                "TOP",
                "UIDL",
                *([] if c.tls else ["STLS"]),
                ".",
            )
        elif verb == "STLS" and not c.tls:
            c.send("+OK Begin TLS negotiation")
            c.starttls()
        elif verb == "USER":
            c.send("+OK")
        elif verb == "PASS":
            authenticated = arg == PASSWORD
            c.send("+OK Logged in" if authenticated else "-ERR [AUTH] Invalid credentials")
        elif verb == "APOP":
            user, _, digest = arg.partition(" ")
            expected = hashlib.md5(f"{APOP_STAMP}{PASSWORD}".encode(), usedforsecurity=False).hexdigest()
            authenticated = user == USER and digest == expected
            c.send("+OK Logged in" if authenticated else "-ERR [AUTH] Invalid credentials")
        elif verb == "AUTH":
            mechanism, _, initial = arg.partition(" ")
            if not mechanism:
                c.send("+OK", "PLAIN", ".")
                continue
            if not initial:
                c.send("+ ")
                initial = (c.line() or b"*").decode()
            authenticated = plain_ok(initial.encode())
            c.send("+OK Logged in" if authenticated else "-ERR [AUTH] Invalid credentials")
        elif verb == "QUIT":
            c.send("+OK Bye")
            return
        elif not authenticated:
            c.send("-ERR Not authenticated")
        elif verb == "STAT":
            c.send(f"+OK 1 {len(body)}")
        elif verb in ("LIST", "UIDL"):
            value = str(len(body)) if verb == "LIST" else "msg-1"
            if arg:
                c.send(f"+OK 1 {value}" if arg == "1" else "-ERR No such message")
            else:
                c.send("+OK 1 messages", f"1 {value}", ".")
        elif verb in ("RETR", "TOP"):
            if arg.split(" ")[0] != "1":
                c.send("-ERR No such message")
                continue
            shown = lines if verb == "RETR" else lines[: lines.index(b"") + 1 + int(arg.split(" ")[1])]
            c.send(f"+OK {len(body)} octets", *shown, ".")
        elif verb in ("DELE", "NOOP", "RSET"):
            c.send("+OK")
        else:
            c.send("-ERR Unknown command")


class MailServers:
    """The three servers listening in namespace `ns`, one thread per connection; what went wrong in
    them is kept in `errors`."""

    def __init__(self, ns: str, ip: str, d: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(d / "server.pem", d / "server.key")
        self.context.set_alpn_protocols(["imap", "pop3"])
        self.errors: list[BaseException] = []
        self.accepted = 0
        self.open = 0  # connections being served
        self.lock = threading.Lock()
        self.listeners: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        handlers: tuple[tuple[int, Callable[[Conn], None]], ...] = (
            (SMTP_PORT, serve_smtp), (IMAP_PORT, serve_imap), (POP3_PORT, serve_pop3),
        )  # fmt: skip
        with inside(ns):
            for port, handler in handlers:
                listener = socket.create_server((ip, port))
                self.listeners.append(listener)
                self._start(self._accept, listener, handler)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket, handler: Callable[[Conn], None]) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open += 1
            self._start(self._serve, sock, handler)

    def _serve(self, sock: socket.socket, handler: Callable[[Conn], None]) -> None:
        conn = Conn(sock, self.context)
        try:
            handler(conn)
        except Exception as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            conn.rfile.close()
            conn.sock.close()
            with self.lock:
                self.open -= 1

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()


# ---- the clients --------------------------------------------------------------------------------

# Python's clients, run in the client namespace. Their own wire traces (smtplib's and poplib's debug
# levels, imaplib's debug log) go to stderr, each connection after a "== connection" line. The server's
# name resolves to its address (as curl's --resolve does), so SNI carries the name.
PY_PRELUDE = """
import base64, imaplib, poplib, smtplib, socket, ssl, sys
host, ip, ca, user, password, wrong, message = sys.argv[1:8]
_resolve = socket.getaddrinfo
socket.getaddrinfo = lambda name, *a, **k: _resolve(ip if name == host else name, *a, **k)
sys.stdout = sys.stderr
def context(alpn):
    ctx = ssl.create_default_context(cafile=ca)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx
def connection():
    print("== connection", flush=True)
"""

SMTPLIB = """
connection()
s = smtplib.SMTP(host, 25)
s.set_debuglevel(1)
s.ehlo("client.example")
s.user, s.password = user, wrong
try:
    s.auth("LOGIN", s.auth_login, initial_response_ok=False)
except smtplib.SMTPAuthenticationError:
    pass
s.user, s.password = user, password
s.auth("PLAIN", s.auth_plain)
s.mail("alice@example.com")
s.rcpt("bob@example.com")
s.rcpt("nobody@example.com")
s.data(message.encode())
s.verify("bob")
s.noop()
s.rset()
s.quit()
connection()
s = smtplib.SMTP(host, 25)
s.set_debuglevel(1)
s.ehlo("client.example")
s.starttls(context=context(None))
s.ehlo("client.example")
s.login(user, password)
s.sendmail("alice@example.com", ["bob@example.com"], message.encode())
s.quit()
"""

IMAPLIB = """
imaplib.Debug = 4
connection()
m = imaplib.IMAP4(host, 143)
try:
    m.authenticate("PLAIN", lambda _: f"\\0{user}\\0{wrong}".encode())
except imaplib.IMAP4.error:
    pass
m.login(user, password)
m.list()
m.select("INBOX")
assert m.fetch("1", "(RFC822)")[1][0][1] == message.encode()
m.append("INBOX", None, None, message.encode())
m.select("Nowhere")
m.noop()
m.logout()
connection()
m = imaplib.IMAP4(host, 143)
m.starttls(context(["imap"]))
m.login(user, password)
m.select("INBOX")
m.logout()
"""

POPLIB = """
connection()
p = poplib.POP3(host, 110)
p.set_debuglevel(2)
p.capa()
p.user(user)
try:
    p.pass_(wrong)
except poplib.error_proto:
    pass
p.apop(user, password)
p.stat()
p.list()
try:
    p.retr(7)
except poplib.error_proto:
    pass
p.uidl()
assert b"\\r\\n".join(p.retr(1)[1]) + b"\\r\\n" == message.encode()
p.top(1, 0)
p.dele(1)
p.rset()
p.noop()
p.quit()
connection()
p = poplib.POP3(host, 110)
p.set_debuglevel(2)
p.stls(context(["pop3"]))
p.user(user)
p.pass_(password)
p.stat()
p.quit()
"""

Trace = list[tuple[bool, str]]  # (from the client, the line), one connection


def curl_trace(stderr: bytes) -> list[Trace]:
    """`curl -v`: `> ` lines sent, `< ` lines received; one connection."""
    trace: Trace = []
    for line in stderr.decode("utf-8", "replace").splitlines():
        if line[:2] in ("> ", "< "):
            trace.append((line[0] == ">", line[2:]))
    return [trace]


_PY_LINE = re.compile(r"^(?:send: |reply: |\s*[\d:.]+ [<>] |\*cmd\* |\*resp\* )(.*)$")


def python_trace(stderr: bytes) -> list[Trace]:
    """smtplib's `send:`/`reply:`, imaplib's `> `/`< ` and poplib's `*cmd*`/`*resp*` lines."""
    traces: list[Trace] = []
    for line in stderr.decode("utf-8", "replace").splitlines():
        if line.startswith("== connection"):
            traces.append([])
            continue
        m = _PY_LINE.match(line)
        if m is None or not traces or line.startswith("reply: retcode"):
            continue
        sent = line.startswith(("send:", "*cmd*")) or bool(re.match(r"^\s*[\d:.]+ > ", line))
        try:
            value = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        traces[-1].append((sent, text.rstrip("\r\n")))
    return traces


Record = list[tuple[str, int]]
LOGOUT: dict[str, tuple[str, int]] = {"smtp": ("QUIT", 221), "imap": ("LOGOUT", 0), "pop3": ("QUIT", 0)}


def smtp_record(trace: Trace) -> Record:
    """Commands with their final reply codes; 334/354 make the client's next line part of the command."""
    record: Record = []
    pending: list[str] = []
    continued = False
    for sent, text in trace:
        if sent:
            if continued:
                continued = False
            else:
                pending.append(text.split(" ", 1)[0].upper())
            continue
        code = int(text[:3])
        if text[3:4] == "-":
            continue
        if code in (334, 354):
            continued = True
        elif pending:
            record.append((pending.pop(0), code))
            continued = False
    return record


def imap_record(trace: Trace) -> Record:
    """Tagged commands with their tagged completion (0 OK, 1 NO, 2 BAD)."""
    record: Record = []
    pending: dict[str, str] = {}
    for sent, text in trace:
        words = text.split(" ")
        if sent:
            if len(words) >= 2:  # a challenge's response is one word
                command = words[1].upper()
                pending[words[0]] = f"UID {words[2].upper()}" if command == "UID" else command
        elif words[0] in pending and len(words) > 1 and words[1] in ("OK", "NO", "BAD"):
            record.append((pending.pop(words[0]), ("OK", "NO", "BAD").index(words[1])))
        elif words[:2] == ["*", "BYE"] and "LOGOUT" in pending.values():  # imaplib stops reading here
            tag = next(t for t, command in pending.items() if command == "LOGOUT")
            record.append((pending.pop(tag), 0))
    return record


def pop3_record(trace: Trace) -> Record:
    """Commands with their status line (0 +OK, 1 -ERR); a `+ ` challenge makes the next line part of AUTH."""
    record: Record = []
    pending: list[str] = []
    continued = False
    for sent, text in trace:
        if sent:
            if continued:
                continued = False
            else:
                pending.append(text.split(" ", 1)[0].upper())
        elif text.startswith(("+OK", "-ERR")) and pending:
            record.append((pending.pop(0), 0 if text.startswith("+OK") else 1))
        elif text == "+" or text.startswith("+ "):
            continued = True
    return record


def until_tls(record: Record) -> Record:
    """What crossed in the clear: everything up to an accepted STARTTLS/STLS."""
    for i, (command, status) in enumerate(record):
        if command in ("STARTTLS", "STLS") and status in (0, 220):
            return record[: i + 1]
    return record


# ---- the test -----------------------------------------------------------------------------------


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def certificates(d: Path, ip: str) -> None:
    """A test CA and a server certificate it signed for HOST and the server's address."""
    key = ["-newkey", "rsa:2048", "-nodes"]
    openssl("req", "-x509", *key, "-days", "1", "-subj", "/CN=Wiretide mail test CA",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))  # fmt: skip
    openssl(
        "req", *key, "-subj", f"/CN={HOST}", "-keyout", str(d / "server.key"), "-out", str(d / "server.csr")
    )
    (d / "san.ext").write_text(f"subjectAltName=DNS:{HOST},IP:{ip}\n")
    ca = ["-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"), "-CAcreateserial"]
    openssl("x509", "-req", "-in", str(d / "server.csr"), *ca, "-days", "1", "-extfile", str(d / "san.ext"),
            "-out", str(d / "server.pem"))  # fmt: skip


def ended(pcap: Path, client_ip: str) -> int:
    """Connections whose end tcpdump has written so far: a FIN from each side, or a reset."""
    done = subprocess.run(
        ["tcpdump", "-r", str(pcap), "-nn", "tcp[tcpflags] & (tcp-fin|tcp-rst) != 0"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    closed: dict[str, set[str]] = {}
    for line in done.stdout.decode().splitlines():
        m = re.search(r" (\S+) > (\S+): Flags \[([^\]]*)\]", line)
        if m is None:
            continue
        source, target, flags = m.groups()
        client = source if source.startswith(client_ip + ".") else target
        closed.setdefault(client, set()).add("R" if "R" in flags else ("c" if client == source else "s"))
    return sum(1 for marks in closed.values() if "R" in marks or marks >= {"c", "s"})


@contextmanager
def captured(pair: NetPair, pcap: Path) -> Iterator[Watched]:
    """tcpdump on the server's veth, listening when the block starts, stopped after."""
    dump = Watched(
        pair.popen(
            pair.ns_b, tcpdump_argv(pair.if_b, pcap, "tcp"), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
    )
    try:
        dump.wait_for(b"listening on")
        yield dump
    finally:
        dump.stop()


def test_mail_clients_become_entries_command_by_command_and_starttls_becomes_a_tls_handshake(
    tmp_path: Path,
) -> None:
    pcap = tmp_path / "mail.pcap"
    message_file = tmp_path / "message.eml"
    message_file.write_bytes(MESSAGE.encode())
    traces: dict[str, list[tuple[str, Trace]]] = {"smtp": [], "imap": [], "pop3": []}
    with veth_pair("10.82.0") as pair:
        certificates(tmp_path, pair.ip_b)
        servers = MailServers(pair.ns_b, pair.ip_b, tmp_path)
        try:
            with captured(pair, pcap) as dump:

                def curl(name: str, port: int, url_path: str, *args: str, tls: bool = True) -> bytes:
                    scheme = "pop3" if name == "pop3" else name
                    argv = ["curl", "-sS", "-v", "--max-time", "60", "--cacert", str(tmp_path / "ca.pem"),
                            "--resolve", f"{HOST}:{port}:{pair.ip_b}", "-u", f"{USER}:{PASSWORD}",
                            *(["--ssl-reqd"] if tls else []), *args,
                            f"{scheme}://{HOST}:{port}/{url_path}"]  # fmt: skip
                    done = pair.run(pair.ns_a, argv, capture_output=True, timeout=CLIENT_TIMEOUT_S)
                    assert done.returncode == 0, done.stderr.decode()[-3000:]
                    traces[name] += [
                        (f"curl {'--ssl-reqd' if tls else 'clear'}", t) for t in curl_trace(done.stderr)
                    ]
                    return done.stdout

                def python(name: str, script: str) -> None:
                    argv = [sys.executable, "-c", PY_PRELUDE + script, HOST, pair.ip_b,
                            str(tmp_path / "ca.pem"), USER, PASSWORD, WRONG, MESSAGE]  # fmt: skip
                    done = pair.run(pair.ns_a, argv, capture_output=True, timeout=CLIENT_TIMEOUT_S)
                    assert done.returncode == 0, done.stderr.decode()[-3000:]
                    traces[name] += [(f"python {name}", t) for t in python_trace(done.stderr)]

                send = ["--mail-from", "alice@example.com", "--mail-rcpt", "bob@example.com"]
                send += ["-T", str(message_file)]
                curl("smtp", SMTP_PORT, "client.example", *send)
                curl("smtp", SMTP_PORT, "client.example", *send, "--login-options", "AUTH=LOGIN", tls=False)
                assert curl("imap", IMAP_PORT, "INBOX/;UID=1") == MESSAGE.encode()
                curl("imap", IMAP_PORT, "INBOX", "--sasl-ir", "-X", "EXAMINE INBOX", tls=False)
                assert curl("pop3", POP3_PORT, "1") == MESSAGE.encode()
                curl("pop3", POP3_PORT, "", tls=False)
                python("smtp", SMTPLIB)
                python("imap", IMAPLIB)
                python("pop3", POPLIB)
                connections = servers.accepted
                wait_for("the servers' connections closed", lambda: servers.open, lambda n: n == 0)
                wait_for(
                    "every connection's end captured",
                    lambda: ended(pcap, pair.ip_a),
                    lambda n: n >= connections,
                )
            assert dump.dropped() == 0
        finally:
            servers.close()
    assert not servers.errors, servers.errors
    assert connections == 6 + 6

    found = dissect(pcap)
    text = json.dumps(found)
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, leaked
    handshakes = {e["flow_id"]: e for e in found if e["protocol"] == "tls"}
    for protocol, recorder in (("smtp", smtp_record), ("imap", imap_record), ("pop3", pop3_record)):
        entries = [e for e in found if e["protocol"] == protocol]
        flows: dict[str, list[dict[str, Any]]] = {}
        for e in sorted(entries, key=lambda e: e["timestamp"]):
            flows.setdefault(e["flow_id"], []).append(e)
        assert len(flows) == len(traces[protocol]) == 4, (protocol, len(flows), len(traces[protocol]))
        for (client, trace), (flow_id, flow) in zip(traces[protocol], flows.items(), strict=True):
            record = until_tls(recorder(trace))
            if client == "curl clear":  # `curl -v` does not show the logout it sends as it exits
                record.append(LOGOUT[protocol])
            assert flow[0]["method"] == "greeting" and flow[0]["status"] in (0, 220), (client, flow[0])
            mine = [(e["method"], e["status"]) for e in flow[1:]]
            assert mine == record, (protocol, client, mine, record)
            assert all(e["response"] is not None for e in flow), (
                client,
                [e for e in flow if not e["response"]],
            )
            upgraded = record[-1][0] in ("STARTTLS", "STLS")
            assert (flow_id in handshakes) == upgraded, (protocol, client)
            if upgraded:
                handshake = handshakes[flow_id]
                tls = handshake["tls"]
                assert tls["sni"] == HOST and tls["ja3"] and tls["ja4"].startswith("t1"), tls
                # curl and smtplib offer no ALPN; imaplib and poplib were given the IANA ids. (TLS 1.3
                # carries the server's choice encrypted, so the offer is what the capture shows.)
                offered = {"python imap": ["imap"], "python pop3": ["pop3"]}.get(client, [])
                assert handshake["request"]["alpn"] == offered, (client, handshake["request"])
                ja4_alpn = f"{offered[0][0]}{offered[0][-1]}" if offered else "00"
                assert tls["ja4"].split("_")[0].endswith(ja4_alpn), (client, tls)

    def only(protocol: str, method: str, status: int) -> list[dict[str, Any]]:
        return [
            e for e in found if e["protocol"] == protocol and (e["method"], e["status"]) == (method, status)
        ]

    # What the entries say beyond commands and codes: the message each client sent or fetched, the
    # credentials' places marked, refusals typed.
    for data in only("smtp", "DATA", 250):  # curl in the clear, smtplib in the clear
        assert data["request"]["headers"]["subject"] == "live mail test", data["request"]
        assert data["request"]["message_lines"] == MESSAGE.count("\r\n"), data["request"]
        assert data["response"]["intermediate"] == 354
    [rejected] = only("smtp", "RCPT", 550)
    assert rejected["path"] == "nobody@example.com" and rejected["error"]["type"] == "5.1.1", rejected
    [login_failed] = only("smtp", "AUTH", 535)
    assert login_failed["request"]["auth_lines"] == 2 and login_failed["error"]["type"] == "5.7.8"
    assert {e["request"]["args"] for e in only("smtp", "AUTH", 235)} == {"LOGIN", f"PLAIN {MARKER}"}
    [fetched] = only("imap", "FETCH", 0)
    [appended] = only("imap", "APPEND", 0)
    assert fetched["response"]["literal_bytes"] == appended["request"]["literal_bytes"] == len(MESSAGE)
    [login] = only("imap", "LOGIN", 0)
    assert login["path"] == USER and login["request"]["args"] == f"{USER} {MARKER}"
    [refused] = only("imap", "AUTHENTICATE", 1)
    assert refused["request"]["auth_lines"] == 1 and refused["error"]["type"] == "AUTHENTICATIONFAILED"
    assert only("imap", "SELECT", 1)[0]["error"]["type"] == "NONEXISTENT"
    [retrieved] = only("pop3", "RETR", 0)
    assert retrieved["response"]["line_count"] == MESSAGE.count("\r\n")
    [wrong_pass] = only("pop3", "PASS", 1)
    assert wrong_pass["request"]["args"] == MARKER and wrong_pass["error"]["type"] == "AUTH"
    assert only("pop3", "APOP", 0)[0]["request"]["args"] == f"{USER} {MARKER}"
    [challenged] = only("pop3", "AUTH", 0)  # curl in the clear: AUTH PLAIN, `+ `, the credentials
    assert challenged["request"]["auth_lines"] == 1 and challenged["response"]["challenges"] == 1
    assert all(e["error"] is None for e in found if e["status"] in (0, 220, 221, 235, 250, 252))
