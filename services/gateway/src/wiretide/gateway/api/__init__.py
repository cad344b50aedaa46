"""The gateway's user-facing API (REST now; WebSocket and gRPC share the same application layer)."""
