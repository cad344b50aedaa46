"""HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/) from Entries: the one writer behind
`wiretide analyze --format har` (streamed: `HarStream`) and the gateway's `/api/export.har`.

Rule: only what an Entry holds is written, in the shape browsers write (Chrome's HAR export where the
spec leaves a choice) — no invented headers, sizes or timings; what is unknown is -1 or left out, as
the spec says. HTTP/1, HTTP/2, gRPC and GraphQL calls are HAR entries; WebSocket messages ride on their
upgrade request's entry as `_webSocketMessages`, as Chrome writes them; other protocols are skipped.
"""

from __future__ import annotations

import base64
import binascii
import functools
import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson

from wiretide.common.protocols import info, status_text

HAR_VERSION: Final = "1.2"
# The Entry protocol of a WebSocket message (its messages go on the upgrade request's entry).
WEBSOCKET: Final = "ws"
# Messages kept per WebSocket connection; more are counted in `_webSocketMessagesDropped` (a long-lived
# socket must not grow one HAR entry without bound).
MAX_WS_MESSAGES: Final = 10_000
# Entry `version` / body `http_version` → HAR `httpVersion`. HTTP/2 as "HTTP/2.0": the spelling of the
# HTTP/1 versions, as Charles and Fiddler write it (Chrome writes "http/2.0", Firefox "HTTP/2").
HTTP_VERSIONS: Final = {
    "0.9": "HTTP/0.9",
    "1.0": "HTTP/1.0",
    "1.1": "HTTP/1.1",
    "2": "HTTP/2.0",
    "3": "HTTP/3.0",
}
# Default when an entry names no version: the protocols that only ever run over HTTP/2.
_H2_ONLY: Final = frozenset({"http2", "grpc"})
_FORM: Final = "application/x-www-form-urlencoded"
# Chrome's `_webSocketMessages[].type` per direction.
_WS_SENT, _WS_RECEIVED = "send", "receive"
# HarStream: serialized entries held to put them in start order (entries come in response order, and
# `--jobs` interleaves its workers' output) before the oldest is written. Beyond it an entry that
# started earlier than one already written is written out of order (HAR readers sort; the spec only
# prefers sorted entries).
REORDER_BYTES: Final = 16 << 20
# HarStream: WebSocket upgrade entries wait for their messages, the messages costing about their data
# plus this each; past WS_HELD_BYTES the oldest upgrade is written with the messages it has, and later
# ones of its connection are counted in the log's comment.
WS_MESSAGE_COST: Final = 200
WS_HELD_BYTES: Final = 32 << 20
# Upgrades written early whose ids are remembered (to count their late messages rather than skip them).
WS_WRITTEN_IDS: Final = 65_536
_SWITCHING_PROTOCOLS: Final = 101


@functools.cache
def creator() -> dict[str, str]:
    """The `log.creator` object: this library's distribution and version."""
    import importlib.metadata  # here: most callers (`wiretide analyze`) never need the metadata machinery

    try:
        version = importlib.metadata.version("wiretide-common")
    except importlib.metadata.PackageNotFoundError:  # a source tree without metadata
        version = "0.0.0"
    return {"name": "wiretide", "version": version}


def is_http(protocol: str) -> bool:
    """An entry of `protocol` is one HTTP exchange: the protocol table's `http` KFL flag holds for it."""
    return "http" in info(protocol).kfl_flags and protocol != WEBSOCKET


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _pairs(mapping: Any) -> list[dict[str, str]]:
    """`{name: value | [values]}` → HAR name/value pairs, one per value."""
    out: list[dict[str, str]] = []
    for name, value in _dict(mapping).items():
        for one in value if isinstance(value, list) else (value,):
            out.append({"name": str(name), "value": "" if one is None else str(one)})
    return out


