"""Does keeping every BatchNorm's pretrained statistics buy training speed? Used in BENCHMARKS.md (issue 9, session 40).

    .venv/bin/python bench/bn_stats_probe.py [--size 160] [--repeats 5]

MobileNetV2, the default's later phase (first 3 groups frozen, folded by `core.freeze.frozen_view`), batch 32,
synthetic tensors. Three versions of the same step, alternated: the BatchNorm of the groups that train updates its
statistics (the app); the same BatchNorm in eval mode (statistics fixed, scale and shift still train); and fixed
statistics with each trainable convolution + BatchNorm computed as one convolution whose weights are folded at
every step (no BatchNorm pass over the activations). Prints images/s of each.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class FoldedConvBN(nn.Module):
    """A trainable convolution + BatchNorm with fixed statistics, as one convolution folded at every step."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv, self.bn = conv, bn
        self.tail = nn.Sequential(getattr(bn, "drop", nn.Identity()), getattr(bn, "act", nn.Identity()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, conv = self.bn, self.conv
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        y = F.conv2d(x, conv.weight * scale.view(-1, 1, 1, 1), bias, conv.stride, conv.padding, conv.dilation,
                     conv.groups)
        return self.tail(y)


def fold_trainable(module: nn.Module) -> None:
    """Replace each trainable Conv2d → BatchNorm2d pair (registration order) with a FoldedConvBN."""
    children = list(module.named_children())
    for (name, child), (next_name, nxt) in zip(children, children[1:], strict=False):
        if type(child) is nn.Conv2d and isinstance(nxt, nn.BatchNorm2d) and child.weight.requires_grad:
            setattr(module, name, FoldedConvBN(child, nxt))
            setattr(module, next_name, nn.Identity())
    for _, child in module.named_children():
        if not isinstance(child, FoldedConvBN):
            fold_trainable(child)


def main(argv: list[str] | None = None) -> dict:
    from core.device import keep_freed_memory, plan_device
    from core.freeze import apply_phase, frozen_view, layer_groups, plan_phases, set_train_mode
    from core.tasks import freeze_defaults, get_task

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    keep_freed_memory()
    plan = plan_device("auto", "auto")
    torch.set_num_threads(plan.threads)
    task = get_task("classification")
    model = task.build_model("mobilenetv2_100", 10, pretrained=False).to(memory_format=torch.channels_last)
    groups = layer_groups(model)
    phase = plan_phases(groups, freeze_defaults(task), 5)[-1]
    apply_phase(model, groups, phase)
    set_train_mode(model, groups, phase)
    view = frozen_view(model, groups, phase, False, args.size).to(memory_format=torch.channels_last)
    shared = [p for p in model.parameters() if p.requires_grad]
    shared += [b for m in model.modules() if isinstance(m, nn.BatchNorm2d) for b in m.buffers(recurse=False)]
    fixed = copy.deepcopy(view, memo={id(t): t for t in shared})
    for m in fixed.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    folded = copy.deepcopy(fixed, memo={id(t): t for t in shared})
    fold_trainable(folded)
    opt = torch.optim.AdamW(shared[:sum(1 for p in model.parameters() if p.requires_grad)], lr=1e-4)
    x = torch.randn(32, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,))

    def step(net: nn.Module) -> None:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    nets = {"statistics train (the app)": view, "statistics fixed": fixed, "fixed, folded per step": folded}
    for net in nets.values():
        for _ in range(2):
            step(net)
    rates: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(args.repeats):  # alternating, so a machine that drifts favours none
        for name, net in nets.items():
            t0 = time.perf_counter()
            for _ in range(6):
                step(net)
            rates[name].append(32 * 6 / (time.perf_counter() - t0))
    out = {"size": args.size, "median": {k: round(statistics.median(v), 1) for k, v in rates.items()},
           "all": {k: [round(r, 1) for r in v] for k, v in rates.items()}}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
