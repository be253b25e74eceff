"""Try one training recipe of the app's engine on a dataset and print its curve (val accuracy against wall-clock
seconds from the start, image decoding included). Used to choose the defaults (BENCHMARKS.md, issue 9).

    .venv/bin/python bench/recipe_probe.py --data ../shared/datasets/clothing10 --freeze all --epochs 6 \\
        --set lr=0.001 [--budget-s 600] [--csv bench/results/probe.csv]

It starts from what a user who presses Start gets (the classification task's settings, training crop size and
freeze choice for the model; until session 29 it started from the bare TrainConfig: 8 epochs, full-size crops) and
`--set KEY=VALUE` overrides a TrainConfig field (numbers parsed as JSON, tuples as comma lists). The first line
printed names every setting the run used.
Run alone on the machine: other processes make every number worse.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # core is imported once the probe's own home is set
    from core.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_sets(items: list[str], cls: type | None = None) -> dict:
    """KEY=VALUE pairs → overrides of a config dataclass, TrainConfig by default (JSON values, comma lists for
    tuple fields)."""
    from core.config import TrainConfig

    cls = cls or TrainConfig
    kinds = {f.name: f.type for f in fields(cls)}
    out = {}
    for item in items:
        key, _, raw = item.partition("=")
        if key not in kinds:
            raise SystemExit(f"unknown {cls.__name__} field '{key}'")
        if "tuple" in str(kinds[key]):
            out[key] = tuple(v for v in raw.split(",") if v)
        else:
            try:
                out[key] = json.loads(raw)
            except json.JSONDecodeError:
                out[key] = raw
    return out


def app_defaults(model: str, overrides: dict) -> TrainConfig:
    """The training settings a user who presses Start gets for `model` (the task's, with its training crop size),
    then `overrides`."""
    from core import zoo
    from core.tasks.classification import CLASSIFICATION

    return replace(CLASSIFICATION.start_train(zoo.get_spec(model).input_size), **overrides)


def distributed_fit(run_dir: Path, nproc: int, t0: float, rows: list[dict]) -> str:
    """Train on `nproc` processes (no time budget: torchrun runs to the end) and fill `rows` from the run's events."""
    from core import runs
    from core.distributed import LaunchSpec, run_distributed

    result = run_distributed(run_dir, LaunchSpec(nproc=nproc, device="auto"))
    for ev in runs.read_events(run_dir, ("epoch_ended",)):
        rows.append({"epoch": ev["epoch"], "seconds": round(ev["t"] - t0, 1),
                     "val_accuracy": round(ev["val_accuracy"], 4), "train_images_per_second": ev["images_per_second"]})
        print(json.dumps(rows[-1]), flush=True)
    return "completed" if result.returncode == 0 else f"failed: {result.failure}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="mobilenetv2_100")
    ap.add_argument("--freeze", default=None, help="freeze preset (default: the app's)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], help="TrainConfig override KEY=VALUE")
    ap.add_argument("--freeze-set", action="append", default=[], help="FreezeConfig override KEY=VALUE")
    ap.add_argument("--budget-s", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--csv", default="")
    ap.add_argument("--runs-dir", default="", help="keep the run folder here (default: a temporary folder)")
    args = ap.parse_args(argv)
    os.environ["TRANSFER_STUDIO_HOME"] = tempfile.mkdtemp(prefix="probe-home-")  # pays its own decoding

    from core import runs, trainset, zoo
    from core.config import FreezeConfig, RunConfig
    from core.device import configure_threads, keep_freed_memory
    from core.engine import fit
    from core.events import EpochEnded
    from core.tasks.classification import CLASSIFICATION

    configure_threads()
    keep_freed_memory()  # as the app's training worker does
    overrides = parse_sets(args.set)
    if args.epochs:
        overrides["epochs"] = args.epochs
    freeze_overrides = parse_sets(args.freeze_set, FreezeConfig)
    train = app_defaults(args.model, overrides)
    freeze = replace(CLASSIFICATION.start_freeze(args.freeze), **freeze_overrides)  # the app's, then overrides
    preset = freeze.preset
    cfg = RunConfig(args.model, str(Path(args.data).resolve()), freeze, train,
                    pretrained=zoo.has_weights(zoo.get_spec(args.model)))  # as the app: from scratch without weights
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="probe-runs-"))
    run_dir = runs.create_run(cfg, trainset.resolve(cfg.dataset), runs_dir)
    print(json.dumps({"run_dir": str(run_dir), "freeze": cfg.freeze.to_dict(), "train": train.to_dict()}),
          flush=True)
    rows: list[dict] = []
    t0 = time.time()

    def on(ev: object) -> None:
        if isinstance(ev, EpochEnded):
            rows.append({"epoch": ev.epoch, "seconds": round(time.time() - t0, 1),
                         "val_accuracy": round(ev.val_accuracy, 4), "train_images_per_second": ev.images_per_second})
            print(json.dumps(rows[-1]), flush=True)

    stop = (lambda: time.time() - t0 > args.budget_s) if args.budget_s else (lambda: False)
    if train.nproc > 1:  # several processes on this machine (torchrun + DDP), as the app launches them
        state = distributed_fit(run_dir, train.nproc, t0, rows)
    else:
        state = fit(run_dir, [on], should_stop=stop).state
    best = max((r["val_accuracy"] for r in rows), default=None)
    summary = {"recipe": {"freeze": preset, **freeze_overrides, **{k: list(v) if isinstance(v, tuple) else v
                                                     for k, v in overrides.items()}},
               "state": state, "best_val_accuracy": best, "seconds": round(time.time() - t0, 1),
               "s_to": {str(t): next((r["seconds"] for r in rows if r["val_accuracy"] >= t), None)
                        for t in (0.90, 0.93, 0.95)}}
    print(json.dumps(summary), flush=True)
    if args.csv and rows:
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
