"""The ports `wiretide up` hands its services never include the UI port the user chose."""

from __future__ import annotations

from pathlib import Path

import pytest

from wiretide.cli import supervisor
from wiretide.cli.supervisor import Supervisor


def test_no_service_is_handed_the_ui_port_even_when_it_is_drawn_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ui_port = 27_973
    draws = iter([ui_port, ui_port, *range(21_000, 21_100)])  # the UI port comes up first, twice
    monkeypatch.setattr(supervisor.random, "randrange", lambda _lo, _hi: next(draws))
    monkeypatch.setattr(supervisor, "_HANDED_OUT", set())
    sup = Supervisor(data_dir=tmp_path, ui_port=ui_port)
    sup.plan("nats-server")
    addresses = {
        key: value
        for child in sup.children
        for key, value in child.env.items()
        if key.startswith("WIRETIDE_") and key.endswith(("_GRPC", "_METRICS"))
    }
    assert len(addresses) == 2 * len(supervisor.SERVICES), addresses
    ports = [int(a.rsplit(":", 1)[1]) for a in addresses.values()] + [int(sup.nats_url.rsplit(":", 1)[1])]
    assert ui_port not in ports
    assert len(set(ports)) == len(ports)
