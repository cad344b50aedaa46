"""The replay harness over shared captures: the six templates run clean on real traffic; an agent's
console output and pass/fail counts are printed; `wiretide agents test` exits 1 on any test.fail and
2 on a syntax error; jobs run on the capture's clock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.pcaps import pcap, require_pcaps
from wiretide.agents.replay import replay
from wiretide.agents.templates import TEMPLATES

CAPTURES = (
    "http1.1/zeek_pipelined-requests.pcap",
    "http1.1/suricata_http-chunked_input.pcap",
    "http2/arkime_http2-nghttp2.pcap",
    "grpc/deepflow_grpc-unary.pcap",
    "dns/suricata_dns-udp-google.com-a-aaaa-mx.pcap",
    "dns/zeek_dns-https.pcap",
)


def dissect(path: Path) -> list[list[dict[str, Any]]]:
    from wiretide.cli.analyze_cmd import _work
    from wiretide.dissector.registry import default_registry

    batches: list[list[dict[str, Any]]] = []
    _work(str(path), None, default_registry(), "", 64 * 1024, None, batches.append, None)
    return batches


@pytest.fixture(scope="module")
def traffic() -> list[list[dict[str, Any]]]:
    paths = [pcap(c) for c in CAPTURES]
    require_pcaps(*paths)
    return [batch for p in paths for batch in dissect(p)]


@pytest.mark.parametrize("template", TEMPLATES, ids=[t.name for t in TEMPLATES])
def test_every_template_runs_clean_over_the_shared_captures(
    template: Any, traffic: list[list[dict[str, Any]]]
) -> None:
    result = replay(template.source, traffic, name=template.name)
    assert result.entries == sum(len(b) for b in traffic) > 0
    assert result.ok, (result.error, result.failed, [line.text for line in result.lines][-5:])


def test_jobs_run_on_the_capture_clock() -> None:
    minute = 60 * 10**9
    batches = [
        [{"id": f"e{i}", "timestamp": i * minute // 2 + 1, "protocol": "http", "status": 200}]
        for i in range(7)
    ]
    source = (
        "var n = 0;\nfunction onItemCaptured(e) { n++; }\n"
        "jobs.schedule('m', '0 * * * * *', function () { console.log('minute', n); });\n"
    )
    result = replay(source, batches)
    assert [line.text for line in result.lines] == ["minute 2", "minute 4", "minute 6"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wiretide.cli", "agents", "test", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_prints_the_console_and_counts_and_exits_1_on_a_test_fail(tmp_path: Path) -> None:
    capture = pcap("http1.1/zeek_pipelined-requests.pcap")
    require_pcaps(capture)
    agent = tmp_path / "paths.js"
    agent.write_text(
        "function onItemCaptured(e) { console.log(e.method, e.path, e.status); }\n"
        "function onItemQueried(e) { if (e.status === 200) test.pass(e); else test.fail(e, 'not 200'); }\n"
    )
    ok = cli(str(agent), "--pcap", str(capture))
    entries = sum(len(b) for b in dissect(capture))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].startswith("GET /")
    assert f"{entries} entries, {entries} passed, 0 failed" in ok.stderr
    agent.write_text("function onItemQueried(e) { test.fail(e, 'always'); }\n")
    failing = cli(str(agent), "--pcap", str(capture), "--quiet")
    assert failing.returncode == 1
    assert f"{entries} entries, 0 passed, {entries} failed" in failing.stderr
    agent.write_text("function onItemCaptured(e) {\n  if (e.status >) {}\n}\n")
    broken = cli(str(agent), "--pcap", str(capture))
    assert broken.returncode == 2
    assert f"{agent}:2:17: SyntaxError: unexpected token in expression: ')'\n" in broken.stderr


def test_the_scripting_reference_is_generated_from_the_hooks_and_helpers() -> None:
    from tests.helpers.pcaps import REPO_ROOT
    from wiretide.agents.docs import render

    assert (REPO_ROOT / "docs" / "agents.md").read_text() == render(), (
        "run: python -m wiretide.agents.docs > docs/agents.md"
    )
