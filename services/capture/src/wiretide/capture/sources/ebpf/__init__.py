"""eBPF: TLS plaintext from the processes' OpenSSL calls, with process and connection identity."""

from wiretide.capture.sources.ebpf.conntab import Connection, ConnectionTable
from wiretide.capture.sources.ebpf.source import Chunk, EbpfSource, EbpfStats, EbpfUnavailable, Hook, probe

__all__ = [
    "Chunk",
    "Connection",
    "ConnectionTable",
    "EbpfSource",
    "EbpfStats",
    "EbpfUnavailable",
    "Hook",
    "probe",
]
