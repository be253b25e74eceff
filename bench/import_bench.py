"""Import and validation speed: images/s and peak memory for N synthetic photos and for a real folder, and the
time to index a folder of 100,000 files. Run: .venv/bin/python bench/import_bench.py [--n 10000] [--real DIR]"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image


class PeakMemory:
    """Peak resident memory of this process and all its children (sampled every 50 ms)."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            time.sleep(0.05)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def make_photos(root: Path, n: int, classes: int = 10, size: tuple[int, int] = (400, 300)) -> Path:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (classes, 3))
    for i in range(n):
        c = i % classes
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        img = np.clip(base[c] + rng.normal(0, 30, (size[1] // 8, size[0] // 8, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).resize(size, Image.Resampling.BILINEAR).save(folder / f"{i:06d}.jpg", quality=85)
    return root


def time_import(folder: Path, label: str) -> dict:
    from core.data.store import import_folder

    n = sum(1 for _ in folder.rglob("*.jp*g"))
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        result = import_folder(folder, label)
        seconds = time.perf_counter() - t0
    return {"what": label, "images": n, "imported": result.imported, "seconds": round(seconds, 1),
            "images_per_second": round(n / seconds, 1), "peak_memory_mb": round(mem.peak / 2**20)}


def time_index(n: int) -> dict:
    from core.data.scan import iter_scan

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(n):
            folder = root / f"class_{i % 20}"
            if i < 20:
                folder.mkdir()
            (folder / f"{i:06d}.jpg").write_bytes(b"\xff\xd8\xff")
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            count = sum(1 for _ in iter_scan(root))
            seconds = time.perf_counter() - t0
    return {"what": f"index {n} files (scan, no decoding)", "files": count, "seconds": round(seconds, 2),
            "files_per_second": round(n / seconds), "peak_memory_mb": round(mem.peak / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--index", type=int, default=100000)
    ap.add_argument("--real", action="append", default=[])
    args = ap.parse_args()
    os.environ.setdefault("TRANSFER_STUDIO_HOME", tempfile.mkdtemp(prefix="bench-home-"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(time_import(make_photos(Path(tmp) / "synthetic", args.n), f"{args.n} synthetic 400x300 JPEGs"))
    for real in args.real:
        rows.append(time_import(Path(real), Path(real).name))
    rows.append(time_index(args.index))
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
