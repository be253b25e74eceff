"""Segmentation on CamVid (11 classes + void): the app's defaults vs a plain smp training script on the same encoder.

    .venv/bin/python bench/segmentation_bench.py --data ../shared/datasets/camvid [--which app,plain]
        [--epochs N] [--budget-min M] [--out bench/results] [--set KEY=VALUE] [--arch fpn] [--tag NAME]

- app: `TASK.resolve_data` + `TASK.fit` with `TASK.default_train()` / `default_freeze()` (U-Net on MobileNetV2,
  256² crops with scale jitter, Dice + CE with void ignored, AdamW + warm-up + cosine, bf16 + channels_last when the
  CPU has bf16). `--epochs` overrides the default 18 (the cosine schedule is planned for the given epochs);
  `--set` overrides other TrainConfig fields (e.g. train_size=352), `--tag` names the CSV.
- plain: what an smp tutorial does: Unet('mobilenet_v2') with the same ImageNet weights, 320² random crops + flip,
  DiceLoss, Adam 1e-4, batch 8, float32, evaluated on the full validation images each epoch.

Both log val mIoU (torchmetrics confusion matrix, void ignored) against wall-clock training time to a CSV, and print
train images/s, inference images/s on the validation images, and the process's peak resident memory."""

from __future__ import annotations

import argparse
import csv
import json
import math
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from recipe_probe import parse_sets  # bench/ is on sys.path when run as a script

TARGET = 0.65


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_app(data: Path, epochs: int | None, out: Path, budget_min: float | None, sets: dict | None = None,
            arch: str | None = None, tag: str = "app", freeze: dict | None = None) -> dict:
    """The app's task on `data` with its defaults, `sets` overriding TrainConfig fields (e.g. train_size) and
    `freeze` FreezeConfig fields."""
    from core import runs
    from core.config import FreezeConfig, RunConfig
    from core.events import BatchEnded, EpochEnded, FitStarted
    from core.tasks.segmentation import TASK

    tc = TASK.default_train().with_choices(epochs=epochs, **(sets or {}))
    manifest = TASK.resolve_data(str(data), 0, ignore=11, arch=arch)
    fz = FreezeConfig.from_dict({**TASK.default_freeze().to_dict(), **(freeze or {})})
    cfg = RunConfig("mobilenetv2_100", str(data), fz, tc, task="segmentation")
    run_dir = runs.create_run(cfg, manifest, Path(tempfile.mkdtemp(prefix="segbench-")))
    rows: list[dict] = []
    t0 = time.time()
    n_train, train_s = {"n": 0}, {"s": 0.0}

    def on(ev) -> None:
        if isinstance(ev, FitStarted):
            n_train["n"] = ev.n_train
        if isinstance(ev, BatchEnded) and ev.step % 10 == 0:
            print(f"step {ev.step}/{ev.total_steps} {ev.images_per_second} img/s", flush=True)
        if isinstance(ev, EpochEnded):
            train_s["s"] += n_train["n"] / max(1e-6, ev.images_per_second)  # images/s counts training only
            rows.append({"epoch": ev.epoch, "seconds": round(time.time() - t0, 1),
                         "train_seconds": round(train_s["s"], 1), "val_miou": ev.val_accuracy,
                         "pixel_accuracy": ev.metrics.get("val_pixel_accuracy"), "train_ips": ev.images_per_second})
            print(json.dumps(rows[-1]), flush=True)

    stop = (lambda: time.time() - t0 > budget_min * 60) if budget_min else (lambda: False)
    res = TASK.fit(run_dir, [on], should_stop=stop)
    from core.tasks.segmentation.evaluate import evaluate_run

    ev = evaluate_run(run_dir)
    return _summary(tag, rows, out, {"state": res.state, "train_config": tc.to_dict(), "freeze": fz.to_dict(),
                                       "final_eval_miou": ev["miou"],
                                       "inference_ips": ev["images_per_second"], "run_dir": str(run_dir)})