def iso_time(ts_ns: int) -> str:
    """ISO 8601 in UTC with milliseconds, as browsers write `startedDateTime`."""
    secs, ns = divmod(int(ts_ns), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ns // 1_000_000:03d}Z"


def _http_version(value: Any, protocol: str) -> str:
    if isinstance(value, str) and value:
        if value.upper().startswith("HTTP/"):
            return value
        return HTTP_VERSIONS.get(value, f"HTTP/{value}")
    return HTTP_VERSIONS["2" if protocol in _H2_ONLY else "1.1"]


def _decoded(body: Mapping[str, Any]) -> bytes | None:
    """The decoded body bytes the Entry kept, or None when it kept none."""
    text = body.get("content")
    if not isinstance(text, str):
        return None
    if body.get("encoding") == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None
    return text.encode("utf-8")


def _content(side: Mapping[str, Any], headers: Mapping[str, Any], grpc: bool) -> dict[str, Any]:
    """HAR `content` (or the base of `postData`): decoded size, bytes saved, text and its encoding."""
    body = _dict(side.get("body"))
    wire = int(body.get("size") or 0)
    mime = str(body.get("mime") or headers.get("content-type") or "")
    content: dict[str, Any] = {"size": wire, "mimeType": mime}
    if grpc:
        # The captured messages as the dissector decoded them (protobuf as JSON or a field tree).
        messages = side.get("messages")
        if isinstance(messages, list) and messages:
            content["text"] = orjson.dumps(messages).decode("utf-8")
            content["comment"] = f"{len(messages)} gRPC message(s) as decoded by wiretide, not the wire bytes"
    else:
        data = _decoded(body)
        if data is not None and (data or wire):
            if body.get("encoding") == "base64":
                content["encoding"] = "base64"
            content["text"] = body["content"]
            if not body.get("truncated"):
                content["size"] = len(data)
                if headers.get("content-encoding"):
                    content["compression"] = len(data) - wire  # bytes the coding saved
    if body.get("truncated"):
        content["comment"] = "body truncated at capture"
    return content


def _post_data(req: Mapping[str, Any], headers: Mapping[str, Any], grpc: bool) -> dict[str, Any] | None:
    content = _content(req, headers, grpc)
    if "text" not in content:
        return None
    post: dict[str, Any] = {"mimeType": content["mimeType"], "text": content["text"]}
    if content.get("encoding"):
        post["_encoding"] = content["encoding"]  # HAR 1.2's postData has no `encoding`: a custom field
    if content["mimeType"].split(";", 1)[0].strip().lower() == _FORM and "_encoding" not in post:
        # Form fields as Chrome lists them beside the text.
        post["params"] = [{"name": k, "value": v} for k, v in parse_qsl(post["text"], keep_blank_values=True)]
    if content.get("comment"):
        post["comment"] = content["comment"]
    return post


def _url(entry: Mapping[str, Any], req: Mapping[str, Any], headers: Mapping[str, Any]) -> str:
    url = req.get("url")
    if not (isinstance(url, str) and "://" in url):
        dst = _dict(entry.get("dst"))
        host = headers.get("host") or f"{dst.get('ip', '')}:{dst.get('port', '')}"
        path = url if isinstance(url, str) and url else (entry.get("path") or "/")
        url = f"http://{host}{path}"
    if entry.get("tls") and url.startswith("http://"):
        url = "https://" + url[len("http://") :]
    return url


def _headers_size(side: Mapping[str, Any], wire_total: Any, version: str) -> int:
    """HTTP/1 header bytes: the message on the wire less its body, unless chunk framing is in between.
    HTTP/2 header blocks are HPACK-compressed and shared with the stream's frames: -1, as Chrome."""
    headers = _dict(side.get("headers"))
    body = _dict(side.get("body"))
    if version not in ("HTTP/1.0", "HTTP/1.1") or not isinstance(wire_total, int) or wire_total <= 0:
        return -1
    if "chunked" in str(headers.get("transfer-encoding", "")).lower():
        return -1
    size = wire_total - int(body.get("size") or 0)
    return size if size > 0 else -1


def har_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One HTTP-carried Entry (HTTP/1, HTTP/2, gRPC, GraphQL) as a HAR 1.2 entry."""
    protocol = str(entry.get("protocol") or "http")
    req = _dict(entry.get("request"))
    resp = _dict(entry.get("response"))
    req_headers = _dict(req.get("headers"))
    resp_headers = _dict(resp.get("headers"))
    grpc = protocol == "grpc"
    version = _http_version(req.get("http_version") or entry.get("version"), protocol)
    sizes = _dict(entry.get("size"))
    method = str(req.get("http_method") or (req.get("method") if not grpc else "POST") or "")
    url = _url(entry, req, req_headers)
    headers = _pairs(req_headers)
    if version == HTTP_VERSIONS["2"]:
        scheme, _, rest = url.partition("://")
        authority, slash, path = rest.partition("/")
        pseudo = {":method": method, ":authority": authority, ":scheme": scheme, ":path": slash + path}
        headers = _pairs(pseudo) + headers
    request: dict[str, Any] = {
        "method": method,
        "url": url,
        "httpVersion": version,
        "cookies": _pairs(req.get("cookies")),
        "headers": headers,
        "queryString": _pairs(req.get("query")),
        "headersSize": _headers_size(req, sizes.get("request"), version),
        "bodySize": int(_dict(req.get("body")).get("size") or 0),
    }
    post = _post_data(req, req_headers, grpc)
    if post is not None:
        request["postData"] = post
    status = resp.get("status")
    answered = bool(resp) and isinstance(status, int) and not isinstance(status, bool)
    resp_version = _http_version(resp.get("http_version"), protocol) if resp else version
    out_headers = _pairs(resp_headers)
    if answered and resp_version == HTTP_VERSIONS["2"]:
        out_headers = [{"name": ":status", "value": str(status)}, *out_headers]
    response: dict[str, Any] = {
        "status": status if answered else 0,
        "statusText": str(resp.get("reason") or ""),
        "httpVersion": resp_version,
        "cookies": _pairs(resp.get("cookies")),
        "headers": out_headers,
        "content": _content(resp, resp_headers, grpc),
        "redirectURL": str(resp_headers.get("location") or ""),
        "headersSize": _headers_size(resp, sizes.get("response"), resp_version) if resp else -1,
        "bodySize": int(_dict(resp.get("body")).get("size") or 0) if resp else -1,
    }
    trailers = _pairs(resp.get("trailers"))
    if trailers:
        response["_trailers"] = trailers
    elapsed_ms = max(0, int(entry.get("elapsed_us") or 0)) / 1000.0
    out: dict[str, Any] = {
        "startedDateTime": iso_time(int(entry.get("timestamp") or 0)),
        "time": elapsed_ms,
        "request": request,
        "response": response,
        "cache": {},
        # The Entry holds the request start and the response end only: all of it is `wait`.
        "timings": {
            "blocked": -1,
            "dns": -1,
            "connect": -1,
            "send": 0,
            "wait": elapsed_ms,
            "receive": 0,
            "ssl": -1,
        },
        "_id": entry.get("id"),
        "_protocol": protocol,
        "_status": status_text(entry),
    }
    dst = _dict(entry.get("dst"))
    if dst.get("ip"):
        out["serverIPAddress"] = str(dst["ip"])
    connection = entry.get("flow_id") or _dict(entry.get("src")).get("port")
    if connection:
        out["connection"] = str(connection)
    error = entry.get("error")
    if isinstance(error, dict):
        out["_error"] = f"{error.get('type')}: {error.get('message')}"
    return out


def _ws_message(entry: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(upgrade entry id, Chrome's `_webSocketMessages` item) for one WebSocket message entry."""
    req = entry.get("request")
    side, kind = (req, _WS_SENT) if isinstance(req, dict) else (entry.get("response"), _WS_RECEIVED)
    if not isinstance(side, dict) or not side.get("upgrade_id"):
        return None
    text = side.get("text")
    return str(side["upgrade_id"]), {
        "type": kind,
        "time": int(entry.get("timestamp") or 0) / 1e9,
        "opcode": int(side.get("opcode") or 0),
        "data": text if isinstance(text, str) else str(side.get("data") or ""),
    }


class HarWriter:
    """Collects Entries (in any batches, in any order) and writes one HAR document of them."""

    __slots__ = ("_entries", "_messages", "_skipped", "_ws_dropped")

    def __init__(self) -> None:
        self._entries: list[tuple[int, dict[str, Any]]] = []
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._ws_dropped: dict[str, int] = {}
        self._skipped = 0

    def add(self, entries: Iterable[Mapping[str, Any]]) -> None:
        for entry in entries:
            protocol = str(entry.get("protocol") or "")
            if protocol == WEBSOCKET:
                found = _ws_message(entry)
                if found is None:
                    self._skipped += 1
                    continue
                upgrade, message = found
                kept = self._messages.setdefault(upgrade, [])
                if len(kept) < MAX_WS_MESSAGES:
                    kept.append(message)
                else:
                    self._ws_dropped[upgrade] = self._ws_dropped.get(upgrade, 0) + 1
            elif is_http(protocol):
                self._entries.append((int(entry.get("timestamp") or 0), har_entry(entry)))
            else:
                self._skipped += 1

    @property
    def count(self) -> int:
        """HAR entries so far."""
        return len(self._entries)

    def document(self, comment: str = "") -> dict[str, Any]:
        """The HAR log: entries by start time, WebSocket messages on their upgrade request."""
        items = [item for _, item in sorted(self._entries, key=lambda pair: pair[0])]
        for item in items:
            messages = self._messages.get(str(item.get("_id")))
            if messages is not None:
                item["_resourceType"] = "websocket"
                item["_webSocketMessages"] = sorted(messages, key=lambda m: m["time"])
                dropped = self._ws_dropped.get(str(item["_id"]))
                if dropped:
                    item["_webSocketMessagesDropped"] = dropped
        log: dict[str, Any] = {"version": HAR_VERSION, "creator": creator(), "pages": [], "entries": items}
        if comment:
            log["comment"] = comment
        return {"log": log}


# An upgrade entry waiting for its WebSocket messages: start ns, HAR entry, messages, bytes charged.
_Held = tuple[int, dict[str, Any], list[dict[str, Any]], int]


class HarStream:
    """Writes one HAR document to `write` as Entries come, holding a bounded amount: what `HarWriter`
    writes, with the same `OPT_INDENT_2` layout, but in constant memory for any number of entries.

    Entries wait in a reorder window of `reorder_bytes` (serialized) so that they come out by start
    time; WebSocket upgrade entries (`101`) wait for their messages within `ws_bytes`. `close()`
    writes what is held and ends the document; call it once, also when nothing was added.
    """

    __slots__ = (
        "_closed",
        "_heap",
        "_held",
        "_late_messages",
        "_reorder_bytes",
        "_seq",
        "_started",
        "_upgrades",
        "_upgrades_bytes",
        "_write",
        "_written",
        "_ws_bytes",
        "_ws_dropped",
        "count",
        "skipped",
    )

    def __init__(
        self,
        write: Callable[[bytes], object],
        *,
        reorder_bytes: int = REORDER_BYTES,
        ws_bytes: int = WS_HELD_BYTES,
    ) -> None:
        self._write = write
        self._reorder_bytes = reorder_bytes
        self._ws_bytes = ws_bytes
        self._heap: list[tuple[int, int, bytes]] = []
        self._held = 0  # serialized bytes in the heap
        self._seq = 0
        # Upgrade entries waiting for their messages, by entry id, oldest first.
        self._upgrades: OrderedDict[str, _Held] = OrderedDict()
        self._upgrades_bytes = 0
        self._ws_dropped: dict[str, int] = {}
        self._written: OrderedDict[str, None] = OrderedDict()  # upgrades written before the end
        self._late_messages = 0
        self._started = False
        self._closed = False
        self.count = 0  # HAR entries so far
        self.skipped = 0  # entries of protocols HAR does not carry, messages without their upgrade

    def add(self, entries: Iterable[Mapping[str, Any]]) -> None:
        for entry in entries:
            protocol = str(entry.get("protocol") or "")
            if protocol == WEBSOCKET:
                self._message(entry)
            elif is_http(protocol):
                self.count += 1
                start = int(entry.get("timestamp") or 0)
                item = har_entry(entry)
                if item["response"]["status"] == _SWITCHING_PROTOCOLS and entry.get("id"):
                    cost = len(str(entry.get("id"))) + 4096
                    self._upgrades[str(entry["id"])] = (start, item, [], cost)
                    self._upgrades_bytes += cost
                    self._bound_upgrades()
                else:
                    self._push(start, item)
            else:
                self.skipped += 1

    def _message(self, entry: Mapping[str, Any]) -> None:
        found = _ws_message(entry)
        if found is None:
            self.skipped += 1
            return
        upgrade, message = found
        held = self._upgrades.get(upgrade)
        if held is None:
            if upgrade in self._written:
                self._late_messages += 1
            else:
                self.skipped += 1  # its upgrade was before the capture (HarWriter leaves these out too)
            return
        start, item, messages, cost = held
        if len(messages) >= MAX_WS_MESSAGES:
            self._ws_dropped[upgrade] = self._ws_dropped.get(upgrade, 0) + 1
            return
        messages.append(message)
        add = WS_MESSAGE_COST + len(message["data"])
        self._upgrades[upgrade] = (start, item, messages, cost + add)
        self._upgrades_bytes += add
        self._bound_upgrades()

    def _bound_upgrades(self) -> None:
        while self._upgrades_bytes > self._ws_bytes and self._upgrades:
            upgrade = next(iter(self._upgrades))
            self._written[upgrade] = None
            if len(self._written) > WS_WRITTEN_IDS:
                self._written.popitem(last=False)
            self._release(upgrade)

    def _release(self, upgrade: str) -> None:
        start, item, messages, cost = self._upgrades.pop(upgrade)
        self._upgrades_bytes -= cost
        if messages:
            item["_resourceType"] = "websocket"
            item["_webSocketMessages"] = sorted(messages, key=lambda m: m["time"])
        dropped = self._ws_dropped.pop(upgrade, 0)
        if dropped:
            item["_webSocketMessagesDropped"] = dropped
        self._push(start, item)

    def _push(self, start: int, item: dict[str, Any]) -> None:
        data = _indented(item)
        heapq.heappush(self._heap, (start, self._seq, data))
        self._seq += 1
        self._held += len(data)
        while self._held > self._reorder_bytes:
            self._pop()

    def _pop(self) -> None:
        _start, _seq, data = heapq.heappop(self._heap)
        self._held -= len(data)
        if not self._started:
            self._write(self._head())
            self._started = True
        else:
            self._write(b",\n")
        self._write(data)

    def _head(self) -> bytes:
        creator_json = orjson.dumps(creator(), option=orjson.OPT_INDENT_2).replace(b"\n", b"\n    ")
        return (
            b'{\n  "log": {\n    "version": '
            + orjson.dumps(HAR_VERSION)
            + b',\n    "creator": '
            + creator_json
            + b',\n    "pages": [],\n    "entries": [\n'
        )

    def close(self, comment: str = "") -> None:
        """Write every entry still held, then the end of the document."""
        if self._closed:
            return
        self._closed = True
        for upgrade in list(self._upgrades):
            self._release(upgrade)
        while self._heap:
            self._pop()
        if self._late_messages:
            late = (
                f"{self._late_messages} WebSocket message(s) left out: their connection's entry was "
                f"written before they came (more than {self._ws_bytes} bytes of messages were waiting)"
            )
            comment = f"{comment}; {late}" if comment else late
        tail = b"\n    ]" if self._started else b""
        if not self._started:
            self._write(self._head()[: -len(b"[\n")] + b"[]")
        if comment:
            tail += b',\n    "comment": ' + orjson.dumps(comment)
        self._write(tail + b"\n  }\n}\n")


def _indented(item: dict[str, Any]) -> bytes:
    """One HAR entry as `orjson.dumps(document, option=OPT_INDENT_2)` lays it out at its depth (JSON
    text holds no raw newline inside a string, so lines are whole)."""
    return b"      " + orjson.dumps(item, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n      ")


def har_log(entries: Iterable[Mapping[str, Any]], comment: str = "") -> dict[str, Any]:
    """A HAR document of the HTTP-carried entries among `entries` (others are skipped)."""
    writer = HarWriter()
    writer.add(entries)
    return writer.document(comment)
