"""`wiretide record start|stop|list|get|delete`: recording jobs of a running Wiretide (its
`/api/recordings`), like `kubectl` for jobs: start one (scheduled, repeated daily, or armed with a
trigger), stop it, list them, show one or download a run's bundle.

Rule: what the user asked is checked here first (names, times, durations, KFL), so a mistake fails
with exit 2 and a message naming the option before any request; the gateway's refusals are printed
as it says them (exit 1), and stdout carries only the answer (a table, JSON, or a bundle's path).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Final

import orjson

from wiretide.common.paths import default_data_dir

EXIT_USAGE: Final = 2
NS: Final = 1_000_000_000


class Usage(ValueError):
    pass


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("record", help="recording jobs: start, stop, list, get (bundles)")
    p.add_argument("--url", help="gateway URL (default: the local instance of --data-dir)")
    p.add_argument("--token", default="", help="bearer token (or WIRETIDE_GATEWAY_TOKEN)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    s = verbs.add_parser("start", help="start (or schedule, or arm) a recording job")
    s.add_argument("name", help="job name: letters, digits, '.', '_', '-'")
    s.add_argument("--filter", default="", metavar="KFL", help="entries to record (default: all)")
    s.add_argument("--start", default="", metavar="TIME", help="RFC 3339 time or +DURATION (default: now)")
    s.add_argument("--duration", default="10m", help="length of each run (default 10m; at most 24h)")
    s.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="daily runs (default 1; 0 = every day, forever)"
    )
    s.add_argument("--expiry", default="", metavar="TIME", help="RFC 3339 time or +DURATION: no run after it")
    s.add_argument("--node", action="append", default=[], help="only entries of this node (repeatable)")
    s.add_argument("--namespace", "-n", action="append", default=[], help="either end in it (repeatable)")
    s.add_argument("--preceding", default="0s", help="also record this long before each run (e.g. 5m)")
    s.add_argument("--trigger", default="", metavar="KFL", help="start a run when this matches often")
    s.add_argument("--threshold", type=int, default=10, help="trigger: more than N matches (default 10)")
    s.add_argument("--per", default="1m", help="trigger: within this window (default 1m)")
    s.add_argument("--upload", default="", metavar="URL", help="s3://bucket/prefix or gs://bucket/prefix")
    s.add_argument("--endpoint", default="", help="S3-compatible or GCS endpoint URL")
    s.add_argument("--region", default="", help="S3 region")
    s.add_argument("--retention-days", type=int, default=0, help="S3 Object Lock / GCS retention, days")
    s.add_argument("--retention-mode", default="GOVERNANCE", choices=("GOVERNANCE", "COMPLIANCE"))
    s.add_argument("--legal-hold", action="store_true", help="S3 legal hold / GCS event-based hold")
    s.add_argument("--credentials-file", default="", help="JSON credentials (a mounted Secret)")
    s.add_argument("--json", action="store_true", help="print the stored job as JSON")

    for verb, text in (("stop", "stop a job (its current run is finished now)"), ("delete", "delete a job")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("name")

    ls = verbs.add_parser("list", help="list jobs and their runs")
    ls.add_argument("--json", action="store_true")

    g = verbs.add_parser("get", help="show a job, or download a run's bundle")
    g.add_argument("name")
    g.add_argument("--run", default="", help="download this run's bundle (`latest`: the newest)")
    g.add_argument("-o", "--output", type=Path, help="where to write the bundle (default: ./RUN.tar.gz)")
    g.add_argument("--json", action="store_true")


def parse_duration_s(text: str, option: str) -> float:
    from wiretide.common.kfl.values import parse_duration

    d = parse_duration(text.strip())
    if d is None or d.ns < 0:
        raise Usage(f"{option}: not a duration: {text!r} (e.g. 30s, 10m, 1h30m)")
    return d.ns / NS


def parse_time_ns(text: str, option: str, now_ns: int) -> int:
    from wiretide.common.kfl.values import parse_timestamp

    if not text or text == "now":
        return 0
    if text.startswith("+"):
        return now_ns + int(parse_duration_s(text[1:], option) * NS)
    ts = parse_timestamp(text)
    if ts is None:
        raise Usage(f"{option}: not a time: {text!r} (RFC 3339, e.g. 2026-03-14T22:00:00Z, or +10m)")
    return ts.ns


def parse_upload(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.upload:
        for flag in ("endpoint", "region", "credentials_file"):
            if getattr(args, flag):
                raise Usage(f"--{flag.replace('_', '-')} needs --upload")
        return None
    for scheme, kind in (("s3://", "s3"), ("gs://", "gcs")):
        if args.upload.startswith(scheme):
            bucket, _, prefix = args.upload[len(scheme) :].partition("/")
            return {
                "kind": kind,
                "bucket": bucket,
                "prefix": prefix,
                "endpoint": args.endpoint,
                "region": args.region,
                "retention_days": args.retention_days,
                "retention_mode": args.retention_mode,
                "legal_hold": args.legal_hold,
                "credentials_file": str(Path(args.credentials_file).resolve())
                if args.credentials_file
                else "",
            }
    raise Usage(f"--upload: {args.upload!r} is neither s3://BUCKET[/PREFIX] nor gs://BUCKET[/PREFIX]")


def job_from_args(args: argparse.Namespace, now_ns: int) -> dict[str, Any]:
    """The job document `start` sends, checked as the gateway will check it."""
    from wiretide.common.kfl import KflError, parse_query
    from wiretide.common.recording import InvalidJob, RecordingJob

    for option, text in (("--filter", args.filter), ("--trigger", args.trigger)):
        if text.strip():
            try:
                parse_query(text)
            except KflError as exc:
                raise Usage(f"{option}: bad KFL:\n{exc.render(text)}") from None
    doc: dict[str, Any] = {
        "name": args.name,
        "filter": args.filter,
        "start_ns": parse_time_ns(args.start, "--start", now_ns),
        "duration_s": parse_duration_s(args.duration, "--duration"),
        "repetitions": args.repeat,
        "expiry_ns": parse_time_ns(args.expiry, "--expiry", now_ns),
        "nodes": args.node,
        "namespaces": args.namespace,
        "preceding_s": parse_duration_s(args.preceding, "--preceding"),
        "upload": parse_upload(args),
    }
    if args.trigger:
        doc["trigger"] = {
            "condition": args.trigger,
            "threshold": args.threshold,
            "window_s": parse_duration_s(args.per, "--per"),
        }
    try:
        RecordingJob.from_dict(doc)
    except InvalidJob as exc:
        raise Usage(str(exc)) from None
    return doc


def _when(ns: int | None) -> str:
    if not ns:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns / NS)) + "Z"


def _span(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def print_jobs(doc: dict[str, Any]) -> None:
    print(f"{'NAME':<24} {'STATE':<10} {'NEXT/LAST START':<21} {'DURATION':<9}", end="")
    print(f" {'RUNS':>4} {'ENTRIES':>8}  FILTER")
    for j in doc.get("recordings", []):
        runs = j.get("runs", [])
        last = runs[-1]["start_ns"] if runs else None
        entries = sum(r.get("entries", 0) for r in runs)
        when = _when(j.get("next_start_ns") or last)
        filt = j.get("filter") or "(all)"
        if j.get("trigger"):
            t = j["trigger"]
            filt += f"  [trigger: {t['condition']} > {t['threshold']} per {_span(t['window_s'])}]"
        print(
            f"{j['name']:<24} {j['state']:<10} {when:<21} {_span(j['duration_s']):<9} {len(runs):>4} "
            f"{entries:>8}  {filt}"
        )
    others = doc.get("runs", [])
    if others:
        print("\nRUNS WITHOUT A JOB (finished and removed, or imported)")
        for r in others:
            print(f"  {r['id']:<40} {r['state']:<9} {r['entries']:>8} entries  {r.get('bundle') or ''}")
    status = doc.get("status") or {}
    if status:
        used = status.get("used_bytes", 0) / (1 << 20)
        limit = status.get("limit_bytes", 0) / (1 << 20)
        drops = ", ".join(f"{k} {v}" for k, v in sorted((status.get("drops") or {}).items())) or "none"
        print(f"\nthis node: {used:.1f} of {limit:.0f} MiB used; drops: {drops}")


def print_job(j: dict[str, Any]) -> None:
    print(f"name:        {j['name']}  ({j['state']}, created by {j.get('created_by') or '?'})")
    print(f"filter:      {j.get('filter') or '(all)'}")
    first = _when(j.get("start_ns") or j.get("created_ns"))
    runs = j["repetitions"] or "unlimited"
    print(f"schedule:    from {first}, {_span(j['duration_s'])} per run, {runs} run(s)", end="")
    print(f", expiry {_when(j.get('expiry_ns'))}")
    if j.get("trigger"):
        t = j["trigger"]
        per = _span(t["window_s"])
        print(f"trigger:     {t['condition']}  more than {t['threshold']} per {per}", end="")
        print(f" (fired {j.get('trigger_fired', 0)}x), preceding {_span(j.get('preceding_s', 0))}")
    if j.get("namespaces") or j.get("nodes"):
        print(f"scope:       namespaces {j.get('namespaces') or 'all'}, nodes {j.get('nodes') or 'all'}")
    if j.get("upload"):
        u = j["upload"]
        where = f"{'s3' if u['kind'] == 's3' else 'gs'}://{u['bucket']}/{u.get('prefix', '')}"
        print(
            f"upload:      {where}  retention {u.get('retention_days', 0)}d, legal hold {u.get('legal_hold')}"
        )
    print(f"\n  {'RUN':<40} {'STATE':<9} {'FROM':<21} {'ENTRIES':>8} {'PACKETS':>8}  UPLOAD / DROPS")
    for r in j.get("runs", []):
        uploads = ", ".join(f"{k}: {v.get('state')}" for k, v in (r.get("uploads") or {}).items())
        drops = ", ".join(f"{k} {v}" for k, v in sorted((r.get("drops") or {}).items()))
        print(
            f"  {r['id']:<40} {r['state']:<9} {_when(r['start_ns']):<21} {r['entries']:>8} "
            f"{sum((r.get('packets') or {}).values()):>8}  {uploads} {drops}".rstrip()
        )
        for e in (r.get("errors") or [])[-3:]:
            print(f"      ! {e}")


def run(args: argparse.Namespace) -> int:
    import httpx

    from wiretide.cli.query_cmd import base_url

    now = time.time_ns()
    try:
        body = job_from_args(args, now) if args.verb == "start" else None
    except Usage as exc:
        print(f"wiretide record: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.verb in ("stop", "delete", "get"):
        from wiretide.common.recording import InvalidJob, check_name

        try:
            check_name(args.name)
        except InvalidJob as exc:
            print(f"wiretide record: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        url = base_url(args)
    except SystemExit as exc:
        print(str(exc).replace("wiretide query", "wiretide record"), file=sys.stderr)
        return 1
    token = args.token or os.environ.get("WIRETIDE_GATEWAY_TOKEN", "")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    api = f"{url}/api/recordings"
    try:
        with httpx.Client(headers=headers, timeout=60) as client:
            if args.verb == "start":
                resp = client.post(
                    api, content=orjson.dumps(body), headers={"content-type": "application/json"}
                )
            elif args.verb == "stop":
                resp = client.post(f"{api}/{args.name}/stop")
            elif args.verb == "delete":
                resp = client.delete(f"{api}/{args.name}")
            elif args.verb == "list":
                resp = client.get(api)
            else:
                resp = client.get(f"{api}/{args.name}")
                if resp.status_code == 200 and args.run:
                    return _download(client, api, args, resp.json())
    except httpx.HTTPError as exc:
        print(f"wiretide record: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    try:
        doc = resp.json()
    except ValueError:
        print(f"wiretide record: {url} answered HTTP {resp.status_code} without JSON", file=sys.stderr)
        return 1
    if resp.status_code >= 400:
        print(f"wiretide record: {doc.get('error') if isinstance(doc, dict) else doc}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    elif args.verb == "list":
        print_jobs(doc)
    elif args.verb == "delete":
        print(f"deleted {doc['deleted']}")
    else:
        print_job(doc)
    return 0


def _download(client: Any, api: str, args: argparse.Namespace, job: dict[str, Any]) -> int:
    runs = [r for r in job.get("runs", []) if r.get("bundle")]
    if args.run == "latest":
        chosen = runs[-1] if runs else None
    else:
        chosen = next((r for r in runs if r["id"] == args.run), None)
    if chosen is None:
        have = ", ".join(r["id"] for r in runs) or "none yet"
        print(
            f"wiretide record: no bundle for run {args.run!r} of {args.name} (bundles: {have})",
            file=sys.stderr,
        )
        return 1
    out: Path = args.output or Path(chosen["bundle"])
    part = out.with_name(out.name + ".part")
    with client.stream("GET", f"{api}/{args.name}/runs/{chosen['id']}/bundle") as resp:
        if resp.status_code != 200:
            print(f"wiretide record: HTTP {resp.status_code}: {resp.read()[:300]!r}", file=sys.stderr)
            return 1
        with open(part, "wb") as fh:
            for chunk in resp.iter_bytes(1 << 20):
                fh.write(chunk)
    from wiretide.gateway.recording.bundle import sha256_file

    if chosen.get("bundle_sha256") and sha256_file(part) != chosen["bundle_sha256"]:
        part.unlink(missing_ok=True)
        print("wiretide record: the downloaded bundle does not match its checksum", file=sys.stderr)
        return 1
    part.replace(out)
    print(out)
    return 0


# ---- `wiretide analyze BUNDLE` ---------------------------------------------------------------------


def looks_like_bundle(path: str) -> bool:
    from wiretide.gateway.recording.bundle import is_bundle

    return is_bundle(Path(path))


def analyze_bundle(args: argparse.Namespace, path: str) -> int:
    """A recording bundle, verified, its entries printed as recorded (names as they were then)."""
    import tempfile

    from wiretide.cli.output import TimeColumn, reader_gone
    from wiretide.cli.query_cmd import header, row
    from wiretide.common.har import HarWriter
    from wiretide.common.kfl import KflError, compile_predicate, parse_query
    from wiretide.gateway.recording.bundle import BundleError, open_bundle
    from wiretide.gateway.recording.kfl import placeholder

    if args.filter:
        try:  # what the user wrote, checked before the bundle is opened (errors point into it)
            parse_query(placeholder(args.filter))
        except KflError as exc:
            print(f"wiretide analyze: bad --filter:\n{exc.render(args.filter)}", file=sys.stderr)
            return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="wiretide-bundle-") as tmp:
        try:
            b = open_bundle(Path(path), Path(tmp) / "bundle")
        except BundleError as exc:
            print(f"wiretide analyze: {path}: not a usable recording: {exc}", file=sys.stderr)
            return 1
        keep = None
        if args.filter:
            try:
                keep = compile_predicate(parse_query(bundle_filter(args.filter, b.name, b.run)))
            except KflError as exc:
                print(f"wiretide analyze: bad --filter:\n{exc.render(args.filter)}", file=sys.stderr)
                return EXIT_USAGE
        times = TimeColumn(args.time_format)
        har = HarWriter()
        out = sys.stdout
        count = 0
        try:
            if args.format == "table":
                out.write(header(times) + "\n")
            for e in b.entries():
                if keep is not None and not keep(e):
                    continue
                count += 1
                if args.format == "jsonl":
                    out.write(orjson.dumps(e).decode() + "\n")
                elif args.format == "table":
                    out.write(row(e, times) + "\n")
                else:
                    har.add([e])
            if args.format == "har":
                out.write(orjson.dumps(har.document(), option=orjson.OPT_INDENT_2).decode() + "\n")
            out.flush()
        except BrokenPipeError:
            reader_gone()
            return 0
        except BundleError as exc:
            print(f"wiretide analyze: {path}: {exc}", file=sys.stderr)
            return 1
        if not args.quiet:
            m = b.manifest
            window = m.get("window") or {}
            packets = (m.get("counts") or {}).get("packets") or {}
            per_node = ", ".join(f"{n} {c}" for n, c in sorted(packets.items())) or "none"
            drops = ", ".join(f"{k} {v}" for k, v in sorted((m.get("drops") or {}).items())) or "none"
            print(
                f"wiretide analyze: recording {b.name!r} run {b.run}: {count} entries"
                f"{' matching' if keep else ''}, "
                f"{_when(window.get('start_ns'))} .. {_when(window.get('end_ns'))}\n"
                f"  packets per node: {per_node}; identities {sum(1 for _ in b.identities())}; "
                f"drops: {drops}; checksums verified ({len(m.get('files', {}))} files)",
                file=sys.stderr,
            )
    return 0


def bundle_filter(text: str, name: str, run_id: str) -> str:
    """A filter over one bundle: `record("NAME")` (its recording, or its run's id) is every entry of
    it; another name is a KflError at that call, naming what the bundle holds."""
    from wiretide.common.kfl import KflError
    from wiretide.gateway.recording.kfl import expand, record_calls

    for start, _end, called in record_calls(text):
        if called not in (name, run_id):
            raise KflError(
                f"no recording named {called!r} in this bundle",
                start,
                f'it holds recording {name!r} (run {run_id}): record("{name}")',
            )
    return expand(text, lambda _called: "true")


def check_bundles(paths: list[Path]) -> list[Path]:
    """`wiretide up --recording`: each bundle verified before anything starts (ValueError says which)."""
    import tempfile

    from wiretide.gateway.recording.bundle import BundleError, open_bundle

    out = []
    for given in paths:
        path = given.expanduser().resolve()
        with tempfile.TemporaryDirectory(prefix="wiretide-bundle-") as tmp:
            try:
                open_bundle(path, Path(tmp) / "b")
            except BundleError as exc:
                raise ValueError(f"{given}: not a usable recording: {exc}") from None
        out.append(path)
    return out
