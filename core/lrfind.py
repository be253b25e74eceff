"""Learning-rate range test (Leslie Smith; as in fastai's lr_find): raise the learning rate exponentially over a
few dozen real training steps, record the loss, and suggest a value before it blows up.

Runs on the run's own model, freeze choice and cached images; `python -m core.lrfind REQUEST_JSON` runs it in a
fresh process (the web app never trains in its own process)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from core import trainset, zoo
from core.config import AUTO_FIT, FreezeConfig, TrainConfig
from core.device import plan_device
from core.engine import make_optimizer
from core.freeze import apply_phase, layer_groups, plan_phases, set_train_mode
from core.pipeline import batch_generator, epoch_order, prep_for, prepare_run_data, train_batch
from core.plots import smoothed
from core.tasks import get_task


@dataclass(frozen=True)
class LrFindResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


def suggest(lrs: list[float], losses: list[float]) -> float:
    """The learning rate at the steepest fall of the smoothed loss, before its minimum (fastai's 'steep' rule),
    but never above a tenth of the loss minimum's learning rate."""
    sm = smoothed(losses, 0.8)
    low = min(range(len(sm)), key=lambda i: sm[i])
    if low < 2:
        return lrs[max(low, 0)] / 10
    logs = [math.log10(x) for x in lrs]
    slopes = [(sm[i + 1] - sm[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(1, low)]
    steep = 1 + min(range(len(slopes)), key=lambda i: slopes[i])
    return float(min(lrs[steep], lrs[low] / 10))


def diverged(losses: list[float], beta: float = 0.8) -> bool:
    """Whether the sweep should stop at the last loss: it is not finite, or the smoothed loss has risen above 4× its
    lowest (fastai's rule). The smoothing matters on small, easy sets: their best loss is tiny, and one noisy batch
    above 4× the raw best used to end the sweep while the loss was still falling."""
    if not losses or not math.isfinite(losses[-1]):
        return bool(losses)
    sm = smoothed(losses, beta)
    return len(sm) > 1 and sm[-1] > 4 * min(sm[:-1])


def find_lr(backbone: str, dataset: str, freeze: FreezeConfig, train: TrainConfig, steps: int = 60,
            start: float = 1e-5, end: float = 1.0, pretrained: bool = True) -> LrFindResult:
    """Run the range test on the dataset's training images with the given model and freeze choice."""
    plan = plan_device(train.device, train.precision)
    manifest = trainset.resolve(dataset)
    classes = manifest["classes"]
    spec = zoo.get_spec(backbone)
    # "auto" is settled when the run starts; the learning rate does not hinge on it, so the range test crops
    prep = prep_for(spec, "crop" if train.image_fit == AUTO_FIT else train.image_fit)
    data = prepare_run_data(manifest, prep)
    cache, labels, train_idx = data.cache, data.labels, data.train_idx
    torch.manual_seed(train.seed)
    model = get_task("classification").build_model(backbone, len(classes), pretrained).to(plan.torch_device())
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = layer_groups(model)
    phase = plan_phases(groups, freeze, train.epochs)[-1]
    apply_phase(model, groups, phase)
    set_train_mode(model, groups, phase, freeze.train_bn)
    opt = make_optimizer([{"params": [p for p in model.parameters() if p.requires_grad]}], train, start)
    factor = (end / start) ** (1 / max(1, steps - 1))
    lrs, losses = [], []
    order, pos, epoch = epoch_order(len(train_idx), train.seed, 0).tolist(), 0, 0
    stopped = False
    for k in range(steps):
        lr = start * factor**k
        for g in opt.param_groups:
            g["lr"] = lr
        if pos >= len(order):
            epoch, pos = epoch + 1, 0
            order = epoch_order(len(train_idx), train.seed, epoch).tolist()
        idx = [train_idx[j] for j in order[pos:pos + train.batch_size]]
        gen = batch_generator(train.seed, epoch, pos)
        pos += len(idx)
        x = train_batch(cache.squares[idx], prep, train.augment, gen, plan.channels_last,
                        min_area=train.crop_min_area).to(plan.torch_device())
        with plan.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels[idx].to(plan.torch_device()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if diverged([*losses, value]):
            stopped = True
            break
        lrs.append(lr)
        losses.append(value)
    if len(lrs) < 5:
        return LrFindResult(lrs, losses, smoothed(losses), train.effective_lr(freeze),
                            "Too few steps to suggest a value; keep the default.")
    value = suggest(lrs, losses)
    where = ("before it rises" if stopped or min(range(len(losses)), key=losses.__getitem__) < len(losses) - 1
             else f"well below {lrs[-1]:.2g}, where the sweep ended with the loss still falling")
    return LrFindResult(lrs, losses, smoothed(losses, 0.8), value,
                        f"Suggested {value:.2g}: where the loss falls fastest, {where}.")


def find_lr_isolated(backbone: str, dataset: str, freeze: FreezeConfig, train: TrainConfig,
                     timeout: float = 900) -> LrFindResult:
    """`find_lr` in a fresh Python process."""
    req = json.dumps({"backbone": backbone, "dataset": dataset, "freeze": freeze.to_dict(), "train": train.to_dict()})
    proc = subprocess.run([sys.executable, "-m", "core.lrfind", req], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["no output"])[-1])
    return LrFindResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


def _main(argv: list[str]) -> int:
    req = json.loads(argv[0])
    res = find_lr(req["backbone"], req["dataset"], FreezeConfig.from_dict(req["freeze"]),
                  TrainConfig.from_dict(req["train"]))
    print(json.dumps(res.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
