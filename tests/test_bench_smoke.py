"""The benchmark entry point runs end to end on a tiny synthetic set (numbers are not checked: benchmarks are not
tests; this proves the comparison pipeline works and writes its tables)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_compare_smoke_writes_every_method(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "compare.py"), "--smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "compare_smoke.csv") as fh:
        rows = list(csv.DictReader(fh))
    methods = [r["method"] for r in rows]
    assert methods[:2] == ["tutorial fine-tune", "tutorial fixed-feature"]
    assert any(m.startswith("fastai") for m in methods)
    assert any(m.startswith("ours: head x1") for m in methods)
    assert any("pad (fits 10 s)" in m for m in methods), "a PRESET:EPOCHS:FIT item runs and is named with its fit"
    assert all(r["best_val_accuracy"] for r in rows if not r["method"].startswith("fastai") or not r["note"])
    with open(out / "curves_smoke.csv") as fh:
        curves = list(csv.DictReader(fh))
    assert {c["method"] for c in curves} >= {"ours: head x1"}
    assert "| method |" in (out / "compare_smoke.md").read_text()
