"""Generate the Python stubs (messages, gRPC, typed .pyi) from the .proto contracts.

Run as `python protos/generate.py`; the output lands beside the .proto files and is never
committed. Every build path (Makefile, wheel build hook, Dockerfiles) calls this one script.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE / "wiretide" / "proto" / "v1"


def generate() -> list[Path]:
    from grpc_tools import protoc  # build-time dependency only

    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_DIR}")
    include = Path(protoc.__file__).parent / "_proto"
    plugins = []
    for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc"):
        exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
        if exe is None:
            raise SystemExit(f"{name} not found: install mypy-protobuf")
        plugins.append(f"--plugin={name}={exe}")
    args = [
        "grpc_tools.protoc",
        f"-I{HERE}",
        f"-I{include}",
        *plugins,
        f"--python_out={HERE}",
        f"--grpc_python_out={HERE}",
        f"--mypy_out={HERE}",
        f"--mypy_grpc_out={HERE}",
        *[str(p.relative_to(HERE)) for p in protos],
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    return sorted(PROTO_DIR.glob("*_pb2*.py*"))


if __name__ == "__main__":
    out = generate()
    print(f"generated {len(out)} files in {PROTO_DIR.relative_to(HERE.parent)}")
