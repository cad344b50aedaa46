"""Redaction at the source: secrets in an entry are replaced by a fixed marker before it leaves the
dissector — before anything is stored, streamed, exported as spans or handed to an agent or an LLM.

Rule: a value a rule names never leaves this module in clear — not in the entry's fields, not in its
URL or query string, not inside a body that is written back — and every place that was redacted is
listed in the entry's `redacted`; the marker is one fixed string, so nothing tells a value's length.
The rules are plain data (`Rules`, from settings or a rules file); `Redactor` compiles them once
(regexes, name caches) and then does per entry only what could match: a body is scanned by one
regex before it is ever parsed, a JSON key rule touches only JSON, a card check only digit runs.

Names (headers, cookies, query parameters, JSON keys, form fields) compare case-insensitively and
ignoring `-` and `_` (`api_key`, `API-Key` and `apiKey` are one name); `*` in a rule matches any run of
characters (`*token` names `access_token` and `X-Auth-Token`).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote_plus

import orjson

# What replaces a redacted value: fixed, so that it says nothing about the value (not even its length).
MARKER: Final = "[REDACTED]"
# Places listed in one entry's `redacted`; beyond it values are still redacted, only not listed again.
MAX_MARKS: Final = 64
# JSON nesting walked member by member; deeper containers are redacted whole (bounded recursion).
MAX_DEPTH: Final = 64
# Names remembered per rule (a header name is looked up on every message); cleared when full.
NAME_CACHE_MAX: Final = 4096
# Header values remembered per Redactor (the gate of a value, a Cookie's redacted form): at most this
# many, each at most this long (longer ones are rarely repeated); cleared when full.
VALUE_CACHE_MAX: Final = 4096
VALUE_CACHE_LEN: Final = 512
# Card numbers: 13-19 digits (ISO/IEC 7812), optionally grouped by single spaces or dashes.
CARD_MIN_DIGITS: Final = 13
CARD_MAX_DIGITS: Final = 19

# The defaults (docs/security.md, "Redaction"). Headers and gRPC metadata share one namespace (HTTP/2
# carries both as header fields); the HTTP/2 `authorization` header is the same name as HTTP/1's.
DEFAULT_HEADERS: Final = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "*token",
    "*secret*",
    "*password*",
    "*apikey",
    "x-amz-security-token",
    "x-goog-iam-authorization-token",
)
# Every cookie's value (names are kept: which cookies were sent is useful, their values are sessions).
DEFAULT_COOKIES: Final = ("*",)
DEFAULT_QUERY: Final = (
    "*password*",
    "passwd",
    "pwd",
    "*secret*",
    "*token",
    "*apikey",
    "key",
    "auth",
    "code",  # OAuth authorization codes (RFC 6749 §4.1.2)
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-goog-signature",
    "x-goog-credential",
)
# JSON keys at any depth, form fields, GraphQL variables, gRPC JSON fields, `name=value` in text.
DEFAULT_KEYS: Final = (
    "*password*",
    "passwd",
    "pwd",
    "*secret*",
    "*token",
    "*apikey",
    "privatekey",
    "credentials",
    "authorization",
    "proxyauthorization",
)
# Protocols whose entries are left alone unless configured otherwise: names and addresses in DNS are
# what an investigation looks for, not secrets.
DEFAULT_SKIPPED: Final = ("dns",)

# Credentials in free text (any header value, query value, text body): the scheme is kept and the
# credential replaced. RFC 9110 §11.4 (Bearer per RFC 6750 §2.1, Basic per RFC 7617), AWS SigV4, and
# JWTs in compact form (RFC 7519). `_bearer`/`_basic` reject prose ("basic information").
_CREDENTIAL: Final = re.compile(r"\b([Bb]earer|BEARER|[Bb]asic|BASIC)([ \t]+)([A-Za-z0-9._~+/-]{8,}=*)")
_AWS_SIGV4: Final = re.compile(r"\b(AWS4-HMAC-SHA256[ \t]+)([^\r\n]+)")
_JWT: Final = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# Bearer tokens shorter than this, or made of letters only, are words ("Bearer authentication").
_MIN_BEARER: Final = 16
_CARD: Final = re.compile(r"(?<![0-9.])[2-6][0-9](?:[ -]?[0-9]){11,17}(?![0-9])")
# Digit runs, cheaply: digits become "0", the separators a card may be grouped by vanish, anything
# else becomes "x"; 13 zeros in a row then mean a run worth the card regex (C-speed translate + find).
_RUN_TABLE: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
# Text shorter than this holds no credential (`Basic ` + 8) nor card number (13 digits).
_MIN_FREE: Final = 13
_RUN_DROP: Final = b" -"
_RUN: Final = b"0" * 13
_LOOSE_TABLE: Final = bytes(0x30 if 0x30 <= b <= 0x39 or b in _RUN_DROP else 0x78 for b in range(256))
# Texts longer than this are first tested for a digit at all (ten memchr passes) before the
# translate; shorter ones are translated at once (a `re` call costs more than that for them).
_DIGIT_PROBE_FROM: Final = 4096
_DIGITS: Final = "0123456789"
# `_CREDENTIAL` without its word boundary, one per case of the scheme's first letter: a pattern that
# starts with a literal lets `re` skip to its candidates (the boundary is checked at each).
_SCHEME_UPPER: Final = re.compile(r"B(?:earer|EARER|asic|ASIC)[ \t]+[A-Za-z0-9._~+/-]{8}")
_SCHEME_LOWER: Final = re.compile(r"b(?:earer|asic)[ \t]+[A-Za-z0-9._~+/-]{8}")
_MIN_SCHEME: Final = len("Basic 12345678")  # the shortest text `_CREDENTIAL` matches
# ASCII letters and digits, the rarest in text first (English letter frequencies): a name's rarest
# letter, absent in both cases from an ASCII text, rules the name out with one memchr per case.
_RARITY: Final = "qjzxvkwyfbgpmucldhrsnioate9876543210"
# JSON object keys, for deciding whether a document could hold a named key before parsing it.
_JSON_KEY: Final = re.compile(r'"([^"\\]{0,256})"\s*:')
_FORM_MIME: Final = "x-www-form-urlencoded"
_JSON_FIRST: Final = frozenset("{[")
# A JSON object member whose string is a GraphQL document: its inline arguments are text to scan.
_DOCUMENT_KEYS: Final = frozenset({"query", "query_text"})
# Characters of a text's start that identify where a summary quotes it.
_QUOTE_PROBE: Final = 20
_COOKIE_HEADERS: Final = frozenset({"cookie", "set-cookie"})
# Trace context: ids that the tracer needs intact (a 16-digit run in a trace id can pass the Luhn check).
# The free-text rules skip them; a header-name rule that names one still applies. Not `baggage`: its
# values are the application's, and may be anything.
TRACE_CONTEXT_HEADERS: Final = frozenset(
    {"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
     "uber-trace-id", "x-cloud-trace-context", "x-amzn-trace-id", "sentry-trace", "x-datadog-trace-id",
     "x-datadog-parent-id"}
)  # fmt: skip


class RulesError(ValueError):
    """A rule that cannot be used (a bad regex, an unknown key in a rules file)."""


@dataclass(frozen=True, slots=True)
class Rules:
    """What to redact, as plain data: built from settings or a rules file, compiled by `Redactor`."""

    headers: tuple[str, ...] = DEFAULT_HEADERS
    cookies: tuple[str, ...] = DEFAULT_COOKIES
    query: tuple[str, ...] = DEFAULT_QUERY
    keys: tuple[str, ...] = DEFAULT_KEYS
    patterns: tuple[str, ...] = ()  # regexes over bodies, paths, header and query values
    cards: bool = True  # card numbers (digit runs of 13-19 that pass the Luhn check)
    credentials: bool = True  # bearer/basic/digest credentials and JWTs in any value
    skip_protocols: tuple[str, ...] = DEFAULT_SKIPPED
    enabled: bool = True

    @classmethod
    def none(cls) -> Rules:
        """Redact nothing."""
        return cls(enabled=False)


NO_DEFAULTS: Final = Rules(
    headers=(), cookies=(), query=(), keys=(), cards=False, credentials=False, skip_protocols=DEFAULT_SKIPPED
)
_LIST_KEYS: Final = ("headers", "cookies", "query", "keys", "patterns", "skip_protocols")
_BOOL_KEYS: Final = ("defaults", "cards", "credentials", "enabled")


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))


def split_names(text: str) -> tuple[str, ...]:
    """A comma-separated setting as names (blanks dropped)."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def rules_from_document(doc: Any, base: Rules | None = None) -> Rules:
    """Rules from a parsed rules file (a mapping: the lists `headers`, `cookies`, `query`, `keys`,
    `patterns`, `skip_protocols`; the switches `defaults`, `cards`, `credentials`, `enabled`).

    With `defaults: false` the built-in names are dropped (and `cards`/`credentials` default to off);
    otherwise the file's names are added to `base` (the built-in rules when None).
    """
    if not isinstance(doc, Mapping):
        raise RulesError("a rules file holds one mapping (headers, cookies, query, keys, patterns, ...)")
    unknown = sorted(str(k) for k in doc if k not in _LIST_KEYS and k not in _BOOL_KEYS)
    if unknown:
        raise RulesError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(_LIST_KEYS + _BOOL_KEYS)}")
    lists: dict[str, tuple[str, ...]] = {}
    for key in _LIST_KEYS:
        value = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RulesError(f"{key} must be a list of strings")
        lists[key] = tuple(value)
    switches: dict[str, bool] = {}
    for key in _BOOL_KEYS:
        if key in doc:
            if not isinstance(doc[key], bool):
                raise RulesError(f"{key} must be true or false")
            switches[key] = doc[key]
    start = (base or Rules()) if switches.get("defaults", True) else NO_DEFAULTS
    rules = Rules(
        headers=_union(start.headers, lists["headers"]),
        cookies=_union(start.cookies, lists["cookies"]),
        query=_union(start.query, lists["query"]),
        keys=_union(start.keys, lists["keys"]),
        patterns=_union(start.patterns, lists["patterns"]),
        cards=switches.get("cards", start.cards),
        credentials=switches.get("credentials", start.credentials),
        skip_protocols=lists["skip_protocols"] if "skip_protocols" in doc else start.skip_protocols,
        enabled=switches.get("enabled", start.enabled),
    )
    Redactor(rules)  # every regex compiles, or the error names it now
    return rules


