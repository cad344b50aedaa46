"""GraphQL recognised inside HTTP/2 and HTTP/1.1 entries: operations, root fields, variables, errors."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.dissector.builders import Conversation, http_ok
from tests.unit.dissector.test_http2_support import H2Pair, conversation, run, streams
from wiretide.dissector.protocols import graphql

QUERY = """
# the user page
query GetUser($id: ID!) {
  user(id: $id) { name friends(first: 2) { name } }
  me: viewer { id }
  ...Extra
}
fragment Extra on Query { version }
"""


def test_the_selected_operation_type_name_and_root_fields_are_found() -> None:
    assert graphql.parse_document(QUERY, None) == ("query", "GetUser", ["user", "viewer"])
    doc = "query A { a } mutation B($x: Int = 3) { createThing(x: $x) @log { id } other: deleteThing }"
    assert graphql.parse_document(doc, "B") == ("mutation", "B", ["createThing", "deleteThing"])
    assert graphql.parse_document("{ hero { name } }", None) == ("query", None, ["hero"])
    assert graphql.parse_document('subscription { onEvent(filter: "{x}") { id } }', None) == (
        "subscription",
        None,
        ["onEvent"],
    )


def test_graphql_over_http2_with_errors_in_a_200_is_an_error_entry() -> None:
    p = H2Pair()
    body = json.dumps({"query": QUERY, "operationName": "GetUser", "variables": {"id": "7"}}).encode()
    sid = p.request("/graphql", "POST", body=body, headers=[("content-type", "application/json")])
    answer = {"data": {"user": None}, "errors": [{"message": "user 7 not found", "path": ["user"]}]}
    p.respond(sid, 200, body=json.dumps(answer).encode(), headers=[("content-type", "application/json")])
    (d,) = streams(run(conversation(p.wire)))
    r = d["request"]
    assert d["protocol"] == "graphql"
    assert (r["operation_type"], r["operation_name"], r["root_fields"]) == (
        "query",
        "GetUser",
        ["user", "viewer"],
    )
    assert r["variables"] == {"id": "7"}
    assert r["query_text"] == QUERY and r["persisted_hash"] is None
    assert d["response"]["errors"] == [{"message": "user 7 not found", "path": ["user"]}]
    assert d["error"] == {"type": "graphql", "message": "user 7 not found"}
    assert d["summary"] == "query GetUser {user,viewer} → 200 (1 errors)"


def test_graphql_over_http1_get_with_a_persisted_query_hash() -> None:
    ext = json.dumps({"persistedQuery": {"version": 1, "sha256Hash": "abc123"}})
    variables = quote(json.dumps({"n": 3}))
    target = f"/api?operationName=Feed&extensions={quote(ext)}&variables={variables}"
    conv = Conversation(sport=80).handshake()
    conv.send(True, f"GET {target} HTTP/1.1\r\nHost: gql.test\r\n\r\n".encode())
    conv.send(False, http_ok(b'{"data": {"feed": []}}', "application/json"))
    conv.close()
    (d,) = [x for x in run(conv.columns()) if x["protocol"] != "tcp"]
    assert d["protocol"] == "graphql"
    r = d["request"]
    assert (r["operation_name"], r["persisted_hash"], r["variables"]) == ("Feed", "abc123", {"n": 3})
    assert d["error"] is None and d["response"]["errors"] == []


def test_a_batched_request_describes_every_operation() -> None:
    req = {
        "method": "POST",
        "path": "/graphql",
        "query": {},
        "body": {
            "encoding": "json",
            "truncated": False,
            "mime": "application/json",
            "content": json.dumps([{"query": "query A { a }"}, {"query": "mutation B { b }"}]),
        },
    }
    op = graphql.describe(req)
    assert op is not None
    assert [b["operation_type"] for b in op["batch"]] == ["query", "mutation"]


def test_a_json_post_that_is_not_graphql_is_left_alone() -> None:
    p = H2Pair()
    sid = p.request(
        "/search", "POST", body=b'{"query": "red shoes"}', headers=[("content-type", "application/json")]
    )
    p.respond(sid, 200)
    (d,) = streams(run(conversation(p.wire)))
    assert d["protocol"] == "http2" and "operation_type" not in d["request"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=10)))
def test_any_document_text_never_raises(text: str, wanted: str | None) -> None:
    kind, _, roots = graphql.parse_document(text, wanted)
    assert kind in graphql.OPERATION_TYPES and len(roots) <= graphql.MAX_ROOT_FIELDS


def test_variables_can_be_redacted_by_name_or_all_at_once() -> None:
    req: dict[str, Any] = {
        "variables": {"id": "7", "input": {"Password": "hunter2", "tags": [{"token": "t"}]}},
        "batch": [{"variables": {"token": "x", "n": 1}}],
    }
    assert graphql.redact_variables(req, frozenset({"password", "token"})) == 3
    assert req["variables"] == {
        "id": "7",
        "input": {"Password": graphql.REDACTED, "tags": [{"token": graphql.REDACTED}]},
    }
    assert req["batch"][0]["variables"] == {"token": graphql.REDACTED, "n": 1}
    assert graphql.redact_variables(req) == 4  # every top-level variable of both operations
    assert req["variables"] == {"id": graphql.REDACTED, "input": graphql.REDACTED}
