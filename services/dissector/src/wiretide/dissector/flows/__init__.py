"""The flow layer: IP defragmentation, TCP reassembly, the bounded flow table."""

from wiretide.dissector import native

native.extend(__name__, __path__)

from wiretide.dissector.flows.defrag import Defragmenter  # noqa: E402
from wiretide.dissector.flows.tcp import TcpStream  # noqa: E402

__all__ = ["Defragmenter", "TcpStream"]
