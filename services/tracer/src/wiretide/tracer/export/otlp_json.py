"""OTLP/JSON: an encoded `ExportTraceServiceRequest` as the JSON the OTLP specification defines
(https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding) — the protobuf JSON mapping with
lowerCamelCase keys, enums as integers, 64-bit integers as strings, and trace and span ids as hex
(not base64, which is where OTLP departs from the plain protobuf mapping).

Rule: one encoding, the protobuf one (`otlp.py`); the JSON is read off its bytes with the official
`opentelemetry-proto` classes, so the two can never disagree.
"""

from __future__ import annotations

import base64
from typing import Any, Final

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_ID_KEYS: Final = ("traceId", "spanId", "parentSpanId")


def _hex_ids(obj: dict[str, Any]) -> None:
    for key in _ID_KEYS:
        value = obj.get(key)
        if isinstance(value, str) and value:
            obj[key] = base64.b64decode(value).hex()


def request_json(body: bytes) -> dict[str, Any]:
    """The OTLP/JSON form of one encoded ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest.FromString(body)
    doc: dict[str, Any] = MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in doc.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _hex_ids(span)
                for link in span.get("links", []):
                    _hex_ids(link)
    return doc
