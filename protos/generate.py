"""Generate the Python code for every .proto file in `protos/` (messages, gRPC stubs, type stubs).

Run from the repository root:

    python -m protos.generate            # rewrites protos/*_pb2.py, *_pb2_grpc.py, *_pb2.pyi
    python -m protos.generate --out DIR  # writes DIR/protos/... instead (the staleness test uses this)

The include root is the repository root (`-I .`), so generated imports read
`from protos import swarm_pb2`. The output depends on the grpcio-tools version, which
is why the staleness test regenerates with the installed one.
"""

from __future__ import annotations

import argparse
import importlib.resources
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parent


def proto_files() -> list[Path]:
    """The .proto sources, relative to the repository root."""
    return sorted(path.relative_to(REPO_ROOT) for path in PROTO_DIR.glob("*.proto"))


def generate(out_dir: Path = REPO_ROOT) -> list[Path]:
    """Run protoc on every proto file; return the generated files (under `out_dir`)."""
    from grpc_tools import protoc  # a test/dev dependency: imported only when generating

    out_dir = Path(out_dir)
    (out_dir / "protos").mkdir(parents=True, exist_ok=True)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    sources = [str(path) for path in proto_files()]
    args = ["grpc_tools.protoc", "-I.", f"-I{well_known}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *sources]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed (exit {rc}) on {sources}; run from the repository root")
    return sorted((out_dir / "protos").glob("*_pb2*.py*"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="output root (default: the repository root)")
    args = parser.parse_args(argv)
    import os

    os.chdir(REPO_ROOT)  # protoc resolves `-I.` and the sources against the working directory
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    main()
