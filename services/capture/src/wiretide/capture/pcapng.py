"""A pcapng writer (draft-ietf-opsawg-pcapng): one section, an interface block per (interface, link
type) as it first appears, enhanced packet blocks with nanosecond timestamps.

Rule: one `write` call per batch and one file write per batch; interface blocks carry the interface
name and the capture node so a file says where it was taken.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Final

from wiretide.common.packets import PacketColumns

BT_SHB: Final = 0x0A0D0D0A
BT_IDB: Final = 0x00000001
BT_EPB: Final = 0x00000006
BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
SHB_HARDWARE: Final = 2
SHB_USERAPPL: Final = 4
IF_NAME: Final = 2
IF_DESCRIPTION: Final = 3
IF_TSRESOL: Final = 9
TSRESOL_NS: Final = 9  # 10^-9 s per timestamp unit
IDB_SNAPLEN: Final = 262144
APPLICATION: Final = "wiretide"

_EPB_HEAD = struct.Struct("<IIIIIII")  # type, total length, interface, ts high, ts low, caplen, origlen
_U32 = struct.Struct("<I")
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
# A packet's padding (0-3 bytes) and trailing length, then the next packet's header, in one pack.
_JOINED = tuple(struct.Struct(f"<{pad}xIIIIIIII").pack for pad in range(4))


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + _PAD[len(value) % 4]


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + _U32.pack(total)


def section_header(node: str) -> bytes:
    options = _option(SHB_HARDWARE, node.encode()) + _option(SHB_USERAPPL, APPLICATION.encode()) + b"\0\0\0\0"
    # §4.1: byte-order magic, version 1.0, section length unknown (-1).
    return _block(BT_SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + options)


def interface_block(name: str, link_type: int, node: str) -> bytes:
    options = (
        _option(IF_NAME, name.encode())
        + _option(IF_DESCRIPTION, f"{name} on {node}".encode())
        + _option(IF_TSRESOL, bytes([TSRESOL_NS]))
        + b"\0\0\0\0"
    )
    return _block(BT_IDB, struct.pack("<HHI", link_type & 0xFFFF, 0, IDB_SNAPLEN) + options)


class PcapngWriter:
    """Writes batches to an open binary file; the section header goes out on construction."""

    def __init__(self, fh: BinaryIO, node: str) -> None:
        self.fh = fh
        self.node = node
        self._ifaces: dict[tuple[str, int], int] = {}
        self.packets = 0
        self.bytes_written = 0
        self._emit(section_header(node))

    def _emit(self, data: bytes) -> None:
        self.fh.write(data)
        self.bytes_written += len(data)

    def write(self, cols: PacketColumns, keep: list[bool] | None = None) -> int:
        """Append the batch (only packets whose `keep` flag is set, when given); returns packets written."""
        parts: list[bytes | memoryview] = []
        local: list[int] = []
        for name, link in cols.interfaces:
            key = (name, link)
            idx = self._ifaces.get(key)
            if idx is None:
                idx = len(self._ifaces)
                self._ifaces[key] = idx
                parts.append(interface_block(name, link, self.node))
            local.append(idx)
        data = memoryview(cols.data)
        written = 0
        n = len(cols.caplens)
        if keep is None and (not n or max(cols.interface_ids) < len(local)):
            # Every packet, every interface known: one pack per packet makes the previous packet's
            # padding and trailing length together with this packet's header.
            joined = _JOINED
            off = 0
            prev_total = -1
            prev_pad = 0
            for caplen, origlen, ts, ifid in zip(
                cols.caplens, cols.origlens, cols.timestamps_ns, cols.interface_ids, strict=False
            ):
                pad = -caplen & 3
                total = 32 + caplen + pad
                if prev_total < 0:
                    parts.append(
                        _EPB_HEAD.pack(
                            BT_EPB,
                            total,
                            local[ifid],
                            ts >> 32 & 0xFFFFFFFF,
                            ts & 0xFFFFFFFF,
                            caplen,
                            origlen,
                        )
                    )
                else:
                    parts.append(
                        joined[prev_pad](
                            prev_total,
                            BT_EPB,
                            total,
                            local[ifid],
                            ts >> 32 & 0xFFFFFFFF,
                            ts & 0xFFFFFFFF,
                            caplen,
                            origlen,
                        )
                    )
                parts.append(data[off : off + caplen])
                off += caplen
                prev_total, prev_pad = total, pad
            if prev_total >= 0:
                parts.append(bytes(prev_pad) + _U32.pack(prev_total))
            written = n
        else:
            head = _EPB_HEAD.pack
            tail = _U32.pack
            off = 0
            for i, (caplen, origlen, ts, ifid) in enumerate(
                zip(cols.caplens, cols.origlens, cols.timestamps_ns, cols.interface_ids, strict=False)
            ):
                start = off
                off += caplen
                if keep is not None and not keep[i]:
                    continue
                if ifid >= len(local):
                    continue
                padding = _PAD[caplen % 4]
                total = 32 + caplen + len(padding)
                parts.append(
                    head(
                        BT_EPB, total, local[ifid], (ts >> 32) & 0xFFFFFFFF, ts & 0xFFFFFFFF, caplen, origlen
                    )
                )
                parts.append(data[start:off])
                parts.append(padding + tail(total))
                written += 1
        data.release()
        if parts:
            self._emit(b"".join(parts))
        self.packets += written
        return written
