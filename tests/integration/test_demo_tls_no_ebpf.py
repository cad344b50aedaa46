"""`wiretide demo --no-ebpf`: the demo says the eBPF source is off, and its TLS hop (api → payments
over HTTPS) still runs and shows from packets alone — TLS handshake entries with the Service's name as
SNI, named by pod on both ends — and never as a decrypted call."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.demo import Demo, pod_of, query, running_demo
from tests.helpers.wait import wait_for
from wiretide.cli.demo.apps import PAYMENTS_SNI
from wiretide.cli.demo.cluster import PODS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the demo creates network namespaces: needs root")
POD = {p.app: p.name for p in PODS}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("demo"), "--no-ebpf") as running:
        yield running


def test_without_ebpf_the_payments_hop_is_handshakes_named_by_pod_and_never_decrypted(demo: Demo) -> None:
    def handshakes() -> list[dict[str, Any]]:
        found = query(demo.base, f'tls && tlsx_sni == "{PAYMENTS_SNI}"', limit=50)
        return [e for e in found if pod_of(e, "src") == POD["api"] and pod_of(e, "dst") == POD["payments"]]

    # Several: one connection per charge (a checkout is about one call in ten).
    seen = wait_for(
        "three handshakes from the api to payments", handshakes, lambda f: len(f) >= 3, timeout=180
    )
    for hello in seen:
        assert hello["protocol"] == "tls" and hello["tls"]["decrypted"] is False
        assert hello["tls"]["sni"] == PAYMENTS_SNI and hello["dst"]["service"]["name"] == "payments"
        assert hello["capture"]["source"] == "af_packet"
    said = demo.log.read_text(errors="replace")
    assert "wiretide demo: eBPF off (--no-ebpf)" in said, said[-2000:]
    assert query(demo.base, 'http && path == "/v1/charges"', limit=50) == []
