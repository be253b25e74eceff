"""Fine-tune a detector on the run folder's boxes: resumable at any batch, seeded, with the engine's events.

Same contract as `core.engine.fit`: the data order and every augmentation draw are pure functions of (seed, epoch,
position); checkpoints hold model, optimizer and position, so a resumed CPU run ends with the same weights as an
uninterrupted one. `EpochEnded.val_accuracy` carries val mAP@0.5 (the task's primary metric); each loss term and
mAP@0.5:0.95 go in `EpochEnded.metrics`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core import runs
from core.config import FreezeConfig, TrainConfig
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
from core.freeze import apply_phase, optimizer_groups, phase_at, plan_phases, trainable_counts
from core.pipeline import batch_generator, epoch_order
from core.tasks.detection.augment import augment
from core.tasks.detection.metrics import mean_average_precision
from core.tasks.detection.model import DetectorConfig, build_detector, detector_groups, predicting

Subscriber = Callable[[Event], None]
METRIC, METRIC_LABEL = "val_map50", "mAP@0.5"
CACHE_SHORT, CACHE_LONG = 480, 800
GRAD_CLIP = 10.0


def default_lr(tc: TrainConfig) -> float:
    """The learning rate when the user sets none: SGD 0.01 (batches of up to 8 images), AdamW 3e-4."""
    if tc.lr is not None:
        return tc.lr
    return 0.01 if tc.optimizer == "sgd" else 3e-4


# --- images in memory ------------------------------------------------------------------------------------------------

@dataclass
class Sample:
    """One decoded image (uint8 CHW, shrunk to at most CACHE_SHORT/CACHE_LONG) and its boxes in those pixels."""

    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor  # 1-based class indices
    scale: float
    name: str


def decode_shrunk(path: str, short: int = CACHE_SHORT, long: int = CACHE_LONG) -> tuple[torch.Tensor, float]:
    """Decode safely (EXIF, colour modes) and shrink so the short side ≤ `short` and the long side ≤ `long`."""
    img = load_rgb(path)
    w, h = img.size
    scale = min(1.0, short / min(w, h), long / max(w, h))
    if scale < 1.0:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous(), scale


def load_samples(items: Sequence[dict], class_index: dict[str, int],
                 on_progress: Callable[[int, int], None] | None = None,
                 on_skip: Callable[[str], None] | None = None) -> list[Sample | None]:
    """Decode every manifest item once (threads: Pillow releases the GIL); unreadable ones are None (and named)."""
    def one(item: dict) -> Sample | None:
        try:
            image, scale = decode_shrunk(item["path"])
        except (ImageError, OSError) as err:
            if on_skip:
                on_skip(f"{item.get('name', item['path'])}: skipped, {getattr(err, 'reason', err)}.")
            return None
        boxes = torch.tensor(item.get("boxes") or [], dtype=torch.float32).reshape(-1, 4) * scale
        labels = torch.tensor([class_index[c] for c in item.get("labels") or []], dtype=torch.int64)
        return Sample(image, boxes, labels, scale, item.get("name", ""))

    out: list[Sample | None] = []
    with ThreadPoolExecutor(2) as pool:
        for i, s in enumerate(pool.map(one, items)):
            out.append(s)
            if on_progress and (i % 8 == 0 or i + 1 == len(items)):
                on_progress(i + 1, len(items))
    return out


def to_input(image_u8: torch.Tensor) -> torch.Tensor:
    return image_u8.float().div_(255)


# --- evaluation ------------------------------------------------------------------------------------------------------

@torch.inference_mode()
def predict_samples(model: torch.nn.Module, images: Sequence[torch.Tensor], plan: DevicePlan,
                    batch_size: int = 4, size: int | None = None) -> list[dict]:
    """Predictions ({boxes, scores, labels} on the CPU, float32) for uint8 CHW images, in their pixels."""
    out = []
    dev = plan.torch_device()
    with predicting(model, size):
        for start in range(0, len(images), batch_size):
            chunk = [to_input(im).to(dev) for im in images[start:start + batch_size]]
            with plan.autocast():
                res = model(chunk)
            out += [{k: v.detach().float().cpu() if k != "labels" else v.detach().cpu() for k, v in r.items()}
                    for r in res]
    return out


def evaluate_samples(model: torch.nn.Module, samples: Sequence[Sample], classes: Sequence[str], plan: DevicePlan,
                     curve: bool = False) -> tuple[dict, list[dict]]:
    """mAP of the model on cached samples, and its predictions."""
    preds = predict_samples(model, [s.image for s in samples], plan)
    targets = [{"boxes": s.boxes, "labels": s.labels} for s in samples]
    return mean_average_precision(preds, targets, classes, curve=curve), preds


# --- fit -------------------------------------------------------------------------------------------------------------

@dataclass
class _State(LoopState):
    best_map: float | None = None
    terms: dict = field(default_factory=dict)  # running sum of each loss term


def usable_freeze(freeze: FreezeConfig, group_names: Sequence[str]) -> FreezeConfig:
    """The freeze choice with custom groups this detector does not have left out (the head always trains)."""
    if freeze.preset != "custom":
        return freeze
    return replace(freeze, groups=tuple(g for g in freeze.groups if g in group_names))


def detector_config(manifest: dict) -> DetectorConfig:
    """The detector shape recorded in the run's manifest (defaults otherwise)."""
    return DetectorConfig.from_dict(manifest.get("detector"))


