"""Finding Go's crypto/tls.(*Conn).Read/Write and their returns: a real Go binary (nats-server), its
stripped copy, function tables built here in each layout, prologues of both ABIs, and bytes that are
not what they say."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.nats import nats_binary
from wiretide.capture.sources.ebpf import gobin

REGISTER_PROLOGUE = bytes.fromhex("493b6610")  # cmp rsp, [r14+0x10]
STACK_PROLOGUE = bytes.fromhex("64488b0c25f8ffffff483b6110")  # mov rcx, fs:-8; cmp rsp, [rcx+0x10]
RET, NOP, INT3 = b"\xc3", b"\x90", b"\xcc"
NAMES = (b"main.main", gobin.READ.encode(), gobin.WRITE.encode())


def pclntab(layout: str, entries: list[int], text: int = 0x401000) -> bytes:
    """A function table in `layout` naming main.main, Read and Write at `entries` (one end past)."""
    names = b"".join(n + b"\0" for n in NAMES)
    name_offsets = [0, len(NAMES[0]) + 1, len(NAMES[0]) + len(NAMES[1]) + 2]
    magic = {"1.16": 0xFFFFFFFA, "1.18": 0xFFFFFFF0, "1.20": 0xFFFFFFF1}[layout]
    header_words = 7 if layout == "1.16" else 8
    header = 8 + header_words * 8
    nameoff = header
    pcln = nameoff + len(names)
    if layout == "1.16":
        row, func = struct.Struct("<QQ"), struct.Struct("<Qi4x")
        rows_size = row.size * (len(NAMES) + 1)
        rows = b"".join(row.pack(e, rows_size + i * func.size) for i, e in enumerate(entries[:-1]))
        rows += row.pack(entries[-1], 0)
        funcs = b"".join(func.pack(e, off) for e, off in zip(entries, name_offsets, strict=False))
        words = [len(NAMES), 0, nameoff, 0, 0, 0, pcln]
    else:
        row, func = struct.Struct("<II"), struct.Struct("<Ii")
        rows_size = row.size * (len(NAMES) + 1)
        rows = b"".join(row.pack(e - text, rows_size + i * func.size) for i, e in enumerate(entries[:-1]))
        rows += row.pack(entries[-1] - text, 0)
        funcs = b"".join(func.pack(e - text, off) for e, off in zip(entries, name_offsets, strict=False))
        words = [len(NAMES), 0, text, nameoff, 0, 0, 0, pcln]
    head = struct.pack("<IBBBB", magic, 0, 0, 1, 8) + b"".join(struct.pack("<Q", w) for w in words)
    return head + names + rows + funcs


@pytest.mark.parametrize("layout", ["1.16", "1.18", "1.20"])
def test_the_function_table_names_read_and_write_with_their_bounds_in_every_layout(layout: str) -> None:
    entries = [0x401000, 0x401100, 0x401400, 0x401900]
    found, name = gobin.pcln_functions(pclntab(layout, entries), 0x401000)
    assert name == layout
    assert found == {gobin.READ: (0x401100, 0x401400), gobin.WRITE: (0x401400, 0x401900)}


def test_the_text_start_of_the_table_is_used_when_the_section_does_not_say() -> None:
    entries = [0x500000, 0x500100, 0x500400, 0x500900]
    found, _ = gobin.pcln_functions(pclntab("1.20", entries, text=0x500000), 0)
    assert found[gobin.READ] == (0x500100, 0x500400)


def test_an_unknown_table_layout_is_named_not_raised() -> None:
    data = bytearray(pclntab("1.20", [0x401000, 0x401100, 0x401400, 0x401900]))
    data[0:4] = struct.pack("<I", 0xFFFFFFF9)
    with pytest.raises(gobin.UnknownLayout, match=r"unknown \.gopclntab layout"):
        gobin.pcln_functions(bytes(data), 0x401000)
    data[0:4] = struct.pack("<I", 0xFFFFFFF1)
    data[7] = 4  # a 32-bit table
    with pytest.raises(gobin.UnknownLayout, match="pointer size 4"):
        gobin.pcln_functions(bytes(data), 0x401000)


@settings(max_examples=300, deadline=None)
@given(
    magic=st.sampled_from([0xFFFFFFFB, 0xFFFFFFFA, 0xFFFFFFF0, 0xFFFFFFF1]),
    body=st.binary(max_size=400),
    cut=st.integers(min_value=0, max_value=400),
)
def test_random_or_truncated_tables_never_raise_anything_but_unknown_layout(
    magic: int, body: bytes, cut: int
) -> None:
    real = pclntab("1.20", [0x401000, 0x401100, 0x401400, 0x401900])
    for data in (struct.pack("<IBBBB", magic, 0, 0, 1, 8) + body, real[:cut], real[:72] + body):
        try:
            found, _ = gobin.pcln_functions(data, 0x401000)
        except gobin.UnknownLayout:
            continue
        assert set(found) <= set(gobin.FUNCTIONS)


def test_the_prologue_tells_the_register_abi_from_the_stack_abi_and_every_ret_is_found() -> None:
    body = NOP * 3 + RET + NOP + RET + INT3 * 4
    abi, returns = gobin.disassemble(REGISTER_PROLOGUE + body, 0x1000)
    assert abi == "register"
    assert returns == (0x1000 + 4 + 3, 0x1000 + 4 + 5)
    assert gobin.disassemble(STACK_PROLOGUE + body, 0x1000)[0] == "stack"
    assert gobin.disassemble(NOP * 8 + body, 0x1000)[0] == ""
    assert gobin.disassemble(b"\xff" * 64, 0) == ("", ())  # not code: nothing found, nothing raised


def test_a_real_go_binary_is_hookable_with_entries_and_returns_inside_the_functions() -> None:
    binary = gobin.inspect(nats_binary())
    assert binary is not None and binary.hookable, binary
    assert (binary.abi, binary.uses_tls) == ("register", True)
    assert binary.version.startswith("go1.")
    assert [f.name for f in binary.functions] == [*gobin.FUNCTIONS, gobin.HANDSHAKE]
    for f in binary.functions:
        assert f.returns and all(f.entry < r < f.entry + gobin.MAX_FUNCTION_BYTES for r in f.returns)


def test_a_stripped_copy_gives_the_same_addresses_through_the_function_table(tmp_path: Path) -> None:
    stripped = tmp_path / "stripped"
    shutil.copy(nats_binary(), stripped)
    subprocess.run(["strip", str(stripped)], check=True)
    full, bare = gobin.inspect(nats_binary()), gobin.inspect(str(stripped))
    assert full is not None and bare is not None
    assert bare.symbols.startswith("pclntab") and bare.hookable
    assert bare.functions == full.functions


def test_the_symbol_table_is_used_when_the_function_table_is_of_an_unknown_layout(tmp_path: Path) -> None:
    data = bytearray(Path(nats_binary()).read_bytes())
    from elftools.elf.elffile import ELFFile

    with open(nats_binary(), "rb") as f:
        section = ELFFile(f).get_section_by_name(".gopclntab")
        assert section is not None
        offset = section["sh_offset"]
    data[offset : offset + 4] = struct.pack("<I", 0xFFFFFFF9)  # a future Go's layout
    future = tmp_path / "future"
    future.write_bytes(bytes(data))
    binary = gobin.inspect(str(future))
    assert binary is not None and binary.symbols == "symtab" and binary.hookable
    subprocess.run(["strip", str(future)], check=True)
    stripped = gobin.inspect(str(future))
    assert stripped is not None and not stripped.hookable and stripped.uses_tls
    assert "unknown .gopclntab layout (magic 0xfffffff9)" in stripped.reason


def test_files_that_are_not_go_binaries_are_none_and_lying_ones_do_not_raise(tmp_path: Path) -> None:
    assert gobin.inspect("/bin/sh") is None
    text = tmp_path / "text"
    text.write_bytes(b"not an executable" * 100)
    assert gobin.inspect(str(text)) is None
    lying = tmp_path / "lying"
    lying.write_bytes(b"\x7fELF" + b"\xff" * 60 + gobin.BUILDINFO_MAGIC + b"\0" * 64)
    found = gobin.inspect(str(lying))
    assert found is not None and not found.hookable and found.reason.startswith("unreadable Go binary")
    # Cut after its build info, before its section names (at the end): told by its bytes alone.
    from elftools.elf.elffile import ELFFile

    with open(nats_binary(), "rb") as f:
        buildinfo = ELFFile(f).get_section_by_name(".go.buildinfo")
        assert buildinfo is not None
        end = buildinfo["sh_offset"] + 4096
    half = tmp_path / "half"
    half.write_bytes(Path(nats_binary()).read_bytes()[:end])
    cut = gobin.inspect(str(half))
    assert cut is not None and not cut.hookable and cut.uses_tls, cut
    assert cut.version.startswith("go1.") and cut.reason.startswith("no section headers")


def test_the_go_version_is_read_from_the_inline_build_info() -> None:
    info = gobin.BUILDINFO_MAGIC + b"\x08\x02" + b"\0" * 16 + bytes([8]) + b"go1.19.8" + b"\x00"
    assert gobin.go_version(info) == "go1.19.8"
    garbage = gobin.go_version(gobin.BUILDINFO_MAGIC + b"\x08\x02" + b"\0" * 16 + b"\xff" * 40)
    assert len(garbage) <= 64  # a lying length is bounded
    assert gobin.go_version(b"junk go1.16.3 junk") == "go1.16.3"
