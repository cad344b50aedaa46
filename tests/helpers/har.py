"""HAR documents checked against HAR 1.2: every HAR a test writes goes through `assert_valid_har`.

The rule this module keeps: one schema (tests/data/har/har-1.2.schema.json, written from the HAR 1.2
specification) judges every HAR the tests see, so the CLI's and the gateway's output are held to the
same definition.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "data" / "har" / "har-1.2.schema.json"


@functools.cache
def _validator() -> Any:
    return jsonschema_rs.validator_for(orjson.loads(SCHEMA_PATH.read_bytes()))


def har_errors(doc: Any) -> list[str]:
    """Every way `doc` breaks HAR 1.2, as `path: message` lines (empty when it is valid)."""
    return [
        f"/{'/'.join(str(p) for p in e.instance_path)}: {e.message}" for e in _validator().iter_errors(doc)
    ]


def assert_valid_har(doc: Any) -> None:
    errors = har_errors(doc)
    assert not errors, "not HAR 1.2:\n" + "\n".join(errors[:20])
