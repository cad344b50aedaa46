"""OTLP transports: gRPC (`TraceService/Export`) and HTTP/protobuf (`POST /v1/traces`).

Rule: a transport sends one already-encoded request and says only whether it worked, and if not,
whether trying again can help (OTLP specification, "Failures" / "Retryable Response Codes":
https://opentelemetry.io/docs/specs/otlp/#failures). It never queues or retries by itself.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
HTTP_PATH: Final = "/v1/traces"
# gRPC codes worth retrying (OTLP spec, "OTLP/gRPC Response": the retryable codes).
RETRYABLE_GRPC: Final = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
# HTTP statuses worth retrying (OTLP spec, "OTLP/HTTP Response", "Retryable Response Codes").
RETRYABLE_HTTP: Final = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    retryable: bool = False
    error: str = ""
    rejected_spans: int = 0  # partial success reported by the receiver


@dataclass(frozen=True, slots=True)
class OtlpTarget:
    """Where and how to send: endpoint URL, extra headers, TLS files, per-request timeout."""

    endpoint: str
    protocol: str = "grpc"  # "grpc" | "http/protobuf"
    headers: tuple[tuple[str, str], ...] = ()
    insecure: bool | None = None  # None: decided by the scheme (http:// plain, https:// TLS)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    timeout_s: float = 10.0

    @property
    def use_tls(self) -> bool:
        if self.insecure is not None:
            return not self.insecure
        return urlsplit(self.endpoint).scheme == "https"


def parse_headers(text: str) -> tuple[tuple[str, str], ...]:
    """`k1=v1,k2=v2` (the OTEL_EXPORTER_OTLP_HEADERS format, values URL-decoded)."""
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"header {part.strip()!r} is not key=value")
        out.append((key.strip().lower(), unquote(value.strip())))
    return tuple(out)


class Transport(abc.ABC):
    @abc.abstractmethod
    async def send(self, body: bytes) -> Outcome: ...

    async def close(self) -> None:  # noqa: B027 - optional
        pass


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


class GrpcTransport(Transport):
    def __init__(self, target: OtlpTarget) -> None:
        parts = urlsplit(target.endpoint if "://" in target.endpoint else f"http://{target.endpoint}")
        address = parts.netloc or parts.path
        if target.use_tls:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(target.ca_file),
                private_key=_read(target.key_file),
                certificate_chain=_read(target.cert_file),
            )
            self._channel = grpc.aio.secure_channel(address, creds)
        else:
            self._channel = grpc.aio.insecure_channel(address)
        self._call = self._channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=lambda body: body,  # already encoded by export/otlp.py
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        self._metadata = target.headers
        self._timeout = target.timeout_s

    async def send(self, body: bytes) -> Outcome:
        try:
            response = await self._call(body, timeout=self._timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            return Outcome(False, code in RETRYABLE_GRPC, f"{code.name}: {exc.details()}")
        rejected = response.partial_success.rejected_spans if response.HasField("partial_success") else 0
        return Outcome(True, rejected_spans=rejected)

    async def close(self) -> None:
        await self._channel.close()


class HttpTransport(Transport):
    def __init__(self, target: OtlpTarget) -> None:
        url = target.endpoint.rstrip("/")
        if not url.endswith(HTTP_PATH):
            url += HTTP_PATH  # OTLP/HTTP: the signal path is appended to a base endpoint
        self._url = url
        verify: bool | str = target.ca_file or True
        cert = (target.cert_file, target.key_file) if target.cert_file else None
        self._client = httpx.AsyncClient(
            timeout=target.timeout_s,
            verify=verify,
            cert=cert,
            headers={**dict(target.headers), "content-type": "application/x-protobuf"},
        )

    async def send(self, body: bytes) -> Outcome:
        try:
            response = await self._client.post(self._url, content=body)
        except httpx.HTTPError as exc:
            return Outcome(False, True, f"{type(exc).__name__}: {exc}")
        if 200 <= response.status_code < 300:
            rejected = 0
            if response.content:
                try:
                    parsed = ExportTraceServiceResponse.FromString(response.content)
                    rejected = parsed.partial_success.rejected_spans
                except Exception:  # a receiver answering 2xx with a non-protobuf body still took the spans
                    rejected = 0
            return Outcome(True, rejected_spans=rejected)
        return Outcome(False, response.status_code in RETRYABLE_HTTP, f"HTTP {response.status_code}")

    async def close(self) -> None:
        await self._client.aclose()


def make_transport(target: OtlpTarget) -> Transport:
    if target.protocol == "grpc":
        return GrpcTransport(target)
    if target.protocol == "http/protobuf":
        return HttpTransport(target)
    raise ValueError(f"unknown OTLP protocol {target.protocol!r} (grpc or http/protobuf)")
