"""Packet sources: AF_PACKET rings (`afpacket`) and capture files (`pcapfile`)."""
