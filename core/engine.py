"""The training engine: `fit(run_dir)` trains what the run folder describes, emitting typed events.

Resumable at any batch: the data order and every augmentation draw are pure functions of (seed, epoch, position),
and checkpoints hold model, optimizer, position and history, so a resumed run on the CPU ends with the same weights
as an uninterrupted one. A `should_stop` callable is checked between batches.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from core import runs, zoo
from core.config import AUTO_FIT, TrainConfig
from core.device import DevicePlan, plan_device
from core.distributed import SINGLE, DistContext, lr_scale, scaling_note
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
    frozen_view,
    layer_groups,
    optimizer_groups,
    phase_at,
    plan_phases,
    set_train_mode,
    trainable_counts,
)
from core.pipeline import (
    ImageCache,
    batch_generator,
    epoch_order,
    eval_batch,
    image_generators,
    prep_for,
    prepare_run_data,
    train_batch,
)
from core.quick import resolve_auto_fit
from core.tasks import get_task

Subscriber = Callable[[Event], None]


@dataclass
class FitResult:
    state: str
    best_val_accuracy: float | None
    epochs_done: int
    seconds: float
    device: str
    history: list[dict] = field(default_factory=list)
    message: str = ""


@dataclass
class LoopState:
    """Where a training loop stands; saved in every checkpoint (`to_dict`) and rebuilt from it (`cls(**saved)`),
    so a resumed run carries on from the same image. Each task's loop adds its own running sums."""

    epoch: int = 0
    pos: int = 0
    step: int = 0
    batch_size: int = 32
    history: list = field(default_factory=list)
    best: float | None = None
    loss_sum: float = 0.0
    seen: int = 0
    epoch_seconds: float = 0.0  # time the current epoch took before a stop: a resumed epoch counts all of it

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def epoch_clock(self) -> float:
        """When the current epoch would have begun had it run without a stop (its seconds count from here)."""
        return time.time() - self.epoch_seconds

    def pause_epoch(self, clock: float) -> None:
        """Keep the current epoch's seconds so far (from `epoch_clock`) for the checkpoint a stop saves."""
        self.epoch_seconds = time.time() - clock

    def next_epoch(self) -> None:
        """The epoch ended: the next one starts at its first image with no time spent."""
        self.epoch, self.pos, self.loss_sum, self.seen, self.epoch_seconds = self.epoch + 1, 0, 0.0, 0, 0.0


