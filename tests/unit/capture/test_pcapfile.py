"""Replay of capture files: every shared pcap reads exactly as dpkt and tshark read it; corrupt files
end with an error naming the offset and the packets read; pacing follows the recorded spacing."""

from __future__ import annotations

import itertools
import random
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import dpkt
import pytest

from tests.helpers.pcaps import PCAPS, files_or_missing, needs_pcaps, require_pcaps
from wiretide.capture.pcapng import PcapngWriter
from wiretide.capture.sources.pcapfile import PcapError, read_batches, read_info, read_stream
from wiretide.common.packets import LINKTYPE_ETHERNET, LINKTYPE_RAW, ColumnBuilder

ALL_FILES = files_or_missing(sorted(p for p in PCAPS.glob("*/*") if p.is_file()))
TSHARK = Path("/usr/bin/tshark")


def ours(path: Path, batch: int = 50) -> list[tuple[int, bytes, int]]:
    out = []
    for cols in read_batches(path, batch):
        assert len(cols) <= batch and cols.consistent()
        for off, caplen, origlen, ts, _ifid in cols.iter_packets():
            out.append((ts, cols.data[off : off + caplen], origlen))
    return out


def dpkt_read(path: Path) -> list[tuple[int, bytes]]:
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        return [(0, bytes(buf)) for _ts, buf in reader]


def test_the_shared_capture_corpus_is_present() -> None:
    require_pcaps()
    assert len(ALL_FILES) >= 100


@pytest.mark.parametrize("path", ALL_FILES, ids=[str(p.relative_to(PCAPS)) for p in ALL_FILES])
def test_every_shared_capture_replays_exactly_the_frames_dpkt_reads(path: Path) -> None:
    require_pcaps(path)
    mine = ours(path)
    theirs = dpkt_read(path)
    assert [frame for _ts, frame, _o in mine] == [frame for _ts, frame in theirs]
    # Timestamps are compared with tshark below: dpkt mis-scales later pcapng sections whose
    # interfaces use a different if_tsresol (kafka/ndpi_kafka.pcapng).


TSHARK_SAMPLE = [
    "tcp/tcpdump_tcp-handshake-nano.pcap",  # ns pcap, SLL
    "http2/ndpi_http2.pcapng",  # pcapng, SLL
    "http2/arkime_http2-nghttp2.pcap",  # DLT_NULL
    "kafka/ndpi_kafka.pcapng",
    "ldap/zeek_modify-request.pcapng",
    "dns/zeek_ipv6-fragmented-dns.pcap",
    "tcp/zeek_reassembly.pcap",
]


