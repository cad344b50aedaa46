"""Wiretide gateway: the entry store and the user's API (REST, WebSocket, gRPC) and UI."""
