"""gRPC over HTTP/2: length-prefixed messages, status from trailers, deadlines, protobuf payloads.

Rule: every message is counted and sized, but only the body cap's worth of bytes is kept per stream
direction, and decompression never produces more than the cap (a gzip bomb costs at most the cap);
payloads decode with a schema when one is known, else as a schemaless field tree.
"""

from __future__ import annotations

import base64
import contextlib
import os
from typing import Any, Final
from urllib.parse import unquote

from wiretide.dissector.api import Presented, SessionConfig
from wiretide.dissector.protocols import protobuf
from wiretide.dissector.protocols._body import decode_content
from wiretide.dissector.protocols._numbers import decimal

# gRPC over HTTP/2 ("Length-Prefixed-Message"): 1 compressed-flag octet + 4 length octets.
PREFIX: Final = 5
# Messages listed per stream direction; beyond it they are counted, not listed.
MAX_LISTED: Final = 256
# gRPC status codes (grpc/doc/statuscodes.md).
STATUS_NAMES: Final = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
# grpc-timeout units ("Timeout → TimeoutValue TimeoutUnit") in milliseconds.
TIMEOUT_UNITS_MS: Final = {"H": 3_600_000.0, "M": 60_000.0, "S": 1000.0, "m": 1.0, "u": 0.001, "n": 0.000001}
# Reflection responses: ServerReflectionResponse.file_descriptor_response (4) → file_descriptor_proto (1).
REFLECTION_FILES_PATH: Final = (4, 1)
# FileDescriptorProtos a session learns from reflection; more are ignored (bounded memory).
MAX_LEARNED_FILES: Final = 512
# grpc-status digits: the codes are small, and 9 digits always fit the 32-bit status field.
MAX_STATUS_DIGITS: Final = 9
# grpc-timeout: "TimeoutValue → {positive integer as ASCII string of at most 8 digits}".
MAX_TIMEOUT_DIGITS: Final = 8


def is_grpc(content_type: str | None) -> bool:
    """application/grpc, application/grpc+proto, application/grpc-web(+proto) (not -text)."""
    return bool(content_type) and content_type.startswith("application/grpc")  # type: ignore[union-attr]


class _Msg:
    """One message: its prefix (compressed flag, size), the payload bytes kept, whether it ended.

    A plain class: one is built per message, and a dataclass's `__init__` is interpreted even when
    this module is compiled."""

    __slots__ = ("complete", "compressed", "data", "size")

    def __init__(self, compressed: bool, size: int) -> None:
        self.compressed = compressed
        self.size = size
        self.data = bytearray()
        self.complete = False


def _alike(a: _Msg, b: _Msg) -> bool:
    """The same message, or one equal to it field by field: how the framer has always recognised the
    message listed last (it compared them as values)."""
    return a is b or (
        a.compressed == b.compressed and a.size == b.size and a.data == b.data and a.complete == b.complete
    )


class MessageFramer:
    """Splits one direction's DATA bytes into gRPC messages; keeps at most `cap` payload bytes."""

    __slots__ = (
        "cap",
        "count",
        "dropped",
        "header",
        "kept",
        "messages",
        "partial",
        "realigned",
        "remaining",
        "total",
    )

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.header = bytearray()
        self.messages: list[_Msg] = []
        self.partial: _Msg | None = None
        self.remaining = 0
        self.kept = 0
        self.dropped = 0  # payload bytes seen but not kept (over the cap or over MAX_LISTED)
        self.count = 0
        self.total = 0
        self.realigned = 0  # times message framing was picked up again after a gap

    def feed(self, data: bytes) -> None:
        pos = 0
        n = len(data)
        self.total += n
        if self.remaining < 0:  # boundaries lost to a gap: realign on a DATA frame opening a message
            if n >= PREFIX and data[0] in (0, 1):
                self.remaining = 0
                self.realigned += 1
            else:
                self.dropped += n
                return
        while pos < n:
            if self.partial is None:
                if not self.header and n - pos >= PREFIX:  # the whole prefix here: read in place
                    flag = data[pos]
                    size = (
                        (data[pos + 1] << 24) | (data[pos + 2] << 16) | (data[pos + 3] << 8) | data[pos + 4]
                    )
                    pos += PREFIX
                else:
                    need = PREFIX - len(self.header)
                    self.header += data[pos : pos + need]
                    pos += min(need, n - pos)
                    if len(self.header) < PREFIX:
                        return
                    flag = self.header[0]
                    size = int.from_bytes(self.header[1:5], "big")
                    self.header.clear()
                msg = _Msg(bool(flag & 1), size)
                self.count += 1
                if len(self.messages) < MAX_LISTED:
                    self.messages.append(msg)
                self.partial = msg
                self.remaining = size
                if size == 0:
                    msg.complete = True
                    self.partial = None
                    continue
            msg = self.partial
            take = min(self.remaining, n - pos)
            room = self.cap - self.kept
            kept = 0
            if room > 0 and self.messages and _alike(self.messages[-1], msg):
                piece = data[pos : pos + min(take, room)]
                msg.data += piece
                kept = len(piece)
                self.kept += kept
            self.dropped += take - kept
            pos += take
            self.remaining -= take
            if not self.remaining:
                msg.complete = True
                self.partial = None

    def lost(self) -> None:
        """A capture gap: message boundaries are unknown until a DATA frame opens a new message
        (gRPC implementations start each message in a fresh DATA frame, though none is obliged to)."""
        if self.partial is not None:
            self.partial = None
        self.header.clear()
        self.remaining = -1

    def payloads(self) -> list[bytes]:
        """Complete, wholly kept, uncompressed message payloads."""
        return [
            bytes(m.data) for m in self.messages if m.complete and len(m.data) == m.size and not m.compressed
        ]


