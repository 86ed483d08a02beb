"""Generate ``sglc_pb2.py`` / ``sglc_pb2_grpc.py`` from ``sglc.proto`` (run by ``make setup``).

The generated files are not committed; this module regenerates them when the proto is newer.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build(force: bool = False) -> None:
    src = HERE / "sglc.proto"
    out = HERE / "sglc_pb2_grpc.py"
    if not force and out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return
    from grpc_tools import protoc

    rc = protoc.main(["protoc", f"-I{HERE}", f"--python_out={HERE}", f"--pyi_out={HERE}",
                      f"--grpc_python_out={HERE}", str(src)])
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    # NOTE: protoc writes `import sglc_pb2`; make it a package-relative import.
    text = out.read_text()
    out.write_text(re.sub(r"^import sglc_pb2 as", "from . import sglc_pb2 as", text, flags=re.MULTILINE))


if __name__ == "__main__":
    build(force="--force" in sys.argv)
