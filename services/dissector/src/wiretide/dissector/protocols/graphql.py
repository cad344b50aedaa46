"""GraphQL over HTTP (GraphQL-over-HTTP draft): operations recognised inside HTTP/1.1 and HTTP/2 entries.

Rule: this module only reads request/response objects another parser produced (it never sees bytes
on the wire) and never raises; a request is GraphQL when its path or its body says so — POST JSON
with `query` or a persisted-query hash, GET with `query=`, or a batch (JSON array) of those.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Final

import orjson

from wiretide.dissector.api import Presented

# Query text scanned for the operation; longer documents are cut (the root fields are near the top).
MAX_QUERY_SCAN: Final = 64 * 1024
# Root fields listed per operation.
MAX_ROOT_FIELDS: Final = 64
# Errors listed from one response.
MAX_ERRORS: Final = 32
# Operations of a batched request that are described one by one.
MAX_BATCH: Final = 32
OPERATION_TYPES: Final = frozenset({"query", "mutation", "subscription"})
_KEYWORD_START: Final = re.compile(r"(?:query|mutation|subscription)\b")
# GraphQL spec §2.1 lexical tokens, comments and ignored commas dropped.
_TOKEN: Final = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"|\.\.\.|[_A-Za-z][_0-9A-Za-z]*|-?\d[\d.eE+-]*|[!$&()\:=@\[\]{}|]|#[^\n]*'
)


def _tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text[:MAX_QUERY_SCAN]) if not t.startswith("#")]


def parse_document(text: str, wanted: str | None) -> tuple[str, str | None, list[str]]:
    """(operation type, operation name, root fields) of the selected operation (GraphQL spec §2.3)."""
    toks = _tokens(text)
    ops: list[tuple[str, str | None, list[str]]] = []
    i = 0
    n = len(toks)
    while i < n:
        t = toks[i]
        if t == "{":
            roots, i = _selection(toks, i)
            ops.append(("query", None, roots))
            continue
        if t in OPERATION_TYPES or t == "fragment":
            kind = t
            name = toks[i + 1] if i + 1 < n and toks[i + 1][:1].isalpha() | (toks[i + 1][:1] == "_") else None
            while i < n and toks[i] != "{":
                i += 1
            roots, i = _selection(toks, i)
            if kind != "fragment":
                ops.append((kind, name, roots))
            continue
        i += 1
    if not ops:
        return "query", wanted, []
    for op in ops:
        if wanted is not None and op[1] == wanted:
            return op
    return ops[0]


def _selection(toks: list[str], i: int) -> tuple[list[str], int]:
    """Field names (not aliases) at depth 1 of the selection set opening at toks[i]."""
    roots: list[str] = []
    depth = 0
    paren = 0
    n = len(toks)
    while i < n:
        t = toks[i]
        if t == "(":
            paren += 1
        elif t == ")":
            paren -= 1
        elif paren:
            pass
        elif t == "{":
            depth += 1
        elif t == "}":
            depth -= 1
            if depth <= 0:
                return roots, i + 1
        elif depth == 1 and (t[:1].isalpha() or t[:1] == "_") and toks[i - 1] not in ("...", "on", "@", "$"):
            if i + 2 < n and toks[i + 1] == ":":
                t = toks[i + 2]  # alias: the field is what follows the colon
                i += 2
            if len(roots) < MAX_ROOT_FIELDS and t not in roots:
                roots.append(t)
        i += 1
    return roots, i


def _json(body: dict[str, Any] | None) -> Any:
    if not body or body.get("truncated") or body.get("encoding") not in ("json", "text"):
        return None
    content = body.get("content")
    if not isinstance(content, str) or content[:1] not in ("{", "["):
        return None
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _operation(obj: Any) -> dict[str, Any] | None:
    """One GraphQL request object {query, operationName, variables, extensions} described."""
    if not isinstance(obj, dict):
        return None
    query = obj.get("query")
    ext = obj.get("extensions")
    persisted = ext.get("persistedQuery") if isinstance(ext, dict) else None
    pq_hash = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
    if not isinstance(query, str) and not isinstance(pq_hash, str):
        return None
    wanted = obj.get("operationName") if isinstance(obj.get("operationName"), str) else None
    kind, name, roots = parse_document(query, wanted) if isinstance(query, str) else ("query", wanted, [])
    variables = obj.get("variables")
    return {
        "operation_type": kind,
        "operation_name": name,
        "root_fields": roots,
        "variables": variables if isinstance(variables, dict) else {},
        "query_text": query[:MAX_QUERY_SCAN] if isinstance(query, str) else None,
        "persisted_hash": pq_hash,
    }


def describe(req: dict[str, Any]) -> dict[str, Any] | None:
    """The GraphQL view of an HTTP request object, or None when it is not GraphQL."""
    method = req.get("http_method") or req.get("method")
    path = (req.get("path") or "").lower()
    if method == "GET":
        q = req.get("query") or {}
        if "query" not in q and "extensions" not in q:
            return None
        obj: dict[str, Any] = {"query": (q.get("query") or [None])[0]}
        if "operationName" in q:
            obj["operationName"] = q["operationName"][0]
        for key in ("variables", "extensions"):
            if key in q:
                with contextlib.suppress(orjson.JSONDecodeError):
                    obj[key] = orjson.loads(q[key][0])
        op = _operation(obj)
        return op if op is not None and _plausible(op, path) else None
    body = req.get("body")
    mime = (body or {}).get("mime", "").lower()
    if "graphql" in mime and body and not body.get("truncated") and body.get("encoding") == "text":
        return _operation({"query": body.get("content")})  # application/graphql: the document itself
    data = _json(body)
    if isinstance(data, list) and data:
        ops = [op for op in (_operation(x) for x in data[:MAX_BATCH]) if op is not None]
        if not ops:
            return None
        first = dict(ops[0])
        first["batch"] = ops
        return first
    op = _operation(data)
    return op if op is not None and _plausible(op, path) else None


def _plausible(op: dict[str, Any], path: str) -> bool:
    """Outside a /graphql path, a `query` value must look like a document (not a search string)."""
    if "graphql" in path or op["persisted_hash"] is not None:
        return True
    text = (op["query_text"] or "").lstrip()
    return bool(op["root_fields"]) and (text[:1] == "{" or _KEYWORD_START.match(text) is not None)


REDACTED: Final = "[redacted]"


def redact_variables(req: dict[str, Any], names: frozenset[str] | None = None) -> int:
    """Replace GraphQL variable values in place — all of them, or those whose name (any depth, case
    insensitive) is in `names` — in the request and its batch; returns how many were replaced."""
    wanted = {n.lower() for n in names} if names is not None else None

    def scrub(value: Any) -> tuple[Any, int]:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            count = 0
            for key, inner in value.items():
                if wanted is None or key.lower() in wanted:
                    out[key] = REDACTED
                    count += 1
                else:
                    out[key], n = scrub(inner)
                    count += n
            return out, count
        if isinstance(value, list):
            items = [scrub(v) for v in value]
            return [v for v, _ in items], sum(n for _, n in items)
        return value, 0

    total = 0
    for op in [req, *req.get("batch", ())]:
        if isinstance(op.get("variables"), dict):
            op["variables"], n = scrub(op["variables"])
            total += n
    return total


def enrich_request(req: dict[str, Any]) -> None:
    """Adds the GraphQL fields to a request object in place when it is a GraphQL request."""
    try:
        op = describe(req)
    except Exception:  # a describer never raises into a parser
        return
    if op is not None:
        req.update(op)


def enrich_response(req: dict[str, Any], resp: dict[str, Any]) -> None:
    """`errors` from the response body; HTTP 200 with errors marks the entry as a GraphQL error."""
    if "operation_type" not in req:
        return
    data = _json(resp.get("body"))
    items = data if isinstance(data, list) else [data]
    errors: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("errors"), list):
            for err in item["errors"]:
                if len(errors) >= MAX_ERRORS:
                    break
                if isinstance(err, dict):
                    errors.append({k: err[k] for k in ("message", "path", "extensions") if k in err})
                else:
                    errors.append({"message": str(err)})
    resp["errors"] = errors
    if errors and resp.get("status") == 200:
        message = errors[0].get("message")
        resp["graphql_error"] = {"type": "graphql", "message": str(message) if message is not None else ""}


def classify_http1(req: dict[str, Any] | None, resp: dict[str, Any] | None) -> dict[str, Any]:
    """For an HTTP/1.1 entry: the GraphQL fields added in place, and the Entry fields it overrides."""
    if req is None:
        return {}
    enrich_request(req)
    if "operation_type" not in req:
        return {}
    out: dict[str, Any] = {"protocol": "graphql", "method": req["operation_type"]}
    if resp is not None:
        enrich_response(req, resp)
        if resp.get("graphql_error"):
            out["error"] = dict(resp["graphql_error"])
    out["summary"] = present(req, resp or {}, None, str(req.get("http_version") or "1.1")).summary
    return out


def present(req: dict[str, Any], resp: dict[str, Any], stream: int | None, version: str) -> Presented:
    """`query GetUser {user}` → status: the operation in its own terms."""
    kind = req.get("operation_type", "query")
    name = req.get("operation_name")
    roots = ",".join(req.get("root_fields") or [])
    status = resp.get("status") if resp else None
    summary = f"{kind} {name or '(anonymous)'}" + (f" {{{roots}}}" if roots else "")
    if status is not None:
        summary += f" → {status}"
    if resp and resp.get("errors"):
        summary += f" ({len(resp['errors'])} errors)"
    return Presented(
        method=kind,
        path=req.get("path"),
        status=status,
        summary=summary,
        version=version,
        stream=str(stream) if stream is not None else None,
    )
