"""TASK.fit for faces: the same run folder, events, checkpoints and stop/resume as classification.

- A frozen face model (dlib): detect, align and embed every enrolment photo (cached), build the gallery and choose
  the threshold from the enrolment photos (each held back in turn). Seconds; a stop keeps what is cached.
- A zoo backbone (ImageNet weights): its classifier becomes a 128-d embedding layer, trained on the aligned crops
  with ArcFace (pytorch-metric-learning) under the Layers page's freeze choice, resumable at any batch. The
  held-back photos choose the threshold; the gallery holds every enrolment photo embedded by the best weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from core import runs
from core.config import TrainConfig
from core.device import plan_device
from core.engine import FitResult, LoopState, StepGuard, lr_at, make_optimizer
from core.events import (
    BatchEnded,
    EpochEnded,
    Event,
    FitEnded,
    FitFailed,
    FitStarted,
    Notice,
    PhaseChanged,
    Preparing,
    broadcaster,
)
from core.freeze import (
    apply_phase,
    layer_groups,
    optimizer_groups,
    phase_at,
    plan_phases,
    set_train_mode,
    trainable_counts,
)
from core.pipeline import batch_generator, epoch_order
from core.storage import write_json_atomic
from core.tasks.faces import gallery as gal
from core.tasks.faces import threshold as thr
from core.tasks.faces.data import cache_folder
from core.tasks.faces.detect import CROP_SIZE, MTCNNDetector
from core.tasks.faces.embed import DlibEmbedder, NetEmbedder, build_embedding_net, crops_tensor, is_face_model
from core.tasks.faces.enrol import FaceCache, FacePhoto, detect_all, summary_lines

METRIC = "val_identification"
METRIC_LABEL = "held-back photos named correctly"
PHOTOS_FILE = "faces.json"
Subscriber = Callable[[Event], None]
LOSS_LR_MULT = 10.0  # the ArcFace class centres start random: they learn faster than the pretrained layers


def options(manifest: dict) -> dict:
    """The run's face options (frozen into dataset.json): gallery kind and target false-accept rate."""
    o = dict(manifest.get("faces") or {})
    return {"gallery": o.get("gallery", "prototype"), "target_far": float(o.get("target_far", thr.DEFAULT_FAR)),
            "margin": float(o.get("margin", 28.6)), "scale": float(o.get("scale", 30.0))}


def default_train() -> TrainConfig:
    """Fine-tune defaults for faces (the frozen face model ignores them)."""
    return TrainConfig(epochs=12, batch_size=32, augment=("crop", "flip", "color"), label_smoothing=0.0)


def _notices(emit: Subscriber, photos: Sequence[FacePhoto]) -> None:
    lines = summary_lines(photos)
    for start in range(0, len(lines), 15):
        emit(Notice("warning", "; ".join(lines[start:start + 15])))


def _write_photos(run_dir: Path, photos: Sequence[FacePhoto]) -> None:
    write_json_atomic(Path(run_dir) / PHOTOS_FILE, {"photos": [p.to_dict() for p in photos]})


def read_photos(run_dir: Path) -> list[dict]:
    from core.storage import read_json

    return (read_json(Path(run_dir) / PHOTOS_FILE, {}) or {}).get("photos", [])


def _save_gallery(run_dir: Path, g: gal.Gallery, cal: thr.Calibration, scores: thr.Scores, extra: dict) -> None:
    meta = {"threshold": cal.threshold, "target_far": cal.target_far, "verify_threshold": cal.verify_threshold,
            "calibration": cal.to_dict(), "roc": thr.roc(scores),
            "scores": {"genuine": [None if math.isnan(v) else round(float(v), 5) for v in scores.genuine],
                       "impostor": [None if math.isnan(v) else round(float(v), 5) for v in scores.impostor]},
            "biometric": True, **extra}
    gal.save(g, run_dir, meta)


def fit(run_dir: Path, subscribers: Sequence[Subscriber] = (),
        should_stop: Callable[[], bool] = lambda: False) -> FitResult:
    """Enrol (frozen face model) or fine-tune (zoo backbone) the run in `run_dir`."""
    run_dir = Path(run_dir)
    cfg = runs.load_config(run_dir)
    if is_face_model(cfg.backbone):
        return fit_frozen(run_dir, subscribers, should_stop)
    return fit_finetune(run_dir, subscribers, should_stop)


