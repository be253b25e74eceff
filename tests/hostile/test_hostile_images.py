"""Hostile images: 120 malformed files mixed with 1,000 good ones (every bad one named with its reason, every good one
imported, nothing written outside the store), decompression bombs refused fast with bounded memory, and EPS that
never reaches Ghostscript. Complements tests/test_data_images.py (modes, EXIF orientations, 16-bit, CMYK, GIF)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from core.data import store
from core.data.validate import ValidationConfig
from tests.data_fixtures import EPS_BYTES, image_bytes, snapshot
from tests.hostile.corpus import image_bombs, malformed_images

ROOT = Path(__file__).resolve().parents[2]

_DECODE_BOMBS = """
import json, resource, sys, time
from pathlib import Path
from core.data.images import ImageError, inspect_file, load_rgb

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

load_rgb(Path(sys.argv[2]))  # warm up the decoders once, so the baseline includes their code
base = peak_mb()
out = {}
for path in sorted(Path(sys.argv[1]).iterdir()):
    t0 = time.monotonic()
    try:
        load_rgb(path)
        reason = None
    except ImageError as err:
        reason = err.reason
    seconds = time.monotonic() - t0
    checked = inspect_file(path)  # what an import runs in its worker process
    out[path.name] = {"reason": reason, "seconds": seconds, "inspect": getattr(checked, "reason", None)}
print(json.dumps({"bombs": out, "peak_growth_mb": peak_mb() - base}))
"""


def test_decompression_bombs_are_refused_within_5_s_with_bounded_memory(tmp_path: Path) -> None:
    """Each bomb is decoded in a fresh child process, which reports its own peak memory (ru_maxrss)."""
    folder = tmp_path / "bombs"
    folder.mkdir()
    for name, data in image_bombs().items():
        (folder / name).write_bytes(data)
    good = tmp_path / "good.png"
    good.write_bytes(image_bytes(1, "PNG", (64, 64)))
    out = subprocess.run([sys.executable, "-c", _DECODE_BOMBS, str(folder), str(good)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    bombs = report["bombs"]
    assert sorted(bombs) == sorted(image_bombs())
    for name, row in bombs.items():
        assert row["reason"] and row["inspect"] == row["reason"], (name, row)
        if "ztxt" in name or "iccp" in name:  # a 200 MB text / colour-profile chunk: Pillow's own chunk cap
            assert "too large" in row["reason"].lower(), (name, row)
        else:
            assert row["reason"].startswith("image too large") and "megapixels" in row["reason"], (name, row)
        assert row["seconds"] < 5, (name, row)
    assert report["peak_growth_mb"] < 64, report  # nothing was decoded: no buffer of the claimed size
    slowest = max(r["seconds"] for r in bombs.values())
    print(f"\n[hostile] {len(bombs)}/{len(bombs)} decompression bombs refused; slowest {slowest:.3f} s; "
          f"peak memory +{report['peak_growth_mb']:.1f} MB")


_EPS_WITH_FAKE_GHOSTSCRIPT = """
import io, json, sys
from pathlib import Path
from core.data.images import ImageError, inspect_file, load_rgb

sentinel, folder = Path(sys.argv[1]), Path(sys.argv[2])
reasons = {}
for path in sorted(folder.iterdir()):
    try:
        load_rgb(path)
        reasons[path.name] = None
    except ImageError as err:
        reasons[path.name] = err.reason
    reasons[path.name + " (import check)"] = getattr(inspect_file(path), "reason", None)
ran_for_app = sentinel.exists()
from PIL import Image  # control: Pillow without our allowlist hands the same file to Ghostscript
try:
    Image.open(folder / "figure.jpg").load()
except Exception:
    pass
print(json.dumps({"reasons": reasons, "ghostscript_ran_for_app": ran_for_app, "control_ran": sentinel.exists()}))
"""


def test_eps_never_reaches_ghostscript(tmp_path: Path) -> None:
    """A fake `gs` first on PATH records any call; the app's decoders must never call it (Pillow alone would)."""
    sentinel = tmp_path / "GHOSTSCRIPT_RAN"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_gs = bin_dir / "gs"
    fake_gs.write_text(f"#!/bin/sh\necho \"$@\" >> '{sentinel}'\nexit 0\n")
    fake_gs.chmod(fake_gs.stat().st_mode | stat.S_IXUSR)
    folder = tmp_path / "eps"
    folder.mkdir()
    for name in ("figure.jpg", "figure.png", "figure.eps", "figure.gif"):
        (folder / name).write_bytes(EPS_BYTES)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([sys.executable, "-c", _EPS_WITH_FAKE_GHOSTSCRIPT, str(sentinel), str(folder)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report["reasons"].values()) == {"format EPS not allowed"}, report
    assert report["ghostscript_ran_for_app"] is False
    assert report["control_ran"] is True, "the fake Ghostscript was not found: the test proves nothing"


def test_the_malformed_corpus_has_more_than_100_distinct_files() -> None:
    corpus = malformed_images()
    assert len(corpus) >= 100
    assert len({data for data, _ in corpus.values()}) == len(corpus)  # no two are the same bytes


def test_1000_good_images_import_and_every_malformed_one_is_named_with_its_reason(tmp_path: Path,
                                                                                   home: Path) -> None:
    src = tmp_path / "upload"
    classes = ("ants", "bees", "wasps", "flies")
    good = {}
    for k in range(1000):
        rel = f"{classes[k % 4]}/good_{k:04d}.jpg"
        good[rel] = image_bytes(10_000 + k, "JPEG", (48, 48))
    bad = {f"{classes[k % 4]}/{name}": spec for k, (name, spec) in enumerate(sorted(malformed_images().items()))}
    for rel, data in [*good.items(), *((r, d) for r, (d, _) in bad.items())]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    store.datasets_root()  # the store's own folder exists before the snapshot
    before = snapshot(tmp_path)
    result = store.import_folder(src, "hostile mix", config=ValidationConfig(min_side=32, timeout_s=20))
    written = snapshot(tmp_path) - before
    target = f"home/datasets/{result.dataset.id}"
    outside = sorted(p for p in written if not (p == target or p.startswith(target + "/")))
    assert outside == [], f"written outside the dataset folder: {outside[:10]}"

    skipped = {s.original_name: s for s in result.skipped}
    assert result.imported == 1000 and len(result.dataset.items) == 1000
    assert sorted(skipped) == sorted(bad), (sorted(set(bad) - set(skipped))[:5], sorted(set(skipped) - set(bad))[:5])
    for rel, (_, words) in bad.items():
        reason = skipped[rel].reason
        assert reason and (words in reason), (rel, reason, words)
    assert {it.original_name for it in result.dataset.items} == set(good)
    kinds = {}
    for s in result.skipped:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    print(f"\n[hostile] {len(bad)}/{len(bad)} malformed images rejected by name with a reason ({kinds}); "
          f"{result.imported}/1000 good imported; 0 files outside {target}")
