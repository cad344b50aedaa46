"""Go executables: where `crypto/tls.(*Conn).Read`/`Write` start and return, and whether they can be hooked.

The functions are found by the symbol table, or in a stripped binary through the Go function table
(`.gopclntab`: Go 1.16/1.17 and 1.18+ layouts). Uretprobes break Go (goroutine stacks move), so the
returns are found by disassembly: every RET instruction of the function gets an ordinary uprobe.
Only the register ABI (Go 1.17+) is hookable: it is recognised from the function's own prologue
(the stack check reads the goroutine from R14), which holds for versions this code has never seen.

Rule: a binary that is not what it says never raises; it yields a `GoBinary` whose `reason` says
what could not be found, and all reads are bounded by the file's own section sizes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

READ: Final = "crypto/tls.(*Conn).Read"
WRITE: Final = "crypto/tls.(*Conn).Write"
HANDSHAKE: Final = "crypto/tls.(*Conn).handshakeContext"  # Go 1.17+; hooked when present
FUNCTIONS: Final = (READ, WRITE)
OPTIONAL: Final = (HANDSHAKE,)
WANTED: Final = FUNCTIONS + OPTIONAL
BUILDINFO_MAGIC: Final = b"\xff Go buildinf:"
# pclntab magics (runtime/symtab.go): 1.2–1.15, 1.16–1.17, 1.18–1.19, 1.20+.
PCLN_MAGICS: Final = {0xFFFFFFFB: "1.2", 0xFFFFFFFA: "1.16", 0xFFFFFFF0: "1.18", 0xFFFFFFF1: "1.20"}
SCAN_BYTES: Final = 64 * 1024 * 1024  # of a file without sections, searched for Go's build info
PCLN_HEADER_BYTES: Final = {"1.2": 16, "1.16": 64, "1.18": 72, "1.20": 72}
# Bounds: a function longer than this is not the TLS method (its body is a few KiB); a symbol table
# beyond this is not read.
MAX_FUNCTION_BYTES: Final = 64 * 1024
MAX_PCLNTAB_BYTES: Final = 512 * 1024 * 1024
# Instructions of the prologue inspected for the stack-bound check that names the ABI.
PROLOGUE_INSTRUCTIONS: Final = 4

_GO_VERSION: Final = re.compile(rb"go1\.\d+(?:\.\d+)?(?:[a-z0-9]+)?")


@dataclass(frozen=True, slots=True)
class GoFunction:
    name: str
    entry: int  # virtual address
    returns: tuple[int, ...]  # virtual addresses of its RET instructions


@dataclass(frozen=True, slots=True)
class GoBinary:
    """A Go executable as the eBPF source sees it: hookable when `reason` is empty."""

    version: str  # "go1.19.8"; "" when the build info does not say
    uses_tls: bool
    abi: str  # "register" | "stack" | "" (unknown)
    symbols: str  # "symtab" | "pclntab 1.18" … | ""
    functions: tuple[GoFunction, ...]
    reason: str

    @property
    def hookable(self) -> bool:
        return not self.reason


def inspect(path: str) -> GoBinary | None:
    """The Go view of an ELF executable; None when it is not a Go binary (or not an ELF file)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return None
        f.seek(0)
        try:
            elf = ELFFile(f)
            return inspect_elf(elf, f)
        except (ELFError, struct.error, ValueError, IndexError, OSError, UnicodeDecodeError) as exc:
            if not _is_go(f):
                return None
            return GoBinary(
                "", False, "", "", (), f"unreadable Go binary ({type(exc).__name__}: {exc})"[:200]
            )


def _is_go(f: BinaryIO) -> bool:
    f.seek(0)
    return BUILDINFO_MAGIC in f.read(SCAN_BYTES)


def _sectionless(f: BinaryIO) -> GoBinary | None:
    """A Go binary without section headers (cut, or `sstrip`ped): told by its bytes, not hookable."""
    f.seek(0)
    blob = f.read(SCAN_BYTES)
    at = blob.find(BUILDINFO_MAGIC)
    if at < 0:
        return None
    version = go_version(blob[at : at + 4096])
    uses_tls = b"\0" + READ.encode() + b"\0" in blob
    return GoBinary(
        version, uses_tls, "", "", (), "no section headers: the Go function table cannot be located"
    )