def fit_frozen(run_dir: Path, subscribers: Sequence[Subscriber] = (),
               should_stop: Callable[[], bool] = lambda: False, detector=None, embedder=None) -> FitResult:
    """The frozen-embedder 'training': embeddings of every enrolment photo + a threshold."""
    t0 = time.time()
    emit = broadcaster(subscribers)
    manifest = runs.load_dataset(run_dir)
    opts = options(manifest)
    items = manifest["items"]
    people = list(manifest["classes"])
    plan = plan_device("cpu", "fp32")
    ckpt, skipped = runs.load_checkpoint(run_dir)
    resumed = {"epoch": 0, "pos": int(ckpt.get("pos", 0)), "step": int(ckpt.get("pos", 0))} if ckpt else None
    n_val = sum(1 for it in items if it["split"] == "val")
    emit(FitStarted(1, len(items), len(items) - n_val, n_val, people, "cpu", "fp32",
                    "The face model is used as it is (frozen): nothing to train, only to enrol.", 1, 0.0, resumed,
                    skipped, METRIC, METRIC_LABEL))
    try:
        detector = detector or MTCNNDetector()
        embedder = embedder or DlibEmbedder()
    except RuntimeError as err:
        emit(FitFailed(str(err)))
        return FitResult("failed", None, 0, time.time() - t0, plan.device, [], str(err))
    cache = FaceCache(cache_folder(manifest, run_dir))
    last = {"t": 0.0}
    start = time.time()

    def progress(done: int, total: int) -> None:
        now = time.time()
        if done == total or now - last["t"] > 0.5:
            last["t"] = now
            rate = done / max(1e-6, now - start)
            emit(BatchEnded(0, done, done, total, float("nan"), 0.0, round(rate, 2), round((total - done) / max(rate,
                                                                                                        1e-6), 1)))

    photos, vectors = detect_all(items, cache, detector, embedder, progress, should_stop)
    if len(photos) < len(items):
        runs.save_checkpoint(run_dir, {"pos": len(photos), "epoch": 0, "step": len(photos)})
        msg = f"Stopped after {len(photos)} of {len(items)} photos; resume to continue (done photos are kept)."
        emit(FitEnded("stopped", 0, None, time.time() - t0, msg))
        return FitResult("stopped", None, 0, time.time() - t0, plan.device, [], msg)
    _notices(emit, photos)
    _write_photos(run_dir, photos)
    ok = [p for p in photos if p.ok and p.key in vectors]
    g = gal.build(people, np.stack([vectors[p.key] for p in ok]) if ok else np.zeros((0, embedder.dim)),
                  [p.label for p in ok], opts["gallery"], [p.key for p in ok], embedder.name)
    missing = [p for p in people if p not in g.people]
    if missing:
        emit(Notice("warning", f"Not enrolled (no usable face): {', '.join(missing)}"))
    if len(g.people) < 2:
        reason = "Fewer than 2 people have a usable face photo: enrol at least 2 people."
        emit(FitFailed(reason))
        return FitResult("failed", None, 0, time.time() - t0, plan.device, [], reason)
    cal, scores = thr.calibrate_gallery(g, opts["target_far"])
    seconds = time.time() - t0
    _save_gallery(run_dir, g, cal, scores, {"photos_per_second": round(len(photos) / max(1e-6, seconds), 2)})
    runs.save_weights(run_dir, g.tensors(), {"epoch": 1, "val_accuracy": cal.identification, "people": list(g.people),
                                             "threshold": cal.threshold, "kind": "gallery"})
    row = _row(1, float("nan"), cal, seconds, len(photos))
    emit(EpochEnded(1, float("nan"), cal.rank1, float("nan"), cal.identification, 0.0, round(seconds, 2),
                    round(len(photos) / max(1e-6, seconds), 2), cal.identification, True, row["metrics"]))
    msg = (f"Enrolled {len(g.people)} people from {len(ok)} photos in {seconds:.1f} s; threshold {cal.threshold:.3f} "
           f"for a false-accept rate of {cal.target_far:g}; {cal.identification:.1%} of held-back photos named "
           "correctly.")
    emit(FitEnded("completed", 1, cal.identification, seconds, msg))
    return FitResult("completed", cal.identification, 1, seconds, plan.device, [row], msg)


def _row(epoch: int, loss: float, cal: thr.Calibration, seconds: float, n: int) -> dict:
    return {"epoch": epoch, "train_loss": loss, "val_accuracy": cal.identification, "seconds": seconds, "images": n,
            "metrics": {"threshold": cal.threshold, "rank1": cal.rank1, "strangers_rejected": 1 - cal.achieved_far
                        if not math.isnan(cal.achieved_far) else None}}


# --- fine-tuning a zoo backbone ----------------------------------------------------------------------------------

