"""Generate the Python code for protos/ into contracts/ (or another folder, for the staleness test).

protoc names generated modules after the proto paths (`eventstore.v1.eventstore_pb2`); we keep
them under one package, `contracts`, so imports between generated files are rewritten to
`contracts.<package>...`. The output is deterministic, so a test can regenerate it into a
temporary folder and compare.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = "contracts"


# Vendored for other languages only (protos/google/README.md): Python takes these messages from
# googleapis-common-protos, so they are not generated into contracts/.
VENDORED = PROTOS / "google"


def proto_files() -> list[Path]:
    return sorted(p for p in PROTOS.rglob("*.proto") if not p.is_relative_to(VENDORED))


def generate(out: Path) -> None:
    """Write the generated package to `out` (which is replaced)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    # The mypy plugins are scripts installed beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out=only_async:{out}",  # our code uses grpc.aio only
        *[str(p.relative_to(PROTOS)) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    top_packages = sorted({p.relative_to(PROTOS).parts[0] for p in proto_files()})
    pattern = re.compile(rf"^(from|import) ({'|'.join(map(re.escape, top_packages))})(\.| )", re.M)
    for path in sorted(out.rglob("*.py*")):
        text = pattern.sub(rf"\1 {PACKAGE}.\2\3", path.read_text())
        path.write_text(text)
    for directory in [out, *sorted(p for p in out.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    (out / "py.typed").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / PACKAGE)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
