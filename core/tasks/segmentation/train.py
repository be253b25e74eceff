"""Segmentation training: the run folder's manifest → a resumable, seeded fit with the same events as core.engine.

Images and masks are decoded once into memory (downscaled, masks with nearest-neighbour, when larger than
`max_side` or when the set would not fit the memory budget; a notice says so). Each step draws a batch of random
scale-jittered crops (`augment.py`); the loss is cross-entropy + Dice with void ignored; validation runs on whole
images (padded to a multiple of 32) and reports mIoU (the primary metric), pixel accuracy and loss.

Resume is exact on the CPU: the data order and every augmentation draw are functions of (seed, epoch, position),
and checkpoints hold model, optimizer, position and history (as in core.engine)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core import runs, zoo
from core.data.images import ImageError, load_rgb
from core.device import DevicePlan, plan_device
from core.engine import FitResult, LoopState, StepGuard, lr_at, make_optimizer
from core.events import (
    EpochEnded,
    Event,
    FitFailed,
    FitStarted,
    Notice,
    PhaseChanged,
    Preparing,
    broadcaster,
)
from core.freeze import apply_phase, optimizer_groups, phase_at, plan_phases, set_train_mode, trainable_counts
from core.pipeline import batch_generator, epoch_order, normalise
from core.tasks.segmentation import SegmentationTask, metrics
from core.tasks.segmentation.augment import SegAugment, augment_batch, pad_to
from core.tasks.segmentation.data import IGNORE, ClassTable, SegDataError, load_mask, resize_nearest
from core.tasks.segmentation.losses import DiceCE
from core.tasks.segmentation.model import DEFAULT_ARCH, DIVISOR, build, seg_layer_groups

Subscriber = Callable[[Event], None]
MAX_SIDE = 640  # longer side of cached training images (larger ones are downscaled, masks nearest-neighbour)
MEMORY_BUDGET = 2.5 * 2**30  # bytes of decoded images + masks held in memory
DEFAULT_CROP = SegmentationTask.full_crop  # the crop side when the run does not choose one


@dataclass
class SegData:
    images: list[np.ndarray | None]
    masks: list[np.ndarray | None]
    failed: dict[int, str] = field(default_factory=dict)
    scale_note: str = ""


def _fit_side(items: list[dict], max_side: int) -> tuple[int, str]:
    """The longer-side cap that keeps the decoded set within MEMORY_BUDGET (4 bytes per pixel)."""
    def need(cap: int) -> float:
        total = 0.0
        for it in items:
            w, h = it.get("size") or (cap, cap)
            s = min(1.0, cap / max(w, h, 1))
            total += 4 * (w * s) * (h * s)
        return total

    cap, note = max_side, ""
    while cap > 128 and need(cap) > MEMORY_BUDGET:
        cap = int(cap * 0.8)
    if cap < max_side:
        note = (f"The images would not fit in memory at up to {max_side} px; they are downscaled to at most {cap} px "
                "on the longer side for training (masks with nearest-neighbour).")
    return cap, note


def load_pair(item: dict, table: ClassTable, max_side: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(image H,W,3 uint8, train-id mask H,W uint8, downscaled?) of one manifest item."""
    img = load_rgb(item["image"])
    mask = load_mask(item["mask"], table)
    if (mask.shape[1], mask.shape[0]) != img.size:
        mask = resize_nearest(mask, img.size)
    scale = min(1.0, max_side / max(img.size))
    if scale < 1.0:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
        mask = resize_nearest(mask, size)
    return np.array(img, dtype=np.uint8), np.array(mask, dtype=np.uint8), scale < 1.0


