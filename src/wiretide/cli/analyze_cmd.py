"""`wiretide analyze FILE`: the whole dissection pipeline offline on a pcap/pcapng file, no NATS.

Rule: stdout carries only the requested output (jsonl, table or HAR) so that it pipes cleanly;
progress and the closing summary go to stderr. `--jobs N` splits flows across N processes by the
direction-independent flow hash, so every flow is dissected whole by exactly one of them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any, Final

import orjson

if TYPE_CHECKING:
    from wiretide.dissector.registry import Registry

# Packets per batch read from the file: enough to amortise the per-batch work, few enough that a
# batch's entries are written and freed while their memory is still in the CPU cache.
BATCH_PACKETS: Final = 256
# Files larger than this get a progress bar on stderr (when stderr is a terminal or --progress).
PROGRESS_MIN_BYTES: Final = 4 * 1024 * 1024
# Seconds between progress redraws.
PROGRESS_EVERY_S: Final = 0.5
FORMATS: Final = ("jsonl", "table", "har")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        help="dissect a pcap/pcapng file into entries (API calls)",
        description="Run the dissector offline on a capture file and print its entries.",
    )
    p.add_argument("file", help="pcap or pcapng file")
    p.add_argument("--format", choices=FORMATS, default="jsonl", help="jsonl (default), table or har")
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
    p.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    p.add_argument("--quiet", action="store_true", help="no summary on stderr")


def _compile_filter(text: str | None) -> Callable[[dict[str, Any]], bool] | None:
    if not text:
        return None
    from wiretide.common.kfl import KflError, compile_predicate

    try:
        return compile_predicate(text)
    except KflError as exc:
        raise SystemExit(f"wiretide analyze: bad --filter:\n{exc.render(text)}") from None


def _work(
    path: str,
    shard: tuple[int, int] | None,
    registry: Registry,
    node: str,
    body_cap: int,
    filter_text: str | None,
    sink: Callable[[list[dict[str, Any]]], None],
    progress: Callable[[int], None] | None,
) -> dict[str, Any]:
    """Dissect the file (or one shard of its flows); hand entries to `sink`; return the statistics."""
    from wiretide.capture.sources.pcapfile import PcapError, read_batches
    from wiretide.common.collector import collect_rarely
    from wiretide.dissector.pipeline import Limits, Pipeline

    keep = _compile_filter(filter_text)
    pipeline = Pipeline(
        registry,
        node=node,
        source="pcap",
        limits=Limits(body_cap=body_cap),
        shard=shard,
    )
    error = None
    seen = 0
    collect_rarely()  # the modules and the registry live until exit; exchanges are freed as they go
    try:
        for cols in read_batches(path, BATCH_PACKETS):
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
    entries = pipeline.finish()
    if keep is not None:
        entries = [e for e in entries if keep(e)]
    if entries:
        sink(entries)
    return {
        "stats": dict(pipeline.stats),
        "drops": dict(pipeline.drops) | {f"defrag_{k}": v for k, v in pipeline.defrag.drops.items()},
        "entries": dict(pipeline.entries_by_protocol),
        "error": error,
    }


def _jsonl(entries: list[dict[str, Any]]) -> bytes:
    """A batch of entries as JSON lines, written with one call."""
    dumps = orjson.dumps
    return b"".join([dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in entries])


def _worker(args: tuple[str, int, int, Registry, str, int, str | None], conn: Any) -> None:
    path, index, count, registry, node, body_cap, filter_text = args

    def sink(entries: list[dict[str, Any]]) -> None:
        conn.send_bytes(_jsonl(entries))

    try:
        summary = _work(path, (index, count), registry, node, body_cap, filter_text, sink, None)
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


def _table_header(out: IO[str]) -> None:
    out.write(
        f"{'TIME':<15} {'PROTO':<5} {'SOURCE':<28} {'DESTINATION':<28} {'STATUS':>6} {'MS':>8}  SUMMARY\n"
    )


def _table_rows(entries: Iterable[dict[str, Any]], out: IO[str]) -> None:
    for e in entries:
        t = dt.datetime.fromtimestamp(e["timestamp"] / 1e9, tz=dt.UTC).strftime("%H:%M:%S.%f")[:15]
        src = f"{e['src']['ip']}:{e['src']['port']}"
        dst = f"{e['dst']['ip']}:{e['dst']['port']}"
        status = "" if e.get("status") is None else str(e["status"])
        ms = f"{e['elapsed_us'] / 1000:.1f}"
        summary = e.get("summary") or ""
        if e.get("error"):
            summary += f"  [{e['error']['type']}]"
        out.write(f"{t:<15} {e['protocol']:<5} {src:<28} {dst:<28} {status:>6} {ms:>8}  {summary}\n")


def _pairs(d: dict[str, Any] | None) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in (d or {}).items()]


def har_entry(e: dict[str, Any]) -> dict[str, Any]:
    """One HTTP Entry as a HAR 1.2 entry (http://www.softwareishard.com/blog/har-12-spec/)."""
    req = e.get("request") or {}
    resp = e.get("response") or {}
    rbody = req.get("body") or {}
    sbody = resp.get("body") or {}
    started = dt.datetime.fromtimestamp(e["timestamp"] / 1e9, tz=dt.UTC).isoformat().replace("+00:00", "Z")
    har_req: dict[str, Any] = {
        "method": req.get("method", ""),
        "url": req.get("url", ""),
        "httpVersion": f"HTTP/{req.get('http_version', '1.1')}",
        "cookies": _pairs(req.get("cookies")),
        "headers": _pairs(req.get("headers")),
        "queryString": [{"name": k, "value": v} for k, vs in (req.get("query") or {}).items() for v in vs],
        "headersSize": -1,
        "bodySize": rbody.get("size", 0),
    }
    if rbody.get("size"):
        har_req["postData"] = {"mimeType": rbody.get("mime", ""), "text": rbody.get("content", "")}
    content: dict[str, Any] = {
        "size": sbody.get("size", 0),
        "mimeType": sbody.get("mime", ""),
        "text": sbody.get("content", ""),
    }
    if sbody.get("encoding") == "base64":
        content["encoding"] = "base64"
    return {
        "startedDateTime": started,
        "time": e["elapsed_us"] / 1000,
        "request": har_req,
        "response": {
            "status": resp.get("status", 0),
            "statusText": resp.get("reason", ""),
            "httpVersion": f"HTTP/{resp.get('http_version', '1.1')}",
            "cookies": _pairs(resp.get("cookies")),
            "headers": _pairs(resp.get("headers")),
            "content": content,
            "redirectURL": (resp.get("headers") or {}).get("location", ""),
            "headersSize": -1,
            "bodySize": sbody.get("size", 0),
        },
        "cache": {},
        "timings": {"send": 0, "wait": e["elapsed_us"] / 1000, "receive": 0},
        "serverIPAddress": e["dst"]["ip"],
        "connection": str(e["dst"]["port"]),
        "comment": e["id"],
    }


def _summary(results: list[dict[str, Any]], elapsed: float, out: IO[str]) -> None:
    stats: Counter[str] = Counter()
    drops: Counter[str] = Counter()
    entries: Counter[str] = Counter()
    for r in results:
        stats.update(r["stats"])
        drops.update(r["drops"])
        entries.update(r["entries"])
    packets = stats["packets"] // max(1, len(results)) if len(results) > 1 else stats["packets"]
    rate = packets / elapsed if elapsed > 0 else 0.0
    out.write(
        f"wiretide analyze: {packets} packets in {elapsed:.2f}s ({rate:,.0f} packets/s), "
        f"{stats['flows_tcp']} TCP + {stats['flows_udp']} UDP flows, {sum(entries.values())} entries\n"
    )
    out.write("  entries: " + (", ".join(f"{k} {v}" for k, v in sorted(entries.items())) or "none") + "\n")
    out.write(
        f"  gaps {stats['gaps']}, violations {stats['violations']}, "
        f"unparsed flows {stats['flows_unparsed']}, "
        f"not IP {stats['packets_not_ip'] // max(1, len(results))}\n"
    )
    if drops:
        out.write("  drops: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) + "\n")
    for r in results:
        if r.get("error"):
            out.write(f"  warning: {r['error']}\n")
            break


def run(args: argparse.Namespace) -> int:
    path: str = args.file
    if not os.path.isfile(path):
        print(f"wiretide analyze: no such file: {path}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print("wiretide analyze: --jobs must be at least 1", file=sys.stderr)
        return 2
    if args.body_cap < 0:
        print("wiretide analyze: --body-cap must be >= 0", file=sys.stderr)
        return 2
    try:
        from wiretide.dissector.registry import default_registry, parse_overrides

        # Built once (the entry-point scan reads every installed distribution's metadata); --jobs
        # workers are forked with it.
        registry = default_registry(parse_overrides(args.ports))
    except ValueError as exc:
        print(f"wiretide analyze: --ports: {exc}", file=sys.stderr)
        return 2
    try:
        _compile_filter(args.filter)
    except SystemExit as exc:
        print(str(exc), file=sys.stderr)
        return 2

    fmt: str = args.format
    stdout = sys.stdout
    binary = stdout.buffer
    har: list[dict[str, Any]] = []
    if fmt == "table":
        _table_header(stdout)

    def sink(entries: list[dict[str, Any]]) -> None:
        if fmt == "jsonl":
            binary.write(_jsonl(entries))
        elif fmt == "table":
            _table_rows(entries, stdout)
        else:
            har.extend(har_entry(e) for e in entries if e["protocol"] == "http")

    size = os.path.getsize(path)
    show = size >= PROGRESS_MIN_BYTES and (args.progress or sys.stderr.isatty())
    started = time.monotonic()
    progress = _Progress(size) if show else None
    try:
        if args.jobs == 1:
            results = [_work(path, None, registry, args.node, args.body_cap, args.filter, sink, progress)]
        else:
            results = _run_jobs(args, path, registry, fmt, sink)
    except BrokenPipeError:
        return 0
    if progress is not None:
        progress.done()
    if fmt == "har":
        doc = {"log": {"version": "1.2", "creator": {"name": "wiretide", "version": "0.1.0"}, "entries": har}}
        binary.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    stdout.flush()
    if not args.quiet:
        _summary(results, time.monotonic() - started, sys.stderr)
    if all(r.get("error") and not r["stats"].get("packets") for r in results):
        return 1
    return 0


def _run_jobs(
    args: argparse.Namespace,
    path: str,
    registry: Registry,
    fmt: str,
    sink: Callable[[list[dict[str, Any]]], None],
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
            args=((path, i, args.jobs, registry, args.node, args.body_cap, args.filter), child),
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