class SchemaStore:
    """Message types by gRPC method path, from FileDescriptorProtos (descriptor sets or reflection).

    Immutable: `learn` returns a new store, so a store shared by many sessions is never changed.
    """

    __slots__ = ("_classes", "_files", "_methods", "_pool")

    def __init__(self, files: tuple[bytes, ...] = ()) -> None:
        self._files = files
        self._methods: dict[str, tuple[str, str]] = {}
        self._classes: dict[str, Any] = {}
        self._pool: Any = None
        if files:
            self._build()

    def _build(self) -> None:
        from google.protobuf import descriptor_pb2, descriptor_pool

        pool = descriptor_pool.DescriptorPool()
        protos = []
        for raw in self._files:
            fdp = descriptor_pb2.FileDescriptorProto()
            try:
                fdp.ParseFromString(raw)
            except Exception:  # a bad descriptor is skipped, never fatal
                continue
            protos.append(fdp)
        pending = {p.name: p for p in protos}
        added: set[str] = set()
        progress = True
        while pending and progress:  # dependencies first, whatever order the files came in
            progress = False
            for name, fdp in list(pending.items()):
                if all(dep in added or dep not in pending for dep in fdp.dependency):
                    with contextlib.suppress(Exception):
                        pool.Add(fdp)
                    added.add(name)
                    del pending[name]
                    progress = True
        for fdp in protos:
            for svc in fdp.service:
                full = f"{fdp.package}.{svc.name}" if fdp.package else svc.name
                for m in svc.method:
                    self._methods[f"/{full}/{m.name}"] = (m.input_type.lstrip("."), m.output_type.lstrip("."))
        self._pool = pool

    @classmethod
    def from_config(cls, config: SessionConfig) -> SchemaStore:
        """The store a caller built once from settings (`SessionConfig.schemas`), or the empty one
        (shared: a store never changes, and a session per flow should not cost one each)."""
        store = getattr(config, "schemas", None)
        return store if isinstance(store, SchemaStore) else _EMPTY_STORE

    @classmethod
    def from_descriptor_sets(cls, blobs: list[bytes]) -> SchemaStore:
        """Serialized FileDescriptorSets (`protoc --descriptor_set_out --include_imports`)."""
        files: list[bytes] = []
        for blob in blobs:
            files.extend(protobuf.repeated_bytes(blob, (1,)))  # FileDescriptorSet.file = 1
        return cls(tuple(files))

    @classmethod
    def from_directory(cls, path: str) -> SchemaStore:
        """Every *.pb / *.desc / *.protoset file in a directory (read once, by the caller at start-up)."""
        blobs: list[bytes] = []
        for name in sorted(os.listdir(path)):
            if name.endswith((".pb", ".desc", ".protoset", ".binpb")):
                with open(os.path.join(path, name), "rb") as fh:
                    blobs.append(fh.read())
        return cls.from_descriptor_sets(blobs)

    def learn(self, reflection_payloads: list[bytes]) -> SchemaStore:
        """A store that also knows the files in captured ServerReflectionResponse messages."""
        new: list[bytes] = []
        for payload in reflection_payloads:
            new.extend(protobuf.repeated_bytes(payload, REFLECTION_FILES_PATH))
        fresh = [f for f in new if f not in self._files]
        if not fresh:
            return self
        return SchemaStore((self._files + tuple(fresh))[:MAX_LEARNED_FILES])

    def knows(self, path: str) -> bool:
        return path in self._methods

    def decode(self, path: str, is_request: bool, data: bytes) -> dict[str, Any] | None:
        """The message as a JSON-like dict with field names, or None without a (working) schema."""
        types = self._methods.get(path)
        if types is None or self._pool is None:
            return None
        name = types[0] if is_request else types[1]
        try:
            from google.protobuf import json_format, message_factory

            cls = self._classes.get(name)
            if cls is None:
                cls = self._classes[name] = message_factory.GetMessageClass(
                    self._pool.FindMessageTypeByName(name)
                )
            msg = cls()
            msg.ParseFromString(data)
            out: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
            return out
        except Exception:  # bytes that do not match the schema fall back to the schemaless tree
            return None


