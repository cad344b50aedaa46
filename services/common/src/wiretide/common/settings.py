"""Settings: read once from `WIRETIDE_*` environment variables, validated, frozen, passed explicitly.

Rule: a setting that is unknown or malformed stops the process at start-up with a message that
names the variable (and the closest known name). Each service subclasses `CommonSettings` with its
own `<service>_*` fields. This module is the one place that decides what is unknown: a service's
start-up (`load_settings`) and the CLI (`check_environment`, over every service) both ask it.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wiretide.common.paths import default_data_dir
from wiretide.common.tls import PlaintextRefused, TlsFiles, Transport
from wiretide.common.types import EXTRA_PREFIXES, SERVICES

ENV_PREFIX = "WIRETIDE_"

# WIRETIDE_* variables that are read directly, not settings of any service: never "unknown".
NOT_SETTINGS: Final[dict[str, str]] = {
    "WIRETIDE_NATIVE": "dissector, tracer: 0 runs the pure-Python hot modules instead of the compiled ones",
    "WIRETIDE_NATIVE_DIR": "dissector, tracer: where the compiled modules live (one directory per service)",
    "WIRETIDE_TEST_PCAPS": "tests: the directory of shared captures",
    "WIRETIDE_UPDATE_GOLDEN": "tests: 1 rewrites the golden files",
}


class SettingsError(Exception):
    """A configuration error; the message names the offending setting."""


def parse_hostport(value: str, setting: str = "address") -> tuple[str, int]:
    """Split `host:port` (IPv6 as `[::1]:80`) and check the port range."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{setting} must look like host:port, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"{setting} port must be 0..65535, got {port}")
    return host, port