def run_plain(data: Path, epochs: int | None, out: Path, budget_min: float | None) -> dict:
    import segmentation_models_pytorch as smp
    from PIL import Image
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    from core import zoo

    def load(split: str) -> tuple[list, list]:
        imgs, masks = [], []
        for f in sorted((data / split / "images").glob("*.jpg")):
            imgs.append(np.asarray(Image.open(f).convert("RGB")))
            masks.append(np.asarray(Image.open(data / split / "masks" / (f.stem + ".png"))))
        return imgs, masks

    tr_i, tr_m = load("train")
    va_i, va_m = load("val")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    net = smp.Unet("mobilenet_v2", encoder_weights=None, classes=11)
    state = torch.load(str(zoo.weights_file(zoo.get_spec("mobilenetv2_100"))), map_location="cpu", weights_only=True)
    torch.nn.Module.load_state_dict(net.encoder, {k: v for k, v in state.items() if "classifier" not in k})
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = smp.losses.DiceLoss("multiclass", from_logits=True, ignore_index=11)
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    t_train = 0.0
    n_epochs = epochs or 40
    infer_ips = math.nan
    w0 = time.time()
    for epoch in range(n_epochs):
        net.train()
        order = rng.permutation(len(tr_i))
        e0 = time.time()
        for s in range(0, len(order), 8):
            xs, ys = [], []
            for i in order[s:s + 8]:
                h, w = tr_m[i].shape
                top, left = rng.integers(0, h - 320 + 1), rng.integers(0, w - 320 + 1)
                x, y = tr_i[i][top:top + 320, left:left + 320], tr_m[i][top:top + 320, left:left + 320]
                if rng.random() < 0.5:
                    x, y = x[:, ::-1], y[:, ::-1]
                xs.append(np.ascontiguousarray(x))
                ys.append(np.ascontiguousarray(y))
            x = (torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() - mean) / std
            y = torch.from_numpy(np.stack(ys)).long()
            loss = loss_fn(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        t_train += time.time() - e0
        net.eval()
        cm = torch.zeros(11, 11, dtype=torch.long)
        i0 = time.time()
        with torch.inference_mode():
            for i in range(len(va_i)):
                x = (torch.from_numpy(va_i[i].copy()).permute(2, 0, 1)[None].float() - mean) / std
                x = torch.nn.functional.pad(x, (0, 0, 0, (-x.shape[2]) % 32))
                pred = net(x)[..., :va_m[i].shape[0], :].argmax(1)
                cm += multiclass_confusion_matrix(pred.flatten(), torch.from_numpy(va_m[i].astype(np.int64)).flatten(),
                                                  11, ignore_index=11)
        infer_ips = len(va_i) / (time.time() - i0)
        tp = cm.diag().double()
        iou = tp / (cm.sum(0) + cm.sum(1) - tp).double().clamp(min=1)
        rows.append({"epoch": epoch + 1, "seconds": round(t_train, 1), "val_miou": float(iou.mean()),
                     "pixel_accuracy": float(tp.sum() / cm.sum()), "train_ips": round(len(tr_i) / (i0 - e0), 2),
                     "wall_seconds": round(time.time() - w0, 1)})  # `seconds` leaves validation out; the app's don't
        print(json.dumps(rows[-1]), flush=True)
        if budget_min and t_train > budget_min * 60:
            break
    return _summary("plain", rows, out, {"inference_ips": infer_ips})


def _summary(name: str, rows: list[dict], out: Path, extra: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        with open(out / f"segmentation_{name}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    # app rows: seconds = wall clock, train_seconds = training steps; plain rows: seconds = training, wall_seconds
    def wall(r: dict) -> float:
        return r.get("wall_seconds", r["seconds"])

    def train(r: dict) -> float:
        return r.get("train_seconds", r["seconds"])

    hit = next((r for r in rows if r["val_miou"] >= TARGET), None)
    summary = {"which": name, "epochs": len(rows), "best_val_miou": max((r["val_miou"] for r in rows), default=None),
               "wall_seconds_to_0.65": wall(hit) if hit else None,
               "train_seconds_to_0.65": train(hit) if hit else None,
               "wall_seconds": wall(rows[-1]) if rows else 0, "train_seconds": train(rows[-1]) if rows else 0,
               "train_ips_median": float(np.median([r["train_ips"] for r in rows])) if rows else None,
               "peak_rss_mb": round(peak_mb()), "threads": torch.get_num_threads(), **extra}
    print(json.dumps(summary), flush=True)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "camvid"))
    ap.add_argument("--which", default="app,plain")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--budget-min", type=float, default=None, help="stop training after this many minutes")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--set", action="append", default=[], help="app: TrainConfig override KEY=VALUE")
    ap.add_argument("--arch", default=None, help="app: unet (default) | fpn | deeplabv3plus")
    ap.add_argument("--freeze", default="{}", help='app: FreezeConfig overrides as JSON, e.g. {"preset": "gradual"}')
    ap.add_argument("--tag", default="app", help="app: name of the CSV (segmentation_TAG.csv)")
    a = ap.parse_args()
    from core.device import configure_threads, keep_freed_memory

    configure_threads()
    keep_freed_memory()  # as the app's training worker does
    for which in a.which.split(","):
        if which.strip() == "app":
            run_app(Path(a.data), a.epochs, Path(a.out), a.budget_min, parse_sets(a.set), a.arch, a.tag,
                    json.loads(a.freeze))
        else:
            run_plain(Path(a.data), a.epochs, Path(a.out), a.budget_min)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
