"""The decryptability report from /proc: real processes (a Python with OpenSSL loaded, a Go binary
with crypto/tls, stripped and not), files that are not what their names say, and the reasons given
for everything that is not read."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.nats import nats_binary
from tests.helpers.wait import wait_for
from wiretide.capture.sources.ebpf.report import Scanner, examine

OFF = "the eBPF source is off (test)"


@pytest.fixture
def python_with_openssl() -> Iterator[subprocess.Popen[bytes]]:
    with subprocess.Popen(
        [sys.executable, "-c", "import ssl, sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield proc
        proc.kill()


def test_a_process_with_openssl_loaded_is_reported_with_its_version_and_why_it_is_not_read(
    python_with_openssl: subprocess.Popen[bytes],
) -> None:
    scanner = Scanner(source_state=lambda: OFF)
    report = scanner.process(python_with_openssl.pid, {}, OFF)
    assert report is not None
    [lib] = [lib for lib in report.libraries if lib.kind == "openssl"]
    assert lib.path.endswith(".so.3") or ".so.1" in lib.path
    assert lib.version[:1].isdigit()
    assert (lib.hooked, lib.reason) == (False, OFF)
    assert report.comm.startswith("python")


def test_a_hooked_library_file_is_reported_as_read(python_with_openssl: subprocess.Popen[bytes]) -> None:
    first = Scanner().process(python_with_openssl.pid, {}, "")
    assert first is not None
    path = next(lib.path for lib in first.libraries if lib.kind == "openssl")
    report = Scanner().process(python_with_openssl.pid, {path: True}, "")
    assert report is not None and report.readable
    assert [lib.reason for lib in report.libraries if lib.kind == "openssl"] == [""]
    failed = Scanner().process(python_with_openssl.pid, {path: False}, "")
    assert failed is not None and not failed.readable
    assert "could not attach" in failed.libraries[0].reason


def test_go_binaries_are_found_by_build_info_stripped_or_not(tmp_path: Path) -> None:
    go = nats_binary()  # nats-server: Go, speaks TLS through crypto/tls
    [(kind, version, reason)] = examine(go)
    assert (kind, reason) == ("go", "")  # register ABI: hookable
    assert version.startswith("go1.")
    stripped = tmp_path / "stripped"
    shutil.copy(go, stripped)
    subprocess.run(["strip", str(stripped)], check=True)
    assert examine(str(stripped)) == [(kind, version, reason)]  # .gopclntab still names crypto/tls


def test_a_running_go_process_not_attached_yet_is_reported_not_read_with_the_reason(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [nats_binary(), "-a", "127.0.0.1", "-p", "0", "-sd", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        scanner = Scanner(source_state=lambda: "")
        found = wait_for(
            "the Go process in the report",
            lambda: [p for p in scanner.scan()[0] if p.pid == proc.pid],
        )
        [lib] = found[0].libraries
        assert (lib.kind, lib.hooked) == ("go", False)
        assert lib.reason.startswith("not attached yet")
    finally:
        proc.kill()
        proc.wait()


def test_files_that_are_not_what_their_names_say_are_reported_without_failing(tmp_path: Path) -> None:
    fake = tmp_path / "libssl.so.3"
    fake.write_bytes(b"not a library" * 1000)
    assert examine(str(fake)) == []
    code = (
        "import mmap, sys\n"
        f"f = open({str(fake)!r}, 'rb')\n"
        "m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ | mmap.PROT_EXEC)\n"
        "print('ready', flush=True); sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
            report = Scanner().process(proc.pid, {}, "")
            assert report is not None
            [lib] = [lib for lib in report.libraries if lib.path == str(fake)]
            assert (lib.kind, lib.version, lib.hooked) == ("openssl", "", False)
            assert lib.reason
        finally:
            proc.kill()


def test_an_executable_that_breaks_the_elf_reader_is_counted_not_raised(tmp_path: Path) -> None:
    scanner = Scanner()
    for i, data in enumerate([b"\x7fELF" + b"\xff" * 60, Path(sys.executable).read_bytes()[:200]]):
        bad = tmp_path / f"bad{i}"
        bad.write_bytes(data)  # a lying header; an ELF header with nothing behind it
        assert scanner._exe(bad).found == ()


def test_a_vanished_process_is_skipped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert Scanner().process(proc.pid, {}, "") is None