_EMPTY_STORE: Final = SchemaStore()


def _timeout_ms(value: str | None) -> float | None:
    """grpc-timeout: up to 8 digits and a unit (gRPC over HTTP2, "Requests")."""
    if not value:
        return None
    unit = TIMEOUT_UNITS_MS.get(value[-1])
    amount = decimal(value[:-1], MAX_TIMEOUT_DIGITS)
    return amount * unit if unit is not None and amount is not None else None


def _messages(
    framer: MessageFramer, coding: str, path: str, is_request: bool, schemas: SchemaStore, cap: int
) -> tuple[list[dict[str, Any]], int]:
    out: list[dict[str, Any]] = []
    bombs = 0
    for m in framer.messages:
        item: dict[str, Any] = {"size": m.size, "compressed": m.compressed}
        data = bytes(m.data)
        kept_whole = m.complete and len(data) == m.size
        if not kept_whole:
            item["truncated"] = True
        elif m.compressed:
            if coding in ("", "identity"):
                item["decode_error"] = "compressed flag without grpc-encoding"
                data = b""
            else:
                plain, cut, err = decode_content(data, coding, cap)
                if err is not None:
                    item["decode_error"] = err
                    data = b""
                else:
                    data = plain
                    item["decompressed_size"] = len(plain)
                    if cut:  # decompression bomb (or simply bigger than the cap): bounded, counted
                        item["truncated"] = True
                        bombs += 1
        if data and kept_whole and not item.get("truncated"):
            typed = schemas.decode(path, is_request, data)
            if typed is not None:
                item["json"] = typed
            else:
                tree = protobuf.decode(data)
                if tree is not None:
                    item["fields"] = tree
                else:
                    item["data"] = base64.b64encode(data[:cap]).decode("ascii")
        elif data:
            item["data"] = base64.b64encode(data[:cap]).decode("ascii")
        out.append(item)
    return out, bombs


def enrich_request(fields: dict[str, Any], framer: MessageFramer, schemas: SchemaStore) -> None:
    """Adds service, (gRPC) method, messages, message_count, timeout_ms to an HTTP/2 request object."""
    path = fields.get("path") or ""
    service, _, method = path.lstrip("/").rpartition("/")
    headers = fields["headers"]
    fields["http_method"] = fields.get("method")
    fields["service"] = service
    fields["method"] = method
    fields["grpc_web"] = headers.get("content-type", "").startswith("application/grpc-web")
    msgs, bombs = _messages(framer, headers.get("grpc-encoding", ""), path, True, schemas, framer.cap)
    fields["messages"] = msgs
    fields["message_count"] = framer.count
    if bombs:
        fields["decompression_capped"] = bombs
    fields["timeout_ms"] = _timeout_ms(headers.get("grpc-timeout"))
    fields["body"] = _body_summary(framer, headers)


def _body_summary(framer: MessageFramer | None, headers: dict[str, str]) -> dict[str, Any]:
    """The body object of a gRPC side: sizes only, its content lives in `messages`."""
    return {
        "size": framer.total if framer is not None else 0,
        "mime": headers.get("content-type", ""),
        "encoding": "base64",
        "content": "",
        "truncated": bool(framer.dropped) if framer is not None else False,
    }