def augment_batch(crops: np.ndarray, augment: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    """Aligned crops (N,S,S,3 uint8) → augmented uint8 NCHW: small shifts/zooms, mirror, light colour changes;
    every draw from `gen` (so a resumed run sees the same batches)."""
    t = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)
    s = t.shape[-1]
    out = []
    for img in t:
        if "crop" in augment:
            scale = float(torch.empty(1).uniform_(0.85, 1.0, generator=gen))
            side = max(8, round(s * scale))
            top = int(torch.randint(0, s - side + 1, (1,), generator=gen))
            left = int(torch.randint(0, s - side + 1, (1,), generator=gen))
            img = TF.resized_crop(img, top, left, side, side, [s, s], antialias=True)
        if "flip" in augment and float(torch.rand(1, generator=gen)) < 0.5:
            img = TF.horizontal_flip(img)
        if "color" in augment:
            b, c, sat = (float(v) for v in torch.empty(3).uniform_(0.8, 1.2, generator=gen))
            img = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(img, b), c), sat)
        out.append(img)
    return torch.stack(out)


def _loss(num_people: int, opts: dict):
    from pytorch_metric_learning.losses import ArcFaceLoss

    return ArcFaceLoss(num_classes=num_people, embedding_size=128, margin=opts["margin"], scale=opts["scale"])


