"""Object detection benchmark: the app's defaults against torchvision's reference detection recipe, same backbone.

    .venv/bin/python bench/detection_bench.py --recipe app --data ../shared/datasets/raccoon \
        --annotations ../shared/datasets/raccoon/annotations_train.json [--minutes 10] [--epochs N]
    .venv/bin/python bench/detection_bench.py --recipe reference ...   (same data, same seed, same split)

Both train Faster R-CNN + FPN on MobileNetV2 (the zoo's offline ImageNet weights, BatchNorm frozen) on the same
seeded train/val split and evaluate val mAP (torchmetrics) after every epoch. Writes
bench/results/detection_<recipe>.csv (epoch, seconds since training started, mAP@0.5, mAP@0.5:0.95, train images/s)
and prints a JSON summary: time to mAP@0.5 ≥ 0.90 and to mAP@0.5:0.95 ≥ 0.60, training and inference images/s, peak
memory (max RSS).

app:        the app's `fit` with TASK.default_train() / default_freeze(): 320–480 px multi-scale, box-aware
            crop/flip/colour, SGD 0.01, warm-up + cosine, bf16 autocast + channels_last (when the CPU has bf16),
            stem + first three block groups frozen.
reference:  torchvision references/detection (train.py defaults for Faster R-CNN): horizontal flip only, short side
            800 px (max 1333), SGD lr 0.02 × batch/16, momentum 0.9, weight decay 1e-4, linear warm-up over 1000
            iterations from 0.001×, step decay ×0.1 at epochs 16 and 22 of 26, float32, 3 trainable backbone
            layers (here: the last three block groups), batch 4.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipe_probe import parse_sets  # noqa: E402 - bench/ is on sys.path when run as a script

from core import runs  # noqa: E402
from core.config import FreezeConfig, RunConfig  # noqa: E402
from core.device import keep_freed_memory, plan_device  # noqa: E402
from core.freeze import apply_phase, plan_phases  # noqa: E402
from core.tasks.detection import DETECTION  # noqa: E402
from core.tasks.detection.augment import hflip  # noqa: E402
from core.tasks.detection.dataset import resolve  # noqa: E402
from core.tasks.detection.model import DetectorConfig, build_detector, detector_groups  # noqa: E402
from core.tasks.detection.train import evaluate_samples, fit, load_samples, to_input  # noqa: E402

BACKBONE = "mobilenetv2_100"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _first(rows: list[dict], key: str, target: float, clock: str = "seconds") -> float | None:
    """When `key` first reached `target`: `clock` = seconds (wall clock) or train_seconds (training steps only)."""
    hit = next((r for r in rows if r[key] >= target), None)
    return None if hit is None or clock not in hit else round(hit[clock], 1)


def run_app(manifest: dict, data: str, minutes: float, epochs: int | None, seed: int, sets: dict | None = None
            ) -> list[dict]:
    """The app's own fit with its defaults (`sets` overriding TrainConfig fields); stops after `minutes` of
    training (a stop request between batches)."""
    tc = DETECTION.default_train().with_choices(seed=seed, epochs=epochs, **(sets or {}))
    cfg = RunConfig(BACKBONE, data, DETECTION.default_freeze(), tc, task="detection", name="bench app")
    run_dir = runs.create_run(cfg, manifest, Path(tempfile.mkdtemp(prefix="det-bench-")))
    rows: list[dict] = []
    t0: dict = {}

    def on_event(e) -> None:
        if e.type == "fit_started":
            t0["t"], t0["n_train"], t0["train_s"] = time.time(), e.n_train, 0.0
        elif e.type == "epoch_ended":
            t0["train_s"] += t0["n_train"] / max(1e-6, e.images_per_second)  # images/s counts training only
            rows.append({"epoch": e.epoch, "seconds": time.time() - t0["t"], "train_seconds": round(t0["train_s"], 1),
                         "map50": e.val_accuracy,
                         "map": e.metrics.get("val_map"), "train_images_per_second": e.images_per_second})
            print(json.dumps(rows[-1]), flush=True)

    fit(run_dir, [on_event], should_stop=lambda: "t" in t0 and time.time() - t0["t"] > minutes * 60)
    for row in rows:
        row["run_dir"] = str(run_dir)
    return rows


def run_reference(manifest: dict, minutes: float, epochs: int, seed: int, batch: int = 4) -> list[dict]:
    """torchvision's reference recipe (see the module docstring) on the same model, data and split."""
    torch.manual_seed(seed)
    plan = plan_device("cpu", "fp32")
    classes = manifest["classes"]
    cfg = DetectorConfig(train_sizes=(800,), eval_size=800, max_size=1333)
    model = build_detector(BACKBONE, len(classes), True, cfg)
    groups = detector_groups(model, BACKBONE)
    apply_phase(model, groups, plan_phases(groups, FreezeConfig("last-3"), epochs)[0])
    params = [p for p in model.parameters() if p.requires_grad]
    base_lr = 0.02 * batch / 16
    opt = torch.optim.SGD(params, lr=base_lr, momentum=0.9, weight_decay=1e-4)
    index = {c: k for k, c in enumerate(classes, start=1)}
    items = manifest["items"]
    samples = load_samples(items, index)
    train = [s for s, it in zip(samples, items, strict=True) if s is not None and it["split"] == "train"]
    val = [s for s, it in zip(samples, items, strict=True) if s is not None and it["split"] == "val"]
    steps_per_epoch = math.ceil(len(train) / batch)
    milestones = (16 * steps_per_epoch, 22 * steps_per_epoch)
    warm = min(1000, steps_per_epoch - 1)
    rows, step, t0, train_s = [], 0, time.time(), 0.0
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen).tolist()
        seen, e0 = 0, time.time()
        for start in range(0, len(order), batch):
            if time.time() - t0 > minutes * 60:
                return rows
            chunk = [train[i] for i in order[start:start + batch]]
            images, targets = [], []
            for s in chunk:
                img, boxes = (hflip(s.image, s.boxes) if float(torch.rand(1, generator=gen)) < 0.5
                              else (s.image, s.boxes))
                images.append(to_input(img))
                targets.append({"boxes": boxes, "labels": s.labels})
            factor = 0.001 * (1 - step / warm) + step / warm if step < warm else 1.0
            factor *= 0.1 ** sum(step >= m for m in milestones)
            for g in opt.param_groups:
                g["lr"] = base_lr * factor
            losses = model(images, targets)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            seen += len(chunk)
        train_rate = seen / max(1e-6, time.time() - e0)
        train_s += time.time() - e0
        res, _ = evaluate_samples(model, val, classes, plan)
        rows.append({"epoch": epoch + 1, "seconds": time.time() - t0, "train_seconds": round(train_s, 1),
                     "map50": res["map50"], "map": res["map"],
                     "train_images_per_second": round(train_rate, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def inference_rate(run_dir: str, manifest: dict, n: int = 32) -> float:
    """Validation images per second with the run's best weights (the app's predictor path, float32, batch 1)."""
    from core.tasks.detection.predict import from_run

    det = from_run(run_dir)
    paths = [it["path"] for it in manifest["items"] if it["split"] == "val"][:n]
    from core.tasks.detection.predict import image_tensor

    images = [image_tensor(p) for p in paths]
    det.raw(images[0])
    t = time.perf_counter()
    for im in images:
        det.raw(im)
    return round(len(images) / (time.perf_counter() - t), 2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", choices=["app", "reference"], default="app")
    parser.add_argument("--data", required=True)
    parser.add_argument("--annotations")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="app: TrainConfig override KEY=VALUE")
    parser.add_argument("--detector", action="append", default=[],
                        help="app: DetectorConfig override KEY=VALUE (JSON value), e.g. box_batch_per_image=32")
    parser.add_argument("--tag", default="", help="suffix of the CSV name (detection_<recipe><tag>.csv)")
    args = parser.parse_args()
    keep_freed_memory()  # as the app's training worker does (both recipes: the same process)
    data = str(Path(args.data).resolve())
    manifest = resolve(data, args.seed, annotations=args.annotations)
    for item in args.detector:
        key, _, raw = item.partition("=")
        manifest.setdefault("detector", {})[key] = json.loads(raw)
    load = os.getloadavg()
    if args.recipe == "app":
        rows = run_app(manifest, data, args.minutes, args.epochs, args.seed, parse_sets(args.set))
    else:
        rows = run_reference(manifest, args.minutes, args.epochs or 26, args.seed)
    out = ROOT / "bench" / "results" / f"detection_{args.recipe}{args.tag}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["epoch", "seconds", "train_seconds", "map50", "map", "train_images_per_second"],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    summary = {"recipe": args.recipe, "epochs_done": len(rows),
               "seconds_to_map50_0.90": _first(rows, "map50", 0.90), "seconds_to_map_0.60": _first(rows, "map", 0.60),
               "train_seconds_to_map50_0.90": _first(rows, "map50", 0.90, "train_seconds"),
               "train_seconds_to_map_0.60": _first(rows, "map", 0.60, "train_seconds"),
               "best_map50": max((r["map50"] for r in rows), default=None),
               "best_map": max((r["map"] or 0 for r in rows), default=None),
               "train_images_per_second": round(sum(r["train_images_per_second"] for r in rows) / max(1, len(rows)),
                                                2),
               "peak_rss_mb": round(_peak_mb()), "load_average_at_start": [round(v, 1) for v in load],
               "load_average_at_end": [round(v, 1) for v in os.getloadavg()], "csv": str(out)}
    if args.recipe == "app" and rows and rows[-1].get("run_dir"):
        summary["inference_images_per_second"] = inference_rate(rows[-1]["run_dir"], manifest)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
