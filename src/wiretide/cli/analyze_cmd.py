"""`wiretide analyze FILE` (or `-r FILE`, `-r -` for stdin): the whole dissection pipeline offline on
a pcap/pcapng file, no NATS.

Rule: stdout carries only the requested output (jsonl, table or HAR) so that it pipes cleanly;
progress, KFL warnings, errors and the closing summary go to stderr. A capture that ends mid-record
still yields the entries read before the cut, then an error and exit 1, as tshark does. `--jobs N`
splits flows across N processes by the direction-independent flow hash, so every flow is dissected
whole by exactly one of them. Output is streamed — JSON lines and table rows as each batch is
dissected, HAR through a bounded reorder window (`har.HarStream`) — so memory does not grow with the
number of entries.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any, Final

import orjson

from wiretide.cli.output import TimeColumn, add_time_format, endpoint, kfl_warnings, reader_gone

if TYPE_CHECKING:
    from wiretide.common.har import HarStream
    from wiretide.common.kfl import Query
    from wiretide.dissector.redact import Redactor
    from wiretide.dissector.registry import Registry

# Packets per batch read from the file: enough to amortise the per-batch work, few enough that a
# batch's entries are written and freed while their memory is still in the CPU cache.
BATCH_PACKETS: Final = 256
# Files larger than this get a progress bar on stderr (when stderr is a terminal or --progress).
PROGRESS_MIN_BYTES: Final = 4 * 1024 * 1024
# Seconds between progress redraws.
PROGRESS_EVERY_S: Final = 0.5
FORMATS: Final = ("jsonl", "table", "har")
# The file name that means standard input (tshark -r -, tcpdump -r -).
STDIN: Final = "-"
# Exit status: 1 when the capture could not be read whole (entries before the damage are written),
# 2 for a usage error (bad option, a path that is no readable file).
EXIT_BAD_CAPTURE: Final = 1
EXIT_USAGE: Final = 2
# The first two bytes of every gzip file, so of every recording bundle (RFC 1952 §2.3.1).
GZIP_MAGIC: Final = b"\x1f\x8b"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        help="dissect a pcap/pcapng file into entries (API calls)",
        description="Run the dissector offline on a capture file and print its entries.",
    )
    p.add_argument(
        "file",
        nargs="?",
        help="pcap or pcapng file ('-' reads standard input), or a recording bundle (.tar.gz)",
    )
    p.add_argument(
        "-r",
        "--read-file",
        metavar="FILE",
        help="the capture to read, as tshark -r and tcpdump -r ('-' reads standard input)",
    )
    p.add_argument("--format", choices=FORMATS, default="jsonl", help="jsonl (default), table or har")
    add_time_format(p)
    p.add_argument(
        "--filter", metavar="KFL", help="keep entries matching a KFL query, e.g. 'http && status >= 500'"
    )
    p.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="processes to split flows across (default 1)"
    )
    p.add_argument("--node", default="", help="node name written into each entry")
    p.add_argument(
        "--body-cap", type=int, default=64 * 1024, metavar="BYTES", help="body bytes kept per message"
    )
    p.add_argument(
        "--ports", default="", metavar="PORT=PROTO,...", help="force a protocol on a port (8443=http)"
    )
    p.add_argument(
        "--redact-rules",
        metavar="FILE",
        help="redaction rules (YAML or JSON) added to the built-in ones (docs/security.md)",
    )
    p.add_argument("--no-redact", action="store_true", help="keep every value as captured (no redaction)")
    p.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    p.add_argument("--quiet", action="store_true", help="no summary on stderr")
    p.add_argument(
        "--traces", metavar="OUT.json", help="also write the capture's traces there, as OTLP/JSON lines"
    )
    p.add_argument(
        "--traces-endpoint", metavar="URL", help="also export the capture's traces over OTLP to URL"
    )
    p.add_argument(
        "--traces-protocol",
        choices=("grpc", "http/protobuf"),
        help="OTLP protocol of --traces-endpoint (default: http/protobuf for port 4318 or a /v1/traces"
        " path, else grpc)",
    )


def _parse_filter(text: str | None) -> Query | None:
    """The checked --filter query; a bad one is a SystemExit with the caret rendering."""
    if not text:
        return None
    from wiretide.common.kfl import KflError, parse_query

    try:
        return parse_query(text)
    except KflError as exc:
        raise SystemExit(f"wiretide analyze: bad --filter:\n{exc.render(text)}") from None


def _redactor(rules_file: str | None, off: bool) -> Redactor:
    """The dissector's redaction for this run: the built-in rules, a rules file's added, or none."""
    from pathlib import Path

    from wiretide.dissector import redact

    if off:
        return redact.NO_REDACTION
    if not rules_file:
        return redact.DEFAULT_REDACTOR
    try:
        text = Path(rules_file).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {rules_file}: {exc.strerror}") from None
    try:
        return redact.Redactor(redact.parse_rules_text(text, redact.is_yaml(rules_file)))
    except redact.RulesError as exc:
        raise ValueError(f"{rules_file}: {exc}") from None


def _compile_filter(text: str | None) -> Callable[[dict[str, Any]], bool] | None:
    query = _parse_filter(text)
    if query is None:
        return None
    from wiretide.common.kfl import compile_predicate

    return compile_predicate(query)


def _work(
    path: str,
    shard: tuple[int, int] | None,
    registry: Registry,
    node: str,
    body_cap: int,
    filter_text: str | None,
    sink: Callable[[list[dict[str, Any]]], None],
    progress: Callable[[int], None] | None,
    redactor: Redactor | None = None,
) -> dict[str, Any]:
    """Dissect the file (or one shard of its flows); hand entries to `sink`; return the statistics."""
    from wiretide.capture.sources.pcapfile import PcapError, read_batches, read_stream
    from wiretide.common.collector import collect_rarely
    from wiretide.dissector.pipeline import Limits, Pipeline
    from wiretide.dissector.redact import DEFAULT_REDACTOR

    keep = _compile_filter(filter_text)
    pipeline = Pipeline(
        registry,
        node=node,
        source="pcap",
        limits=Limits(body_cap=body_cap),
        shard=shard,
        redactor=redactor if redactor is not None else DEFAULT_REDACTOR,
    )
    error = None
    truncated = False
    seen = 0
    collect_rarely()  # the modules and the registry live until exit; exchanges are freed as they go
    try:
        batches = (
            read_stream(sys.stdin.buffer, "standard input", BATCH_PACKETS)
            if path == STDIN
            else read_batches(path, BATCH_PACKETS)
        )
        for cols in batches:
            entries = pipeline.feed(cols)
            if keep is not None:
                entries = [e for e in entries if keep(e)]
            if entries:
                sink(entries)
            if progress is not None:
                seen += len(cols.data) + 16 * len(cols.caplens)
                progress(seen)
    except PcapError as exc:
        error = str(exc)
        truncated = exc.truncated
    entries = pipeline.finish()
    if keep is not None:
        entries = [e for e in entries if keep(e)]
    if entries:
        sink(entries)
    return {
        "stats": dict(pipeline.stats),
        "drops": dict(pipeline.drops) | {f"defrag_{k}": v for k, v in pipeline.defrag.drops.items()},
        "entries": dict(pipeline.entries_by_protocol),
        "undissected": dict(pipeline.undissected),
        "error": error,
        "truncated": truncated,
    }


def _jsonl(entries: list[dict[str, Any]]) -> bytes:
    """A batch of entries as JSON lines, written with one call."""
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    return b"".join([dumps(e, option=newline) for e in entries])


def _worker(args: tuple[str, int, int, Registry, str, int, str | None, Redactor], conn: Any) -> None:
    path, index, count, registry, node, body_cap, filter_text, redactor = args

    def sink(entries: list[dict[str, Any]]) -> None:
        conn.send_bytes(_jsonl(entries))

    try:
        summary = _work(path, (index, count), registry, node, body_cap, filter_text, sink, None, redactor)
        conn.send_bytes(b"\x00" + orjson.dumps(summary))
    except SystemExit as exc:
        conn.send_bytes(b"\x01" + str(exc).encode())
    finally:
        conn.close()


class _Progress:
    __slots__ = ("last", "started", "total")

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.started = self.last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        frac = min(1.0, done / self.total)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r[{bar:<30}] {frac * 100:5.1f}%  {now - self.started:6.1f}s")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\r" + " " * 60 + "\r")
        sys.stderr.flush()


# ---- output formats ---------------------------------------------------------------------------


def _table_header(out: IO[str], times: TimeColumn) -> None:
    out.write(
        f"{'TIME':<{times.width}} {'PROTO':<5} {'SOURCE':<28} {'DESTINATION':<28} {'STATUS':>6} {'MS':>8}"
        "  SUMMARY\n"
    )


def _table_rows(entries: Iterable[dict[str, Any]], out: IO[str], times: TimeColumn) -> None:
    width = times.width
    for e in entries:
        t = times(e["timestamp"])
        src = endpoint(e["src"]["ip"], e["src"]["port"])
        dst = endpoint(e["dst"]["ip"], e["dst"]["port"])
        status = "" if e.get("status") is None else str(e["status"])
        ms = f"{e['elapsed_us'] / 1000:.1f}"
        summary = e.get("summary") or ""
        if e.get("error"):
            summary += f"  [{e['error']['type']}]"
        out.write(f"{t:<{width}} {e['protocol']:<5} {src:<28} {dst:<28} {status:>6} {ms:>8}  {summary}\n")


def _summary(results: list[dict[str, Any]], elapsed: float, out: IO[str]) -> None:
    stats: Counter[str] = Counter()
    drops: Counter[str] = Counter()
    entries: Counter[str] = Counter()
    undissected: Counter[str] = Counter()  # packets no entry stands for, by protocol (pipeline.py)
    for r in results:
        stats.update(r["stats"])
        drops.update(r["drops"])
        entries.update(r["entries"])
        undissected.update(r.get("undissected", {}))
    packets = stats["packets"] // max(1, len(results)) if len(results) > 1 else stats["packets"]
    rate = packets / elapsed if elapsed > 0 else 0.0
    out.write(
        f"wiretide analyze: {packets} packets in {elapsed:.2f}s ({rate:,.0f} packets/s), "
        f"{stats['flows_tcp']} TCP + {stats['flows_udp']} UDP flows"
        + (f" + {stats['flows_sctp']} SCTP associations" if stats["flows_sctp"] else "")
        + f", {sum(entries.values())} entries\n"
    )
    out.write("  entries: " + (", ".join(f"{k} {v}" for k, v in sorted(entries.items())) or "none") + "\n")
    out.write(
        f"  gaps {stats['gaps']}, violations {stats['violations']}, "
        f"unparsed flows {stats['flows_unparsed']}, "
        f"not IP {stats['packets_not_ip'] // max(1, len(results))}\n"
    )
    if undissected:
        counted = ", ".join(f"{k} {v}" for k, v in sorted(undissected.items()))
        out.write(f"  counted, not dissected: {counted}\n")
    if drops:
        out.write("  drops: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) + "\n")


def _usage(message: str) -> int:
    print(f"wiretide analyze: {message}", file=sys.stderr)
    return EXIT_USAGE


def _maybe_bundle(path: str) -> bool:
    """False for a regular file that does not start as gzip does (RFC 1952 §2.3.1), as a recording
    bundle must: a capture never does, so the bundle reader and its imports are left alone for one.
    Anything else is for `looks_like_bundle` to tell (a pipe is not opened here)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return True
        with open(path, "rb") as fh:
            return fh.read(2) == GZIP_MAGIC
    except OSError:
        return True


