"""Keep the packets of chosen flows from a pcapng snapshot (the capture recorder's answer).

Rule: the output is valid pcapng — every section header and interface block is kept as it came, so
interface ids stay right — and only enhanced packet blocks whose direction-independent flow id
(`wiretide.common.packets.flow_id`, the id entries carry) is chosen are kept. Input that does not
parse ends the selection at that point (what was kept before stays); it never raises.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from wiretide.common.packets import decode_headers, flow_id

BT_SHB: Final = 0x0A0D0D0A
BT_IDB: Final = 0x00000001
BT_EPB: Final = 0x00000006
BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
SHB_HARDWARE: Final = 2
MAX_BLOCK: Final = 16 << 20  # larger blocks are damage, not packets (IDB snaplen is 256 KiB)


@dataclass(slots=True)
class Selection:
    data: bytearray = field(default_factory=bytearray)
    kept: int = 0
    seen: int = 0
    node: str = ""
    damaged: bool = False


def _shb_node(block: memoryview, endian: str) -> str:
    # type, length, magic, major, minor, section length (8), then options
    off = 24
    end = len(block) - 4
    while off + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", block, off)
        if code == 0:
            break
        value = bytes(block[off + 4 : off + 4 + length])
        if code == SHB_HARDWARE:
            return value.decode("utf-8", "replace")
        off += 4 + length + (-length % 4)
    return ""


def select_flows(data: bytes, flows: frozenset[str] | set[str], out: Selection | None = None) -> Selection:
    """Append to `out` (a new Selection by default) the blocks of `data` that belong to `flows`."""
    sel = out if out is not None else Selection()
    buf = memoryview(data)
    off = 0
    endian = "<"
    links: list[int] = []
    headers: list[bytes] = []  # SHB/IDBs of this section, written once one of its packets is kept
    flushed = False
    try:
        while off + 12 <= len(buf):
            if struct.unpack_from("<I", buf, off)[0] == BT_SHB:
                magic_le = struct.unpack_from("<I", buf, off + 8)[0]
                endian = "<" if magic_le == BYTE_ORDER_MAGIC else ">"
                links, headers, flushed = [], [], False
            btype, total = struct.unpack_from(endian + "II", buf, off)
            if total < 12 or total % 4 or total > MAX_BLOCK or off + total > len(buf):
                sel.damaged = True
                break
            block = buf[off : off + total]
            off += total
            if btype == BT_SHB:
                sel.node = sel.node or _shb_node(block, endian)
                headers.append(bytes(block))
            elif btype == BT_IDB:
                links.append(struct.unpack_from(endian + "H", block, 8)[0])
                if flushed:  # a new interface after kept packets: written in place, ids stay aligned
                    sel.data += block
                else:
                    headers.append(bytes(block))
            elif btype == BT_EPB:
                sel.seen += 1
                ifid, _hi, _lo, caplen = struct.unpack_from(endian + "IIII", block, 8)
                if ifid < len(links) and 28 + caplen <= total:
                    h = decode_headers(block, 28, 28 + caplen, links[ifid])
                    if h is not None and flow_id(h[1], h[4], h[2], h[5], h[3]) in flows:
                        if not flushed:
                            for head in headers:
                                sel.data += head
                            flushed = True
                        sel.data += block
                        sel.kept += 1
        else:
            sel.damaged = sel.damaged or off != len(buf)
    except struct.error:
        sel.damaged = True
    finally:
        buf.release()
    return sel