def parse_rules_text(text: str, yaml: bool, base: Rules | None = None) -> Rules:
    """A rules file's text (YAML when `yaml`, else JSON) as Rules, its names added to `base` (the
    built-in rules when None) unless it says `defaults: false`; RulesError says what is wrong."""
    try:
        if yaml:
            import yaml as yaml_lib  # type: ignore[import-untyped]  # only a YAML rules file needs it

            doc = yaml_lib.safe_load(text)
        else:
            doc = orjson.loads(text)
    except Exception as exc:  # both parsers' errors: a message for the operator, not a traceback
        raise RulesError(f"does not parse: {exc}") from None
    return rules_from_document({} if doc is None else doc, base)


def rules_from_settings(
    enabled: bool = True,
    defaults: bool = True,
    rules_file: tuple[str, bool] | None = None,
    headers: str = "",
    cookies: str = "",
    query: str = "",
    keys: str = "",
) -> Rules:
    """The rules the dissector's settings describe: the built-in ones (unless `defaults` is off), then
    a rules file's (its text and whether it is YAML), then the comma-separated extra names per kind."""
    if not enabled:
        return Rules.none()
    start = Rules() if defaults else NO_DEFAULTS
    if rules_file is not None:
        start = parse_rules_text(rules_file[0], rules_file[1], start)
    return Rules(
        headers=_union(start.headers, split_names(headers)),
        cookies=_union(start.cookies, split_names(cookies)),
        query=_union(start.query, split_names(query)),
        keys=_union(start.keys, split_names(keys)),
        patterns=start.patterns,
        cards=start.cards,
        credentials=start.credentials,
        skip_protocols=start.skip_protocols,
        enabled=start.enabled,
    )


