"""The OpenAPI 3.1 document of the REST API, served at /api/openapi.json (kept beside the routes)."""

from __future__ import annotations

from typing import Any

from wiretide.gateway.recording.api import openapi_paths as recording_paths

# With several tracer replicas (docs/deploy.md) an answer merged from those that answered says which did not.
_PARTIAL = "; `partial` lists the tracer replicas that did not answer, when some did not (503 when none did)"
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


def _op(summary: str, ok: str, *errors: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": ok, "content": _JSON}, **{e: _ERROR for e in errors}},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_TEXT: dict[str, Any] = {"type": "string"}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
_TRY = {  # where a draft is tried: the caller's newest entries matching kfl
    "kfl": {"type": "string", "description": "KFL filter of the entries it is tried on"},
    "limit": {"type": "integer", "minimum": 0, "maximum": 1000, "description": "entries (default 200)"},
    "previous": _obj(["source"], source=_TEXT, error=_TEXT),
}


def _agents_and_console() -> dict[str, Any]:
    """Agents (docs/agents.md), the console and its tools (docs/console.md), MCP."""
    put = _obj(
        ["source"],
        source=_TEXT,
        env={"type": "object", "additionalProperties": {"type": "string"}},
        enabled={"type": "boolean"},
        base_revision={"type": "integer", "minimum": 0, "description": "store only over this revision"},
    )
    return {
        "/api/agents": {"get": _op("The agents and their state", "agents", "503")},
        "/api/agents/templates": {
            "get": _op("The agent templates shipped with Wiretide", "templates", "503")
        },
        "/api/agents/annotations": {
            "post": _op(
                "The onItemQueried marks of entries",
                "marks by entry id",
                "400",
                "503",
                body=_obj(["ids"], ids={"type": "array", "items": _TEXT, "maxItems": 500}),
            )
        },
        "/api/agents/draft": {
            "post": _op(
                "The LLM drafts an agent from a description, tried on recent traffic; nothing is stored",
                "the draft and its trial run",
                "400",
                "403",
                "422",
                "502",
                "503",
                body=_obj(["description"], description=_TEXT, **_TRY),
            )
        },
        "/api/agents/{name}": {
            "parameters": _NAME,
            "get": _op("One agent with its source and history", "the agent", "404", "503"),
            "put": _op("Check and store an agent", "stored", "400", "403", "409", "503", body=put),
            "delete": _op("Delete an agent", "deleted", "403", "404", "503"),
        },
        "/api/agents/{name}/improve": {
            "parameters": _NAME,
            "post": _op(
                "The LLM proposes a change as a diff, tried on recent traffic; nothing is stored",
                "the proposal (diff, source, base_revision) and its trial run",
                "400",
                "403",
                "404",
                "422",
                "502",
                "503",
                body=_obj(["instruction"], instruction=_TEXT, **_TRY),
            ),
        },
        "/api/agents/{name}/enable": {"parameters": _NAME, "post": _op("Enable", "the agent", "404", "503")},
        "/api/agents/{name}/disable": {
            "parameters": _NAME,
            "post": _op("Disable", "the agent", "404", "503"),
        },
        "/api/agents/{name}/logs": {
            "parameters": _NAME,
            "get": {
                **_op(
                    "The agent's log (a WebSocket at …/logs/stream follows it)", "lines", "400", "404", "503"
                ),
                "parameters": [
                    _q("after", "lines after this sequence number", {"type": "integer", "minimum": 0})
                ],
            },
        },
        "/api/console": {
            "get": _op("Whether the LLM is on, the tools, the bounds", "the console"),
            "post": {
                **_op(
                    "Ask the console: the answer streams back as server-sent events",
                    "text/event-stream",
                    "400",
                    "503",
                    body=_obj(
                        ["question"],
                        question=_TEXT,
                        history={
                            "type": "array",
                            "items": _obj(["role", "content"], role=_TEXT, content=_TEXT),
                        },
                    ),
                ),
            },
        },
        "/api/tools": {"get": _op("The console's tools and their argument schemas", "tools")},
        "/api/tools/{name}": {
            "parameters": _NAME,
            "post": _op(
                "Call one tool as the caller",
                "the tool's answer (ok false with an error the model can read)",
                "400",
                body={"type": "object"},
            ),
        },
        "/mcp": {
            "post": {
                "summary": "The tools over the Model Context Protocol (streamable HTTP, JSON-RPC)",
                "requestBody": {"required": True, "content": _JSON},
                "responses": {"200": {"description": "JSON-RPC answer or event stream", "content": _JSON}},
            }
        },
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
                    "summary": "Health of every service and NATS, the store, capture, and the packets "
                    "counted but not dissected (`undissected`: total and by protocol)",
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
                        "200": {"description": "spans" + _PARTIAL, "content": _JSON},
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
                        "200": {"description": "trace summaries" + _PARTIAL, "content": _JSON},
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
                        "200": {"description": "nodes and edges" + _PARTIAL, "content": _JSON},
                        "400": _ERROR,
                        "503": _ERROR,
                    },
                }
            },
            **_agents_and_console(),
            **recording_paths(),
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
