"""The SSL BIO's hooks without a kernel: its read/write found through BIO_f_ssl's method table in a
real libssl, which layout (entry functions) each libssl version gets, and files that are not what
they say."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from wiretide.capture.sources.ebpf import _program, biossl
from wiretide.capture.sources.ebpf.source import FUNCTIONS, EbpfSource

LIBSSL3 = next(
    (p for p in (Path("/usr/lib/x86_64-linux-gnu/libssl.so.3"), Path("/lib/x86_64-linux-gnu/libssl.so.3"))
     if p.exists()),
    None,
)  # fmt: skip
needs_libssl3 = pytest.mark.skipif(LIBSSL3 is None, reason="no x86-64 libssl.so.3 on this machine")


@needs_libssl3
def test_the_ssl_bio_s_read_and_write_are_found_in_the_system_libssl() -> None:
    assert LIBSSL3 is not None
    found = biossl.find(str(LIBSSL3))
    assert found.reason == "", found.reason
    assert found.bread and found.bwrite and found.bread != found.bwrite
    # BIO_f_ssl's address given (as BCC reads it) gives the same answer
    from elftools.elf.elffile import ELFFile

    with LIBSSL3.open("rb") as f:
        dynsym: Any = ELFFile(f).get_section_by_name(".dynsym")
        entry = int(dynsym.get_symbol_by_name("BIO_f_ssl")[0]["st_value"])
    assert biossl.find(str(LIBSSL3), entry) == found


def test_files_that_are_not_an_openssl_libssl_say_why_and_never_raise(tmp_path: Path) -> None:
    text = tmp_path / "libssl.so.3"
    text.write_bytes(b"not an ELF file at all")
    assert biossl.find(str(text)).reason == "not an ELF file"
    assert "unreadable" in biossl.find(str(tmp_path / "missing.so")).reason
    cut = tmp_path / "cut.so"
    cut.write_bytes(b"\x7fELF\x02\x01\x01" + b"\x00" * 40)
    assert biossl.find(str(cut)).reason  # a header and nothing behind it
    python = os.path.realpath(sys.executable)  # an ELF executable without OpenSSL in it
    assert biossl.find(python).reason == "no BIO_f_ssl symbol"
    if LIBSSL3 is not None:  # the right symbol at a wrong address: no table recognised
        assert biossl.find(str(LIBSSL3), 0x10).reason


class FakeBpf:
    """BCC's attach calls, recorded; `symbols` are the ones the library file "exports"."""

    def __init__(self, symbols: dict[bytes, int]) -> None:
        self.symbols = symbols
        self.attached: list[tuple[str, object, bytes]] = []

    def get_user_functions_and_addresses(self, _name: bytes, pattern: bytes) -> list[tuple[bytes, int]]:
        s = pattern.strip(b"^$")
        return [(s, self.symbols[s])] if s in self.symbols else []

    def attach_uprobe(self, name: bytes, fn_name: bytes, sym: bytes = b"", addr: int = 0) -> None:
        self.attached.append(("entry", sym or addr, fn_name))

    def attach_uretprobe(self, name: bytes, fn_name: bytes, sym: bytes = b"", addr: int = 0) -> None:
        self.attached.append(("return", sym or addr, fn_name))


def hooked(path: str, symbols: dict[bytes, int]) -> tuple[Any, FakeBpf]:
    source = EbpfSource()
    bpf = source._bpf = FakeBpf(symbols)
    return source.hook(path), bpf


@needs_libssl3
def test_an_openssl_3_libssl_gets_its_ssl_bio_hooked_with_the_3_x_layout(tmp_path: Path) -> None:
    assert LIBSSL3 is not None
    found = biossl.find(str(LIBSSL3))
    hook, bpf = hooked(str(LIBSSL3), {b"BIO_f_ssl": 0})
    assert set(hook.functions) == {sym for sym, _ in FUNCTIONS} | {"BIO_f_ssl read", "BIO_f_ssl write"}
    bio = {(kind, where, fn) for kind, where, fn in bpf.attached if isinstance(where, int)}
    assert bio == {
        ("entry", found.bread, b"bio_read_enter_3"),
        ("entry", found.bwrite, b"bio_write_enter_3"),
        ("return", found.bread, b"bio_leave"),
        ("return", found.bwrite, b"bio_leave"),
    }
    assert "BIO_ENTERS(3, 8, 64)" in _program.program_text()
    # The same file under a 1.1 name: 1.1.0 (no SSL_read_ex) has BIO methods of another shape
    old = tmp_path / "libssl.so.1.1"
    shutil.copyfile(LIBSSL3, old)
    hook, bpf = hooked(str(old), {b"BIO_f_ssl": 0})
    assert not any(isinstance(where, int) for _k, where, _f in bpf.attached)
    assert "BIO_f_ssl read" not in hook.functions
    # 1.1.1 (SSL_read_ex exported) gets the 1.1.1 layout's entry functions
    hook, bpf = hooked(str(old), {b"BIO_f_ssl": 0, b"SSL_read_ex": 1})
    assert {fn for _k, where, fn in bpf.attached if isinstance(where, int)} == {
        b"bio_read_enter_111",
        b"bio_write_enter_111",
        b"bio_leave",
    }
    assert "BIO_ENTERS(111, 0, 56)" in _program.program_text()


def test_a_libssl_whose_table_is_not_found_keeps_its_ssl_read_and_write(tmp_path: Path) -> None:
    lib = tmp_path / "libssl.so.3"
    lib.write_bytes(b"\x7fELF" + b"\x00" * 60)
    hook, bpf = hooked(str(lib), {b"BIO_f_ssl": 0x1000})
    assert set(hook.functions) == {sym for sym, _ in FUNCTIONS} and hook.error is None
    assert all(isinstance(where, bytes) for _k, where, _f in bpf.attached)