def is_yaml(path: str) -> bool:
    """Whether a rules file is YAML (by its name); anything else is read as JSON."""
    return path.lower().endswith((".yaml", ".yml"))


def _normal(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def _glob_regex(rule: str) -> str:
    return ".*".join(re.escape(part) for part in _normal(rule).split("*"))


def _text_regex(rule: str) -> str | None:
    """A rule name as it may be written in text (`api_key`, `API-Key`); None for `*` alone."""
    parts = _normal(rule).split("*")
    if not any(parts):
        return None
    out = []
    for i, part in enumerate(parts):
        if i:
            out.append(r"[\w-]*")
        out.append("[-_]?".join(re.escape(c) for c in part))
    return "".join(out)


def _stem(rule: str) -> str:
    """The longest literal run of a normalised rule: text naming it contains this once lowercased and
    stripped of `-` and `_`."""
    return max(_normal(rule).split("*"), key=len)


class Names:
    """A set of name rules (globs), matched against normalised names with a bounded cache."""

    __slots__ = ("_cache", "_regex", "everything")

    def __init__(self, rules: Iterable[str]) -> None:
        globs = sorted({_glob_regex(r) for r in rules if r.strip()})
        self.everything = ".*" in globs
        self._regex: re.Pattern[str] | None = re.compile("|".join(globs)) if globs else None
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return self._regex is not None

    def match(self, name: str) -> bool:
        hit = self._cache.get(name)
        if hit is not None:
            return hit
        regex = self._regex
        hit = regex is not None and regex.fullmatch(_normal(name)) is not None
        if len(self._cache) >= NAME_CACHE_MAX:
            self._cache.clear()
        self._cache[name] = hit
        return hit


def luhn(digits: str) -> bool:
    """The Luhn (mod 10) check of ISO/IEC 7812-1 Annex B."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    text = m.group(0)
    digits = text.replace(" ", "").replace("-", "")
    if CARD_MIN_DIGITS <= len(digits) <= CARD_MAX_DIGITS and luhn(digits):
        return MARKER
    return text


def _credential(m: re.Match[str]) -> str:
    scheme, space, value = m.group(1), m.group(2), m.group(3)
    if scheme[0] in "Bb" and scheme[1] in "eE":  # Bearer: a token, not a word
        if len(value) < _MIN_BEARER or value.isalpha():
            return m.group(0)
    else:  # Basic: base64 of `user:password` (RFC 7617 §2)
        try:
            plain = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return m.group(0)
        if b":" not in plain:
            return m.group(0)
    return f"{scheme}{space}{MARKER}"


def _aws(m: re.Match[str]) -> str:
    return m.group(1) + MARKER


def _quoted_marker(m: re.Match[str]) -> str:
    value = m.group(2)
    if value[:1] in "\"'":
        return f"{m.group(1)}{value[0]}{MARKER}{value[0]}"
    return m.group(1) + MARKER


def _has_digit_run(text: str) -> bool:
    """Whether `text` holds 13 or more digits in a row (spaces and dashes between them allowed)."""
    n = len(text)
    if n < CARD_MIN_DIGITS:
        return False
    if n > _DIGIT_PROBE_FROM:  # memchr per digit first: a long text often holds none
        for digit in _DIGITS:
            if digit in text:
                break
        else:
            return False
    raw = text.encode("utf-8", "surrogatepass")
    # Separators counted as digits first (a table without deletions is the fast path of translate);
    # only a text that then shows a run is translated again with the separators dropped. (`find`, not
    # `in`: `in` on bytes first tries the needle as an integer, an exception per call.)
    if raw.translate(_LOOSE_TABLE).find(_RUN) < 0:
        return False
    return raw.translate(_RUN_TABLE, _RUN_DROP).find(_RUN) >= 0


def _credential_at(text: str) -> bool:
    """Whether a Bearer/Basic credential, an AWS signature or a JWT may be in `text`: a one-letter
    test (memchr) before each substring search, then `_CREDENTIAL` at each candidate only."""
    if "J" in text and "eyJ" in text:
        return True
    if "W" in text and "AWS4-HMAC-SHA256" in text:
        return True
    if len(text) < _MIN_SCHEME:
        return False
    if "B" in text and _scheme_at(_SCHEME_UPPER, text):
        return True
    if "b" not in text or ("asic" not in text and "earer" not in text):  # before a `re` call's cost
        return False
    return _scheme_at(_SCHEME_LOWER, text)


def _scheme_at(finder: re.Pattern[str], text: str) -> bool:
    """Whether `_CREDENTIAL` matches where `finder` (its body without the word boundary, from a
    literal first letter that `re` skips to) does."""
    m = finder.search(text)
    while m is not None:
        at = m.start()
        if _CREDENTIAL.match(text, at) is not None:
            return True
        m = finder.search(text, at + 1)
    return False


def _rare_letter(stem: str) -> str:
    """The letter of `stem` that text holds least often (both cases are tested); "" when none is an
    ASCII letter or digit (then the stem is always a candidate)."""
    best = ""
    rank = len(_RARITY)
    for ch in stem:
        at = _RARITY.find(ch)
        if 0 <= at < rank:
            best, rank = ch, at
    return best


class _Marks:
    """The places redacted in one entry, in order, without repeats, at most MAX_MARKS."""

    __slots__ = ("excerpts", "items")

    def __init__(self) -> None:
        # Both allocated by their first use: most entries' marks stay empty.
        self.items: dict[str, None] | None = None
        # (before, after) of message texts whose start a summary may quote (a WebSocket message's).
        self.excerpts: list[tuple[str, str]] | None = None

    def add(self, where: str) -> None:
        items = self.items
        if items is None:
            items = self.items = {}
        if len(items) < MAX_MARKS:
            items[where] = None

    def excerpt(self, before: str, after: str) -> None:
        excerpts = self.excerpts
        if excerpts is None:
            excerpts = self.excerpts = []
        excerpts.append((before, after))


# The parts of a request or response `Redactor._message` reads; a message with none of them (most
# non-HTTP protocols' fields) has nothing for it to do.
_MESSAGE_PARTS: Final = frozenset(
    {"headers", "trailers", "informational", "cookies", "query", "body", "messages", "variables",
     "query_text", "text"}
)  # fmt: skip
# Where a side's headers, trailers and body are marked: the same strings for every entry.
_PLACES: Final = {
    side: (side + ".headers", side + ".trailers", side + ".body") for side in ("request", "response")
}
_NO_MARKS: Final = _Marks()  # stands for "nothing redacted yet" (never added to)


def _has_parts(msg: dict[str, Any]) -> bool:
    """Whether a message holds one of `_MESSAGE_PARTS`. A loop over its keys, each a set lookup: a
    message has a handful of keys, and `frozenset.isdisjoint(dict)` costs a method call and an
    iterator object more. (A loop rather than any(): the same compiled, cheaper interpreted.)"""
    for key in msg:  # noqa: SIM110
        if key in _MESSAGE_PARTS:
            return True
    return False


class Redactor:
    """A rule set compiled once (regexes, name caches); `redact(entry)` changes an entry in place."""

    __slots__ = (
        "_assign",
        "_cards",
        "_cookie_values",
        "_cookies",
        "_credentials",
        "_gates",
        "_headers",
        "_key_stems",
        "_keys",
        "_paths",
        "_patterns",
        "_query",
        "_quiet_json",
        "_set_cookie_values",
        "_skip",
        "_stems",
        "enabled",
        "rules",
    )

    def __init__(self, rules: Rules | None = None) -> None:
        r = rules if rules is not None else Rules()
        self.rules = r
        self.enabled = r.enabled
        self._headers = Names(r.headers)
        self._cookies = Names(r.cookies)
        self._query = Names(r.query)
        self._keys = Names(r.keys)
        self._skip = frozenset(r.skip_protocols)
        # Per value, remembered (bounded): the text-rule gate of a header value, a Cookie's and a
        # Set-Cookie's redacted form. They depend only on the value and these rules.
        self._gates: dict[str, bool] = {}
        self._cookie_values: dict[str, str] = {}
        self._set_cookie_values: dict[str, str] = {}
        self._paths: dict[str, str] = {}  # an entry path's redacted form (the path itself: unchanged)
        # JSON bodies (typed by the dissector) that hold nothing for a rule: small responses to the
        # same calls repeat their bodies, and the answer depends only on the text and these rules.
        self._quiet_json: dict[str, None] = {}
        self._cards = r.cards
        self._credentials = r.credentials
        patterns = []
        for text in r.patterns:
            try:
                patterns.append(re.compile(text))
            except re.error as exc:
                raise RulesError(f"pattern {text!r} does not compile: {exc}") from None
        self._patterns = tuple(patterns)
        names = sorted({t for t in (_text_regex(k) for k in r.keys) if t is not None})
        # `name: value` or `name=value` in text, for the key rules: a name standing alone (not the tail
        # of a longer word), optionally quoted, then a quoted or bare value. The lookbehind lets each
        # word start be tried once, so a long word costs linear time.
        self._assign: re.Pattern[str] | None = (
            re.compile(
                r"(?i)(?<![\w-])([\"']?(?:" + "|".join(names) + r")[\"']?[ \t]*[:=][ \t]*)"
                r"(\"(?:[^\"\\\n]|\\.){1,4096}\"|'[^'\n]{1,4096}'|[^\s&,;\"'<>{}\[\]()]{1,4096})"
            )
            if names
            else None
        )
        # Whether text could name a key rule: the rules' literal stems, in the lowercased text.
        stems = sorted({s for s in (_stem(k) for k in r.keys) if s})
        self._stems = _Stems.of(stems)
        # Whether JSON could hold a named key: every rule's stem, and the GraphQL document keys; None
        # (always look) when a rule has no literal part to look for (`**`).
        blank = any(k.strip() and not _stem(k) and _glob_regex(k) != ".*" for k in r.keys)
        self._key_stems: _Stems | None = None if blank else _Stems.of([*stems, *_DOCUMENT_KEYS])

    # ---- the entry --------------------------------------------------------------------------

    def redact(self, entry: dict[str, Any]) -> list[str]:
        """Redact `entry` in place; set and return its `redacted` places (nothing is added when none).

        Never raises: should a rule fail on some input, the request and response objects are dropped
        whole (fail closed) and `redacted` says so.
        """
        if not self.enabled or entry.get("protocol") in self._skip:
            return []
        try:
            return self._redact(entry)
        except Exception:  # a defect here must neither stop the pipeline nor let a value through
            entry["request"] = entry["response"] = None
            entry["redacted"] = ["request", "response"]
            return ["request", "response"]

    def _redact(self, entry: dict[str, Any]) -> list[str]:
        # A message holding none of the parts `_message` reads (a Redis command, a Kafka request …)
        # is passed over after a look at its few keys instead of a lookup per part.
        marks = _NO_MARKS
        req = entry.get("request")
        if type(req) is dict and _has_parts(req):
            marks = _Marks()
            self._message(req, "request", marks)
        resp = entry.get("response")
        if type(resp) is dict and _has_parts(resp):
            if marks is _NO_MARKS:
                marks = _Marks()
            self._message(resp, "response", marks)
        path = entry.get("path")
        if type(path) is str and path:
            new = self._path(path)
            if new is not None:
                entry["path"] = new
                summary = entry.get("summary")
                if type(summary) is str:
                    entry["summary"] = summary.replace(path, new)
                if type(req) is dict:
                    _request_path(req, path, new)
                if marks is _NO_MARKS:
                    marks = _Marks()
                marks.add("path")
        if marks is _NO_MARKS:
            return []
        excerpts = marks.excerpts
        if excerpts:
            summary = entry.get("summary")
            if type(summary) is str:
                entry["summary"] = _requote(summary, excerpts)
        items = marks.items
        if not items:
            return []
        found = list(items)
        old = entry.get("redacted")
        entry["redacted"] = list(dict.fromkeys((*old, *found))) if type(old) is list else found
        return found

    def _path(self, path: str) -> str | None:
        """`_free(path, True)`, remembered per path (bounded): a path (a URL path, a Redis key, a Kafka
        topic) recurs across entries, and the answer depends only on it and these rules."""
        if len(path) > VALUE_CACHE_LEN:
            return self._free(path, True)
        cache = self._paths
        known = cache.get(path)
        if known is not None:
            return None if known == path else known  # the path itself: nothing to redact in it
        new = self._free(path, True)
        if len(cache) >= VALUE_CACHE_MAX:
            cache.clear()
        cache[path] = path if new is None else new
        return new

    def _message(self, msg: dict[str, Any], side: str, marks: _Marks) -> None:
        places = _PLACES.get(side)
        if places is None:
            places = (side + ".headers", side + ".trailers", side + ".body")
        headers = msg.get("headers")
        if type(headers) is dict and headers:
            self._headers_of(headers, places[0], marks)
        trailers = msg.get("trailers")
        if type(trailers) is dict and trailers:
            self._headers_of(trailers, places[1], marks)
        info = msg.get("informational")
        if type(info) is list:
            for item in info:
                if type(item) is dict and type(item.get("headers")) is dict:
                    self._headers_of(item["headers"], side + ".informational.headers", marks)
        cookies = msg.get("cookies")
        if type(cookies) is dict and cookies and self._cookies:
            names = self._cookies
            for name, value in cookies.items():
                if value and names.match(name):
                    cookies[name] = MARKER
                    marks.add(f"{side}.cookies.{name}")
        query = msg.get("query")
        if type(query) is dict and query:
            self._query_of(msg, query, side, marks)
        body = msg.get("body")
        if type(body) is dict:
            self._body(body, places[2], marks)
        messages = msg.get("messages")  # gRPC: JSON by a schema, or schemaless protobuf fields
        if type(messages) is list:
            for item in messages:
                if type(item) is dict:
                    if "json" in item:
                        self._tree(item, "json", side + ".messages[*].json", marks)
                    fields = item.get("fields")
                    if type(fields) is list:
                        self._protobuf(fields, side + ".messages[*].fields", marks)
        if "variables" in msg or "query_text" in msg:  # GraphQL
            self._graphql(msg, side, marks)
            batch = msg.get("batch")
            if type(batch) is list:
                for op in batch:
                    if type(op) is dict:
                        self._graphql(op, side + ".batch[*]", marks)
        text = msg.get("text")  # a WebSocket text message (or close reason)
        if type(text) is str and text:
            new = self._json_text(text, side + ".text", marks)
            if new is not None:
                msg["text"] = new
                marks.excerpt(text, new)

    # ---- headers, cookies, query ------------------------------------------------------------

    def _headers_of(self, headers: dict[str, Any], where: str, marks: _Marks) -> None:
        rules = self._headers
        cookies = self._cookies
        gate = False  # whether a text rule may match one of the values no name rule took
        for name, value in headers.items():
            if type(value) is not str or not value:
                continue
            if rules.match(name):
                scheme, sp, cred = value.partition(" ")
                # `Authorization: Bearer x` keeps its scheme: which kind of credential is not secret.
                headers[name] = f"{scheme} {MARKER}" if sp and cred and scheme.isalpha() else MARKER
                marks.add(f"{where}.{name}")
            elif name in _COOKIE_HEADERS and cookies:
                new = self._cookie_value(value, name == "set-cookie")
                if new != value:
                    headers[name] = new
                    marks.add(f"{where}.{name}")
            elif name in TRACE_CONTEXT_HEADERS:
                continue  # ids, not secrets: a card-like digit run in them must not break the trace
            elif not gate:
                gate = self._value_gate(value)
        # When one of those values opens the gate, the text rules run on every value (as written now).
        if gate:
            for name, value in headers.items():
                if type(value) is str and value and value != MARKER and name not in TRACE_CONTEXT_HEADERS:
                    new_value = self._free(value, False)
                    if new_value is not None:
                        headers[name] = new_value
                        marks.add(f"{where}.{name}")

    def _value_gate(self, value: str) -> bool:
        """`_may_free(value, False)`, remembered for values of a cacheable length (keep-alive
        connections send the same header values again and again)."""
        if len(value) < CARD_MIN_DIGITS or len(value) > VALUE_CACHE_LEN:
            return self._may_free(value, False)
        cache = self._gates
        hit = cache.get(value)
        if hit is not None:
            return hit
        hit = self._may_free(value, False)
        if len(cache) >= VALUE_CACHE_MAX:
            cache.clear()
        cache[value] = hit
        return hit

    def _cookie_value(self, value: str, set_cookie: bool) -> str:
        """`_cookie_header` of a Cookie or Set-Cookie value, remembered like `_value_gate`."""
        if len(value) > VALUE_CACHE_LEN:
            return _cookie_header(value, self._cookies, set_cookie)
        cache = self._set_cookie_values if set_cookie else self._cookie_values
        hit = cache.get(value)
        if hit is not None:
            return hit
        new = _cookie_header(value, self._cookies, set_cookie)
        if len(cache) >= VALUE_CACHE_MAX:
            cache.clear()
        cache[value] = new
        return new

    def _query_of(self, msg: dict[str, Any], query: dict[str, Any], side: str, marks: _Marks) -> None:
        names = self._query
        changed: dict[str, list[str]] = {}
        for name, values in query.items():
            if type(values) is not list:
                continue
            if names.match(name):
                new = [MARKER if v else v for v in values]
                if new == values:
                    continue
            else:
                new = values
                for i, v in enumerate(values):
                    nv = self._query_value(v, side, name, marks)
                    if new is values:
                        if nv != v:  # the first change: copy what came before
                            new = values[:i]
                            new.append(nv)
                    else:
                        new.append(nv)
                if new is values or new == values:
                    continue
            query[name] = new
            changed[name] = new
            marks.add(f"{side}.query.{name}")
        if changed:
            qs = msg.get("query_string")
            if type(qs) is str and qs:
                new_qs = _rewrite_query(qs, changed)
                msg["query_string"] = new_qs
                url = msg.get("url")
                if type(url) is str and "?" in url:
                    msg["url"] = url.partition("?")[0] + "?" + new_qs

    def _query_value(self, value: Any, side: str, name: str, marks: _Marks) -> Any:
        if type(value) is not str or not value:
            return value
        # A JSON value (GraphQL over GET: `variables={"password": ...}`) is walked; else plain text.
        if value[:1] in _JSON_FIRST:
            new = self._json_text(value, f"{side}.query.{name}", marks)
        else:
            new = self._free(value, True)
        return value if new is None else new

    # ---- bodies -----------------------------------------------------------------------------

    def _body(self, body: dict[str, Any], where: str, marks: _Marks) -> None:
        content = body.get("content")
        if type(content) is not str or not content:
            return
        encoding = body.get("encoding")
        if encoding == "json":  # typed as JSON by the dissector (media type and first byte)
            # `_json_text(content, where, marks, True)`, with the texts its gates pass over
            # remembered (bounded): small responses to the same calls repeat their bodies.
            short = len(content) <= VALUE_CACHE_LEN
            quiet = self._quiet_json
            if short and content in quiet:
                return
            if content[:1] in _JSON_FIRST or content.lstrip()[:1] in _JSON_FIRST:
                free = self._may_free(content, False)
                if not free and not self._may_name(content):
                    if short:
                        if len(quiet) >= VALUE_CACHE_MAX:
                            quiet.clear()
                        quiet[content] = None
                    return
                new = self._json_walked(content, where, marks, free)
            else:
                new = self._json_text(content, where, marks, True)
        elif encoding == "text":
            mime = body.get("mime")
            if type(mime) is str and _FORM_MIME in mime.lower():
                new = self._form(content, where, marks)
            else:
                new = self._json_text(content, where, marks)
        else:
            return  # base64: binary, nothing a text rule can read
        if new is not None:
            body["content"] = new

    def _json_text(self, text: str, where: str, marks: _Marks, typed: bool = False) -> str | None:
        """A string that may hold JSON: parsed and walked when it does (key rules on its keys, text
        rules on its strings when the whole text passes their gate), else the text rules over it.
        None when nothing changed."""
        if text[:1] in _JSON_FIRST or text.lstrip()[:1] in _JSON_FIRST:
            free = self._may_free(text, False)
            if not free and not self._may_name(text) and (typed or not self._names_in(text)):
                # No key the rules name and nothing a text rule reads: not even parsed. (Text that
                # only starts like JSON is also checked for `name=value`.)
                return None
            return self._json_walked(text, where, marks, free)
        new = self._free(text, True)  # text that does not start like JSON: `name: value` by regex
        if new is not None:
            marks.add(where)
        return new

    def _json_walked(self, text: str, where: str, marks: _Marks, free: bool) -> str | None:
        """`_json_text` past its gates: `text` (starting like JSON) parsed and walked, or the text
        rules over it when it does not parse to an object or array."""
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            doc = None
        if type(doc) is dict or type(doc) is list:
            holder: dict[str, Any] = {"$": doc}
            if self._walk(holder, where, marks, free):
                return orjson.dumps(holder["$"]).decode("utf-8")
            return None
        new = self._free(text, True)  # JSON cut by the body cap: `name: value` by regex
        if new is not None:
            marks.add(where)
        return new

    def _form(self, content: str, where: str, marks: _Marks) -> str | None:
        """application/x-www-form-urlencoded fields (WHATWG URL §5.1)."""
        keys = self._keys
        out = []
        changed = False
        for pair in content.split("&"):
            name, eq, value = pair.partition("=")
            plain = unquote_plus(name) if "%" in name or "+" in name else name
            if eq and value and keys.match(plain):
                out.append(f"{name}={MARKER}")
                marks.add(f"{where}.{plain}")
                changed = True
                continue
            if eq and value:
                decoded = unquote_plus(value) if "%" in value or "+" in value else value
                new = self._free(decoded, True)
                if new is not None:
                    out.append(f"{name}={quote(new, safe='[]')}")
                    marks.add(f"{where}.{plain}")
                    changed = True
                    continue
            out.append(pair)
        return "&".join(out) if changed else None

    def _walk(
        self, node: dict[str, Any] | list[Any], where: str, marks: _Marks, free: bool, depth: int = 0
    ) -> bool:
        """Redact a parsed JSON value in place: the values of named keys; with `free`, the text rules
        on strings (and card numbers written as JSON numbers). True when anything changed. Deeper than
        MAX_DEPTH, a container's members are replaced whole (fail closed, bounded stack)."""
        if depth >= MAX_DEPTH:
            if isinstance(node, dict):
                for key in node:
                    node[key] = MARKER
            elif node:
                node[:] = [MARKER]
            marks.add(where)
            return True
        changed = False
        depth += 1
        keys = self._keys
        if type(node) is dict:
            for key, value in node.items():
                if value is None or value == "" or type(value) is bool:
                    continue
                if keys.match(key):
                    node[key] = MARKER
                    marks.add(f"{where}.{key}")
                    changed = True
                elif type(value) is dict or type(value) is list:
                    if self._walk(value, f"{where}.{key}", marks, free, depth):
                        changed = True
                elif free or (type(value) is str and key in _DOCUMENT_KEYS):
                    new = self._scalar(value, key in _DOCUMENT_KEYS)
                    if new is not None:
                        node[key] = new
                        marks.add(f"{where}.{key}")
                        changed = True
        elif type(node) is list:
            inner = where + "[*]"
            for i, value in enumerate(node):
                if type(value) is dict or type(value) is list:
                    if self._walk(value, inner, marks, free, depth):
                        changed = True
                elif free:
                    new = self._scalar(value, False)
                    if new is not None:
                        node[i] = new
                        marks.add(inner)
                        changed = True
        return changed

    def _scalar(self, value: Any, document: bool) -> Any:
        if type(value) is str:
            return self._free(value, document)
        if type(value) is int and self._cards and 10 ** (CARD_MIN_DIGITS - 1) <= value < 10**CARD_MAX_DIGITS:
            return self._free(str(value), False)
        return None

    def _tree(self, holder: dict[str, Any], key: str, where: str, marks: _Marks) -> None:
        """A parsed JSON value held at `holder[key]` (gRPC JSON messages, GraphQL variables)."""
        value = holder[key]
        if type(value) is dict or type(value) is list:
            self._walk(value, where, marks, True)
        elif type(value) is str and value:
            new = self._free(value, False)
            if new is not None:
                holder[key] = new
                marks.add(where)

    def _protobuf(self, fields: list[Any], where: str, marks: _Marks) -> None:
        """Schemaless protobuf (numbers, no names): the text rules on every decoded string."""
        for item in fields:
            if type(item) is not dict:
                continue
            text = item.get("string")
            if type(text) is str and text:
                new = self._free(text, True)
                if new is not None:
                    item["string"] = new
                    marks.add(where)
            inner = item.get("message")
            if type(inner) is list:
                self._protobuf(inner, where, marks)

    def _graphql(self, op: dict[str, Any], where: str, marks: _Marks) -> None:
        if "variables" in op:
            self._tree(op, "variables", where + ".variables", marks)
        text = op.get("query_text")
        if type(text) is str and text:
            new = self._free(text, True)  # inline arguments: `login(password: "...")`
            if new is not None:
                op["query_text"] = new
                marks.add(where + ".query_text")

    # ---- free text --------------------------------------------------------------------------

    def _may_name(self, text: str) -> bool:
        """Could the JSON `text` hold a key the rules name (or a GraphQL document)? Its keys are found
        by one regex and checked each once; a key with an escape in it means maybe. Before that, a
        text that holds none of the rules' stems (case-folded) holds no such key."""
        keys = self._keys
        if not keys:
            return False
        if keys.everything or "\\" in text:
            return True
        if self._key_stems is not None and not _stem_in(text, self._key_stems):
            return False
        for key in set(_JSON_KEY.findall(text)):  # noqa: SIM110  (a loop compiles to direct calls)
            if keys.match(key) or key in _DOCUMENT_KEYS:
                return True
        return False

    def _may_free(self, text: str, assign: bool) -> bool:
        """Could a text rule match `text`? Substring tests at C speed; the regexes only when one says
        maybe. `assign`: also the `name=value` rule for the key names."""
        if self._patterns:
            return True
        if self._credentials and _credential_at(text):
            return True
        if self._cards and len(text) >= CARD_MIN_DIGITS and _has_digit_run(text):
            return True
        return assign and self._assign is not None and self._names_in(text)

    def _free(self, text: str, assign: bool) -> str | None:
        """The text rules (credentials, `name=value` for named keys when `assign`, patterns, card
        numbers) on one string; None when nothing matched (usually decided by `_may_free` alone)."""
        if len(text) < _MIN_FREE and not self._patterns and not (assign and ("=" in text or ":" in text)):
            return None  # shorter than any credential or card number, and no `name=value` in it
        new = text
        if self._credentials and _credential_at(text):
            new = _CREDENTIAL.sub(_credential, new)
            if "AWS4-HMAC-SHA256" in new:
                new = _AWS_SIGV4.sub(_aws, new)
            if "eyJ" in new:
                new = _JWT.sub(MARKER, new)
        if assign and self._assign is not None and self._names_in(text):
            new = self._assign.sub(_quoted_marker, new)
        for pattern in self._patterns:
            new = pattern.sub(MARKER, new)
        if self._cards and len(text) >= CARD_MIN_DIGITS and _has_digit_run(text):
            new = _CARD.sub(_card, new)
        return None if new == text else new

    def _names_in(self, text: str) -> bool:
        """Whether `text` may write `name=value` for a key the rules name (its stems, case-folded)."""
        if "=" not in text and ":" not in text:
            return False
        return _stem_in(text, self._stems)


@dataclass(frozen=True, slots=True)
class _Stems:
    """Literal stems to look for in case-folded text, grouped by their rarest letter: a group whose
    letter an ASCII text lacks in both cases is ruled out by two memchr passes, no folding."""

    letters: tuple[str, ...]  # each group's letter, lowercase
    uppers: tuple[str, ...]  # the same, uppercase
    groups: tuple[tuple[str, ...], ...]  # the stems of each group
    always: tuple[str, ...]  # stems without an ASCII letter or digit: always looked for
    every: tuple[str, ...]  # all of them

    @classmethod
    def of(cls, stems: Iterable[str]) -> _Stems:
        by_letter: dict[str, list[str]] = {}
        always: list[str] = []
        every: list[str] = []
        for stem in stems:
            every.append(stem)
            letter = _rare_letter(stem)
            if letter:
                by_letter.setdefault(letter, []).append(stem)
            else:
                always.append(stem)
        letters = tuple(sorted(by_letter, key=_RARITY.find))
        return cls(
            letters,
            tuple(k.upper() for k in letters),
            tuple(tuple(by_letter[k]) for k in letters),
            tuple(always),
            tuple(every),
        )


def _fold(text: str) -> str:
    """Lowercased, without `-` and `_` (as names are compared)."""
    folded = text.lower()
    if "-" in folded:
        folded = folded.replace("-", "")
    if "_" in folded:
        folded = folded.replace("_", "")
    return folded


def _stem_in(text: str, stems: _Stems) -> bool:
    """Whether `text`, lowercased and without `-` and `_`, contains one of `stems`."""
    if not text.isascii():  # only ASCII letters lowercase to ASCII letters in ASCII text (U+212A: k)
        folded = _fold(text)
        for stem in stems.every:  # noqa: SIM110  (a loop compiles to direct calls)
            if stem in folded:
                return True
        return False
    folded = ""
    for stem in stems.always:
        if not folded:
            folded = _fold(text)
        if stem in folded:
            return True
    letters = stems.letters
    uppers = stems.uppers
    for i in range(len(letters)):
        if letters[i] in text or uppers[i] in text:
            if not folded:
                folded = _fold(text)
            for stem in stems.groups[i]:
                if stem in folded:
                    return True
    return False


def _requote(summary: str, excerpts: list[tuple[str, str]]) -> str:
    """A summary that quotes the start of a redacted text, quoting the redacted text instead (to the
    same length: the quote runs to the end of the summary)."""
    for old, new in excerpts:
        at = summary.find(old[:_QUOTE_PROBE])
        if at >= 0:
            summary = summary[:at] + new[: len(summary) - at]
    return summary


def _request_path(req: dict[str, Any], old: str, new: str) -> None:
    """A redacted path written into the request's own copies of it."""
    if req.get("path") == old:
        req["path"] = new
    url = req.get("url")
    if type(url) is str:
        req["url"] = url.replace(old, new, 1)
    if type(req.get("path_segments")) is list:
        req["path_segments"] = [s for s in new.split("/") if s]


def _cookie_header(value: str, names: Names, set_cookie: bool) -> str:
    """A Cookie header (`a=1; b=2`, RFC 6265 §5.4) or Set-Cookie (`a=1; Path=/`, §4.1) with the values
    of named cookies replaced; Set-Cookie attributes are kept. HTTP/1 joins repeated Set-Cookie
    fields with `, `; each is handled (an `Expires` date's comma is not followed by `name=`)."""
    if set_cookie:
        out = []
        for part in _SET_COOKIE_SPLIT.split(value):
            pair, semi, attrs = part.partition(";")
            name, eq, val = pair.partition("=")
            named = eq and val.strip() and names.match(name.strip())
            out.append(f"{name}={MARKER}{semi}{attrs}" if named else part)
        return ", ".join(out)
    pieces = []
    for pair in value.split(";"):
        name, eq, val = pair.partition("=")
        if eq and val.strip() and names.match(name.strip()):
            pieces.append(f"{name}={MARKER}")
        else:
            pieces.append(pair)
    return ";".join(pieces)


_SET_COOKIE_SPLIT: Final = re.compile(r",\s*(?=[^;,=\s]+=)")


def _rewrite_query(qs: str, changed: Mapping[str, list[str]]) -> str:
    """The raw query string with the values of `changed` parameters written anew, in their order."""
    remaining = {k: list(v) for k, v in changed.items()}
    out = []
    for pair in qs.split("&"):
        name, eq, value = pair.partition("=")
        plain = unquote_plus(name) if "%" in name or "+" in name else name
        values = remaining.get(plain)
        if values and eq:
            new = values.pop(0)
            out.append(f"{name}={new if new == MARKER else quote(new, safe='[]')}")
        else:
            out.append(pair)
    return "&".join(out)


DEFAULT_REDACTOR: Final = Redactor(Rules())
NO_REDACTION: Final = Redactor(Rules.none())
