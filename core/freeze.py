"""Layer groups, freeze presets and schedules, BatchNorm handling and optimizer parameter groups.

Groups come from timm's `group_matcher(coarse=True)` (stem → blocks → …) with the classifier always its own
last group, "head"; models without a matcher fall back to their top-level children.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from timm.models import group_parameters
from torch import nn

from core.config import FreezeConfig
from core.zoo import batchnorm_count, classifier_prefix, fold_batchnorm, fuse_conv_act, same_answers

_CONTAINERS = {"blocks", "layers", "stages", "features", "layer", "stage"}


@dataclass(frozen=True)
class LayerGroup:
    """One trainable unit of a model, in input → output order."""

    index: int
    name: str
    params: tuple[str, ...]
    n_params: int


@dataclass(frozen=True)
class Phase:
    """From `start_epoch` on, these groups train with these learning-rate multipliers."""

    start_epoch: int
    trainable: tuple[bool, ...]
    lr_mult: tuple[float, ...]
    label: str


def _module_label(param_name: str, head: str) -> str:
    parts = param_name.split(".")[:-1]
    if len(parts) >= 2 and parts[0] in _CONTAINERS and parts[1].isdigit():
        return ".".join(parts[:2])
    if "." in head and parts and parts[0] == head.split(".")[0]:  # e.g. head.norm beside the classifier head.fc
        return ".".join(parts)
    return parts[0] if parts else param_name


def _group_name(index: int, names: list[str], head: str) -> str:
    if names and all(n.startswith(head + ".") for n in names):
        return "head"
    labels = list(dict.fromkeys(_module_label(n, head) for n in names))
    if index == 0 and not any(lbl.split(".")[0] in _CONTAINERS for lbl in labels):
        return "stem"
    return " + ".join(labels)


def _raw_groups(model: nn.Module) -> list[list[str]]:
    if hasattr(model, "group_matcher"):
        grouped = group_parameters(model, model.group_matcher(coarse=True))
        return [list(v) for _, v in sorted(grouped.items())]
    groups: list[list[str]] = []
    own = [n for n, _ in model.named_parameters(recurse=False)]
    if own:
        groups.append(own)
    for child_name, child in model.named_children():
        names = [f"{child_name}.{n}" for n, _ in child.named_parameters()]
        if names:
            groups.append(names)
    return groups


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """The model's layer groups, stem first and the classifier ('head') last; every parameter in exactly one."""
    head = classifier_prefix(model)
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    raw = [[n for n in g if not n.startswith(head + ".")] for g in _raw_groups(model)]
    raw = [g for g in raw if g]
    head_names = [n for n in sizes if n.startswith(head + ".")]
    if head_names:
        raw.append(head_names)
    groups = [LayerGroup(i, _group_name(i, names, head), tuple(names), sum(sizes[n] for n in names))
              for i, names in enumerate(raw)]
    assert len({g.name for g in groups}) == len(groups), "layer group names must be unique"
    assigned = [n for g in groups for n in g.params]
    assert len(assigned) == len(set(assigned)) == len(sizes), "every parameter must be in exactly one layer group"
    return groups


def group_index(groups: list[LayerGroup]) -> dict[str, int]:
    """Parameter name → group index."""
    return {n: g.index for g in groups for n in g.params}


def _geometric(n: int, floor: float) -> tuple[float, ...]:
    """Learning-rate multipliers from `floor` (first group) up to 1.0 (head)."""
    if n == 1:
        return (1.0,)
    return tuple(floor ** ((n - 1 - i) / (n - 1)) for i in range(n))


def plan_phases(groups: list[LayerGroup], cfg: FreezeConfig, epochs: int) -> list[Phase]:
    """The freeze schedule for a run: one phase, or two for `gradual` (head first, then all with lower LRs)."""
    n = len(groups)
    ones = (1.0,) * n
    is_head = tuple(g.name == "head" for g in groups)
    if not any(is_head):  # a model without a classifier: the last group plays the head
        is_head = tuple(i == n - 1 for i in range(n))
    if cfg.preset == "head":
        return [Phase(0, is_head, ones, "head only")]
    if cfg.preset == "all":
        return [Phase(0, (True,) * n, ones, "all layers")]
    if cfg.last_n is not None:
        k = cfg.last_n
        body = [i for i in range(n) if not is_head[i]]
        chosen = set(body[-k:]) if k > 0 else set()
        return [Phase(0, tuple(is_head[i] or i in chosen for i in range(n)), ones, f"head + last {k} groups")]
    if cfg.preset == "custom":
        unknown = set(cfg.groups) - {g.name for g in groups}
        if unknown:
            raise ValueError(f"Unknown layer groups: {sorted(unknown)}")
        return [Phase(0, tuple(is_head[i] or g.name in cfg.groups for i, g in enumerate(groups)), ones, "custom")]
    head_epochs = max(1, min(cfg.head_epochs, max(epochs - 1, 1)))
    phases = [Phase(0, is_head, ones, "head only")]
    if epochs > head_epochs:
        k = min(cfg.keep_frozen, n - 1)
        label = "all layers, lower LR early" if k == 0 else f"all but the first {k} groups, lower LR early"
        phases.append(Phase(head_epochs, tuple(i >= k or is_head[i] for i in range(n)), _geometric(n, cfg.lr_floor),
                            label))
    return phases


