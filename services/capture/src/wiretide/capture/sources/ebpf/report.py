"""The decryptability report: per process on this node, which TLS library it uses, whether the eBPF
source reads its plaintext, and if not, why not.

Found from /proc alone (works with the eBPF source off, when it says so): the shared libraries each
process maps (libssl, GnuTLS, NSS, the JVM) and its executable (a Go binary's build info, whether
it links crypto/tls and whether the source can hook it — `gobin`; OpenSSL/BoringSSL linked in
statically; rustls). Hooked means the eBPF source
attached to that very file. Executables are examined once per (device, inode, mtime).

Rule: the report never guesses "readable": a library counts as hooked only when the source says it
attached to its file; everything else carries the reason it is not read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from wiretide.capture.sources.ebpf import gobin

MAX_PROCESSES: Final = 4096  # processes examined per report (a node with more is cut, and says so)
MAX_EXE_CACHE: Final = 4096
# Bytes of a library file read to find its version string (OpenSSL prints "OpenSSL 3.0.15 3 Sep 2024").
VERSION_SCAN_BYTES: Final = 8 * 1024 * 1024

_OPENSSL_VERSION: Final = re.compile(rb"OpenSSL (\d+\.\d+\.\d+[a-z]?)")
_CONTAINER: Final = re.compile(r"([0-9a-f]{64})")
_SHARED: Final = (
    # (kind, file-name pattern, reason when not hooked; "" = hookable by the source)
    ("openssl", re.compile(r"/libssl\.so(\.[0-9.]+)?$"), ""),
    (
        "gnutls",
        re.compile(r"/libgnutls\.so(\.[0-9.]+)?$"),
        "GnuTLS is not hooked (OpenSSL and BoringSSL are)",
    ),
    ("nss", re.compile(r"/libssl3\.so$|/libnss3\.so$"), "NSS is not hooked (OpenSSL and BoringSSL are)"),
    (
        "java",
        re.compile(r"/libjvm\.so$"),
        "Java's JSSE runs inside the JVM: there is no native function to hook",
    ),
)
# Kinds found in an executable that the source hooks in the executable itself.
HOOKABLE_EXECUTABLES: Final = ("openssl (static)", "boringssl", "go")
RUSTLS_REASON: Final = "rustls is not hooked (no stable exported functions to attach to)"


@dataclass(frozen=True, slots=True)
class Library:
    kind: str  # openssl | boringssl | openssl (static) | gnutls | nss | java | go | rustls
    path: str
    version: str
    hooked: bool
    reason: str  # why it is not read ("" when hooked)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "version": self.version,
            "hooked": self.hooked,
            "reason": self.reason,
        }


@dataclass(slots=True)
class ProcessTls:
    pid: int
    comm: str
    exe: str
    container_id: str
    libraries: list[Library] = field(default_factory=list)

    @property
    def readable(self) -> bool:
        return any(lib.hooked for lib in self.libraries)

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "comm": self.comm,
            "exe": self.exe,
            "container_id": self.container_id,
            "readable": self.readable,
            "libraries": [lib.to_json() for lib in self.libraries],
        }


@dataclass(frozen=True, slots=True)
class _Exe:
    """What an executable links: (kind, version, reason) for each TLS implementation inside it."""

    found: tuple[tuple[str, str, str], ...]


class Scanner:
    """Scans /proc; `hooks` maps each file the source attached to (real path) → attached or not."""

    def __init__(
        self,
        proc: Path = Path("/proc"),
        hooks: Callable[[], Mapping[str, bool]] = dict,
        source_state: Callable[[], str] = lambda: "",
    ) -> None:
        self.proc = proc
        self._hooks = hooks
        self._source_state = source_state  # "" when running, else why the source is not
        self._exes: dict[tuple[int, int, int], _Exe] = {}
        self._versions: dict[tuple[int, int, int], tuple[str, str]] = {}
        self.errors: dict[str, int] = {}

    def scan(self) -> tuple[list[ProcessTls], bool]:
        """(the processes that use TLS, whether the node had more processes than one report covers)."""
        hooks = self._hooks()
        state = self._source_state()
        out: list[ProcessTls] = []
        pids = sorted(int(e.name) for e in os.scandir(self.proc) if e.name.isdigit())
        for pid in pids[:MAX_PROCESSES]:
            found = self.process(pid, hooks, state)
            if found is not None and found.libraries:
                out.append(found)
        return out, len(pids) > MAX_PROCESSES

    def process(self, pid: int, hooks: Mapping[str, bool], state: str) -> ProcessTls | None:
        base = self.proc / str(pid)
        try:
            comm = (base / "comm").read_text().strip()
        except OSError:
            return None  # gone
        try:
            exe = os.readlink(base / "exe")
        except OSError:
            exe = ""  # a kernel thread, or not ours to read
        report = ProcessTls(pid, comm, exe, self._container(base))
        try:
            maps = (base / "maps").read_text()
        except PermissionError:
            report.libraries.append(
                Library(
                    "unknown", exe, "", False, "insufficient privileges to read the process's memory maps"
                )
            )
            return report
        except OSError:
            return None
        seen: set[str] = set()
        for path in _mapped_files(maps):
            for kind, pattern, reason in _SHARED:
                if pattern.search(path) and path not in seen:
                    seen.add(path)
                    real = self._real(base, path)
                    report.libraries.append(self._library(kind, real, reason, hooks, state))
        if exe and not any(lib.kind in ("openssl", "boringssl") for lib in report.libraries):
            real_exe = self._real(base, exe)
            for kind, version, reason in self._exe(base / "exe").found:
                hooked = bool(hooks.get(real_exe)) and kind in HOOKABLE_EXECUTABLES
                why = "" if hooked else (reason or self._why_not(state, real_exe, hooks))
                report.libraries.append(Library(kind, real_exe, version, hooked, why))
        return report

    # -- pieces ---------------------------------------------------------------------------------
    def _library(self, kind: str, path: str, reason: str, hooks: Mapping[str, bool], state: str) -> Library:
        version = ""
        if kind == "openssl":  # or BoringSSL under the same file name (Android's, Debian's android-*)
            kind, version = self._version(path)
        if reason:
            return Library(kind, path, version, False, reason)
        hooked = bool(hooks.get(path))
        return Library(kind, path, version, hooked, "" if hooked else self._why_not(state, path, hooks))

    @staticmethod
    def _why_not(state: str, path: str, hooks: Mapping[str, bool]) -> str:
        if state:
            return state
        if path in hooks:
            return "the source could not attach to its functions (stripped, or not what its name says)"
        return "not attached yet (the source attaches to new files within moments of their first use)"

    def _real(self, base: Path, path: str) -> str:
        """The file as this process sees it (another mount namespace is reached through its root)."""
        if os.path.exists(path):
            return os.path.realpath(path)
        return str(base / "root" / path.lstrip("/"))

    @staticmethod
    def _container(base: Path) -> str:
        try:
            text = (base / "cgroup").read_text()
        except OSError:
            return ""
        m = _CONTAINER.search(text)
        return m.group(1) if m else ""

    def _version(self, path: str) -> tuple[str, str]:
        """(kind, version) of a libssl: `openssl` and its version, or `boringssl` (which names itself
        in its libcrypto and has no version)."""
        try:
            st = os.stat(path)
        except OSError:
            return "openssl", ""
        key = (st.st_dev, st.st_ino, int(st.st_mtime))
        cached = self._versions.get(key)
        if cached is None:
            cached = ("openssl", "")
            # libssl names its version only through libcrypto (same directory, same suffix)
            crypto = re.sub(r"/libssl\.so", "/libcrypto.so", path)
            for candidate in (path, crypto):
                try:
                    with open(candidate, "rb") as f:
                        blob = f.read(VERSION_SCAN_BYTES)
                except OSError:
                    continue
                if b"BoringSSL" in blob:
                    cached = ("boringssl", "")
                    break
                m = _OPENSSL_VERSION.search(blob)
                if m:
                    cached = ("openssl", m.group(1).decode())
                    break
            if len(self._versions) >= MAX_EXE_CACHE:
                self._versions.clear()
            self._versions[key] = cached
        return cached

    def _exe(self, exe: Path) -> _Exe:
        try:
            st = os.stat(exe)
        except OSError:
            return _Exe(())
        key = (st.st_dev, st.st_ino, int(st.st_mtime))
        cached = self._exes.get(key)
        if cached is None:
            try:
                cached = _Exe(tuple(examine(str(exe))))
            except Exception as exc:  # a file that is not what it says: reported as nothing found
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                cached = _Exe(())
            if len(self._exes) >= MAX_EXE_CACHE:
                self._exes.clear()
            self._exes[key] = cached
        return cached


def _mapped_files(maps: str) -> Iterable[str]:
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            yield parts[5].removesuffix(" (deleted)")


def examine(path: str) -> list[tuple[str, str, str]]:
    """The TLS implementations an ELF executable carries: [(kind, version, reason not hooked)]."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    found: list[tuple[str, str, str]] = []
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return found
        f.seek(0)
        try:
            elf = ELFFile(f)
        except ELFError:
            return found
        names = {s.name for s in elf.iter_sections()}
        if ".go.buildinfo" in names or ".gopclntab" in names:
            # Go: hookable ("" reason) for the register ABI (Go 1.17+); else the reason it is not.
            go = gobin.inspect_elf(elf, f)
            if go is not None and go.uses_tls:
                found.append(("go", go.version, go.reason))
            return found
        if _has_symbol(elf, "SSL_write"):
            rodata = elf.get_section_by_name(".rodata")
            blob = rodata.data() if rodata is not None else b""
            if b"BoringSSL" in blob:
                found.append(("boringssl", "", ""))
            else:
                m = _OPENSSL_VERSION.search(blob)
                found.append(("openssl (static)", m.group(1).decode() if m else "", ""))
        else:
            rodata = elf.get_section_by_name(".rodata")
            if rodata is not None and rodata.data_size < 256 * 1024 * 1024 and b"rustls" in rodata.data():
                found.append(("rustls", "", RUSTLS_REASON))
    return found


def _has_symbol(elf: Any, name: str) -> bool:
    """Whether a symbol table names `name`: a search of the string tables' bytes (parsing every symbol
    with the ELF reader costs seconds on a large binary)."""
    needle = b"\0" + name.encode() + b"\0"
    for table in (".dynstr", ".strtab"):
        section = elf.get_section_by_name(table)
        if section is not None and needle in section.data():
            return True
    return False
