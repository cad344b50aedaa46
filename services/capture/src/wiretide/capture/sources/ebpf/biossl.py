"""OpenSSL's SSL BIO (`BIO_f_ssl`): where its read and write functions are in a libssl file.

Programs that read and write TLS through a BIO chain (`openssl s_server -www`/`-WWW`, anything built
on `BIO_new_ssl`) never call SSL_read/SSL_write: the SSL BIO's own `ssl_read`/`ssl_write` (static in
ssl/bio_ssl.c) call libssl's internal functions. Those two are not exported, but their addresses are
in the method table `BIO_f_ssl()` returns: `{int type; const char *name; bwrite; bwrite_old; bread;
…}` (the same layout in 1.1.1 and 3.x, whose `bwrite`/`bread` take `(BIO *, buf, size_t, size_t *)`
like SSL_write_ex/SSL_read_ex). `BIO_f_ssl` is `lea rax, [rip + table]; ret`; in a shared object the
table's function pointers are filled in by R_X86_64_RELATIVE relocations, whose addends are the
functions' addresses. Hooking those two addresses costs nothing to programs that use no SSL BIO
(libcrypto's BIO_read/BIO_write, which every SSL_read goes through, stay unhooked).

Rule: a file that is not what it says never raises; the answer is the two addresses or why not,
and all reads are bounded by the file's own sections.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

from wiretide.capture.sources.ebpf._program import BIO_TYPE_SSL

BWRITE_AT: Final = 16  # offsets in struct bio_method_st (x86-64)
BREAD_AT: Final = 32
R_X86_64_RELATIVE: Final = 8
# Instructions of BIO_f_ssl looked at for the table's address (it is two: lea, ret).
MAX_INSTRUCTIONS: Final = 8


@dataclass(frozen=True, slots=True)
class SslBioMethods:
    """The SSL BIO's read and write functions (virtual addresses in the file), or why not found."""

    bread: int = 0
    bwrite: int = 0
    reason: str = ""


def find(path: str, entry: int = 0) -> SslBioMethods:
    """The SSL BIO's `bread`/`bwrite` in the libssl at `path` (x86-64 ELF); `entry`, BIO_f_ssl's
    address when the caller has it (BCC's symbol reader is faster than walking every symbol here)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return SslBioMethods(reason="not an ELF file")
            f.seek(0)
            return _find(ELFFile(f), f, entry)
    except (ELFError, struct.error, ValueError, IndexError, KeyError, OSError, UnicodeDecodeError) as exc:
        return SslBioMethods(reason=f"unreadable ({type(exc).__name__}: {exc})"[:200])


def _find(elf: Any, f: Any, entry: int) -> SslBioMethods:
    if elf["e_machine"] != "EM_X86_64":
        return SslBioMethods(reason=f"the SSL BIO on {elf['e_machine']} is not hooked (x86-64 is)")
    for name in (".dynsym", ".symtab") if not entry else ():
        table = elf.get_section_by_name(name)
        symbols = table.get_symbol_by_name("BIO_f_ssl") if table is not None else None
        if symbols:
            entry = int(symbols[0]["st_value"])
            break
    if not entry:
        return SslBioMethods(reason="no BIO_f_ssl symbol")
    code = _read(elf, f, entry, 16 * MAX_INSTRUCTIONS)
    methods = _lea_target(code, entry) if code else 0
    if not methods:
        return SslBioMethods(reason="BIO_f_ssl does not return a table this code knows (lea rip; ret)")
    head = _read(elf, f, methods, 4)
    if len(head) != 4 or struct.unpack("<i", head)[0] != BIO_TYPE_SSL:
        return SslBioMethods(reason="BIO_f_ssl's table is not of type BIO_TYPE_SSL")
    pointers = _relative_addends(elf, {methods + BWRITE_AT, methods + BREAD_AT})
    bwrite = pointers.get(methods + BWRITE_AT) or _pointer(elf, f, methods + BWRITE_AT)
    bread = pointers.get(methods + BREAD_AT) or _pointer(elf, f, methods + BREAD_AT)
    if not (bread and bwrite and _executable(elf, bread) and _executable(elf, bwrite)):
        return SslBioMethods(reason="the SSL BIO's read/write are not functions of this file")
    return SslBioMethods(bread, bwrite)


def _lea_target(code: bytes, address: int) -> int:
    """The address `lea rax, [rip + disp]` loads when it is followed by `ret` (0 otherwise)."""
    import capstone  # type: ignore[import-untyped,unused-ignore]

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    target = 0
    for n, ins in enumerate(md.disasm(code, address)):
        if n >= MAX_INSTRUCTIONS:
            break
        if ins.mnemonic == "endbr64":
            continue
        if ins.mnemonic == "ret":
            return target
        if target or ins.mnemonic != "lea" or len(ins.operands) != 2:
            return 0
        dst, src = ins.operands
        if (
            dst.type != capstone.x86.X86_OP_REG
            or ins.reg_name(dst.reg) != "rax"
            or src.type != capstone.x86.X86_OP_MEM
            or src.mem.base != capstone.x86.X86_REG_RIP
            or src.mem.index != 0
        ):
            return 0
        target = ins.address + ins.size + src.mem.disp
    return 0


def _file_offset(elf: Any, vaddr: int, size: int) -> int:
    """Where `size` bytes at `vaddr` are in the file (-1: not within one loaded segment's file bytes)."""
    for seg in elf.iter_segments():
        if seg["p_type"] != "PT_LOAD":
            continue
        start = int(seg["p_vaddr"])
        if start <= vaddr and vaddr + size <= start + int(seg["p_filesz"]):
            return vaddr - start + int(seg["p_offset"])
    return -1


def _read(elf: Any, f: Any, vaddr: int, size: int) -> bytes:
    for n in (size, 8, 4):
        offset = _file_offset(elf, vaddr, n)
        if offset >= 0:
            f.seek(offset)
            return bytes(f.read(n))
    return b""


def _pointer(elf: Any, f: Any, vaddr: int) -> int:
    """A pointer stored in the file itself (a non-PIE build: no relocation fills it in)."""
    raw = _read(elf, f, vaddr, 8)
    return int(struct.unpack("<Q", raw)[0]) if len(raw) == 8 else 0


def _relative_addends(elf: Any, slots: set[int]) -> dict[int, int]:
    """The addends of the R_X86_64_RELATIVE relocations that fill `slots` in (RELA sections read as
    24-byte records: offset, info, addend)."""
    out: dict[int, int] = {}
    for section in elf.iter_sections():
        if section["sh_type"] != "SHT_RELA" or section["sh_entsize"] != 24:
            continue
        data = section.data()
        for offset, info, addend in struct.iter_unpack("<QQq", data[: len(data) - len(data) % 24]):
            if offset in slots and info & 0xFFFFFFFF == R_X86_64_RELATIVE:
                out[offset] = addend
        if len(out) == len(slots):
            break
    return out


def _executable(elf: Any, vaddr: int) -> bool:
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_LOAD" and int(seg["p_flags"]) & 1:  # PF_X
            start = int(seg["p_vaddr"])
            if start <= vaddr < start + int(seg["p_filesz"]):
                return True
    return False
