"""Wiretide capture: packets from NICs (AF_PACKET), eBPF and pcap files, sharded by flow to dissectors."""