def fit_finetune(run_dir: Path, subscribers: Sequence[Subscriber] = (),
                 should_stop: Callable[[], bool] = lambda: False, detector=None) -> FitResult:
    """Fine-tune a zoo backbone into a face embedder with ArcFace; resumable at any batch."""
    from core import zoo

    t0 = time.time()
    run_dir = Path(run_dir)
    emit = broadcaster(subscribers)
    cfg = runs.load_config(run_dir)
    manifest = runs.load_dataset(run_dir)
    opts = options(manifest)
    tc = cfg.train
    plan = plan_device(tc.device, tc.precision)
    dev = plan.torch_device()
    spec = zoo.get_spec(cfg.backbone)
    try:
        detector = detector or MTCNNDetector()
    except RuntimeError as err:
        emit(FitFailed(str(err)))
        return FitResult("failed", None, 0, time.time() - t0, plan.device, [], str(err))
    cache = FaceCache(cache_folder(manifest, run_dir))
    photos, _ = detect_all(manifest["items"], cache, detector, None, lambda d, t: emit(Preparing(d, t)))
    _notices(emit, photos)
    _write_photos(run_dir, photos)
    ok = [p for p in photos if p.ok and cache.crop_path(p.key).is_file()]
    people = sorted({p.label for p in ok})
    index = {p: i for i, p in enumerate(people)}
    split = {(it["path"]): it["split"] for it in manifest["items"]}
    crops = np.stack([np.asarray(cache.crop(p.key)) for p in ok]) if ok else np.zeros((0, CROP_SIZE, CROP_SIZE, 3),
                                                                                        np.uint8)
    labels = torch.tensor([index[p.label] for p in ok], dtype=torch.long)
    train_idx = [i for i, p in enumerate(ok) if split.get(p.path) == "train"]
    val_idx = [i for i, p in enumerate(ok) if split.get(p.path) == "val"]
    if len(people) < 2 or not train_idx:
        return _fail(emit, t0, plan.device, "Fewer than 2 people have a usable face photo: enrol at least 2 people.")

    torch.manual_seed(tc.seed)
    model = build_embedding_net(cfg.backbone, 128, cfg.pretrained).to(dev)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = _loss(len(people), opts).to(dev)
    groups = layer_groups(model)
    phases = plan_phases(groups, cfg.freeze, tc.epochs)
    base_lr = tc.effective_lr(cfg.freeze)
    param_groups = optimizer_groups(model, groups, base_lr, tc.weight_decay)
    param_groups.append({"params": list(loss_fn.parameters()), "lr": base_lr * LOSS_LR_MULT, "weight_decay": 0.0})
    opt = make_optimizer(param_groups, tc, base_lr)
    mean, std, size = spec.mean, spec.std, CROP_SIZE

    st = LoopState(batch_size=tc.batch_size)
    ckpt, skipped = runs.load_checkpoint(run_dir)
    resumed = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        loss_fn.load_state_dict(ckpt["loss"])
        opt.load_state_dict(ckpt["optimizer"])
        st = LoopState(**ckpt["state"])
        resumed = {"epoch": st.epoch, "pos": st.pos, "step": st.step}
    steps_per_epoch = math.ceil(len(train_idx) / st.batch_size)
    total_steps = max(st.step + 1, tc.epochs * steps_per_epoch)
    emit(FitStarted(tc.epochs, steps_per_epoch, len(train_idx), len(val_idx), people, plan.device, plan.precision,
                    plan.note, st.batch_size, base_lr, resumed, skipped, METRIC, METRIC_LABEL))

    def checkpoint() -> None:
        runs.save_checkpoint(run_dir, {"model": model.state_dict(), "loss": loss_fn.state_dict(),
                                       "optimizer": opt.state_dict(), "state": st.to_dict(), "epoch": st.epoch,
                                       "pos": st.pos, "step": st.step})

    embedder = NetEmbedder(model, cfg.backbone, size, mean, std)
    current = None
    lr_now = base_lr
    guard = StepGuard(emit, plan, tc.epochs, len(train_idx), total_steps, tc.max_bad_steps, t0, unit="photo")

    def forward(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, None]:
        with plan.autocast():
            emb = model(x)
        return loss_fn(emb.float(), y), None

    for epoch in range(st.epoch, tc.epochs):
        phase = phase_at(phases, epoch)
        if phase is not current:
            apply_phase(model, groups, phase)
            trainable, frozen = trainable_counts(groups, phase)
            emit(PhaseChanged(epoch, phase.label, trainable, frozen))
            guard.new_phase()
            current = phase
        order = epoch_order(len(train_idx), tc.seed, epoch).tolist()
        epoch_t0 = st.epoch_clock()
        while st.pos < len(train_idx):
            if should_stop():
                st.pause_epoch(epoch_t0)
                checkpoint()
                return guard.stopped(st, epoch)
            set_train_mode(model, groups, phase, cfg.freeze.train_bn)
            idx = [train_idx[j] for j in order[st.pos:st.pos + st.batch_size]]
            gen = batch_generator(tc.seed, epoch, st.pos)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            x_u8 = augment_batch(crops[idx], tc.augment, gen)
            x = crops_tensor(x_u8.permute(0, 2, 3, 1).numpy(), size, mean, std).to(dev)
            if plan.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = labels[idx].to(dev)
            lr_now = lr_at(st.step, total_steps, base_lr, tc.warmup_fraction)
            for group, mult in zip(opt.param_groups[:-1], phase.lr_mult, strict=True):
                group["lr"] = lr_now * mult
            opt.param_groups[-1]["lr"] = lr_now * LOSS_LR_MULT
            done = guard.step(opt, len(idx), forward, x, y)
            if done is None:
                x = None
                reason = guard.out_of_memory(st, "choose a smaller model or freeze more layers")
                if reason:
                    checkpoint()
                    return _fail(emit, t0, plan.device, reason, epoch, st.best)
                continue
            loss, _, finite = done
            reason = guard.loss_was(finite)
            if reason:
                checkpoint()
                return _fail(emit, t0, plan.device, reason, epoch, st.best)
            if finite:
                st.loss_sum += float(loss.detach()) * len(idx)
                st.seen += len(idx)
            guard.advance(st, epoch, len(idx), float(loss.detach()) if finite else float("nan"), lr_now)
        emb_all = embedder.embed_crops(crops)
        g_train = gal.build(people, emb_all[train_idx], [ok[i].label for i in train_idx], opts["gallery"],
                            model=cfg.backbone)
        if val_idx:
            scores = thr.probe_scores(g_train, emb_all[val_idx], [ok[i].label for i in val_idx])
            _, pair_imp = thr.pair_scores(g_train)
            cal = thr.calibrate(scores, opts["target_far"], pair_imp, "held-back photos (never trained on)")
        else:
            cal, scores = thr.calibrate_gallery(g_train, opts["target_far"])
        train_loss = st.loss_sum / max(1, st.seen)
        is_best = st.best is None or cal.identification > st.best
        seconds = time.time() - epoch_t0
        row = _row(epoch + 1, train_loss, cal, seconds, len(train_idx))
        if is_best:
            st.best = cal.identification
            runs.save_weights(run_dir, model.state_dict(), {"epoch": epoch + 1, "val_accuracy": cal.identification,
                                                            "people": people, "threshold": cal.threshold})
            full = gal.build(people, emb_all, [p.label for p in ok], opts["gallery"], [p.key for p in ok],
                             cfg.backbone)
            _save_gallery(run_dir, full, cal, scores, {"epoch": epoch + 1, "input_size": size, "mean": list(mean),
                                                       "std": list(std)})
        st.history.append(row)
        st.next_epoch()
        checkpoint()
        emit(EpochEnded(epoch + 1, train_loss, cal.rank1, float("nan"), cal.identification, lr_now, round(seconds, 2),
                        round(len(train_idx) / max(1e-6, seconds), 2), st.best, is_best, row["metrics"]))
    return guard.completed(st, "share of held-back photos named correctly")


def _fail(emit: Subscriber, t0: float, device: str, reason: str, epochs: int = 0, best: float | None = None
          ) -> FitResult:
    emit(FitFailed(reason, epochs))
    return FitResult("failed", best, epochs, time.time() - t0, device, [], reason)
