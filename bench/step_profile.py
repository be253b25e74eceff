"""Where one training step of the default recipe goes, and what the frozen-layer view (BatchNorm folded, ReLU fused
by oneDNN: `core.freeze.frozen_view`) buys, on synthetic batches. Used in BENCHMARKS.md (issue 9, session 36).

    .venv/bin/python bench/step_profile.py [--model mobilenetv2_100] [--size 160] [--phase 0|1|...]
                                           [--batch 32] [--repeats 5] [--profile] [--json FILE]

`--phase` picks the default freeze plan's phase (0: the head only; the last: all but the first groups). Alternates
the model as built and the view, `--repeats` times each, in a process set up like the training worker (threads,
kept freed memory, channels_last and the precision the device plan chooses), and reports images/s of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenetv2_100")
    ap.add_argument("--size", type=int, default=160, help="training crop side (the default recipe's 160)")
    ap.add_argument("--phase", type=int, default=-1, help="phase of the default freeze plan (-1: the last)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6, help="steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler's table of the model's step")
    ap.add_argument("--json", type=Path, help="write the figures here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Time (and optionally profile) a step through the model and through its frozen view."""
    from core.device import keep_freed_memory, plan_device
    from core.freeze import apply_phase, frozen_view, layer_groups, plan_phases, set_train_mode
    from core.tasks import freeze_defaults, get_task

    args = _args(argv)
    keep_freed_memory()
    plan = plan_device("auto", "auto")
    torch.set_num_threads(plan.threads)
    task = get_task("classification")
    model = task.build_model(args.model, 10, pretrained=False).to(plan.torch_device())
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = layer_groups(model)
    phase = plan_phases(groups, freeze_defaults(task), 5)[args.phase]
    apply_phase(model, groups, phase)
    set_train_mode(model, groups, phase)
    view = frozen_view(model, groups, phase, False, args.size)
    if view is not None and plan.channels_last:
        view = view.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(args.batch, 3, args.size, args.size, device=plan.torch_device())
    x = x.contiguous(memory_format=torch.channels_last) if plan.channels_last else x
    y = torch.randint(0, 10, (args.batch,), device=plan.torch_device())

    def step(net: torch.nn.Module) -> None:
        with plan.autocast():
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    nets = {"model": model, **({"frozen view": view} if view is not None else {})}
    for net in nets.values():  # oneDNN's first steps create their kernels
        for _ in range(2):
            step(net)
    rates: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(args.repeats):  # alternating, so a machine that drifts favours neither
        for name, net in nets.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(net)
            rates[name].append(args.batch * args.steps / (time.perf_counter() - t0))
    out = {"model": args.model, "size": args.size, "phase": phase.label, "batch": args.batch,
           "precision": plan.precision, "images_per_second": {k: [round(r, 1) for r in v] for k, v in rates.items()},
           "median": {k: round(statistics.median(v), 1) for k, v in rates.items()}}
    print(json.dumps(out))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(4):
                step(model)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
