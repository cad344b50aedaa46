"""Real HTTP/2 and gRPC captures (../shared/pcaps/http2, grpc): entries per stream, gRPC message
counts and statuses, each compared with what tshark finds in the same file, plus golden JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.pcaps import PCAPS, files_or_missing, needs_pcaps, require_pcaps
from tests.unit.dissector.test_http2_support import run_file, streams

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "http2" / "golden"
FILES = sorted([*PCAPS.glob("http2/*.pcap*"), *PCAPS.glob("grpc/*.pcap*")])
# Non-standard ports tshark must be told about (MANIFEST.md "decode-as"); wiretide finds them alone.
DECODE_AS = (8080, 29518, 51400, 9001, 30035, 20035, 7070)

pytestmark = [
    needs_pcaps,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark"),
]


def tshark(path: Path, display: str, fields: list[str]) -> list[list[str]]:
    args = [
        "tshark",
        "-r",
        str(path),
        "-Y",
        display,
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=|",
    ]
    for port in DECODE_AS:
        args += ["-d", f"tcp.port=={port},http2"]
    for f in fields:
        args += ["-e", f]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return [line.split("\t") for line in done.stdout.splitlines()]


def tshark_streams(path: Path) -> set[tuple[str, int]]:
    """(tcp stream, HTTP/2 stream) pairs that carry a header block (HEADERS or a PUSH_PROMISE)."""
    out: set[tuple[str, int]] = set()
    for tcp, types, sids, promised in tshark(
        path,
        "http2.type == 1 || http2.type == 5",
        ["tcp.stream", "http2.type", "http2.streamid", "http2.push_promise.promised_stream_id"],
    ):
        for t, s in zip(types.split("|"), sids.split("|"), strict=True):
            if t == "1":
                out.add((tcp, int(s)))
        for p in filter(None, promised.split("|")):
            out.add((tcp, int(p)))
    return out


def tshark_grpc_messages(path: Path) -> dict[int, int]:
    """gRPC messages per HTTP/2 stream (request and response together)."""
    counts: dict[int, int] = defaultdict(int)
    for sids, lengths in tshark(path, "grpc", ["http2.streamid", "grpc.message_length"]):
        stream = next(int(s) for s in sids.split("|") if s != "0")
        counts[stream] += len([x for x in lengths.split("|") if x])
    return dict(counts)


@pytest.fixture(scope="module", params=files_or_missing(FILES), ids=lambda f: f.name)
def capture(request: pytest.FixtureRequest) -> tuple[Path, list[dict[str, Any]]]:
    path: Path = request.param
    require_pcaps(path)
    return path, run_file(path)


def test_one_entry_per_stream_as_tshark_counts_them(capture: tuple[Path, list[dict[str, Any]]]) -> None:
    path, docs = capture
    ours = streams(docs)
    theirs = tshark_streams(path)
    assert len(ours) == len(theirs)
    assert sorted(int(d["stream"]) for d in ours) == sorted(s for _, s in theirs)


def test_grpc_message_counts_and_statuses_match_tshark(capture: tuple[Path, list[dict[str, Any]]]) -> None:
    path, docs = capture
    grpc_docs = [d for d in streams(docs) if d["protocol"] == "grpc"]
    if "grpc" not in path.parent.name:
        assert grpc_docs == []
        return
    assert grpc_docs
    expected = tshark_grpc_messages(path)
    ours = {
        int(d["stream"]): d["request"]["message_count"] + (d["response"] or {}).get("message_count", 0)
        for d in grpc_docs
    }
    assert ours == expected
    names = tshark(path, "http2", ["http2.header.name", "http2.header.value"])
    seen = [
        int(vals.split("|")[names_.split("|").index("grpc-status")])
        for names_, vals in names
        if "grpc-status" in names_.split("|")
    ]
    ours_status = [(d["response"] or {}).get("grpc_status") for d in grpc_docs]
    assert sorted(s for s in ours_status if s is not None) == sorted(seen)


def _stable(doc: dict[str, Any]) -> dict[str, Any]:
    """What a golden file pins: everything but per-run ids (the entry's, and an upgrade's link)."""
    out = {k: v for k, v in doc.items() if k != "id"}
    for side in ("request", "response"):
        if isinstance(out.get(side), dict) and "upgrade_id" in out[side]:
            out[side] = {k: v for k, v in out[side].items() if k != "upgrade_id"}
            out[side]["upgrade_linked"] = True
    return out


def test_entries_match_the_golden_json(capture: tuple[Path, list[dict[str, Any]]]) -> None:
    path, docs = capture
    golden = GOLDEN / f"{path.name}.json"
    got = [_stable(d) for d in docs]
    if not golden.exists():
        pytest.fail(
            f"no golden file {golden}; write it with `python -m tests.unit.dissector.test_http2_pcaps`"
        )
    assert got == json.loads(golden.read_text())


def write_goldens() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for path in FILES:
        docs = [_stable(d) for d in run_file(path)]
        (GOLDEN / f"{path.name}.json").write_text(json.dumps(docs, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_goldens()


OTHERS = sorted(
    f
    for f in PCAPS.glob("*/*")
    if f.parent.name not in ("http2", "grpc") and f.suffix in (".pcap", ".pcapng")
)


def test_captures_of_other_protocols_dissect_the_same_with_http2_registered() -> None:
    """The mid-connection heuristics never claim a flow that is not HTTP/2."""
    from tests.unit.dissector.pcaps import read_columns
    from tests.unit.dissector.test_http2_support import run
    from wiretide.dissector.pipeline import Pipeline
    from wiretide.dissector.protocols import BUILTINS
    from wiretide.dissector.registry import Registry

    assert len(OTHERS) > 50
    for path in OTHERS:
        cols = read_columns(path)
        with_h2 = Counter(d["protocol"] for d in run(cols))
        pipe = Pipeline(Registry([s for s in BUILTINS if s.name not in ("http2", "h2c")]))
        without = Counter(d["protocol"] for d in pipe.feed(cols) + pipe.finish())
        assert with_h2 == without, path.name


def late_columns(path: Path, skip: int) -> Any:
    """The capture as if it had started `skip` packets late."""
    import dpkt

    from wiretide.common.packets import ColumnBuilder

    with path.open("rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        builder = ColumnBuilder()
        iface = builder.interface("file", reader.datalink())
        for n, (ts, frame) in enumerate(reader):
            if n >= skip:
                builder.append(frame, len(frame), int(ts * 1_000_000_000), iface)
    return builder.take()


@pytest.mark.parametrize("skip", [5, 12, 20])
def test_joining_the_nghttp2_connection_late_still_yields_both_streams(skip: int) -> None:
    """The big request header block of stream 13 is lost (only its response remains); the pushed
    stream 2, whose promise comes later, is recovered whole."""
    from tests.unit.dissector.test_http2_support import run

    docs = streams(run(late_columns(PCAPS / "http2/arkime_http2-nghttp2.pcap", skip)))
    got = {d["stream"]: d for d in docs}
    assert sorted(got) == ["13", "2"]
    assert (got["2"]["path"], got["2"]["status"], got["2"]["request"]["pushed"]) == (
        "/stylesheets/screen.css",
        200,
        True,
    )
    assert got["13"]["request"] is None and got["13"]["status"] == 200
    assert got["13"]["error"]["type"] == "unmatched"


@pytest.mark.parametrize(("skip", "whole"), [(5, True), (13, False), (20, False)])
def test_joining_a_grpc_stream_late_keeps_what_can_be_recovered(skip: int, whole: bool) -> None:
    from tests.unit.dissector.test_http2_support import run

    (d,) = streams(run(late_columns(PCAPS / "grpc/deepflow_grpc-service-name.pcap", skip)))
    assert d["protocol"] == "grpc"
    assert d["response"]["grpc_status"] == 0 and d["status"] == 200
    if whole:
        assert d["method"] == "ClientStreamRPC" and d["request"]["message_count"] == 3
    else:
        assert d["request"] is None or d["request"].get("headers_missing") is True
