"""Recording jobs, bundles, the flow selection of snapshots and `record("name")`, without services."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.pcaps import pcap, require_pcaps
from wiretide.common.kfl import KflError, compile_predicate
from wiretide.common.recording import DAY_NS, NS, InvalidJob, RecordingJob
from wiretide.gateway.recording import bundle as bundles
from wiretide.gateway.recording.kfl import expand, placeholder, record_calls
from wiretide.gateway.recording.manager import selection_kfl
from wiretide.gateway.recording.pcapng import select_flows

T0 = 1_800_000_000 * NS


def entry(i: int, ns: str = "shop", pod: str = "api-1", status: int = 200) -> dict[str, Any]:
    return {
        "id": f"01TEST{i:020d}",
        "node": "node-a",
        "timestamp": T0 + i * NS,
        "elapsed_us": 1000,
        "protocol": "http",
        "transport": "tcp",
        "method": "GET",
        "path": f"/p/{i}",
        "status": status,
        "flow_id": f"{i:08x}",
        "src": {"ip": "10.0.0.1", "port": 40000 + i, "name": "frontend-1", "namespace": ns},
        "dst": {
            "ip": "10.0.0.2",
            "port": 80,
            "name": pod,
            "namespace": ns,
            "pod": {"name": pod, "namespace": ns},
        },
        "size": {"request": 10, "response": 20},
    }


# ---- jobs ------------------------------------------------------------------------------------------


def test_a_daily_job_runs_in_its_windows_and_not_after_its_repetitions() -> None:
    job = RecordingJob(name="nightly", start_ns=T0, duration_s=600, repetitions=2)
    assert job.active_window(T0 - 1) is None
    assert job.active_window(T0 + 5 * NS) == (T0, T0 + 600 * NS)
    assert job.active_window(T0 + 600 * NS) is None
    assert job.next_start(T0 + 700 * NS) == T0 + DAY_NS
    assert job.active_window(T0 + DAY_NS + NS) == (T0 + DAY_NS, T0 + DAY_NS + 600 * NS)
    assert job.active_window(T0 + 2 * DAY_NS + NS) is None
    assert job.finished(T0 + DAY_NS + 600 * NS)
    forever = RecordingJob(name="always", start_ns=T0, duration_s=60, repetitions=0)
    assert forever.active_window(T0 + 400 * DAY_NS) == (T0 + 400 * DAY_NS, T0 + 400 * DAY_NS + 60 * NS)
    expiring = RecordingJob(name="until", start_ns=T0, duration_s=60, repetitions=0, expiry_ns=T0 + DAY_NS)
    assert expiring.active_window(T0 + DAY_NS + NS) is None
    assert expiring.finished(T0 + DAY_NS)


def test_a_triggered_or_stopped_job_has_no_scheduled_window() -> None:
    trig = RecordingJob.from_dict(
        {"name": "t", "trigger": {"condition": "http", "threshold": 3, "window_s": 60}}
    )
    assert trig.active_window(T0) is None and not trig.finished(T0)
    assert RecordingJob(name="s", start_ns=T0, stopped=True).active_window(T0 + NS) is None


def test_a_job_survives_its_json_form() -> None:
    job = RecordingJob.from_dict(
        {
            "name": "checkout-5xx",
            "filter": "http && status_code >= 500",
            "start_ns": T0,
            "duration_s": 120,
            "namespaces": ["shop", "shop"],
            "upload": {"kind": "s3", "bucket": "evidence", "prefix": "/wt/", "retention_days": 30},
        }
    )
    again = RecordingJob.from_json(job.to_json(), revision=7)
    assert again == job and again.revision == 7
    assert job.namespaces == ("shop",) and job.upload is not None and job.upload.prefix == "wt"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"name": "../etc"}, "name"),
        ({"name": "x", "duration_s": 0}, "duration_s"),
        ({"name": "x", "duration_s": 90000}, "duration_s"),
        ({"name": "x", "repetitions": -1}, "repetitions"),
        ({"name": "x", "preceding_s": 7200}, "preceding_s"),
        ({"name": "x", "nodes": "a"}, "nodes"),
        ({"name": "x", "surprise": 1}, "surprise"),
        ({"name": "x", "trigger": {"condition": ""}}, "trigger.condition"),
        ({"name": "x", "upload": {"kind": "ftp", "bucket": "abc"}}, "upload.kind"),
        ({"name": "x", "upload": {"kind": "s3", "bucket": "A"}}, "upload.bucket"),
        ({"name": "x", "upload": {"kind": "s3", "bucket": "abc", "prefix": "a/../b"}}, "upload.prefix"),
        ({"name": "x", "start_ns": "soon"}, "start_ns"),
        ({"name": "x", "duration_s": float("nan")}, "duration_s"),
    ],
)
def test_a_bad_job_is_refused_naming_the_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidJob, match=field.rsplit(".", maxsplit=1)[-1] if field != "name" else "name"):
        RecordingJob.from_dict(doc)


def test_random_json_never_raises_anything_but_invalid_job() -> None:
    for raw in (b"", b"[]", b"null", b'{"name": 5}', b"\xff", b'{"name": "a", "trigger": []}'):
        with pytest.raises(InvalidJob):
            RecordingJob.from_json(raw)


# ---- selection and record("name") ----------------------------------------------------------------


def test_a_run_selects_its_window_filter_namespaces_and_nodes() -> None:
    job = RecordingJob(name="r", filter="status_code >= 500", namespaces=("shop",), nodes=("node-a",))
    keep = compile_predicate(selection_kfl(job, T0 + 2 * NS, T0 + 5 * NS))
    docs = [entry(i, status=503) for i in range(8)] + [entry(3, ns="other", status=503), entry(4, status=200)]
    assert [d["path"] for d in docs if keep(d)] == ["/p/2", "/p/3", "/p/4"]


def test_record_calls_are_found_as_tokens_not_as_text() -> None:
    text = 'record("incident") && path != "record(\\"x\\")" || record( "b" )'
    assert [name for *_, name in record_calls(text)] == ["incident", "b"]
    assert len(placeholder(text)) == len(text)
    assert placeholder('record("a") && status_code >= 500').startswith("true")


def test_record_expands_to_the_recordings_selection_and_an_unknown_one_is_an_error() -> None:
    sel = {"inc": 'path == "/p/3"'}
    keep = compile_predicate(expand('record("inc") && method == "GET"', sel.get))
    assert [d["path"] for d in map(entry, range(5)) if keep(d)] == ["/p/3"]
    with pytest.raises(KflError, match="no recording named 'gone'") as err:
        expand('status_code > 1 && record("gone")', sel.get)
    assert err.value.position == 19


# ---- bundles ----------------------------------------------------------------------------------------


def make_run(tmp: Path, entries: list[dict[str, Any]]) -> Path:
    run = tmp / "run"
    (run / "packets").mkdir(parents=True)
    (run / bundles.ENTRIES).write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entries))
    ident = {"ip": "10.0.0.2", "name": "api-1", "namespace": "shop", "kind": "pod", "valid_from_ns": str(T0)}
    (run / bundles.IDENTITIES).write_bytes(orjson.dumps(ident) + b"\n")
    (run / "packets" / "node-a.pcapng").write_bytes(pcapng_of(pcap("http1.1/zeek_get.pcap")))
    return run


def pcapng_of(path: Path) -> bytes:
    require_pcaps(path)
    from wiretide.capture.pcapng import PcapngWriter
    from wiretide.capture.sources.pcapfile import read_batches

    out = io.BytesIO()
    writer = PcapngWriter(out, "node-a")
    for cols in read_batches(path, 256):
        writer.write(cols)
    return out.getvalue()


def pack(tmp: Path, entries: list[dict[str, Any]]) -> Path:
    out = tmp / "rec-1.tar.gz"
    bundles.pack(
        make_run(tmp, entries),
        out,
        {"name": "rec", "run": "rec-1", "window": {"start_ns": T0, "end_ns": T0 + 60 * NS}},
    )
    return out


def test_a_bundle_round_trips_whole_with_checksums(tmp_path: Path) -> None:
    docs = [entry(i) for i in range(5)]
    b = bundles.open_bundle(pack(tmp_path, docs), tmp_path / "open")
    assert list(b.entries()) == docs
    assert [i["name"] for i in b.identities()] == ["api-1"]
    assert [p.name for p in b.pcapng_paths()] == ["node-a.pcapng"]
    assert set(b.manifest["files"]) == {"entries.jsonl", "identities.jsonl", "packets/node-a.pcapng"}
    assert b.name == "rec" and b.run == "rec-1"


def rewrite(src: Path, dst: Path, change: Any) -> Path:
    """A copy of the bundle `src` whose members went through `change(name, data) -> [(name, data)]`."""
    with tarfile.open(src, "r:gz") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]  # type: ignore[union-attr]
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in members:
            for new_name, new_data in change(name, data):
                info = tarfile.TarInfo(new_name)
                info.size = len(new_data)
                tar.addfile(info, io.BytesIO(new_data))
    return dst


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda n, d: [(n, d[:-3] + b"xx\n" if n == "entries.jsonl" else d)], "does not match its checksum"),
        (lambda n, d: [] if n.startswith("packets/") else [(n, d)], "listed in the manifest but missing"),
        (lambda n, d: [(n, d)] + ([("extra.txt", b"hi")] if n == "entries.jsonl" else []), "not listed"),
        (lambda n, d: [("../../evil" if n == "entries.jsonl" else n, d)], "unsafe path"),
        (lambda n, d: [] if n == "manifest.json" else [(n, d)], "must come first"),
        (lambda n, d: [(n, b"{" if n == "manifest.json" else d)], "manifest.json is not JSON"),
        (lambda n, d: [(n, d), (n, d)] if n == "identities.jsonl" else [(n, d)], "appears twice"),
    ],
)
def test_a_damaged_bundle_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, change: Any, message: str
) -> None:
    bad = rewrite(pack(tmp_path, [entry(1)]), tmp_path / "bad.tar.gz", change)
    with pytest.raises(bundles.BundleError, match=message):
        bundles.open_bundle(bad, tmp_path / "open")
    assert not (tmp_path / "open").exists()


def test_a_truncated_or_non_gzip_bundle_is_a_clear_error(tmp_path: Path) -> None:
    good = pack(tmp_path, [entry(i) for i in range(50)]).read_bytes()
    for name, data in (("cut.tar.gz", good[: len(good) // 2]), ("plain.tar.gz", b"not a bundle at all"),
                       ("empty.tar.gz", gzip.compress(b""))):  # fmt: skip
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(bundles.BundleError):
            bundles.open_bundle(path, tmp_path / "open")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wiretide.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_analyze_prints_a_bundles_entries_as_recorded_with_names(tmp_path: Path) -> None:
    docs = [entry(i, status=500 if i % 2 else 200) for i in range(6)]
    path = pack(tmp_path, docs)
    out = run_cli("analyze", str(path))
    assert out.returncode == 0, out.stderr
    assert [orjson.loads(line) for line in out.stdout.splitlines()] == docs
    assert "checksums verified" in out.stderr
    table = run_cli(
        "analyze", str(path), "--format", "table", "--filter", 'record("rec") && status_code >= 500'
    )
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()[1:]
    assert len(rows) == 3 and all("shop/api-1" in r and "shop/frontend-1" in r for r in rows)
    other = run_cli("analyze", str(path), "--filter", 'record("nope")')
    assert other.returncode == 2 and "no recording named 'nope'" in other.stderr and other.stdout == ""


def test_record_in_a_bundles_filter_is_its_recording_and_another_name_is_an_error() -> None:
    from wiretide.cli.record_cmd import bundle_filter
    from wiretide.common.kfl import parse_query

    docs = [entry(i, status=500 if i % 2 else 200) for i in range(6)]
    for text in ('record("rec") && status_code >= 500', 'status_code >= 500 && record("rec-1")'):
        keep = compile_predicate(parse_query(bundle_filter(text, "rec", "rec-1")))
        assert [d["id"] for d in docs if keep(d)] == [d["id"] for d in docs if d["status"] >= 500]
    with pytest.raises(KflError) as caught:
        bundle_filter('http && record("other")', "rec", "rec-1")
    assert caught.value.position == 8 and "rec" in caught.value.hint


def test_record_outside_a_place_that_knows_recordings_is_explained_not_unknown() -> None:
    from wiretide.common.kfl import parse_query

    with pytest.raises(KflError, match="only where recordings are known") as caught:
        parse_query('http && record("errors")')
    assert caught.value.position == 8
    for bad in ("record(5)", "record()", 'record("a", "b")'):
        with pytest.raises(KflError, match="record takes one string"):
            parse_query(bad)


def test_analyze_refuses_a_corrupt_bundle_with_exit_1(tmp_path: Path) -> None:
    bad = rewrite(pack(tmp_path, [entry(1)]), tmp_path / "bad.tar.gz",
                  lambda n, d: [(n, d.replace(b"/p/1", b"/p/9"))])  # fmt: skip
    out = run_cli("analyze", str(bad))
    assert out.returncode == 1
    assert "not a usable recording" in out.stderr and "checksum" in out.stderr
    assert out.stdout == ""


# ---- packets of chosen flows -------------------------------------------------------------------------


def test_only_the_packets_of_the_chosen_flows_are_kept_and_dissect_alone(tmp_path: Path) -> None:
    from wiretide.dissector.pipeline import Pipeline
    from wiretide.dissector.registry import default_registry

    source = pcap("http1.1/zeek_pipelined-requests.pcap")
    data = pcapng_of(source) + pcapng_of(pcap("http1.1/zeek_get.pcap"))  # two sections, two flows at least

    def dissect(blob: bytes) -> list[dict[str, Any]]:
        from wiretide.capture.sources.pcapfile import read_batches

        f = tmp_path / f"d{len(blob)}.pcapng"
        f.write_bytes(blob)
        p = Pipeline(default_registry(), node="node-a")
        out: list[dict[str, Any]] = []
        for cols in read_batches(f, 256):
            out += p.feed(cols)
        return out + p.finish()

    everything = dissect(data)
    flows = {e["flow_id"] for e in everything}
    assert len(flows) >= 2
    chosen = sorted(flows)[0]
    sel = select_flows(data, {chosen})
    assert sel.kept and sel.kept < sel.seen and sel.node == "node-a" and not sel.damaged
    kept = dissect(bytes(sel.data))
    assert {e["flow_id"] for e in kept} == {chosen}
    assert [e["path"] for e in kept] == [e["path"] for e in everything if e["flow_id"] == chosen]


def test_flow_selection_of_damaged_input_keeps_what_came_before_and_never_raises() -> None:
    data = pcapng_of(pcap("http1.1/zeek_get.pcap"))
    flows = {"00000000"}
    for cut in (7, 40, len(data) // 2, len(data) - 1):
        sel = select_flows(data[:cut], flows)
        assert sel.damaged or cut < 12
    assert not select_flows(b"", flows).kept
    sel = select_flows(bytes(range(256)) * 40, flows)
    assert sel.kept == 0
