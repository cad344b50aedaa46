"""`wiretide up` gives nats-server a soft memory limit (GOMEMLIMIT), unless the user's environment has
one: then the user's is the one nats-server gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from wiretide.cli.supervisor import NATS_GOMEMLIMIT, Supervisor


def nats_env(data_dir: Path) -> dict[str, str]:
    sup = Supervisor(data_dir=data_dir)
    sup.plan("nats-server")
    return sup.child("nats").env


def test_nats_server_gets_a_soft_memory_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    assert nats_env(tmp_path)["GOMEMLIMIT"] == NATS_GOMEMLIMIT == "200MiB"


def test_the_users_gomemlimit_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOMEMLIMIT", "1GiB")
    env = nats_env(tmp_path)
    assert env["GOMEMLIMIT"] == "1GiB"
    assert env["PATH"]  # the rest of the user's environment passes through as before


def test_only_nats_server_gets_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    sup = Supervisor(data_dir=tmp_path)
    sup.plan("nats-server")
    assert [c.name for c in sup.children if "GOMEMLIMIT" in c.env] == ["nats"]