@needs_pcaps
@pytest.mark.skipif(not TSHARK.exists(), reason="tshark is not installed")
@pytest.mark.parametrize("name", TSHARK_SAMPLE)
def test_replay_agrees_with_tshark_on_count_lengths_and_timestamps(name: str) -> None:
    path = PCAPS / name
    out = subprocess.run(
        [
            str(TSHARK),
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.cap_len",
            "-e",
            "frame.len",
            "-e",
            "frame.time_epoch",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    theirs = [(int(c), int(o), t) for c, o, t in (line.split("\t") for line in out)]
    mine = ours(path)
    assert len(mine) == len(theirs)
    for (ts, frame, origlen), (caplen, wirelen, epoch) in zip(mine, theirs, strict=True):
        assert (len(frame), origlen) == (caplen, wirelen)
        sec, _, frac = epoch.partition(".")
        assert ts == int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


def test_pcapng_interface_names_and_link_types_come_through(tmp_path: Path) -> None:
    b = ColumnBuilder()
    e = b.interface("veth1234", LINKTYPE_ETHERNET)
    r = b.interface("wg0", LINKTYPE_RAW)
    b.append(b"\x00" * 60, 60, 1_700_000_000_123_456_789, e)
    b.append(b"\x45" + b"\x00" * 19, 20, 1_700_000_000_123_456_790, r)
    path = tmp_path / "two.pcapng"
    with open(path, "wb") as fh:
        PcapngWriter(fh, "node-7").write(b.take())
    info = read_info(path)
    assert info.format == "pcapng"
    assert info.interfaces == (("veth1234", LINKTYPE_ETHERNET), ("wg0", LINKTYPE_RAW))
    (cols,) = list(read_batches(path))
    assert cols.timestamps_ns == [1_700_000_000_123_456_789, 1_700_000_000_123_456_790]
    if TSHARK.exists():
        names = subprocess.run(
            [str(TSHARK), "-r", str(path), "-T", "fields", "-e", "frame.interface_name"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert names == ["veth1234", "wg0"]


def corrupt_copies(src: Path, tmp: Path) -> dict[str, tuple[Path, int, int]]:
    """name -> (file, packets readable, offset of the bad record)."""
    raw = src.read_bytes()
    frames = dpkt_read(src)
    # Offsets of each record header in a classic pcap.
    offsets = []
    off = 24
    while off < len(raw):
        offsets.append(off)
        off += 16 + struct.unpack_from("<I", raw, off + 8)[0]
    cases = {}
    cut = offsets[5] + 7
    (tmp / "cut.pcap").write_bytes(raw[:cut])
    cases["cut"] = (tmp / "cut.pcap", 5, offsets[5])
    huge = bytearray(raw)
    struct.pack_into("<I", huge, offsets[3] + 8, 50_000_000)
    (tmp / "huge.pcap").write_bytes(bytes(huge))
    cases["huge"] = (tmp / "huge.pcap", 3, offsets[3])
    assert len(frames) > 6
    return cases


@needs_pcaps
def test_a_corrupt_pcap_yields_what_precedes_the_damage_then_names_offset_and_count(tmp_path: Path) -> None:
    src = PCAPS / "http1.1/zeek_get.pcap"
    for name, (path, good, offset) in corrupt_copies(src, tmp_path).items():
        got = 0
        with pytest.raises(PcapError) as err:
            for cols in read_batches(path, 2):
                got += len(cols)
        assert got == good, name
        assert (err.value.offset, err.value.packets) == (offset, good), name
        assert f"byte offset {offset}" in str(err.value) and f"after {good} packets" in str(err.value)


@needs_pcaps
def test_a_corrupt_pcapng_block_stops_reading_with_its_offset(tmp_path: Path) -> None:
    raw = bytearray((PCAPS / "http2/ndpi_http2.pcapng").read_bytes())
    # Walk blocks to the 4th packet block and break its trailing length.
    off, seen = 0, 0
    while True:
        btype, blen = struct.unpack_from("<II", raw, off)
        if btype == 6:
            seen += 1
            if seen == 4:
                break
        off += blen
    struct.pack_into("<I", raw, off + blen - 4, blen + 4)
    path = tmp_path / "bad.pcapng"
    path.write_bytes(bytes(raw))
    got = 0
    with pytest.raises(PcapError) as err:
        for cols in read_batches(path):
            got += len(cols)
    assert got == 3 and err.value.offset == off and err.value.packets == 3


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xd4\xc3",
        b"GIF89a" + b"\x00" * 40,
        b"\x0a\x0d\x0d\x0a" + b"\xff" * 20,
        b"\xd4\xc3\xb2\xa1" + b"\x00" * 10,
    ],
    ids=["empty", "two-bytes", "not-a-capture", "pcapng-bad-length", "short-pcap-header"],
)
def test_files_that_are_not_captures_end_in_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(content)
    with pytest.raises(PcapError) as err:
        list(read_batches(path))
    assert str(path) in str(err.value) and err.value.packets == 0


@needs_pcaps
def test_random_damage_never_escapes_as_anything_but_pcap_error(tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    sources = [PCAPS / "http2/ndpi_http2.pcapng", PCAPS / "http1.1/zeek_post.pcap"]
    path = tmp_path / "fuzz"
    for i in range(300):
        raw = bytearray(sources[i % 2].read_bytes())
        for _ in range(rng.randint(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        raw = raw[: rng.randint(1, len(raw))]
        path.write_bytes(bytes(raw))
        try:
            for cols in read_batches(path, 3):
                assert cols.consistent()
        except PcapError:
            pass


def test_paced_replay_follows_the_recorded_spacing(tmp_path: Path) -> None:
    b = ColumnBuilder()
    i = b.interface("x", LINKTYPE_ETHERNET)
    base = 1_000_000_000_000
    for k in range(4):
        b.append(b"\x00" * 60, 60, base + k * 150_000_000, i)  # 150 ms apart
    path = tmp_path / "paced.pcapng"
    with open(path, "wb") as fh:
        PcapngWriter(fh, "n").write(b.take())
    arrivals = []
    for cols in read_batches(path, 100, pace=True):
        arrivals.extend([time.monotonic()] * len(cols))
    fast = list(read_batches(path, 100))
    assert len(arrivals) == 4 and len(fast) == 1
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Each packet waited for its own time: the batches were cut at every packet.
    assert all(g > 0.1 for g in gaps)


# ---- pipes, cuts and paths that are no capture ------------------------------------------------


class Trickle:
    """A pipe's reading end as `read_stream` sees it: bytes arrive in chunks of the sizes given."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data = data
        self.sizes = itertools.cycle(sizes)
        self.pos = 0

    def read1(self, n: int) -> bytes:
        size = min(n, next(self.sizes))
        chunk = self.data[self.pos : self.pos + size]
        self.pos += len(chunk)
        return chunk

    read = read1


def streamed(
    data: bytes, sizes: list[int], batch: int = 50
) -> tuple[list[tuple[int, bytes, int]], PcapError | None]:
    out = []
    try:
        for cols in read_stream(Trickle(data, sizes), "pipe", batch):  # type: ignore[arg-type]
            assert len(cols) <= batch and cols.consistent()
            for off, caplen, origlen, ts, _ifid in cols.iter_packets():
                out.append((ts, cols.data[off : off + caplen], origlen))
    except PcapError as exc:
        return out, exc
    return out, None


STREAM_SAMPLE = [
    "http1.1/zeek_get.pcap",  # little-endian µs pcap
    "tcp/tcpdump_tcp-handshake-nano.pcap",  # ns pcap
    "sctp/ndpi_sctp.cap",  # big-endian pcap
    "http2/ndpi_http2.pcapng",
    "kafka/ndpi_kafka.pcapng",  # several sections with different timestamp resolutions
]


@needs_pcaps
@pytest.mark.parametrize("name", STREAM_SAMPLE)
def test_a_capture_read_from_a_pipe_in_any_chunking_gives_the_packets_of_the_mapped_file(name: str) -> None:
    path = PCAPS / name
    data = path.read_bytes()
    expected = ours(path)
    rng = random.Random(name)
    for sizes in ([1], [3, 7], [4096], [len(data)], [rng.randint(1, 300) for _ in range(50)]):
        got, error = streamed(data, sizes)
        assert error is None, sizes
        assert got == expected, sizes


def record_starts(path: Path) -> list[int]:
    """Byte offsets where each record (pcap) or block (pcapng) of a capture starts, and its end."""
    raw = path.read_bytes()
    starts = []
    if raw[:4] == b"\x0a\x0d\x0d\x0a":
        off = 0
        while off < len(raw):
            starts.append(off)
            off += struct.unpack_from("<I", raw, off + 4)[0]
    else:
        off = 24
        while off < len(raw):
            starts.append(off)
            off += 16 + struct.unpack_from("<I", raw, off + 8)[0]
    return [*starts, len(raw)]


@needs_pcaps
@pytest.mark.parametrize("name", ["http1.1/zeek_get.pcap", "http2/ndpi_http2.pcapng"])
def test_a_capture_cut_mid_record_yields_its_intact_part_then_says_it_was_cut_short(
    tmp_path: Path, name: str
) -> None:
    src = PCAPS / name
    raw = src.read_bytes()
    starts = record_starts(src)
    cut_path = tmp_path / "cut"
    intact_path = tmp_path / "intact"
    for start, end in itertools.islice(itertools.pairwise(starts), 2, None, 3):
        for cut in (start + 1, start + 9, (start + end) // 2, end - 1):
            cut_path.write_bytes(raw[:cut])
            intact_path.write_bytes(raw[:start])
            intact = ours(intact_path)
            read: list[tuple[int, bytes, int]] = []
            with pytest.raises(PcapError) as err:
                for cols in read_batches(cut_path, 4):
                    read.extend(
                        (ts, cols.data[o : o + n], orig) for o, n, orig, ts, _i in cols.iter_packets()
                    )
            assert read == intact, cut
            assert err.value.truncated and err.value.offset == start and err.value.packets == len(intact)
            assert "cut short in the middle of a packet" in str(err.value)
            assert str(cut_path) in str(err.value)
            piped, perr = streamed(raw[:cut], [1000])
            assert piped == intact and perr is not None and perr.truncated and perr.offset == start


@needs_pcaps
def test_damage_is_not_reported_as_a_cut(tmp_path: Path) -> None:
    raw = bytearray((PCAPS / "http1.1/zeek_get.pcap").read_bytes())
    struct.pack_into("<I", raw, 24 + 8, 50_000_000)  # the first record claims 50 MB
    path = tmp_path / "huge.pcap"
    path.write_bytes(bytes(raw))
    with pytest.raises(PcapError) as err:
        list(read_batches(path))
    assert not err.value.truncated and "too large" in str(err.value)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.mkdir(), "is a directory, not a capture file"),
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        (lambda p: p.write_text("root:x:0:0:root:/root:/bin/bash\n"), "not a pcap or pcapng capture"),
    ],
    ids=["directory", "missing", "empty", "text"],
)
def test_a_path_that_is_no_capture_is_an_error_naming_the_path_and_the_problem(
    tmp_path: Path, make: Any, reason: str
) -> None:
    path = tmp_path / "capture.pcap"
    make(path)
    with pytest.raises(PcapError) as err:
        list(read_batches(path))
    assert str(err.value).startswith(f"{path}: {reason}")
    assert not err.value.truncated and err.value.packets == 0


def test_an_empty_pipe_is_an_error_not_an_empty_capture() -> None:
    got, error = streamed(b"", [100])
    assert got == [] and error is not None and "empty input" in str(error)