def inspect_elf(elf: Any, f: BinaryIO) -> GoBinary | None:
    """`inspect` of an ELF file already open (pyelftools `ELFFile` over `f`)."""
    buildinfo = elf.get_section_by_name(".go.buildinfo")
    pclntab = elf.get_section_by_name(".gopclntab")
    if buildinfo is None and pclntab is None:
        # No section headers, or none with a readable name (cut, `sstrip`ped): look at the bytes.
        named = any(section.name for section in elf.iter_sections())
        return None if named else _sectionless(f)
    version = go_version(buildinfo.data()[:4096]) if buildinfo is not None else ""
    if not version:
        rodata = elf.get_section_by_name(".rodata")
        if rodata is not None and rodata.data_size < 256 * 1024 * 1024:
            m = _GO_VERSION.search(rodata.data())
            version = m.group(0).decode() if m else ""
    if elf["e_machine"] != "EM_X86_64":
        return GoBinary(version, False, "", "", (), f"Go on {elf['e_machine']} is not hooked (x86-64 is)")
    # The function table first (a few ms even on large binaries); the ELF symbol table only when
    # the table is missing or of a layout this code does not know (pyelftools reads all symbols).
    entries: dict[str, tuple[int, int]] = {}
    symbols, why = "", "stripped without a .gopclntab section"
    if pclntab is not None and pclntab.data_size <= MAX_PCLNTAB_BYTES:
        text = elf.get_section_by_name(".text")
        try:
            found, layout = pcln_functions(pclntab.data(), text["sh_addr"] if text is not None else 0)
            entries, symbols = {k: v for k, v in found.items() if k in WANTED}, f"pclntab {layout}"
        except UnknownLayout as exc:
            why = str(exc)
    elif pclntab is not None:
        why = ".gopclntab is larger than the bound read"
    if not symbols:
        entries, symbols = _from_symtab(elf)
        if not entries:
            # Functions that cannot be located: whether it speaks TLS is still told by the names.
            named = (
                pclntab is not None
                and pclntab.data_size <= MAX_PCLNTAB_BYTES
                and READ.encode() in pclntab.data()
            )
            unknown = named or pclntab is None
            return GoBinary(version, named, "", "", (), why if unknown else "does not link crypto/tls")
    if READ not in entries and WRITE not in entries:
        return GoBinary(version, False, "", symbols, (), "does not link crypto/tls")
    missing = [name for name in FUNCTIONS if name not in entries]
    if missing:
        return GoBinary(version, True, "", symbols, (), f"{', '.join(missing)} not found")
    functions: list[GoFunction] = []
    abis: set[str] = set()
    for name in FUNCTIONS + tuple(n for n in OPTIONAL if n in entries):
        entry, end = entries[name]
        code = _read_vaddr(elf, f, entry, min(end - entry, MAX_FUNCTION_BYTES))
        if not code:
            return GoBinary(version, True, "", symbols, (), f"{name}: its code is not in the file")
        abi, returns = disassemble(code, entry)
        abis.add(abi)
        functions.append(GoFunction(name, entry, returns))
        if not returns:
            return GoBinary(version, True, abi, symbols, (), f"{name}: no RET instruction found")
    abi = abis.pop() if len(abis) == 1 else ""
    if abi == "stack":
        reason = f"Go {version or '< 1.17'} passes arguments on the stack (Go < 1.17): not hooked"
    elif abi != "register":
        reason = f"Go {version or '(unknown version)'}: unrecognised function prologue, ABI unknown"
    else:
        reason = ""
    return GoBinary(version, True, abi, symbols, tuple(functions), reason)


def _from_symtab(elf: Any) -> tuple[dict[str, tuple[int, int]], str]:
    symtab = elf.get_section_by_name(".symtab")
    out: dict[str, tuple[int, int]] = {}
    if symtab is None:
        return out, ""
    for name in WANTED:
        syms = symtab.get_symbol_by_name(name)
        if syms and syms[0]["st_value"] and syms[0]["st_size"]:
            out[name] = (syms[0]["st_value"], syms[0]["st_value"] + syms[0]["st_size"])
    return out, "symtab"


def _read_vaddr(elf: Any, f: BinaryIO, addr: int, size: int) -> bytes:
    for seg in elf.iter_segments():
        if seg["p_type"] != "PT_LOAD":
            continue
        start, filesz = seg["p_vaddr"], seg["p_filesz"]
        if start <= addr and addr + size <= start + filesz:
            f.seek(seg["p_offset"] + addr - start)
            return f.read(size)
    return b""


class UnknownLayout(ValueError):
    """A .gopclntab this code cannot read (a Go version newer or older than it knows)."""


