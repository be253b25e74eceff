"""Training speed on this machine: the hardware ceiling (model-only forward+backward on synthetic tensors) and the
app's engine on a real folder (quick model, head-only and full fine-tunes with the defaults), with the time to
reach 0.90 / 0.93 / 0.95 validation accuracy. Curves go to CSV.

Run: .venv/bin/python bench/train_bench.py --data ../shared/datasets/hymenoptera [--out bench/results]"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

from compare import model_only  # bench/ is on sys.path when run as a script

from core import runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.device import plan_device
from core.engine import fit
from core.quick import train_quick
from core.recorder import RunRecorder

TARGETS = (0.90, 0.93, 0.95)


def engine_run(data: str, name: str, freeze: str, epochs: int, quick: bool, runs_dir: Path, out: Path) -> dict:
    cfg = RunConfig(name, data, FreezeConfig(freeze), TrainConfig(epochs=epochs), quick=quick)
    run_dir = runs.create_run(cfg, trainset.resolve(data), runs_dir)
    t0 = time.time()
    if quick:
        train_quick(run_dir, [RunRecorder(run_dir)])
    else:
        fit(run_dir, [RunRecorder(run_dir)])
    seconds = time.time() - t0
    epochs_ev = runs.read_events(run_dir, ("epoch_ended",))
    started = runs.read_events(run_dir, ("fit_started",))[0]["t"]
    reach = {}
    for target in TARGETS:
        hit = next((e for e in epochs_ev if e["val_accuracy"] >= target), None)
        reach[f"s_to_{target:.2f}"] = round(hit["t"] - started, 1) if hit else None
    label = "quick" if quick else f"{freeze} x{epochs}"
    with open(out / f"curve_{Path(data).name}_{label.replace(' ', '_')}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "seconds_since_start", "train_loss", "val_accuracy", "images_per_second"])
        for e in epochs_ev:
            w.writerow([e["epoch"], round(e["t"] - started, 2), round(e["train_loss"], 4), round(e["val_accuracy"], 4),
                        e["images_per_second"]])
    best = max(e["val_accuracy"] for e in epochs_ev)
    ips = max((e["images_per_second"] for e in epochs_ev), default=None) if not quick else None
    return {"run": label, "best_val_accuracy": round(best, 4), "seconds": round(seconds, 1),
            "train_images_per_second": ips, **reach}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="mobilenetv2_100")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--plans", default="quick,quick,head:3,all:5")
    args = ap.parse_args()
    os.environ.setdefault("TRANSFER_STUDIO_HOME", tempfile.mkdtemp(prefix="bench-home-"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for precision in ("fp32", "auto"):
        ips = model_only(args.model, 32, 224, plan_device("auto", precision))
        print(json.dumps({"run": f"model-only fwd+bwd batch 32 ({plan_device('auto', precision).precision})",
                          "images_per_second": round(ips, 1)}), flush=True)
    runs_dir = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    for item in args.plans.split(","):
        if item == "quick":
            row = engine_run(args.data, args.model, "head", 1, True, runs_dir, out)
        else:
            freeze, epochs = item.split(":")
            row = engine_run(args.data, args.model, freeze, int(epochs), False, runs_dir, out)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
