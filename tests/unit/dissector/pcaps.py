"""Reading capture files into PacketColumns for tests (dpkt reads; no dissection here)."""

from __future__ import annotations

from pathlib import Path

import dpkt

from tests.helpers.pcaps import PCAPS
from wiretide.common.packets import ColumnBuilder, PacketColumns

__all__ = ["PCAPS", "read_columns"]


def read_columns(path: Path) -> PacketColumns:
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        builder = ColumnBuilder()
        iface = builder.interface("file", reader.datalink())
        for ts, frame in reader:
            ts_ns = int(ts * 1_000_000_000)
            builder.append(frame, len(frame), ts_ns, iface)
    return builder.take()
