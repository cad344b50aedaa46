"""The recording bundle: one tar.gz holding a run's packets (pcapng, one file per node), its entries
(JSON lines), the name-resolution history of its interval (identities, JSON lines) and a manifest
with every file's SHA-256.

Rule: a bundle is opened only whole and verified — every member a plain file at a safe relative path,
within the size bounds, listed in the manifest with a matching checksum, nothing missing — or not at
all: anything else is a `BundleError` that says what is wrong, never a half-read recording.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tarfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

import orjson

FORMAT: Final = "wiretide-recording"
VERSION: Final = 1
MANIFEST: Final = "manifest.json"
ENTRIES: Final = "entries.jsonl"
IDENTITIES: Final = "identities.jsonl"
PACKETS_DIR: Final = "packets"
SUFFIX: Final = ".tar.gz"
# Bounds on what a bundle may hold when it is opened (a hostile archive cannot fill a disk or memory).
MAX_MEMBERS: Final = 10_000
MAX_MANIFEST_BYTES: Final = 4 << 20
MAX_MEMBER_BYTES: Final = 64 << 30
CHUNK: Final = 1 << 20


class BundleError(ValueError):
    """The file is not a usable bundle; the message says why (and which member)."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def data_files(run_dir: Path) -> list[str]:
    """The files of a run directory that go into its bundle (relative POSIX paths), sorted."""
    names = [n for n in (ENTRIES, IDENTITIES) if (run_dir / n).is_file()]
    packets = run_dir / PACKETS_DIR
    if packets.is_dir():
        names += sorted(f"{PACKETS_DIR}/{p.name}" for p in packets.glob("*.pcapng") if p.is_file())
    return names


def pack(run_dir: Path, out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write `run_dir`'s data files and a manifest (`manifest` plus the files' checksums) to `out`
    (atomically: a `.part` file renamed when complete). Returns the manifest written."""
    files: dict[str, dict[str, Any]] = {}
    for name in data_files(run_dir):
        path = run_dir / name
        files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    doc = {"format": FORMAT, "version": VERSION, **manifest, "files": files}
    raw = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    try:
        with tarfile.open(part, "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(raw)
            info.mtime = int(time.time())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(raw))
            for name in files:
                tar.add(run_dir / name, arcname=name, recursive=False, filter=_plain)
        part.replace(out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return doc


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info


@dataclass(frozen=True, slots=True)
class Bundle:
    """A verified bundle unpacked into `directory`."""

    path: Path
    directory: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or "")

    @property
    def run(self) -> str:
        return str(self.manifest.get("run") or "")

    @property
    def entries_path(self) -> Path:
        return self.directory / ENTRIES

    @property
    def identities_path(self) -> Path:
        return self.directory / IDENTITIES

    def pcapng_paths(self) -> list[Path]:
        return [self.directory / n for n in sorted(self.manifest["files"]) if n.startswith(f"{PACKETS_DIR}/")]

    def entries(self) -> Iterator[dict[str, Any]]:
        yield from read_jsonl(self.entries_path)

    def identities(self) -> Iterator[dict[str, Any]]:
        yield from read_jsonl(self.identities_path)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise BundleError(f"{path.name}: line {number} is not JSON") from None
            if not isinstance(doc, dict):
                raise BundleError(f"{path.name}: line {number} is not a JSON object")
            yield doc


def _safe_name(name: str) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts) or "\\" in name:
        raise BundleError(f"member {name[:200]!r} has an unsafe path")
    return p.as_posix()


def _check_manifest(raw: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BundleError(f"{MANIFEST} is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST} does not describe a {FORMAT} bundle")
    version = doc.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise BundleError(f"bundle version {version!r} is newer than this Wiretide reads ({VERSION})")
    files = doc.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
        for v in files.values()
    ):
        raise BundleError(f"{MANIFEST}: `files` must map each file to its sha256 and bytes")
    for name in files:
        _safe_name(name)
    return doc


def open_bundle(path: Path, into: Path) -> Bundle:
    """Verify the bundle at `path` and unpack it into `into` (created; emptied first if it exists).
    Raises BundleError for anything but a whole, intact bundle (and leaves `into` removed then)."""
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    try:
        manifest = _unpack(path, into)
    except BundleError:
        shutil.rmtree(into, ignore_errors=True)
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        shutil.rmtree(into, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, EOFError) and exc.errno is not None:
            raise BundleError(f"{path}: cannot unpack: {exc.strerror}") from None
        raise BundleError(f"{path}: damaged archive ({type(exc).__name__}: {exc})") from None
    return Bundle(path, into, manifest)


def _unpack(path: Path, into: Path) -> dict[str, Any]:
    manifest: dict[str, Any] | None = None
    seen: dict[str, str] = {}
    with tarfile.open(path, "r:gz") as tar:
        for count, member in enumerate(tar, 1):
            if count > MAX_MEMBERS:
                raise BundleError(f"more than {MAX_MEMBERS} members")
            name = _safe_name(member.name)
            if not member.isfile():
                raise BundleError(f"member {name!r} is not a regular file")
            if name in seen or (name == MANIFEST and manifest is not None):
                raise BundleError(f"member {name!r} appears twice")
            fh = tar.extractfile(member)
            if fh is None:
                raise BundleError(f"member {name!r} cannot be read")
            if name == MANIFEST:
                if member.size > MAX_MANIFEST_BYTES:
                    raise BundleError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
                manifest = _check_manifest(fh.read())
                continue
            if manifest is None:
                raise BundleError(f"{MANIFEST} must come first (found {name!r})")
            expected = manifest["files"].get(name)
            if expected is None:
                raise BundleError(f"member {name!r} is not listed in the manifest")
            if member.size > MAX_MEMBER_BYTES or member.size != expected["bytes"]:
                raise BundleError(
                    f"member {name!r} is {member.size} bytes, the manifest says {expected['bytes']}"
                )
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            h = hashlib.sha256()
            with open(target, "wb") as out:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != expected["sha256"]:
                raise BundleError(f"member {name!r} does not match its checksum (the bundle is corrupt)")
            seen[name] = h.hexdigest()
    if manifest is None:
        raise BundleError(f"no {MANIFEST}: not a {FORMAT} bundle")
    missing = sorted(set(manifest["files"]) - set(seen))
    if missing:
        raise BundleError(f"member {missing[0]!r} is listed in the manifest but missing")
    return manifest


def is_bundle(path: Path) -> bool:
    """Cheap sniff: a gzip file whose name ends in .tar.gz/.tgz (`analyze` tells bundles from pcaps)."""
    if not path.name.endswith((SUFFIX, ".tgz")):
        return False
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"
    return False


def unpack_dir(base: Path, bundle: Path) -> Path:
    """A per-bundle directory under `base` to unpack into (stable for the same file)."""
    digest = hashlib.sha256(os.fsencode(bundle.resolve())).hexdigest()[:12]
    stem = bundle.name.removesuffix(SUFFIX).removesuffix(".tgz")
    return base / f"{stem[:80]}-{digest}"
