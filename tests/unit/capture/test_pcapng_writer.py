"""The pcapng writer's two paths — every packet of a batch, and a selection of them — write the same
blocks, whatever the frame sizes (each padding length), interfaces and timestamps; dpkt reads them back."""

from __future__ import annotations

import io
import random

import dpkt
import pytest

from wiretide.capture.pcapng import PcapngWriter
from wiretide.common.packets import PacketColumns


def _batch(rng: random.Random, n: int, interfaces: int) -> PacketColumns:
    caplens = [rng.randrange(0, 200) for _ in range(n)]
    return PacketColumns(
        data=bytes(rng.randrange(256) for _ in range(sum(caplens))),
        caplens=caplens,
        origlens=[c + rng.randrange(0, 50) for c in caplens],
        timestamps_ns=[rng.randrange(1 << 62) for _ in range(n)],
        interface_ids=[rng.randrange(interfaces) for _ in range(n)],
        interfaces=[(f"eth{i}", 1) for i in range(interfaces)],
    )


def _written(cols: PacketColumns, keep: list[bool] | None) -> tuple[int, bytes]:
    writer = PcapngWriter(io.BytesIO(), "node-a")
    written = writer.write(cols, keep)
    assert isinstance(writer.fh, io.BytesIO)
    return written, writer.fh.getvalue()


@pytest.mark.parametrize("seed", range(20))
def test_a_whole_batch_is_written_as_the_selection_of_all_of_it(seed: int) -> None:
    rng = random.Random(seed)
    cols = _batch(rng, rng.randrange(0, 60), rng.randrange(1, 4))
    assert _written(cols, None) == _written(cols, [True] * len(cols))


def test_every_padding_length_reads_back_frame_for_frame() -> None:
    rng = random.Random(7)
    cols = _batch(rng, 40, 2)
    cols.caplens[:4] = [4, 5, 6, 7]  # padding 0, 3, 2, 1
    cols.origlens[:4] = [4, 5, 6, 7]
    cols.data = bytes(rng.randrange(256) for _ in range(sum(cols.caplens)))
    _, out = _written(cols, None)
    reader = dpkt.pcapng.Reader(io.BytesIO(out))
    frames = [bytes(buf) for _, buf in reader]
    expected, off = [], 0
    for caplen in cols.caplens:
        expected.append(cols.data[off : off + caplen])
        off += caplen
    assert frames == expected


def test_packets_of_an_unknown_interface_are_left_out_on_both_paths() -> None:
    rng = random.Random(3)
    cols = _batch(rng, 10, 1)
    cols.interface_ids[4] = 5  # no such interface in the batch
    written, out = _written(cols, None)
    assert written == 9 and (written, out) == _written(cols, [True] * 10)
