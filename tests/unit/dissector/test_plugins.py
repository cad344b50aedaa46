"""Third-party dissectors: a distribution declaring a `wiretide.dissectors` entry point is picked up by the
registry and dissects traffic like a built-in protocol; broken entry points are skipped with a warning."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import ENTRY_POINT_GROUP, default_registry, parse_overrides

from .builders import Conversation
from .test_analyze_cli import write_pcap

# A line protocol: every line from the client is a request ("VERB argument"), every line from the
# server the answer ("CODE text"). Written the way a plugin author would, against the public API only.
PLUGIN = textwrap.dedent(
    """
    from wiretide.dissector import Message, Presented, ProtocolSpec, Verdict, Violation


    class LineSession:
        def __init__(self, config):
            self.bufs = {True: b"", False: b""}

        def feed(self, from_client, data, ts):
            buf = self.bufs[from_client] + data
            *lines, self.bufs[from_client] = buf.split(b"\\n")
            out = []
            for line in lines:
                head, _, rest = line.decode("ascii", "replace").partition(" ")
                if from_client:
                    fields = {"verb": head, "argument": rest}
                else:
                    if not head.isdigit():
                        out.append(Violation("line: answer without a code"))
                        return out
                    fields = {"code": int(head), "text": rest}
                out.append(Message(from_client, ts, ts, len(line) + 1, fields))
            return out

        def gap(self, from_client, size, ts):
            return [Violation("line: gap")]

        def close(self, ts):
            return []


    def probe(client, server):
        return Verdict.YES if client.startswith(b"LINE ") else Verdict.NO


    def present(req, resp):
        verb = req.fields["verb"] if req else None
        code = resp.fields["code"] if resp else None
        return Presented(method=verb, path=req.fields["argument"] if req else None, status=code,
                         summary=f"{verb} -> {code}")


    SPEC = ProtocolSpec(name="line", transports=("tcp",), ports=(7777,), probe=probe,
                        session=LineSession, present=present)
    NOT_A_SPEC = object()
    """
)


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path holding the plugin module and its installed distribution's metadata."""
    (tmp_path / "wt_line_plugin.py").write_text(PLUGIN)
    (tmp_path / "wt_broken_plugin.py").write_text("raise RuntimeError('this plugin cannot load')\n")
    info = tmp_path / "wt_line_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wt-line-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "line = wt_line_plugin:SPEC\n"
        "broken = wt_broken_plugin:SPEC\n"
        "wrong = wt_line_plugin:NOT_A_SPEC\n"
        "http = wt_line_plugin:SPEC\n"  # may not replace a built-in: the built-in keeps its name
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("wt_line_plugin", "wt_broken_plugin"):
        sys.modules.pop(name, None)


def _exchange(port: int) -> Conversation:
    conv = Conversation(sport=port).handshake()
    conv.send(True, b"LINE hello\n").send(False, b"200 fine\n")
    conv.send(True, b"LINE again\nLINE third\n").send(False, b"404 nothing\n500 broken\n")
    return conv.close()


def test_an_entry_point_dissector_is_registered_and_dissects(
    plugin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        registry = default_registry()
    assert "line" in registry.by_name
    assert registry.by_name["http"].probe.__module__.endswith("http1")  # the built-in kept its name
    warned = " ".join(str(getattr(r, "entry_point", "")) for r in caplog.records)
    assert "broken" in warned and "wrong" in warned
    assert any(getattr(r, "dissector", None) == "line" for r in caplog.records)  # the second "line"
    # Detected by content, also on a port it does not declare.
    for port in (7777, 18080):
        pipeline = Pipeline(registry, node="n", source="pcap")
        docs = pipeline.feed(_exchange(port).columns()) + pipeline.finish()
        got = [(d["protocol"], d["method"], d["path"], d["status"]) for d in docs]
        assert got == [
            ("line", "LINE", "hello", 200),
            ("line", "LINE", "again", 404),
            ("line", "LINE", "third", 500),
        ], port
        assert docs[0]["summary"] == "LINE -> 200"


def test_without_plugins_the_protocol_is_unknown(plugin_dir: Path) -> None:
    pipeline = Pipeline(default_registry(plugins=False), node="n", source="pcap")
    docs = pipeline.feed(_exchange(7777).columns()) + pipeline.finish()
    assert [d["protocol"] for d in docs] == ["tcp"]


def test_wiretide_analyze_uses_installed_dissectors(plugin_dir: Path, tmp_path: Path) -> None:
    pcap = tmp_path / "line.pcap"
    write_pcap(pcap, _exchange(9000).frames)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_dir), *sys.path]))
    run = subprocess.run(
        [sys.executable, "-m", "wiretide.cli.main", "analyze", str(pcap), "--ports", "9000=line"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    docs = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert [(d["protocol"], d["status"]) for d in docs] == [("line", 200), ("line", 404), ("line", 500)]
    assert "line 3" in run.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "wiretide.cli.main", "analyze", str(pcap), "--ports", "9000=nosuch"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert unknown.returncode == 2 and "nosuch" in unknown.stderr
    assert parse_overrides("9000=line") == {9000: "line"}
