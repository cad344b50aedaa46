"""Check the WIRETIDE_* environment against every service's settings before a command runs.

Rule: the check itself lives in `wiretide.common.settings.check_environment` (the same rules and the
same "did you mean" as a service's own start-up); this module only gathers the services' settings
classes and names the variables the supervisor sets for its children. The names-only check that
precedes every command (`problem_with_names`) answers as that check does, but imports the settings
of only the services whose names are set: the settings machinery and a service's module cost more
than a small `wiretide analyze`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from wiretide.common.types import EXTRA_PREFIXES, SERVICES

if TYPE_CHECKING:
    from wiretide.common.settings import CommonSettings

# Variables the supervisor itself sets for its children (names after the WIRETIDE_ prefix).
SUPERVISOR_OWNED: Final = frozenset(
    {"NATS_URL", "DATA_DIR", "GATEWAY_HTTP"}
    | {f"{s.upper()}_{k}" for s in SERVICES for k in ("GRPC", "METRICS")}
)
# wiretide.common.settings.ENV_PREFIX, spelled here so that a run without WIRETIDE_* variables (or with
# only WIRETIDE_NATIVE*) does not import the settings machinery; a test holds the two equal.
ENV_PREFIX: Final = "WIRETIDE_"


def settings_class(name: str) -> type[CommonSettings]:
    """One service's settings class (importing that service's module)."""
    module = importlib.import_module(f"wiretide.{name}.service")
    cls: type[CommonSettings] = getattr(module, f"{name.capitalize()}Service").settings_cls
    return cls


def settings_classes() -> dict[str, type[CommonSettings]]:
    return {name: settings_class(name) for name in SERVICES}


def validate_environment(environ: Mapping[str, str] | None = None, *, values: bool = True) -> None:
    """Raise `SupervisorError` (what `wiretide up` reports) for an unknown WIRETIDE_* variable, with the
    closest known name, or (with `values`) a malformed one."""
    from wiretide.cli.supervisor import SupervisorError
    from wiretide.common.settings import SettingsError, check_environment

    try:
        check_environment(
            settings_classes(),
            os.environ if environ is None else environ,
            values=values,
            set_by_caller=SUPERVISOR_OWNED,
        )
    except SettingsError as exc:
        raise SupervisorError(str(exc)) from None


def owners(key: str) -> list[str]:
    """The services whose settings a WIRETIDE_* name would belong to, by its prefix
    (`WIRETIDE_GATEWAY_…` → gateway, `WIRETIDE_TRACES_…` → tracer)."""
    rest = key[len(ENV_PREFIX) :]
    return [s for s in SERVICES if rest.startswith((f"{s.upper()}_", *EXTRA_PREFIXES.get(s, ())))]


def problem_with_names(environ: Mapping[str, str]) -> str | None:
    """What `validate_environment(environ, values=False)` would report (an unknown name, with the closest
    known one), or None — importing only what the names set need: nothing for the variables the
    compiled-module loader reads (WIRETIDE_NATIVE=0), the common settings for the others, and a
    service's settings for names of its prefix. Only a name known to none of those loads every service,
    to name the closest known one exactly as a service's start-up would."""
    keys = [k for k in environ if k.startswith(ENV_PREFIX)]
    if not keys:
        return None
    from wiretide.common import native

    keys = [k for k in keys if k not in (native.ENV_SWITCH, native.ENV_DIR)]
    if not keys:
        return None
    from wiretide.common.settings import (
        NOT_SETTINGS,
        CommonSettings,
        SettingsError,
        check_environment,
        env_names,
    )

    known = env_names([CommonSettings])
    left = [k for k in keys if k not in known and k not in NOT_SETTINGS]
    wanted = sorted({s for k in left for s in owners(k)}, key=SERVICES.index)
    if wanted:
        known |= env_names(settings_class(s) for s in wanted)
        left = [k for k in left if k not in known]
    if not left:
        return None
    try:
        check_environment(settings_classes(), environ, values=False, set_by_caller=SUPERVISOR_OWNED)
    except SettingsError as exc:
        return str(exc)
    return None  # every name belongs to a service whose prefix it does not carry
