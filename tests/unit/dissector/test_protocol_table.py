"""Adding a protocol touches its module, its tests and its row in the protocol table: every built-in
dissector names a row, every row's KFL vocabulary is known to KFL, and a dissector without a row is
kept with a warning."""

from __future__ import annotations

import logging

import pytest

from wiretide.common import protocols
from wiretide.common.kfl import FLAGS, VARIABLES
from wiretide.dissector.api import Presented, ProtocolSpec, Verdict
from wiretide.dissector.protocols import BUILTINS
from wiretide.dissector.registry import Registry


def test_every_built_in_dissector_produces_only_protocols_the_table_has_rows_for() -> None:
    produced = {p for spec in BUILTINS for p in spec.protocols}
    assert produced <= set(protocols.PROTOCOLS), produced - set(protocols.PROTOCOLS)
    assert {"http", "http2", "grpc", "graphql", "dns", "tls", "ws"} <= produced


def test_every_row_s_kfl_flags_and_fields_are_known_to_kfl() -> None:
    for row in protocols.PROTOCOLS.values():
        assert row.kfl_flags and row.kfl_flags[0] in FLAGS, row.name
        assert all(row.name in FLAGS[flag] for flag in row.kfl_flags), row.name
        unknown = [name for name in row.kfl_fields if name not in VARIABLES]
        assert not unknown, (row.name, unknown)
        for name in row.kfl_fields:  # the variable is defined for exactly the rows listing it
            listed = frozenset(r.name for r in protocols.PROTOCOLS.values() if name in r.kfl_fields)
            assert VARIABLES[name].protocols == listed


def test_a_dissector_whose_protocol_has_no_row_is_registered_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = ProtocolSpec(
        name="line",
        transports=("tcp",),
        ports=(7777,),
        probe=lambda c, s: Verdict.NO,
        session=lambda config: None,  # type: ignore[arg-type,return-value]
        present=lambda q, r: Presented(),
    )
    with caplog.at_level(logging.WARNING):
        registry = Registry([*BUILTINS, spec])
    assert registry.by_name["line"] is spec and spec.protocol == "line"
    warned = [r for r in caplog.records if getattr(r, "dissector", None) == "line"]
    assert len(warned) == 1 and getattr(warned[0], "protocols", "") == "line"
    assert not [r for r in caplog.records if getattr(r, "dissector", None) in {s.name for s in BUILTINS}]
