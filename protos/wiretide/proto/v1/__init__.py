"""Generated protobuf and gRPC modules for Wiretide's v1 contracts (see the .proto files)."""
