"""HAR 1.2 from HTTP entries: the one conversion used by `wiretide analyze --format har` and the
gateway's `/api/export.har`.

Rule: only what the entry holds is written — no invented timings; a body that was truncated on
capture says so in `content.comment`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

HTTP_PROTOCOLS = frozenset({"http", "http2", "grpc", "graphql"})
CREATOR = {"name": "wiretide", "version": "0.1.0"}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _pairs(mapping: Any) -> list[dict[str, str]]:
    if not isinstance(mapping, dict):
        return []
    out: list[dict[str, str]] = []
    for name, value in mapping.items():
        values = value if isinstance(value, list) else [value]
        out.extend({"name": str(name), "value": str(v)} for v in values)
    return out


def _iso(ts_ns: int) -> str:
    secs, ns = divmod(int(ts_ns), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ns // 1_000_000:03d}Z"


def _content(body: Any, headers: dict[str, Any]) -> dict[str, Any]:
    body = _dict(body)
    content: dict[str, Any] = {
        "size": int(body.get("size") or 0),
        "mimeType": str(body.get("mime") or headers.get("content-type") or ""),
    }
    text = body.get("content")
    if text is not None:
        if body.get("encoding") == "base64":
            content["encoding"] = "base64"
        content["text"] = text if isinstance(text, str) else str(text)
    if body.get("truncated"):
        content["comment"] = "body truncated at capture"
    return content


def _http_version(value: Any, protocol: str) -> str:
    if isinstance(value, str) and value:
        return value if value.upper().startswith("HTTP") else f"HTTP/{value}"
    return "HTTP/2" if protocol in ("http2", "grpc") else "HTTP/1.1"


def _url(entry: dict[str, Any], req: dict[str, Any], headers: dict[str, Any]) -> str:
    url = req.get("url")
    if isinstance(url, str) and "://" in url:
        return url
    dst = _dict(entry.get("dst"))
    host = headers.get("host") or headers.get(":authority") or f"{dst.get('ip', '')}:{dst.get('port', '')}"
    scheme = "https" if entry.get("tls") else "http"
    path = url if isinstance(url, str) and url else (entry.get("path") or "/")
    return f"{scheme}://{host}{path}"


def har_entry(entry: dict[str, Any]) -> dict[str, Any]:
    req = _dict(entry.get("request"))
    resp = _dict(entry.get("response"))
    req_headers = _dict(req.get("headers"))
    resp_headers = _dict(resp.get("headers"))
    protocol = str(entry.get("protocol", "http"))
    elapsed_ms = float(entry.get("elapsed_us") or 0) / 1000.0
    size = _dict(entry.get("size"))
    request: dict[str, Any] = {
        "method": str(entry.get("method") or req.get("method") or ""),
        "url": _url(entry, req, req_headers),
        "httpVersion": _http_version(req.get("http_version"), protocol),
        "cookies": _pairs(req.get("cookies")),
        "headers": _pairs(req_headers),
        "queryString": _pairs(req.get("query")),
        "headersSize": -1,
        "bodySize": int((req.get("body") or {}).get("size") or 0) if isinstance(req.get("body"), dict) else 0,
    }
    if isinstance(req.get("body"), dict) and req["body"].get("content") is not None:
        post = _content(req["body"], req_headers)
        request["postData"] = {"mimeType": post["mimeType"], "text": post.get("text", "")}
        if post.get("encoding"):
            request["postData"]["encoding"] = post["encoding"]
    status = resp.get("status", entry.get("status"))
    response = {
        "status": int(status) if isinstance(status, int) and not isinstance(status, bool) else 0,
        "statusText": str(resp.get("reason") or ""),
        "httpVersion": _http_version(resp.get("http_version"), protocol),
        "cookies": _pairs(resp.get("cookies")),
        "headers": _pairs(resp_headers),
        "content": _content(resp.get("body"), resp_headers),
        "redirectURL": str(resp_headers.get("location") or ""),
        "headersSize": -1,
        "bodySize": int(size.get("response") or -1) if size else -1,
    }
    dst = _dict(entry.get("dst"))
    out: dict[str, Any] = {
        "startedDateTime": _iso(int(entry.get("timestamp") or 0)),
        "time": elapsed_ms,
        "request": request,
        "response": response,
        "cache": {},
        "timings": {"send": 0, "wait": elapsed_ms, "receive": 0},
        "_id": entry.get("id"),
        "_protocol": protocol,
    }
    if dst.get("ip"):
        out["serverIPAddress"] = str(dst["ip"])
    if entry.get("flow_id"):
        out["connection"] = str(entry["flow_id"])
    if entry.get("error"):
        out["comment"] = f"{entry['error'].get('type')}: {entry['error'].get('message')}"
    return out


def har_log(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A HAR document of the HTTP-family entries among `entries` (others are skipped)."""
    items = [har_entry(e) for e in entries if e.get("protocol") in HTTP_PROTOCOLS]
    items.sort(key=lambda h: h["startedDateTime"])
    return {"log": {"version": "1.2", "creator": CREATOR, "pages": [], "entries": items}}