class CommonSettings(BaseSettings):
    """Settings every service reads. Addresses of all services live here: where things are is shared."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    node_name: str = socket.gethostname()
    data_dir: Path = default_data_dir()
    nats_url: str = "nats://127.0.0.1:4222"
    # Copies JetStream keeps of Wiretide's streams: 3 on a 3-node NATS cluster (a node may die without
    # losing what it had accepted), 1 on a single server.
    nats_replicas: int = Field(default=1, ge=1, le=5)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # gRPC addresses: a service listens on its own and dials the others.
    capture_grpc: str = "127.0.0.1:50051"
    dissector_grpc: str = "127.0.0.1:50052"  # comma-separated list: the dissector ring
    resolver_grpc: str = "127.0.0.1:50053"
    # comma-separated list: every tracer replica, each holding part of the traces (common/tracers.py)
    tracer_grpc: str = "127.0.0.1:50054"
    agents_grpc: str = "127.0.0.1:50055"
    gateway_grpc: str = "127.0.0.1:50056"

    # Prometheus endpoints (host:port; port 0 picks a free port, which is logged).
    capture_metrics: str = "127.0.0.1:0"
    dissector_metrics: str = "127.0.0.1:0"
    resolver_metrics: str = "127.0.0.1:0"
    tracer_metrics: str = "127.0.0.1:0"
    agents_metrics: str = "127.0.0.1:0"
    gateway_metrics: str = "127.0.0.1:0"

    # Seconds a service waits for in-flight work when asked to stop.
    shutdown_grace_s: float = 5.0

    # What is captured (`wiretide tap POD_REGEX -n NS`, docs/deploy.md): pods whose name matches the
    # regex, in these namespaces (comma-separated; empty = all), never in the excluded ones. All empty =
    # everything. The starting value: `PUT /api/targets` changes it live for every node.
    target_pod_regex: str = ""
    target_namespaces: str = ""
    target_excluded_namespaces: str = ""

    # The optional LLM (common/llm.py): any OpenAI-compatible endpoint. Empty base URL = off, and
    # nothing leaves the cluster; the model is then required, the key only if the endpoint wants one.
    llm_base_url: str = ""
    llm_model: str = Field(default="", validate_default=True)
    llm_api_key: str = ""
    llm_timeout_s: float = 60.0

    # Mutual TLS between Wiretide's processes (gRPC, and NATS at tls:// URLs): PEM paths, all or none.
    # Without them gRPC and NATS are plaintext, which only loopback accepts unless allowed.
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_allow_plaintext: bool = False

    # Who may call (docs/security.md): a JSON file of static tokens (a mounted Secret); the token this
    # process sends its peers and accepts from them as Wiretide's own (`wiretide up` writes one);
    # OIDC bearer tokens of one issuer (its JWKS), with the claims that carry role and namespaces.
    auth_tokens_file: str = ""
    auth_service_token_file: str = ""
    auth_oidc_issuer: str = ""
    auth_oidc_audience: str = ""
    auth_oidc_role_claim: str = "wiretide_role"
    auth_oidc_namespaces_claim: str = "wiretide_namespaces"
    auth_oidc_algorithms: str = "RS256,ES256"
    # Host names an HTTP door answers to beyond loopback and its listen host ('*': any; DNS rebinding).
    auth_allowed_hosts: str = ""
    # host:port of a plaintext gRPC server carrying grpc.health.v1 only (the kubelet's gRPC probe
    # speaks no TLS); empty: none.
    health_grpc: str = ""

    @field_validator(
        "capture_grpc",
        "resolver_grpc",
        "agents_grpc",
        "gateway_grpc",
        "capture_metrics",
        "dissector_metrics",
        "resolver_metrics",
        "tracer_metrics",
        "agents_metrics",
        "gateway_metrics",
    )
    @classmethod
    def _hostport(cls, value: str) -> str:
        parse_hostport(value)
        return value

    @field_validator("health_grpc")
    @classmethod
    def _optional_hostport(cls, value: str) -> str:
        if value:
            parse_hostport(value)
        return value

    @field_validator("dissector_grpc", "tracer_grpc")
    @classmethod
    def _hostport_list(cls, value: str) -> str:
        for part in value.split(","):
            parse_hostport(part)
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: str) -> str:
        for url in value.split(","):
            if not url.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"must be nats://host:port (comma-separated for a cluster), got {url!r}")
        return value

    @field_validator("tls_ca", "tls_cert", "tls_key")
    @classmethod
    def _tls_file(cls, value: str, info: ValidationInfo) -> str:
        if value and not Path(value).is_file():
            raise ValueError(f"no such file {value}")
        if info.field_name == "tls_key":
            given = {
                "TLS_CA": info.data.get("tls_ca"),
                "TLS_CERT": info.data.get("tls_cert"),
                "TLS_KEY": value,
            }
            missing = [ENV_PREFIX + name for name, v in given.items() if not v]
            if missing and len(missing) < len(given):
                raise ValueError(
                    f"mutual TLS needs WIRETIDE_TLS_CA, _CERT and _KEY; missing {', '.join(missing)}"
                )
        return value

    @property
    def transport(self) -> Transport:
        """How this process reaches its peers and serves them (mutual TLS or plaintext)."""
        files = TlsFiles(Path(self.tls_ca), Path(self.tls_cert), Path(self.tls_key)) if self.tls_ca else None
        return Transport(files, self.tls_allow_plaintext)

    @field_validator("llm_base_url")
    @classmethod
    def _llm_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s):// URL of an OpenAI-compatible API, got {value[:80]!r}")
        return value

    @field_validator("llm_model")
    @classmethod
    def _llm_model(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("llm_base_url") and not value.strip():
            raise ValueError("names the model to ask; required when WIRETIDE_LLM_BASE_URL is set")
        return value.strip()

    @property
    def dissector_endpoints(self) -> list[str]:
        return [p.strip() for p in self.dissector_grpc.split(",") if p.strip()]

    @property
    def tracer_endpoints(self) -> list[str]:
        """Every tracer replica's address, in replica order (one address: a single tracer)."""
        return [p.strip() for p in self.tracer_grpc.split(",") if p.strip()]

    def grpc_address(self, service: str) -> str:
        if service == "dissector":
            return self.dissector_endpoints[0]
        if service == "tracer":
            return self.tracer_endpoints[0]
        return str(getattr(self, f"{service}_grpc"))

    def metrics_address(self, service: str) -> str:
        return str(getattr(self, f"{service}_metrics"))


S = TypeVar("S", bound=CommonSettings)