def load_data(items: list[dict], table: ClassTable, max_side: int = MAX_SIDE,
              on_progress: Callable[[int, int], None] | None = None) -> SegData:
    """Decode every pair (2 threads; PIL releases the GIL), keeping failures by index with their reason."""
    cap, note = _fit_side(items, max_side)
    out = SegData([None] * len(items), [None] * len(items), {}, note)
    down = 0

    def one(i: int):
        try:
            return i, load_pair(items[i], table, cap), ""
        except (ImageError, SegDataError, OSError) as err:
            return i, None, getattr(err, "reason", None) or str(err)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for k, (i, res, err) in enumerate(pool.map(one, range(len(items)))):
            if res is None:
                out.failed[i] = err
            else:
                out.images[i], out.masks[i], was_down = res
                down += was_down
            if on_progress and (k % 16 == 0 or k == len(items) - 1):
                on_progress(k + 1, len(items))
    if down and not out.scale_note:
        out.scale_note = (f"{down} images are larger than {cap} px on the longer side: they are downscaled for "
                          "training and validation (masks with nearest-neighbour); `evaluate` measures at full size.")
    return out


def crop_size(data: SegData, idx: Sequence[int], wanted: int = DEFAULT_CROP) -> int:
    """The training crop: `wanted`, or smaller (a multiple of 32, at least 64) when the images are smaller."""
    sides = sorted(min(data.masks[i].shape) for i in idx if data.masks[i] is not None)
    if not sides:
        return wanted
    median = sides[len(sides) // 2]
    return int(max(64, min(wanted, (median // DIVISOR) * DIVISOR)))


def pixel_weights(data: SegData, idx: Sequence[int], k: int) -> torch.Tensor:
    """Class weights against imbalance: (share of the mean class / share of the class) ** 0.5, capped at 10."""
    counts = np.zeros(k, dtype=np.float64)
    for i in idx:
        m = data.masks[i]
        counts += np.bincount(m[m != IGNORE].ravel(), minlength=k)[:k]
    counts = np.maximum(counts, 1.0)
    w = np.sqrt(counts.sum() / (k * counts))
    return torch.tensor(np.minimum(w, 10.0) / np.minimum(w, 10.0).mean(), dtype=torch.float32)


def to_input(batch_u8: torch.Tensor, mean: tuple, std: tuple, channels_last: bool) -> torch.Tensor:
    from core.pipeline import Prep

    return normalise(batch_u8, Prep(0, 0, "bilinear", mean, std), channels_last)


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, image_u8: torch.Tensor, mean: tuple, std: tuple, plan: DevicePlan
                   ) -> torch.Tensor:
    """Logits (N,K,H,W float32) of uint8 images (N,3,H,W), padded to a multiple of 32 and cropped back."""
    x = to_input(image_u8, mean, std, plan.channels_last)
    x, (h, w) = pad_to(x, DIVISOR)
    with plan.autocast():
        out = model(x.to(plan.torch_device()))
    return out.float()[..., :h, :w].cpu()


@torch.inference_mode()
def evaluate_data(model: torch.nn.Module, data: SegData, idx: Sequence[int], k: int, mean: tuple, std: tuple,
                  plan: DevicePlan, loss_fn: torch.nn.Module | None = None, batch_size: int = 4
                  ) -> tuple[float, torch.Tensor]:
    """(mean loss, confusion matrix) on whole cached images (same-size images batched together)."""
    model.eval()
    cm = torch.zeros(k, k, dtype=torch.long)
    losses, n = 0.0, 0
    by_shape: dict[tuple, list[int]] = {}
    for i in idx:
        if data.images[i] is not None:
            by_shape.setdefault(data.images[i].shape, []).append(i)
    for group in by_shape.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            x = torch.from_numpy(np.stack([data.images[i] for i in chunk])).permute(0, 3, 1, 2)
            y = torch.from_numpy(np.stack([data.masks[i] for i in chunk])).long()
            logits = predict_logits(model, x, mean, std, plan)
            if loss_fn is not None and bool((y != IGNORE).any()):
                losses += float(loss_fn(logits, y)) * len(chunk)
                n += len(chunk)
            cm += metrics.confusion(logits.argmax(1), y, k)
    return (losses / n if n else math.nan), cm


@dataclass
class _State(LoopState):
    correct_px: int = 0
    total_px: int = 0


def fit(run_dir: Path, subscribers: Sequence[Subscriber] = (), should_stop: Callable[[], bool] = lambda: False
        ) -> FitResult:
    """Train (or resume) the segmentation run in `run_dir` to its planned end, a stop request or a clear failure."""
    run_dir = Path(run_dir)
    t0 = time.time()
    emit = broadcaster(subscribers)
    cfg = runs.load_config(run_dir)
    manifest = runs.load_dataset(run_dir)
    tc = cfg.train
    plan = plan_device(tc.device, tc.precision)
    dev = plan.torch_device()
    table = ClassTable.from_dict(manifest["table"])
    classes = list(table.names)
    k = len(classes)
    arch = (manifest.get("model") or {}).get("arch", DEFAULT_ARCH)
    spec = zoo.get_spec(cfg.backbone)
    mean, std = spec.mean, spec.std

    pretrained = cfg.pretrained and spec.weights.kind != "none"
    if cfg.pretrained and not pretrained:
        emit(Notice("info", f"{cfg.backbone} has no pretrained weights on this machine: the encoder trains from "
                            "scratch."))
    torch.manual_seed(tc.seed)
    model = build(cfg.backbone, k, pretrained, arch).to(dev)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = seg_layer_groups(model)
    phases = plan_phases(groups, cfg.freeze, tc.epochs)
    base_lr = tc.effective_lr(cfg.freeze)
    opt = make_optimizer(optimizer_groups(model, groups, base_lr, tc.weight_decay), tc, base_lr)

    items = manifest["items"]
    data = load_data(items, table, int((manifest.get("model") or {}).get("max_side", MAX_SIDE)),
                     lambda d, t: emit(Preparing(d, t)))
    for i, reason in list(data.failed.items())[:20]:
        emit(Notice("warning", f"{items[i]['name']}: skipped ({reason})."))
    if data.scale_note:
        emit(Notice("info", data.scale_note))
    train_idx = [i for i, it in enumerate(items) if it["split"] == "train" and i not in data.failed]
    val_idx = [i for i, it in enumerate(items) if it["split"] == "val" and i not in data.failed]
    if not train_idx or not val_idx:
        return _fail(emit, t0, plan, "No readable training or validation image + mask pairs are left.", 0)
    crop = crop_size(data, train_idx, tc.train_size or DEFAULT_CROP)
    aug = SegAugment.from_names(tc.augment, crop)
    weights = pixel_weights(data, train_idx, k).to(dev) if tc.class_weights else None
    loss_fn = DiceCE(class_weights=weights)

    st = _State(batch_size=tc.batch_size)
    ckpt, skipped = runs.load_checkpoint(run_dir)
    resumed = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        st = _State(**ckpt["state"])
        resumed = {"epoch": st.epoch, "pos": st.pos, "step": st.step}
    steps_per_epoch = math.ceil(len(train_idx) / st.batch_size)
    total_steps = max(st.step + 1, tc.epochs * steps_per_epoch)
    emit(FitStarted(tc.epochs, steps_per_epoch, len(train_idx), len(val_idx), classes, plan.device, plan.precision,
                    plan.note + f" {arch} on {cfg.backbone}, {crop}² crops.", st.batch_size, base_lr, resumed,
                    skipped, metric="val_miou", metric_label="mIoU"))

    def checkpoint() -> None:
        runs.save_checkpoint(run_dir, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                       "state": st.to_dict(), "epoch": st.epoch, "pos": st.pos, "step": st.step})

    guard = StepGuard(emit, plan, tc.epochs, len(train_idx), total_steps, tc.max_bad_steps, t0)
    current = None
    lr_now = base_lr

    def forward(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with plan.autocast():
            out = model(x)
        return loss_fn(out, y), out

    for epoch in range(st.epoch, tc.epochs):
        phase = phase_at(phases, epoch)
        if phase is not current:
            apply_phase(model, groups, phase)
            trainable, frozen = trainable_counts(groups, phase)
            emit(PhaseChanged(epoch, phase.label.replace("head", "decoder"), trainable, frozen))
            guard.new_phase()
            current = phase
        set_train_mode(model, groups, phase, cfg.freeze.train_bn)
        order = epoch_order(len(train_idx), tc.seed, epoch).tolist()
        epoch_t0 = st.epoch_clock()
        while st.pos < len(train_idx):
            if should_stop():
                st.pause_epoch(epoch_t0)
                checkpoint()
                return guard.stopped(st, epoch)
            idx = [train_idx[j] for j in order[st.pos:st.pos + st.batch_size]]
            gen = batch_generator(tc.seed, epoch, st.pos)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            xb, yb = augment_batch([data.images[i] for i in idx], [data.masks[i] for i in idx], aug, gen)
            x = to_input(xb, mean, std, plan.channels_last).to(dev)
            y = yb.to(dev)
            lr_now = lr_at(st.step, total_steps, base_lr, tc.warmup_fraction)
            for group, mult in zip(opt.param_groups, phase.lr_mult, strict=True):
                group["lr"] = lr_now * mult
            done = guard.step(opt, len(idx), forward, x, y)
            if done is None:
                x = None
                reason = guard.out_of_memory(st, "choose a smaller model, freeze more layers or use smaller images")
                if reason:
                    return _fail(emit, t0, plan, reason, epoch, checkpoint, st.best)
                continue
            loss, logits, finite = done
            reason = guard.loss_was(finite)
            if reason:
                return _fail(emit, t0, plan, reason, epoch, checkpoint, st.best)
            if finite:
                st.loss_sum += float(loss.detach()) * len(idx)
                st.seen += len(idx)
                with torch.no_grad():
                    valid = y != IGNORE
                    st.correct_px += int(((logits.argmax(1) == y) & valid).sum())
                    st.total_px += int(valid.sum())
            guard.advance(st, epoch, len(idx), float(loss.detach()) if finite else float("nan"), lr_now)
        train_seconds = time.time() - epoch_t0  # images/s counts training, not the validation that follows
        val_loss, cm = evaluate_data(model, data, val_idx, k, mean, std, plan, loss_fn)
        miou, pixacc = metrics.mean_iou(cm), metrics.pixel_accuracy(cm)
        miou = 0.0 if math.isnan(miou) else miou
        is_best = st.best is None or miou > st.best
        if is_best:
            st.best = miou
            runs.save_weights(run_dir, model.state_dict(), {"epoch": epoch + 1, "val_miou": miou,
                                                            "val_accuracy": miou, "val_pixel_accuracy": pixacc,
                                                            "val_loss": val_loss, "classes": classes, "arch": arch})
        train_pixacc = st.correct_px / st.total_px if st.total_px else math.nan
        extras = {"val_pixel_accuracy": pixacc, "train_pixel_accuracy": train_pixacc,
                  "val_iou_min": min((v for v in metrics.iou_per_class(cm) if not math.isnan(v)), default=0.0)}
        row = {"epoch": epoch + 1, "train_loss": st.loss_sum / max(1, st.seen), "train_accuracy": math.nan,
               "val_loss": val_loss, "val_accuracy": miou, "val_miou": miou, "lr": lr_now,
               "seconds": time.time() - epoch_t0, "metrics": extras}
        st.history.append(row)
        st.next_epoch()
        st.correct_px, st.total_px = 0, 0
        checkpoint()
        emit(EpochEnded(epoch + 1, row["train_loss"], math.nan, val_loss, miou, lr_now, round(row["seconds"], 2),
                        round(len(train_idx) / max(1e-6, train_seconds), 2), st.best, is_best, extras))
    return guard.completed(st, "validation mIoU", percent=False)


def _fail(emit: Subscriber, t0: float, plan: DevicePlan, reason: str, epochs_done: int,
          checkpoint: Callable[[], None] | None = None, best: float | None = None) -> FitResult:
    if checkpoint is not None:
        checkpoint()
    emit(FitFailed(reason, epochs_done))
    return FitResult("failed", best, epochs_done, time.time() - t0, plan.device, [], reason)
