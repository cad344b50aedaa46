"""Protocols carried inside HTTP/1.1 messages: gRPC-Web and GraphQL, recognised on finished entries.

Rule: an overlay reads the request/response objects the HTTP/1.1 parser built and never the wire; the
first overlay that recognises a pair wins (gRPC-Web by content type, then GraphQL by path and body).
"""

from __future__ import annotations

from typing import Any

from wiretide.dissector.protocols import graphql, grpc


def classify_http1(req: dict[str, Any] | None, resp: dict[str, Any] | None) -> dict[str, Any]:
    """Entry fields to override for an HTTP/1.1 pair (empty when it is plain HTTP)."""
    if req is not None and req.get("method") == "GET":
        # The usual exchange, settled without asking the overlays: gRPC-Web is always a POST, and a
        # GraphQL GET carries its document (or a persisted-query hash) in `query` or `extensions`.
        q = req.get("query")
        if not q or ("query" not in q and "extensions" not in q):
            return {}
    try:
        return grpc.classify_http1(req, resp) or graphql.classify_http1(req, resp)
    except Exception:  # an overlay never takes an entry down; the pair stays plain HTTP
        return {}