def pcln_functions(data: bytes, text_start: int) -> tuple[dict[str, tuple[int, int]], str]:
    """{name: (entry, end)} of the wanted functions from a .gopclntab, and its layout's name.

    Layouts (Go's runtime/symtab.go, debug/gosym): the header gives the function count and the
    offsets of the name table and of the function table; each function-table row is (entry, offset
    of its _func), and a _func begins with its entry and the offset of its name. The end of a
    function is the next row's entry.
    """
    if len(data) < 8:
        raise UnknownLayout(".gopclntab is too short")
    magic = struct.unpack_from("<I", data, 0)[0]
    layout = PCLN_MAGICS.get(magic)
    if layout is None:
        raise UnknownLayout(
            f"unknown .gopclntab layout (magic {magic:#x}): a Go version this source does not know"
        )
    quantum, ptr = data[6], data[7]
    if ptr != 8 or quantum != 1:
        raise UnknownLayout(f".gopclntab for pointer size {ptr}, quantum {quantum}: not x86-64")
    if len(data) < PCLN_HEADER_BYTES[layout]:
        raise UnknownLayout(".gopclntab is shorter than its header")
    if layout == "1.2":
        # 1.2–1.15: names are reached through each _func; stack ABI only, so the caller reports it.
        return _pcln_12(data), layout
    word = struct.Struct("<Q")
    nfunc = word.unpack_from(data, 8)[0]
    if layout == "1.16":
        nameoff, pclnoff = word.unpack_from(data, 24)[0], word.unpack_from(data, 56)[0]
        row, rel = struct.Struct("<QQ"), False
    else:
        header_text = word.unpack_from(data, 24)[0]
        text_start = text_start or header_text
        nameoff, pclnoff = word.unpack_from(data, 32)[0], word.unpack_from(data, 64)[0]
        row, rel = struct.Struct("<II"), True
    if nfunc > len(data) // row.size or pclnoff + (nfunc + 1) * row.size > len(data):
        raise UnknownLayout(".gopclntab's function table runs past its end")
    wanted = _name_offsets(data, nameoff, pclnoff)
    out: dict[str, tuple[int, int]] = {}
    if not wanted:
        return out, layout
    name_at = struct.Struct("<i")
    for i in range(nfunc):
        entry, funcoff = row.unpack_from(data, pclnoff + i * row.size)
        at = pclnoff + funcoff + (4 if rel else 8)
        if at + 4 > len(data):
            continue
        name = wanted.get(name_at.unpack_from(data, at)[0])
        if name is None:
            continue
        end = row.unpack_from(data, pclnoff + (i + 1) * row.size)[0]
        if rel:
            entry, end = entry + text_start, end + text_start
        out[name] = (entry, end)
    return out, layout


def _name_offsets(data: bytes, nameoff: int, limit: int) -> dict[int, str]:
    """Offsets (from the name table) of the wanted names: a name is NUL-terminated, NUL-preceded."""
    out: dict[int, str] = {}
    for name in WANTED:
        needle = b"\0" + name.encode() + b"\0"
        at = data.find(needle, nameoff - 1 if nameoff else 0, limit if limit > nameoff else len(data))
        if at >= 0:
            out[at + 1 - nameoff] = name
    return out


def _pcln_12(data: bytes) -> dict[str, tuple[int, int]]:
    word = struct.Struct("<Q")
    nfunc = word.unpack_from(data, 8)[0]
    if 16 + (nfunc * 2 + 1) * 8 > len(data):
        raise UnknownLayout(".gopclntab's function table runs past its end")
    out: dict[str, tuple[int, int]] = {}
    for i in range(nfunc):
        entry, funcoff = struct.unpack_from("<QQ", data, 16 + i * 16)
        if funcoff + 12 > len(data):
            continue
        nameoff = struct.unpack_from("<i", data, funcoff + 8)[0]
        end = data.find(b"\0", nameoff, nameoff + 256)
        if nameoff <= 0 or end < 0:
            continue
        name = data[nameoff:end].decode("utf-8", "replace")
        if name in WANTED:
            out[name] = (entry, word.unpack_from(data, 16 + (i + 1) * 16)[0])
    return out


def disassemble(code: bytes, address: int) -> tuple[str, tuple[int, ...]]:
    """(the ABI its prologue shows, the addresses of its RET instructions) of one function's code."""
    import capstone  # type: ignore[import-untyped,unused-ignore]

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    abi = ""
    returns: list[int] = []
    for i, (addr, _size, mnemonic, operands) in enumerate(md.disasm_lite(code, address)):
        if i < PROLOGUE_INSTRUCTIONS and not abi:
            # Go 1.17+: `cmp rsp, [r14 + 0x10]` (R14 is the goroutine); before: g is loaded from fs:-8.
            if "[r14 + 0x10]" in operands:
                abi = "register"
            elif "fs:" in operands:
                abi = "stack"
        if mnemonic == "ret":
            returns.append(addr)
    return abi, tuple(returns)


def go_version(data: bytes) -> str:
    """The Go version in a .go.buildinfo section's first bytes ("" when it does not say inline)."""
    if data.startswith(BUILDINFO_MAGIC) and len(data) > 33 and data[15] & 2:
        n, shift, i = 0, 0, 32  # the inline form (Go 1.18+): a varint length, then the version
        while i < len(data) and shift < 64:
            b = data[i]
            n |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            shift += 7
        return data[i : i + min(n, 64)].decode("ascii", "replace")
    m = _GO_VERSION.search(data)
    return m.group(0).decode() if m else ""
