"""Ports handed out before anything binds them are distinct: a test (or `wiretide up`) that asks for a
dozen ports and binds them later must never get one port twice, which made two services race for it."""

from __future__ import annotations

from tests.helpers.nats import free_port

# A birthday collision among this many draws from the 12 000 reserved ports is near certain (p > 0.999)
# when draws do not remember what they handed out.
DRAWS = 1_000


def test_ports_handed_out_before_binding_are_all_different() -> None:
    ports = [free_port() for _ in range(DRAWS)]
    assert len(set(ports)) == len(ports)