@dataclass
class StepGuard:
    """What every training loop does around its optimizer steps: honour a stop request, recover from running out
    of memory, skip non-finite losses (giving up after `max_bad_steps` in a row), and report each batch
    (images/s and the time left)."""

    emit: Subscriber
    plan: DevicePlan
    epochs: int
    n_train: int
    total_steps: int
    max_bad_steps: int
    t0: float  # when the fit started (its seconds count from here)
    unit: str = "image"
    bad: int = 0
    images: int = 0
    started: float = field(default_factory=time.time)
    first: tuple[float, int] | None = None  # (when, images so far) at the end of this session's first batch

    def stopped(self, st: LoopState, epoch: int) -> FitResult:
        """The stop request honoured (the caller has saved its checkpoint)."""
        msg = (f"Stopped after epoch {epoch} of {self.epochs}; resume to continue." if st.pos == 0 and epoch > 0
               else f"Stopped at epoch {epoch + 1}, {self.unit} {st.pos} of {self.n_train}; resume to continue.")
        self.emit(FitEnded("stopped", epoch, st.best, time.time() - self.t0, msg))
        return FitResult("stopped", st.best, epoch, time.time() - self.t0, self.plan.device, st.history, msg)

    def completed(self, st: LoopState, metric: str, percent: bool = True) -> FitResult:
        """The planned end reached: says so with the best `metric` (e.g. "validation accuracy"), a share as the
        pages write it (88.9 %, not 0.889); mAP and IoU (`percent=False`) as the Results tab writes them (0.734)."""
        best = f"{st.best:.1%}" if percent else f"{st.best:.3f}"
        msg = f"Finished {self.epochs} epoch{'' if self.epochs == 1 else 's'}; best {metric} {best}."
        self.emit(FitEnded("completed", self.epochs, st.best, time.time() - self.t0, msg))
        return FitResult("completed", st.best, self.epochs, time.time() - self.t0, self.plan.device, st.history, msg)

    def step(self, opt: torch.optim.Optimizer, n: int, forward: Callable[..., tuple[torch.Tensor, Any]],
             *inputs: Any, clip: float | None = None) -> tuple[torch.Tensor, Any, bool] | None:
        """One training step on `n` images: `forward(*inputs)` gives (loss, whatever the loop keeps); the
        gradients are computed (clipped to norm `clip`) and applied only when the loss is finite. Returns (loss,
        kept, finite), or None when the step ran out of memory (then call `out_of_memory`)."""
        oom = False
        try:
            _injected_oom(n)
            loss, kept = forward(*inputs)
            finite = bool(torch.isfinite(loss))
            if finite:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
                opt.step()
        except RuntimeError as err:
            if not _is_oom(err):
                raise
            oom = True
        return None if oom else (loss, kept, finite)  # returned outside the except: the failed step is freed

    def out_of_memory(self, st: LoopState, advice: str) -> str | None:
        """After a step that ran out of memory: halve the batch and say so; or, at one image already, the reason
        to give up."""
        if self.plan.device == "cuda":
            torch.cuda.empty_cache()
        if st.batch_size == 1:
            return f"Out of memory even with a batch of 1 image: {advice}."
        st.batch_size = max(1, st.batch_size // 2)
        self.emit(Notice("warning", f"Out of memory: the batch size is now {st.batch_size}."))
        return None

    def loss_was(self, finite: bool) -> str | None:
        """Count a step's loss: a non-finite one was skipped (a warning), and after `max_bad_steps` in a row the
        reason to give up."""
        if finite:
            self.bad = 0
            return None
        self.bad += 1
        if self.bad >= self.max_bad_steps:
            return (f"The loss became NaN or infinite {self.bad} times in a row: lower the learning rate. The last "
                    "good weights were kept.")
        self.emit(Notice("warning", "A step gave a non-finite loss and was skipped."))
        return None

    def _rate(self, now: float) -> float:
        """Images per second counted from the end of the first batch, so the start-up before it (loading the
        model and photos, the first kernels) does not drag the speed and the time left for the whole run."""
        if self.first is None:
            self.first = (now, self.images)
            return self.images / max(1e-6, now - self.started)
        return (self.images - self.first[1]) / max(1e-6, now - self.first[0])

    def new_phase(self) -> None:
        """Count the speed from here on: a new phase trains other layers at another speed (a head-only first epoch
        runs several times faster), and an average over both made the time left grow all through the run."""
        if self.first is not None:
            self.first = (time.time(), self.images)

    def advance(self, st: LoopState, epoch: int, n: int, loss: float, lr: float) -> None:
        """Move past a batch of `n` images and report it."""
        st.pos += n
        st.step += 1
        self.images += n
        rate = self._rate(time.time())
        left = (self.epochs - epoch) * self.n_train - st.pos
        self.emit(BatchEnded(epoch, st.pos, st.step, self.total_steps, loss, lr, round(rate, 2),
                             round(left / max(rate, 1e-6), 1)))


@dataclass
class _State(LoopState):
    correct: int = 0
    world_size: int = 1
    best_loss: float | None = None  # the validation loss of the kept weights


def improves(acc: float, loss: float, best: float | None, best_loss: float | None) -> bool:
    """Whether an epoch's validation (accuracy, loss) beats the kept weights': higher accuracy, or the same accuracy
    with a lower loss (a small validation set is often at 100 % from the first epoch on; the later, surer model is
    the one to keep). A NaN loss never wins a tie."""
    if best is None or acc > best:
        return True
    return acc == best and math.isfinite(loss) and (best_loss is None or loss < best_loss)


def lr_at(step: int, total: int, base: float, warmup_fraction: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    warm = max(1, round(warmup_fraction * total))
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(param_groups: list[dict], tc: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW (default) or SGD with Nesterov momentum over the layer-group parameter groups."""
    if tc.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=tc.momentum, nesterov=True)
    return torch.optim.AdamW(param_groups, lr=lr, betas=(tc.momentum, 0.999))


def _injected_oom(batch: int) -> None:
    """Fault injection for tests (no cheap way to exhaust memory on a CPU): with TRANSFER_STUDIO_TEST_OOM_ABOVE=N
    in the environment, a batch of more than N images fails as an out-of-memory error would."""
    limit = os.environ.get("TRANSFER_STUDIO_TEST_OOM_ABOVE", "")
    if limit.isdigit() and batch > int(limit):
        raise RuntimeError(f"CUDA out of memory (injected for a test: batch {batch} > {limit})")


def _is_oom(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate" in text


@torch.inference_mode()
def evaluate_indices(model: torch.nn.Module, cache: ImageCache, idx: Sequence[int], labels: torch.Tensor,
                     plan: DevicePlan, batch_size: int | None = None) -> tuple[float, float, torch.Tensor]:
    """(loss, accuracy, logits) of the model on cached images at `idx` (eval transform), `batch_size` at a time
    (default: the plan's `predict_batch`)."""
    model.eval()
    dev = plan.torch_device()
    batch_size = batch_size or plan.predict_batch
    outs = []
    for start in range(0, len(idx), batch_size):
        chunk = list(idx[start:start + batch_size])
        x = eval_batch(cache.squares[chunk], cache.prep, plan.channels_last).to(dev)
        with plan.autocast():
            outs.append(model(x).float().cpu())
    logits = torch.cat(outs) if outs else torch.zeros(0, 1)
    y = labels[list(idx)]
    loss = float(F.cross_entropy(logits, y)) if len(y) else float("nan")
    acc = float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")
    return loss, acc, logits


def validate(model: torch.nn.Module, cache: ImageCache, idx: Sequence[int], labels: torch.Tensor, plan: DevicePlan,
             dist: DistContext = SINGLE) -> tuple[float, float]:
    """(val loss, val accuracy) over `idx`; with several processes each scores its slice and the sums are added,
    so the figures equal a single process's on the same weights."""
    lo, hi = dist.slice(len(idx))
    mine = list(idx[lo:hi])
    loss_sum, correct = 0.0, 0
    if mine:  # through a copy with BatchNorm folded in: 1.1–1.3× in a training process, 1.5× without kept memory
        net = zoo.inference_copy(model, cache.prep.size, plan.channels_last)
        _, _, logits = evaluate_indices(net, cache, mine, labels, plan)
        y = labels[mine]
        loss_sum = float(F.cross_entropy(logits, y, reduction="sum"))
        correct = int((logits.argmax(1) == y).sum())
    loss_sum, correct_f, n = dist.sum([loss_sum, correct, len(mine)])
    if not n:
        return float("nan"), float("nan")
    return loss_sum / n, correct_f / n


def fit(run_dir: Path | str, subscribers: Sequence[Subscriber] = (), should_stop: Callable[[], bool] = lambda: False,
        dist: DistContext = SINGLE) -> FitResult:
    """Train (or resume) the run in `run_dir` to its planned end, a stop request, or a clear failure.

    With a distributed context (see core.distributed) every process runs this; rank 0 alone reads and writes the
    run folder and emits events; the others receive the config, data list and checkpoint from it."""
    run_dir = Path(run_dir)
    t0 = time.time()

    emit = broadcaster(subscribers if dist.is_main else ())
    cfg, manifest = dist.share(lambda: (runs.load_config(run_dir), runs.load_dataset(run_dir)))
    tc = cfg.train
    plan = plan_device(tc.device, tc.precision)
    dev = plan.torch_device()
    classes = list(manifest["classes"])
    spec = zoo.get_spec(cfg.backbone)
    if tc.image_fit == AUTO_FIT:  # chosen once, from the training photos; saved so resume, export and predict agree
        cfg = dist.share(lambda: resolve_auto_fit(run_dir, cfg, manifest, plan, emit))
        tc = cfg.train
    prep = prep_for(spec, tc.image_fit)

    torch.manual_seed(tc.seed)
    model = get_task(cfg.task).build_model(cfg.backbone, len(classes), cfg.pretrained).to(dev)
    if dist.enabled and dist.backend == "nccl":  # batch statistics over all GPUs (SyncBN needs CUDA)
        from timm.layers import convert_sync_batchnorm

        model = convert_sync_batchnorm(model)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = layer_groups(model)
    freeze = cfg.freeze.for_weights(cfg.pretrained)
    if freeze != cfg.freeze:
        emit(Notice("info", "Trains from scratch, so every group unfreezes (random weights cannot stay frozen)."))
    phases = plan_phases(groups, freeze, tc.epochs)
    base_lr = tc.effective_lr(cfg.freeze) * lr_scale(dist.world_size, tc.optimizer)
    opt = make_optimizer(optimizer_groups(model, groups, base_lr, tc.weight_decay), tc, base_lr)

    data = None
    for turn in (0, 1):  # one process per machine decodes the image cache; the others then find it ready
        if (dist.local_rank == 0) == (turn == 0):
            data = prepare_run_data(manifest, prep, lambda d, t: emit(Preparing(d, t)),
                                    lambda msg: emit(Notice("warning", msg)))
        dist.barrier()
    cache, labels, train_idx, val_idx = data.cache, data.labels, data.train_idx, data.val_idx
    if not train_idx or not val_idx:
        return _fail(emit, run_dir, t0, plan, "No readable training or validation images are left.", 0)
    weights = None
    if tc.class_weights:
        counts = torch.bincount(labels[train_idx], minlength=len(classes)).float().clamp(min=1)
        weights = (counts.sum() / (len(classes) * counts)).to(dev)

    st = _State(batch_size=tc.batch_size, world_size=dist.world_size)
    ckpt, skipped = dist.share(lambda: runs.load_checkpoint(run_dir))
    resumed = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        st = _State(**{"world_size": 1, **ckpt["state"]})
        resumed = {"epoch": st.epoch, "pos": st.pos, "step": st.step}
        if st.world_size != dist.world_size:  # resumed with another number of processes: same data position,
            st.step = math.ceil((st.epoch * len(train_idx) + st.pos) / (st.batch_size * dist.world_size))
            st.world_size = dist.world_size  # the schedule continues by images seen
            st.batch_size = tc.batch_size
            before = ckpt["state"].get("world_size", 1)
            emit(Notice("info", f"Resumed with {dist.world_size} process(es) instead of {before}."))
    global_batch = st.batch_size * dist.world_size
    steps_per_epoch = math.ceil(len(train_idx) / global_batch)
    remaining = (math.ceil((len(train_idx) - st.pos) / global_batch) + (tc.epochs - st.epoch - 1) * steps_per_epoch
                 if st.epoch < tc.epochs else 0)
    total_steps = max(st.step + 1, st.step + remaining)
    device_note = plan.note + (" " + scaling_note(dist.world_size, st.batch_size, tc.optimizer, base_lr)
                               if dist.enabled else "")
    emit(FitStarted(tc.epochs, steps_per_epoch, len(train_idx), len(val_idx), classes, plan.device, plan.precision,
                    device_note, global_batch, base_lr, resumed, skipped, world_size=dist.world_size))

    def checkpoint() -> None:
        if dist.is_main:
            runs.save_checkpoint(run_dir, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                           "state": st.to_dict(), "epoch": st.epoch, "pos": st.pos,
                                           "step": st.step})

    guard = StepGuard(emit, plan, tc.epochs, len(train_idx), total_steps, tc.max_bad_steps, t0)
    current = None
    net = model
    lr_now = base_lr
    for epoch in range(st.epoch, tc.epochs):
        phase = phase_at(phases, epoch)
        if phase is not current:
            apply_phase(model, groups, phase)
            # frozen groups run with their BatchNorm folded in: head-only epochs ~1.4× on the CPU, the rest ~1.05×
            view = frozen_view(model, groups, phase, cfg.freeze.train_bn, prep.size)
            if view is not None and plan.channels_last:
                view = view.to(memory_format=torch.channels_last)
            net = dist.wrap(model if view is None else view)  # DDP registers the parameters that train: wrap
            #                                                     again when they change
            trainable, frozen = trainable_counts(groups, phase)
            emit(PhaseChanged(epoch, phase.label, trainable, frozen))
            guard.new_phase()
            current = phase
        set_train_mode(model, groups, phase, cfg.freeze.train_bn)  # validation left it in eval mode
        order = epoch_order(len(train_idx), tc.seed, epoch).tolist()
        epoch_t0 = st.epoch_clock()
        while st.pos < len(train_idx):
            if dist.any(dist.is_main and should_stop()):
                st.pause_epoch(epoch_t0)
                checkpoint()
                return guard.stopped(st, epoch)
            positions = order[st.pos:st.pos + st.batch_size * dist.world_size]
            lo, hi = dist.slice(len(positions))
            idx = [train_idx[j] for j in positions[lo:hi]]
            gen = batch_generator(tc.seed, epoch, st.pos)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            dummy = not idx  # a process with no image in a short last batch still joins the gradient exchange
            if dummy:
                idx, lo, hi = [train_idx[positions[0]]], 0, 1
            x = train_batch(cache.squares[idx], prep, tc.augment, image_generators(tc.seed, epoch, st.pos + lo,
                            hi - lo), plan.channels_last, tc.train_size or None, tc.crop_min_area).to(dev)
            y = labels[idx].to(dev)
            y_all = labels[[train_idx[j] for j in positions]]
            denom = float(len(positions)) if weights is None else float(weights.cpu()[y_all].sum())
            lr_now = lr_at(st.step, total_steps, base_lr, tc.warmup_fraction)
            for group, mult in zip(opt.param_groups, phase.lr_mult, strict=True):
                group["lr"] = lr_now * mult
            oom = False
            try:
                _injected_oom(len(idx))
                with plan.autocast():
                    logits = net(x)
                per_batch = F.cross_entropy(logits.float(), y, weight=weights, label_smoothing=tc.label_smoothing,
                                            reduction="sum")
                if dummy:
                    per_batch = per_batch * 0.0
                # this process's share of the global batch's mean loss: DDP averages gradients over processes
                loss = per_batch * dist.world_size / denom
                correct_here = 0 if dummy else int((logits.argmax(1) == y).sum())
                bad, loss_total, correct_total, n_total = dist.sum(
                    [0.0 if bool(torch.isfinite(loss)) else 1.0, float(per_batch.detach()), correct_here,
                     0 if dummy else len(idx)])
                finite = bad == 0
                if finite:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            except RuntimeError as err:
                if dist.enabled or not _is_oom(err):  # several processes: a failure ends the job (torchrun)
                    raise
                oom = True
            if oom:  # recover outside the except block, so the failed step's tensors are freed
                logits = loss = x = None
                reason = guard.out_of_memory(st, "choose a smaller model or freeze more layers")
                if reason:
                    return _fail(emit, run_dir, t0, plan, reason, epoch, checkpoint, st.best)
                continue
            reason = guard.loss_was(finite)
            if reason:
                return _fail(emit, run_dir, t0, plan, reason, epoch, checkpoint, st.best)
            if finite:
                st.loss_sum += loss_total
                st.correct += int(round(correct_total))
                st.seen += int(round(n_total))
            guard.advance(st, epoch, len(positions), loss_total / denom if finite else float("nan"), lr_now)
        val_loss, val_acc = validate(model, cache, val_idx, labels, plan, dist)
        is_best = improves(val_acc, val_loss, st.best, st.best_loss)
        if is_best:
            st.best, st.best_loss = val_acc, val_loss
            if dist.is_main:
                runs.save_weights(run_dir, model.state_dict(), {"epoch": epoch + 1, "val_accuracy": val_acc,
                                                                "val_loss": val_loss, "classes": classes})
        row = {"epoch": epoch + 1, "train_loss": st.loss_sum / max(1, st.seen), "train_accuracy":
               st.correct / max(1, st.seen), "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr_now,
               "seconds": time.time() - epoch_t0}
        st.history.append(row)
        st.next_epoch()
        st.correct = 0
        checkpoint()
        emit(EpochEnded(epoch + 1, row["train_loss"], row["train_accuracy"], val_loss, val_acc, lr_now,
                        round(row["seconds"], 2), round(len(train_idx) / max(1e-6, row["seconds"]), 2), st.best,
                        is_best))
    return guard.completed(st, "validation accuracy")


def _fail(emit: Subscriber, run_dir: Path, t0: float, plan: DevicePlan, reason: str, epochs_done: int,
          checkpoint: Callable[[], None] | None = None, best: float | None = None) -> FitResult:
    if checkpoint is not None:
        checkpoint()
    emit(FitFailed(reason, epochs_done))
    return FitResult("failed", best, epochs_done, time.time() - t0, plan.device, [], reason)
