"""The OpenAPI 3.1 document of the REST API, served at /api/openapi.json (kept beside the routes)."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": "bad request",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_JSON = {"application/json": {"schema": {"type": "object"}}}


def _q(
    name: str, description: str, schema: dict[str, Any] | None = None, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def document() -> dict[str, Any]:
    kfl = _q("q", "KFL filter (docs/kfl.md); empty = everything")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Wiretide API",
            "version": "0.1.0",
            "description": "Entries (API calls) captured from the network.",
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string"},
                        "position": {"type": "integer"},
                        "hint": {"type": "string"},
                    },
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/whoami": {
                "get": {
                    "summary": "The caller: subject, role, namespaces (null: all), how it authenticated "
                    "(docs/security.md)",
                    "responses": {
                        "200": {"description": "the principal", "content": _JSON},
                        "401": {"description": "no or a wrong credential", "content": _JSON},
                    },
                }
            },
            "/api/health": {
                "get": {
                    "summary": "Health of every service and NATS",
                    "responses": {"200": {"description": "health", "content": _JSON}},
                }
            },
            "/api/entries": {
                "get": {
                    "summary": "Entries matching a KFL query, newest first",
                    "parameters": [
                        kfl,
                        _q("limit", "page size (capped at 1000)", {"type": "integer", "minimum": 0}),
                        _q("before", "cursor: entries older than this (from `next`)"),
                        _q("after", "cursor: entries newer than this"),
                    ],
                    "responses": {"200": {"description": "a page", "content": _JSON}, "400": _ERROR},
                }
            },
            "/api/entries/{id}": {
                "get": {
                    "summary": "One entry with its bodies",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {"200": {"description": "the entry", "content": _JSON}, "404": _ERROR},
                }
            },
            "/api/entries/{id}/pcap": {
                "get": {
                    "summary": "The packets of the entry's flow, as pcapng, from the capture recorder",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {
                            "description": "pcapng",
                            "content": {
                                "application/vnd.tcpdump.pcap": {
                                    "schema": {"type": "string", "format": "binary"}
                                }
                            },
                        },
                        "404": _ERROR,
                        "503": _ERROR,
                    },
                }
            },
            "/api/export.har": {
                "get": {
                    "summary": "HAR 1.2 of the matching HTTP entries",
                    "parameters": [
                        kfl,
                        _q("limit", "entries at most (capped at 5000)", {"type": "integer", "minimum": 0}),
                    ],
                    "responses": {"200": {"description": "HAR", "content": _JSON}, "400": _ERROR},
                }
            },
            "/api/stats": {
                "get": {
                    "summary": "Counts, rates, error rates and latency percentiles, grouped",
                    "parameters": [
                        kfl,
                        _q(
                            "by",
                            "grouping",
                            {
                                "type": "string",
                                "enum": [
                                    "protocol",
                                    "status",
                                    "status_class",
                                    "method",
                                    "path",
                                    "src",
                                    "dst",
                                    "edge",
                                    "node",
                                ],
                            },
                        ),
                    ],
                    "responses": {"200": {"description": "groups", "content": _JSON}, "400": _ERROR},
                }
            },
            "/api/traces/{trace_id}": {
                "get": {
                    "summary": "One reconstructed trace: its spans with link kind and confidence",
                    "parameters": [
                        {"name": "trace_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {"description": "spans", "content": _JSON},
                        "400": _ERROR,
                        "404": _ERROR,
                        "503": _ERROR,
                    },
                }
            },
            "/api/traces": {
                "get": {
                    "summary": "Traces whose spans match a KFL query",
                    "parameters": [
                        kfl,
                        _q("start", "from (ns since the epoch)", {"type": "integer", "minimum": 0}),
                        _q("end", "until (ns since the epoch)", {"type": "integer", "minimum": 0}),
                        _q("limit", "traces at most", {"type": "integer", "minimum": 0}),
                    ],
                    "responses": {
                        "200": {"description": "trace summaries", "content": _JSON},
                        "400": _ERROR,
                        "503": _ERROR,
                    },
                }
            },
            "/api/servicemap": {
                "get": {
                    "summary": "Workloads and the edges between them: protocol, rate, errors, latency",
                    "parameters": [kfl, _q("window", "how far back, e.g. 15m, or ns")],
                    "responses": {
                        "200": {"description": "nodes and edges", "content": _JSON},
                        "400": _ERROR,
                        "503": _ERROR,
                    },
                }
            },
            "/api/protocols": {
                "get": {
                    "summary": "The protocol table: per protocol its family, status text and error rules, "
                    "KFL flags and fields, span naming",
                    "responses": {"200": {"description": "the table", "content": _JSON}},
                }
            },
            "/api/kfl/validate": {
                "post": {
                    "summary": "Check a KFL query; problems carry a position and a hint",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["query"],
                                    "properties": {"query": {"type": "string"}},
                                }
                            }
                        },
                    },
                    "responses": {"200": {"description": "verdict", "content": _JSON}, "400": _ERROR},
                }
            },
        },
        "security": [{}, {"bearer": []}],
    }