def phase_at(phases: list[Phase], epoch: int) -> Phase:
    """The phase in force at `epoch` (0-based)."""
    return [p for p in phases if p.start_epoch <= epoch][-1]


def apply_phase(model: nn.Module, groups: list[LayerGroup], phase: Phase) -> None:
    """Set `requires_grad` of every parameter from the phase."""
    index = group_index(groups)
    for name, param in model.named_parameters():
        param.requires_grad_(phase.trainable[index[name]])


def set_train_mode(model: nn.Module, groups: list[LayerGroup], phase: Phase, train_bn: bool = False) -> None:
    """model.train(), but BatchNorm layers of frozen groups stay in eval mode (statistics fixed) unless train_bn."""
    model.train()
    if train_bn:
        return
    index = group_index(groups)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            if not phase.trainable[index[f"{name}.weight"]]:
                module.eval()


def frozen_view(model: nn.Module, groups: list[LayerGroup], phase: Phase, train_bn: bool, size: int
                ) -> nn.Module | None:
    """For a phase with frozen groups whose BatchNorm statistics stay fixed: a copy of `model` in which those
    groups' convolutions have their BatchNorm folded in and, where nothing before them trains, their ReLU applied
    by oneDNN as they write (`zoo.Conv2dAct`). Its trainable parameters and the statistics of BatchNorm that trains
    are `model`'s own tensors, so a step through the view trains `model`, while saving, validating and resuming use
    `model` unchanged. The view's modules are in the phase's train/eval modes. None when nothing frozen folds
    (everything trains, BatchNorm trains, no BatchNorm) or folding would change the model's answers. Measured on
    MobileNetV2 on a CPU: head-only epochs ~1.4× (BENCHMARKS.md, session 34), the default's later phases (the
    first 3 groups frozen) ~1.05× (session 36)."""
    shared = [p for p in model.parameters() if p.requires_grad]
    shared += [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in m.buffers(recurse=False)]  # BatchNorm that trains updates the model's statistics
    view = copy.deepcopy(model, memo={id(t): t for t in shared})
    set_train_mode(view, groups, phase, train_bn)
    fold_batchnorm(view, frozen_only=True)
    if batchnorm_count(view) == batchnorm_count(model) or not same_answers(view, model, size):
        return None
    fuse_conv_act(view)
    return view


def trainable_counts(groups: list[LayerGroup], phase: Phase) -> tuple[int, int]:
    """(trainable, frozen) parameter counts for a phase."""
    trainable = sum(g.n_params for g, t in zip(groups, phase.trainable, strict=True) if t)
    return trainable, sum(g.n_params for g in groups) - trainable


def optimizer_groups(model: nn.Module, groups: list[LayerGroup], base_lr: float, weight_decay: float = 0.0
                     ) -> list[dict]:
    """One optimizer parameter group per layer group (all parameters, so the optimizer state never changes shape;
    frozen ones get no gradient and are skipped). Use `set_phase_lrs` to apply a phase's multipliers."""
    params = dict(model.named_parameters())
    out = [{"params": [params[n] for n in g.params], "lr": base_lr, "initial_lr": base_lr, "name": g.name,
            "weight_decay": weight_decay} for g in groups]
    ids = [id(p) for grp in out for p in grp["params"]]
    assert len(ids) == len(set(ids)) == len(params), "every parameter must be in exactly one optimizer group"
    return out


def set_phase_lrs(optimizer: torch.optim.Optimizer, phase: Phase, base_lr: float) -> None:
    """Give each optimizer group its phase learning rate (base × multiplier)."""
    for group, mult in zip(optimizer.param_groups, phase.lr_mult, strict=True):
        group["lr"] = group["initial_lr"] = base_lr * mult
