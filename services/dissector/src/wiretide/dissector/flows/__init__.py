"""The flow layer: IP defragmentation, TCP reassembly, the bounded flow table."""

from wiretide.dissector.flows.defrag import Defragmenter
from wiretide.dissector.flows.tcp import TcpStream

__all__ = ["Defragmenter", "TcpStream"]
