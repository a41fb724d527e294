"""The committed contracts/ must be what `make proto` would generate from protos/ now."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from tools.processes import ROOT


def _differences(left: Path, right: Path) -> list[str]:
    comparison = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [f"only in {left.name}: {n}" for n in comparison.left_only]
    found += [f"only in regenerated: {n}" for n in comparison.right_only]
    found += [f"differs: {n}" for n in comparison.diff_files]
    for name, sub in comparison.subdirs.items():
        found += [f"{name}/{d}" for d in _differences(Path(sub.left), Path(sub.right))]
    return found


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "contracts"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    assert _differences(ROOT / "contracts", out) == [], "contracts/ is stale: run `make proto`"