def build_for_run(run_dir: Path, pretrained: bool | None = None) -> tuple[torch.nn.Module, dict, list[str]]:
    """The run's detector (untrained unless loaded), its manifest and classes."""
    cfg = runs.load_config(run_dir)
    manifest = runs.load_dataset(run_dir)
    classes = list(manifest["classes"])
    use = cfg.pretrained if pretrained is None else pretrained
    model = build_detector(cfg.backbone, len(classes), use, detector_config(manifest))
    return model, manifest, classes


def grouped_by_orientation(order: list[int], wide: Sequence[bool], batch: int) -> list[int]:
    """The epoch's shuffled order rearranged so that each run of `batch` positions holds photos of one orientation
    (the idea of torchvision's GroupedBatchSampler): a batch is padded to its widest and tallest photo, so one
    portrait among landscapes nearly doubles the step's pixels. The leftovers of each orientation end the epoch."""
    out: list[int] = []
    pending: dict[bool, list[int]] = {True: [], False: []}
    for j in order:
        group = pending[bool(wide[j])]
        group.append(j)
        if len(group) == batch:
            out += group
            group.clear()
    return out + pending[True] + pending[False]


def fit(run_dir: Path, subscribers: Sequence[Subscriber] = (), should_stop: Callable[[], bool] = lambda: False
        ) -> FitResult:
    """Train (or resume) the detection run in `run_dir` to its planned end, a stop request, or a clear failure."""
    run_dir = Path(run_dir)
    t0 = time.time()
    emit = broadcaster(subscribers)
    cfg = runs.load_config(run_dir)
    tc = cfg.train
    plan = plan_device(tc.device, tc.precision)
    dev = plan.torch_device()
    torch.manual_seed(tc.seed)
    model, manifest, classes = build_for_run(run_dir)
    model = model.to(dev)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = detector_groups(model, cfg.backbone)
    freeze = usable_freeze(cfg.freeze, [g.name for g in groups])
    phases = plan_phases(groups, freeze, tc.epochs)
    base_lr = default_lr(tc)
    opt = make_optimizer(optimizer_groups(model, groups, base_lr, tc.weight_decay), tc, base_lr)

    class_index = {c: k for k, c in enumerate(classes, start=1)}
    items = manifest["items"]
    samples = load_samples(items, class_index, lambda d, t: emit(Preparing(d, t)),
                           lambda msg: emit(Notice("warning", msg)))
    train_idx = [i for i, s in enumerate(samples) if s is not None and items[i]["split"] == "train"]
    val_idx = [i for i, s in enumerate(samples) if s is not None and items[i]["split"] == "val"]
    if not train_idx or not val_idx:
        return _fail(emit, t0, plan, "No readable training or validation images are left.", 0)
    if not any(len(samples[i].boxes) for i in train_idx):
        return _fail(emit, t0, plan, "No training image has a box: draw or import boxes first.", 0)
    val_samples = [samples[i] for i in val_idx]
    wide = [samples[i].image.shape[-1] >= samples[i].image.shape[-2] for i in train_idx]

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
                    plan.note, st.batch_size, base_lr, resumed, skipped, METRIC, METRIC_LABEL))

    def checkpoint() -> None:
        runs.save_checkpoint(run_dir, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                       "state": st.to_dict(), "epoch": st.epoch, "pos": st.pos, "step": st.step})

    guard = StepGuard(emit, plan, tc.epochs, len(train_idx), total_steps, tc.max_bad_steps, t0)
    current = None
    lr_now = base_lr

    def forward(images: list, targets: list) -> tuple[torch.Tensor, dict]:
        with plan.autocast():
            terms = {k: v.float() for k, v in model(images, targets).items()}
        return sum(terms.values()), terms

    for epoch in range(st.epoch, tc.epochs):
        phase = phase_at(phases, epoch)
        if phase is not current:
            apply_phase(model, groups, phase)
            trainable, frozen = trainable_counts(groups, phase)
            emit(PhaseChanged(epoch, phase.label, trainable, frozen))
            guard.new_phase()
            current = phase
        model.train()
        order = grouped_by_orientation(epoch_order(len(train_idx), tc.seed, epoch).tolist(), wide, tc.batch_size)
        epoch_t0 = st.epoch_clock()
        while st.pos < len(train_idx):
            if should_stop():
                st.pause_epoch(epoch_t0)
                checkpoint()
                return guard.stopped(st, epoch)
            idx = [train_idx[j] for j in order[st.pos:st.pos + st.batch_size]]
            gen = batch_generator(tc.seed, epoch, st.pos)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            images, targets = [], []
            for i in idx:
                s = samples[i]
                img, boxes, labels = augment(s.image, s.boxes, s.labels, tc.augment, gen)
                images.append(to_input(img).to(dev))
                targets.append({"boxes": boxes.to(dev), "labels": labels.to(dev)})
            lr_now = lr_at(st.step, total_steps, base_lr, tc.warmup_fraction)
            for group, mult in zip(opt.param_groups, phase.lr_mult, strict=True):
                group["lr"] = lr_now * mult
            done = guard.step(opt, len(idx), forward, images, targets, clip=GRAD_CLIP)
            if done is None:
                images = targets = None
                reason = guard.out_of_memory(st, "choose a smaller model or freeze more layers")
                if reason:
                    return _fail(emit, t0, plan, reason, epoch, checkpoint, st.best)
                continue
            loss, losses, finite = done
            reason = guard.loss_was(finite)
            if reason:
                return _fail(emit, t0, plan, reason, epoch, checkpoint, st.best)
            if finite:
                st.loss_sum += float(loss.detach()) * len(idx)
                for k, v in losses.items():
                    st.terms[k] = st.terms.get(k, 0.0) + float(v.detach()) * len(idx)
                st.seen += len(idx)
            guard.advance(st, epoch, len(idx), float(loss.detach()) if finite else float("nan"), lr_now)
        train_seconds = time.time() - epoch_t0
        result, _ = evaluate_samples(model, val_samples, classes, plan)
        map50, map_all = result["map50"], result["map"]
        is_best = st.best is None or (map50, map_all) > (st.best, st.best_map or 0.0)
        if is_best:
            st.best, st.best_map = map50, map_all
            runs.save_weights(run_dir, model.state_dict(), {"epoch": epoch + 1, "val_map50": map50, "val_map": map_all,
                                                            "val_accuracy": map50, "classes": classes,
                                                            "per_class": result["per_class"]})
        terms = {k: v / max(1, st.seen) for k, v in st.terms.items()}
        row = {"epoch": epoch + 1, "train_loss": st.loss_sum / max(1, st.seen), "val_map50": map50,
               "val_map": map_all, "lr": lr_now, "seconds": time.time() - epoch_t0, **terms}
        st.history.append(row)
        st.next_epoch()
        st.terms = {}
        checkpoint()
        emit(EpochEnded(epoch + 1, row["train_loss"], float("nan"), float("nan"), map50, lr_now,
                        round(row["seconds"], 2), round(len(train_idx) / max(1e-6, train_seconds), 2), st.best,
                        is_best, {**{k: round(v, 4) for k, v in terms.items()}, "val_map": round(map_all, 4)}))
    return guard.completed(st, "validation mAP@0.5", percent=False)


def _fail(emit: Subscriber, t0: float, plan: DevicePlan, reason: str, epochs_done: int,
          checkpoint: Callable[[], None] | None = None, best: float | None = None) -> FitResult:
    if checkpoint is not None:
        checkpoint()
    emit(FitFailed(reason, epochs_done))
    return FitResult("failed", best, epochs_done, time.time() - t0, plan.device, [], reason)
