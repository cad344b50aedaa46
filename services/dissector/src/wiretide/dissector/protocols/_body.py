"""Message bodies: content-coding decoded within a bound, then typed (json, text or base64).

Rule: the decoded output never exceeds the cap (a decompression bomb costs at most the cap), and
nothing here raises on bad bytes — a body that does not decode is kept as it came, base64.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any, Final
from urllib.parse import unquote_plus

import brotli  # type: ignore[import-untyped]

# zlib wbits: 16+15 = gzip wrapper, 15 = zlib wrapper, -15 = raw deflate (RFC 9110 §8.4.1).
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
_ZLIB_WBITS: Final = zlib.MAX_WBITS
_RAW_WBITS: Final = -zlib.MAX_WBITS

_JSON_START: Final = frozenset(b'{["tfn-0123456789'[i : i + 1] for i in range(17))
_TEXT_MIME_HINTS: Final = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded", "yaml", "csv")
# What a Content-Type value says of a body, by the value: (may be JSON, is text). A connection sends
# the same few values again and again; bounded like the HTTP/1 parse caches (emptied when full).
_MIME_KINDS: Final[dict[str, tuple[bool, bool]]] = {}
_MIME_KINDS_MAX: Final = 1024
_MIME_KEY_LEN: Final = 256


def form_pairs(qs: str, limit: int) -> dict[str, list[str]]:
    """application/x-www-form-urlencoded pairs (WHATWG URL §5.1) as `urllib.parse.parse_qs(qs,
    keep_blank_values=True)` reads them, the first `limit` of them (every one when `limit` < 0);
    names and values without `%` or `+` are taken as they are."""
    query: dict[str, list[str]] = {}
    pairs = qs.split("&") if limit < 0 else qs.split("&", limit)[:limit]
    for pair in pairs:
        if not pair:
            continue
        k, _, v = pair.partition("=")
        if "%" in k or "+" in k:
            k = unquote_plus(k)
        if "%" in v or "+" in v:
            v = unquote_plus(v)
        vals = query.get(k)
        if vals is None:
            query[k] = [v]
        else:
            vals.append(v)
    return query


def _mime_kind(mime: str) -> tuple[bool, bool]:
    """(`json` in the lowercased media type, it names text or is empty)."""
    kind = _MIME_KINDS.get(mime)
    if kind is None:
        lower = mime.lower()
        kind = ("json" in lower, not lower or any(h in lower for h in _TEXT_MIME_HINTS))
        if len(mime) <= _MIME_KEY_LEN:
            if len(_MIME_KINDS) >= _MIME_KINDS_MAX:
                _MIME_KINDS.clear()
            _MIME_KINDS[mime] = kind
    return kind


def _inflate(data: bytes, wbits: int, cap: int) -> tuple[bytes, bool]:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, cap + 1)
    return out[:cap], len(out) > cap or bool(d.unconsumed_tail)


def decode_content(data: bytes, coding: str, cap: int) -> tuple[bytes, bool, str | None]:
    """(decoded bytes, truncated by cap, error) for one Content-Encoding value."""
    coding = coding.strip().lower()
    try:
        if coding in ("gzip", "x-gzip"):
            out, cut = _inflate(data, _GZIP_WBITS, cap)
        elif coding == "deflate":  # RFC 9110 says zlib-wrapped; some servers send raw deflate
            try:
                out, cut = _inflate(data, _ZLIB_WBITS, cap)
            except zlib.error:
                out, cut = _inflate(data, _RAW_WBITS, cap)
        elif coding == "br":
            dec = brotli.Decompressor()
            out = dec.process(data, output_buffer_limit=cap + 1)
            cut = len(out) > cap
            out = out[:cap]
        elif coding in ("", "identity"):
            return data, False, None
        else:
            return data, False, f"unsupported content-encoding {coding}"
    except (zlib.error, brotli.error) as exc:
        return data, False, f"{coding} does not decode: {exc}"
    return out, cut, None


def body_object(raw: bytes, total: int, headers: dict[str, str], cap: int, truncated: bool) -> dict[str, Any]:
    """The Entry body object {size, mime, encoding, content, truncated} (DESIGN.md §3)."""
    mime = headers.get("content-type", "")
    body: dict[str, Any] = {
        "size": total,
        "mime": mime,
        "encoding": "text",
        "content": "",
        "truncated": truncated,
    }
    if not raw:
        return body
    data = raw
    coding = headers.get("content-encoding")
    if coding:
        for one in reversed(coding.split(",")):  # codings apply in listed order; undo from the last
            data, cut, err = decode_content(data, one, cap)
            if err is not None:
                body["decode_error"] = err
                data = raw
                break
            if cut:
                body["truncated"] = True
    json_like, text_like = _mime_kind(mime)
    if json_like and not body["truncated"] and data[:1] in _JSON_START:
        # Typed by its media type and first byte; a full parse per body costs more than it tells.
        try:
            body["content"] = data.decode("utf-8")
            body["encoding"] = "json"
            return body
        except UnicodeDecodeError:
            pass
    if text_like:
        try:
            body["content"] = data.decode("utf-8")
            return body
        except UnicodeDecodeError:
            pass
    body["encoding"] = "base64"
    body["content"] = base64.b64encode(data).decode("ascii")
    return body