def _owned_elsewhere(rest: str, service: str | None) -> bool:
    for other in SERVICES:
        if other == service:
            continue
        prefixes = (f"{other.upper()}_", *EXTRA_PREFIXES.get(other, ()))
        if rest.startswith(prefixes) and not rest.endswith(("_GRPC", "_METRICS")):
            return True
    return False


def env_names(classes: Iterable[type[CommonSettings]]) -> set[str]:
    """The WIRETIDE_* variable of every field of these settings classes."""
    return {ENV_PREFIX + name.upper() for cls in classes for name in cls.model_fields}


def unknown_setting(key: str, known: Iterable[str]) -> SettingsError:
    """The error for an unknown variable, with the closest known name when one is close."""
    hint = difflib.get_close_matches(key, sorted(known), n=1)
    suffix = f" (did you mean {hint[0]}?)" if hint else ""
    return SettingsError(f"unknown setting {key}{suffix}")


def check_unknown(cls: type[CommonSettings], service: str | None, environ: Mapping[str, str]) -> None:
    """Reject WIRETIDE_* variables this service would silently ignore (typos, stale names); variables
    of other services are theirs to check."""
    known = env_names([cls])
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX) or key in known or key in NOT_SETTINGS:
            continue
        if _owned_elsewhere(key[len(ENV_PREFIX) :], service):
            continue
        raise unknown_setting(key, known)


def check_environment(
    classes: Mapping[str, type[CommonSettings]],
    environ: Mapping[str, str],
    *,
    values: bool = True,
    set_by_caller: Iterable[str] = (),
) -> None:
    """Check a whole installation's environment (the CLI's view: every service's settings at once).

    Every WIRETIDE_* variable must be a setting of some service (else the closest name is suggested);
    with `values`, each service's settings must also load. Variables in `set_by_caller` (names after
    the prefix, which a supervisor sets for its children) are left out of the value check.
    """
    known = env_names(classes.values())
    for key in sorted(environ):
        if key.startswith(ENV_PREFIX) and key not in known and key not in NOT_SETTINGS:
            raise unknown_setting(key, known)
    if not values:
        return
    skip = set(set_by_caller)
    env = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :] not in skip}
    for name, cls in classes.items():
        load_settings(cls, name, env)


# A setting whose value is a secret is never quoted in an error; nor are the credentials of a URL.
_SECRET_NAME: Final = re.compile(r"token|password|passwd|secret|key|credential", re.IGNORECASE)
_URL_CREDENTIALS: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]*@")


def redact_credentials(text: str) -> str:
    """`text` with every `scheme://user:password@` shown as `scheme://***@`."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def load_settings(cls: type[S], service: str | None = None, environ: Mapping[str, str] | None = None) -> S:
    """Read, validate and freeze settings, or raise SettingsError naming the bad variable."""
    env = os.environ if environ is None else environ
    check_unknown(cls, service, env)
    try:
        if environ is None:
            settings = cls()
        else:
            values: dict[str, Any] = {}
            for name in cls.model_fields:
                key = ENV_PREFIX + name.upper()
                if key in environ:
                    values[name] = environ[key]
            settings = cls.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            shown = "not shown" if _SECRET_NAME.search(field) else f"got {err.get('input')!r}"
            problems.append(redact_credentials(f"{ENV_PREFIX}{field.upper()}: {err['msg']} ({shown})"))
        raise SettingsError("invalid setting " + "; ".join(problems)) from None
    if service in SERVICES:
        _check_plaintext(settings, service)
    return settings


def _check_plaintext(settings: CommonSettings, service: str) -> None:
    """A service refuses at start-up to listen, or to reach NATS, in plaintext beyond loopback."""
    transport = settings.transport
    try:
        transport.check_plaintext(
            settings.grpc_address(service), f"{ENV_PREFIX}{service.upper()}_GRPC (gRPC listen address)"
        )
        transport.nats_context(settings.nats_url)
    except PlaintextRefused as exc:
        raise SettingsError(str(exc)) from None
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"{ENV_PREFIX}TLS_CERT/{ENV_PREFIX}TLS_KEY: cannot load: {exc}") from None