def enrich_response(
    fields: dict[str, Any],
    framer: MessageFramer | None,
    req: dict[str, Any] | None,
    schemas: SchemaStore,
) -> None:
    """Adds grpc_status / grpc_message (trailers, or headers of a trailers-only response) and messages."""
    headers = fields["headers"]
    trailers = fields["trailers"]
    source = trailers if "grpc-status" in trailers else headers
    status = source.get("grpc-status")
    fields["grpc_status"] = decimal(status, MAX_STATUS_DIGITS) if status is not None else None
    message = source.get("grpc-message")
    fields["grpc_message"] = unquote(message) if message else ""  # percent-encoded on the wire
    code = fields["grpc_status"]
    fields["grpc_status_name"] = STATUS_NAMES[code] if code is not None and code < len(STATUS_NAMES) else None
    path = (req or {}).get("path") or ""
    if framer is not None:
        msgs, bombs = _messages(framer, headers.get("grpc-encoding", ""), path, False, schemas, framer.cap)
        fields["messages"] = msgs
        fields["message_count"] = framer.count
        if bombs:
            fields["decompression_capped"] = bombs
    else:
        fields["messages"] = []
        fields["message_count"] = 0
    fields["body"] = _body_summary(framer, headers)


def present(req: dict[str, Any], resp: dict[str, Any], stream: int | None) -> Presented:
    """`pkg.Service/Method → NOT_FOUND`: the call in gRPC terms, HTTP status kept in `status`."""
    service = req.get("service", "")
    method = req.get("method")
    code = resp.get("grpc_status") if resp else None
    name = resp.get("grpc_status_name") if resp else None
    outcome = ""
    if resp:
        outcome = f" → {name or code}" if code is not None else f" → HTTP {resp.get('status')}"
        if "reset" in resp:
            outcome += f" RST {resp['reset']['name']}"
    call = f"{service}/{method}" if req else "(call not captured)"
    # Positional: keywords cost a dict per call to this (interpreted) dataclass, one call per entry.
    return Presented(
        method,
        req.get("path"),
        resp.get("status") if resp else None,
        f"{call}{outcome}",
        "2",
        str(stream) if stream is not None else None,
    )


# ---- gRPC-Web over HTTP/1.1 (PROTOCOL-WEB.md in the grpc repository) ---------------------------

# Frame flag bit marking the trailers frame of a gRPC-Web response body.
WEB_TRAILERS_FLAG: Final = 0x80


def _web_body(body: dict[str, Any] | None, text_mode: bool) -> bytes | None:
    """The raw body bytes an HTTP/1.1 body object holds (base64 once more for grpc-web-text)."""
    if not body or not body.get("content"):
        return b"" if body else None
    content = body["content"]
    try:
        raw = base64.b64decode(content) if body.get("encoding") == "base64" else content.encode()
        if text_mode:
            raw = base64.b64decode(raw)
    except (ValueError, TypeError):
        return None
    return raw


def _web_split(raw: bytes, cap: int) -> tuple[MessageFramer, dict[str, str]]:
    """Data frames into a framer; the trailers frame (flag 0x80) as lower-case header fields."""
    framer = MessageFramer(cap)
    trailers: dict[str, str] = {}
    pos = 0
    while pos + PREFIX <= len(raw):
        flag = raw[pos]
        size = int.from_bytes(raw[pos + 1 : pos + 5], "big")
        end = pos + PREFIX + size
        if flag & WEB_TRAILERS_FLAG:
            for line in raw[pos + PREFIX : end].decode("utf-8", "replace").split("\r\n"):
                name, colon, value = line.partition(":")
                if colon:
                    trailers[name.strip().lower()] = value.strip()
        else:
            framer.feed(raw[pos:end])
        pos = end
    if pos < len(raw):
        framer.feed(raw[pos:])
    return framer, trailers


def classify_http1(req: dict[str, Any] | None, resp: dict[str, Any] | None) -> dict[str, Any]:
    """An HTTP/1.1 entry that is gRPC-Web: gRPC fields added in place, Entry fields to override."""
    if req is None:
        return {}
    ctype = req.get("headers", {}).get("content-type", "")
    if not ctype.startswith("application/grpc-web"):
        return {}
    text_mode = ctype.startswith("application/grpc-web-text")
    cap = max(len(str((req.get("body") or {}).get("content", ""))), 1 << 16)
    raw = _web_body(req.get("body"), text_mode)
    framer, _ = _web_split(raw or b"", cap)
    store = SchemaStore()
    body = req.get("body")
    enrich_request(req, framer, store)
    req["grpc_web"] = True
    if body is not None and body.get("truncated"):  # the HTTP body cap cut the messages short
        req["body"]["truncated"] = True
    if resp is not None:
        rtype = resp.get("headers", {}).get("content-type", "")
        rraw = _web_body(resp.get("body"), rtype.startswith("application/grpc-web-text"))
        rframer, trailers = _web_split(rraw or b"", cap)
        resp.setdefault("trailers", {}).update(trailers)
        enrich_response(resp, rframer, req, store)
    shown = present(req, resp or {}, None)
    return {"protocol": "grpc", "method": shown.method, "summary": shown.summary}
