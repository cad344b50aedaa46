"""Validate every WIRETIDE_* variable against all services' settings before anything starts."""

from __future__ import annotations

import importlib
import os

from wiretide.cli.supervisor import SupervisorError
from wiretide.common.settings import ENV_PREFIX, CommonSettings, SettingsError, load_settings
from wiretide.common.types import SERVICES

# Variables the supervisor itself sets for its children.
SUPERVISOR_OWNED = {"NATS_URL", "DATA_DIR", "GATEWAY_HTTP"} | {
    f"{s.upper()}_{k}" for s in SERVICES for k in ("GRPC", "METRICS")
}


def settings_classes() -> dict[str, type[CommonSettings]]:
    out = {}
    for name in SERVICES:
        module = importlib.import_module(f"wiretide.{name}.service")
        cls = getattr(module, f"{name.capitalize()}Service")
        out[name] = cls.settings_cls
    return out


def validate_environment() -> None:
    classes = settings_classes()
    known = {ENV_PREFIX + f.upper() for cls in classes.values() for f in cls.model_fields}
    for key in sorted(os.environ):
        if key.startswith(ENV_PREFIX) and key not in known:
            raise SupervisorError(f"unknown setting {key}")
    env = {k: v for k, v in os.environ.items() if k[len(ENV_PREFIX) :] not in SUPERVISOR_OWNED}
    for name, cls in classes.items():
        try:
            load_settings(cls, name, {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
        except SettingsError as exc:
            raise SupervisorError(str(exc)) from None
