"""Settings: read once from `WIRETIDE_*` environment variables, validated, frozen, passed explicitly.

Rule: a setting that is unknown or malformed stops the process at start-up with a message that
names the variable (and the closest known name). Each service subclasses `CommonSettings` with its
own `<service>_*` fields. This module is the one place that decides what is unknown: a service's
start-up (`load_settings`) and the CLI (`check_environment`, over every service) both ask it.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wiretide.common.paths import default_data_dir
from wiretide.common.types import EXTRA_PREFIXES, SERVICES

ENV_PREFIX = "WIRETIDE_"

# WIRETIDE_* variables that are read directly, not settings of any service: never "unknown".
NOT_SETTINGS: Final[dict[str, str]] = {
    "WIRETIDE_NATIVE": "dissector: 0 runs the pure-Python protocol modules instead of the compiled ones",
    "WIRETIDE_NATIVE_DIR": "dissector: where the compiled protocol modules live",
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
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # gRPC addresses: a service listens on its own and dials the others.
    capture_grpc: str = "127.0.0.1:50051"
    dissector_grpc: str = "127.0.0.1:50052"  # comma-separated list: the dissector ring
    resolver_grpc: str = "127.0.0.1:50053"
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

    @field_validator(
        "capture_grpc",
        "resolver_grpc",
        "tracer_grpc",
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

    @field_validator("dissector_grpc")
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

    @property
    def dissector_endpoints(self) -> list[str]:
        return [p.strip() for p in self.dissector_grpc.split(",") if p.strip()]

    def grpc_address(self, service: str) -> str:
        if service == "dissector":
            return self.dissector_endpoints[0]
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


def load_settings(cls: type[S], service: str | None = None, environ: Mapping[str, str] | None = None) -> S:
    """Read, validate and freeze settings, or raise SettingsError naming the bad variable."""
    env = os.environ if environ is None else environ
    check_unknown(cls, service, env)
    try:
        if environ is None:
            return cls()
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if key in environ:
                values[name] = environ[key]
        return cls.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid setting " + "; ".join(problems)) from None
