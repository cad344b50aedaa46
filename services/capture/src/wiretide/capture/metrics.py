"""The capture service's Prometheus metrics, declared once so that names do not drift.

Rule: every packet that does not reach a dissector is counted here under a reason.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PACKETS = Counter("wiretide_capture_packets_total", "Packets captured", ["interface"])
BYTES = Counter("wiretide_capture_bytes_total", "Bytes captured (captured length)", ["interface"])
KERNEL_DROPS = Counter(
    "wiretide_capture_kernel_drops_total",
    "Packets the kernel dropped because the ring was full",
    ["interface"],
)
RING_FULL = Counter(
    "wiretide_capture_ring_full_total", "Times the kernel found the ring full (queue freezes)", ["interface"]
)
DROPPED = Counter(
    "wiretide_capture_dropped_packets_total", "Packets captured but not delivered to a dissector", ["reason"]
)
UNDECODABLE = Counter(
    "wiretide_capture_undecodable_packets_total", "Packets without decodable IP headers (still forwarded)"
)
SENT_BATCHES = Counter("wiretide_capture_sent_batches_total", "PacketBatches sent", ["endpoint"])
SENT_PACKETS = Counter("wiretide_capture_sent_packets_total", "Packets sent", ["endpoint"])
SENT_BYTES = Counter("wiretide_capture_sent_bytes_total", "Frame bytes sent", ["endpoint"])
QUEUED = Gauge("wiretide_capture_queued_batches", "Batches waiting for credits", ["endpoint"])
ENDPOINT_UP = Gauge("wiretide_capture_dissector_up", "1 while the Ingest stream is open", ["endpoint"])
PAUSED = Gauge(
    "wiretide_capture_paused", "1 while the queues to the dissectors are full and the rings are not read"
)
INTERFACES = Gauge("wiretide_capture_interfaces", "Interfaces being captured")
RECORDER_BYTES = Gauge("wiretide_capture_recorder_bytes", "Bytes held by the pcapng recorder ring")