def _capture_path(args: argparse.Namespace) -> str | None:
    """The capture to read, from FILE or -r FILE (exactly one of them)."""
    if args.file is not None and args.read_file is not None:
        return None
    path: str | None = args.read_file if args.read_file is not None else args.file
    return path


def run(args: argparse.Namespace) -> int:
    path = _capture_path(args)
    if path is None:
        if args.file is None:
            return _usage("which capture? give FILE or -r FILE ('-' for standard input)")
        return _usage(f"give the capture once: FILE ({args.file}) or -r FILE ({args.read_file}), not both")
    if args.jobs < 1:
        return _usage("--jobs must be at least 1")
    if path != STDIN and _maybe_bundle(path):
        from wiretide.cli.record_cmd import analyze_bundle, looks_like_bundle

        if looks_like_bundle(path):  # a recording bundle: its entries, names as recorded
            return analyze_bundle(args, path)
    if args.body_cap < 0:
        return _usage("--body-cap must be >= 0")
    from wiretide.capture.sources.pcapfile import PcapError, check_readable

    size = 0
    if path != STDIN:
        try:
            size = check_readable(path)
        except PcapError as exc:
            return _usage(str(exc))
    if args.jobs > 1 and (size < 0 or path == STDIN):
        what = "standard input" if path == STDIN else f"{path} (not a regular file)"
        return _usage(f"--jobs {args.jobs} reads the capture once per job, and {what} can be read only once")
    try:
        from wiretide.dissector.registry import default_registry, parse_overrides

        # Built once (the entry-point scan reads every installed distribution's metadata); --jobs
        # workers are forked with it.
        registry = default_registry(parse_overrides(args.ports))
    except ValueError as exc:
        print(f"wiretide analyze: --ports: {exc}", file=sys.stderr)
        return 2
    try:
        redactor = _redactor(args.redact_rules, args.no_redact)
    except ValueError as exc:
        print(f"wiretide analyze: --redact-rules: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        query = _parse_filter(args.filter)
    except SystemExit as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    if query is not None:
        kfl_warnings("wiretide analyze", query.text, query.warnings, sys.stderr)
    traces = None
    if args.traces or args.traces_endpoint or args.traces_protocol:
        # Imported only when asked for: the tracer's assembler and OTLP transports (nats, aiohttp,
        # httpx) take longer to import than dissecting a small capture.
        from wiretide.cli.traces_out import traces_output

        try:
            traces = traces_output(args)
        except (ValueError, OSError) as exc:
            return _usage(str(exc))

    fmt: str = args.format
    stdout = sys.stdout
    binary = stdout.buffer
    har: HarStream | None = None
    if fmt == "har":
        from wiretide.common.har import HarStream

        har = HarStream(binary.write)  # streamed: written as entries come, within a bounded window
    times = TimeColumn(args.time_format)
    if fmt == "table":
        _table_header(stdout, times)

    def write(entries: list[dict[str, Any]]) -> None:
        if fmt == "jsonl":
            binary.write(_jsonl(entries))
        elif fmt == "table":
            _table_rows(entries, stdout, times)
        elif har is not None:
            har.add(entries)

    sink = write if traces is None else traces.wrap(write)
    show = size >= PROGRESS_MIN_BYTES and (args.progress or sys.stderr.isatty())
    started = time.monotonic()
    progress = _Progress(size) if show else None
    try:
        if args.jobs == 1:
            results = [
                _work(path, None, registry, args.node, args.body_cap, args.filter, sink, progress, redactor)
            ]
        else:
            # (traces need every entry parsed: the jsonl pass-through is left for the sink's own)
            results = _run_jobs(args, path, registry, fmt if traces is None else "", sink, redactor)
    except BrokenPipeError:
        reader_gone()
        return 0
    if progress is not None:
        progress.done()
    if har is not None:
        try:
            har.close()
        except BrokenPipeError:
            reader_gone()
            return 0
    stdout.flush()
    # Every job reads the whole file, so they all stop at the same damage: say it once.
    error = next((r for r in results if r.get("error")), None)
    read_nothing = not any(r["stats"].get("packets") for r in results)
    if not args.quiet and not (error is not None and read_nothing):
        _summary(results, time.monotonic() - started, sys.stderr)
    if traces is not None and not traces.finish(None if args.quiet else sys.stderr) and error is None:
        return EXIT_BAD_CAPTURE
    if error is not None:
        print(f"wiretide analyze: {error['error']}", file=sys.stderr)
        return EXIT_BAD_CAPTURE
    return 0


def _run_jobs(
    args: argparse.Namespace,
    path: str,
    registry: Registry,
    fmt: str,
    sink: Callable[[list[dict[str, Any]]], None],
    redactor: Redactor,
) -> list[dict[str, Any]]:
    import multiprocessing
    from multiprocessing.connection import Connection, wait

    # fork: the workers start with the modules and the registry already loaded (spawn would import
    # everything again in each of them). Buffered output is flushed first so no child repeats it.
    sys.stdout.flush()
    sys.stderr.flush()
    ctx = multiprocessing.get_context("fork")
    conns = []
    procs = []
    for i in range(args.jobs):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker,
            args=((path, i, args.jobs, registry, args.node, args.body_cap, args.filter, redactor), child),
            daemon=True,  # a worker never outlives the command, even when stdout closes early
        )
        proc.start()
        child.close()
        conns.append(parent)
        procs.append(proc)
    results: list[dict[str, Any]] = []
    binary = sys.stdout.buffer
    live = list(conns)
    try:
        while live:
            for conn in wait(live):
                assert isinstance(conn, Connection)
                try:
                    data = conn.recv_bytes()
                except EOFError:
                    live.remove(conn)
                    continue
                if data[:1] == b"\x00":
                    results.append(orjson.loads(data[1:]))
                elif data[:1] == b"\x01":
                    raise SystemExit(data[1:].decode())
                elif fmt == "jsonl":
                    binary.write(data)
                else:
                    sink([orjson.loads(line) for line in data.splitlines()])
    except BaseException:
        # Output closed (| head), an error or ^C: the workers would block on their pipes forever.
        for proc in procs:
            proc.terminate()
        raise
    finally:
        for proc in procs:
            proc.join()
    return results
