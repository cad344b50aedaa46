"""Check the WIRETIDE_* environment against every service's settings before a command runs.

Rule: the check itself lives in `wiretide.common.settings.check_environment` (the same rules and the
same "did you mean" as a service's own start-up); this module only gathers the services' settings
classes and names the variables the supervisor sets for its children.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Final

from wiretide.cli.supervisor import SupervisorError
from wiretide.common.settings import CommonSettings, SettingsError, check_environment
from wiretide.common.types import SERVICES

# Variables the supervisor itself sets for its children (names after the WIRETIDE_ prefix).
SUPERVISOR_OWNED: Final = frozenset(
    {"NATS_URL", "DATA_DIR", "GATEWAY_HTTP"}
    | {f"{s.upper()}_{k}" for s in SERVICES for k in ("GRPC", "METRICS")}
)


def settings_classes() -> dict[str, type[CommonSettings]]:
    out: dict[str, type[CommonSettings]] = {}
    for name in SERVICES:
        module = importlib.import_module(f"wiretide.{name}.service")
        cls = getattr(module, f"{name.capitalize()}Service")
        out[name] = cls.settings_cls
    return out


def validate_environment(environ: Mapping[str, str] | None = None, *, values: bool = True) -> None:
    """Raise `SupervisorError` (what `wiretide up` reports) for an unknown WIRETIDE_* variable, with the
    closest known name, or (with `values`) a malformed one."""
    try:
        check_environment(
            settings_classes(),
            os.environ if environ is None else environ,
            values=values,
            set_by_caller=SUPERVISOR_OWNED,
        )
    except SettingsError as exc:
        raise SupervisorError(str(exc)) from None
