"""One invocation, side by side on the same machine and weights: the hardware ceiling, the reference recipes (PyTorch
tutorial fine-tune and fixed-feature, fastai fine_tune when its environment exists) and the app's engine (defaults,
best preset, quick model) on ../shared/datasets (sets that are absent are skipped). Results: bench/results/*.csv
and a markdown summary (bench/results/compare_<datasets>.md) for BENCHMARKS.md.

Run (alone on the machine — other processes make every number worse):
    .venv/bin/python bench/compare.py                       # hymenoptera + clothing10, ~1.5 h
    .venv/bin/python bench/compare.py --only hymenoptera    # ~20 min
    .venv/bin/python bench/compare.py --smoke               # seconds, tiny synthetic set (used by the tests)
    .venv/bin/python bench/compare.py --no-references --ours quick --out bench/results/quick   # quick model, ~2 min
fastai: FASTAI_PYTHON=/path/to/venv/bin/python (a separate environment: fastai pins its own dependencies).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from core.device import DevicePlan

TARGETS = (0.90, 0.93, 0.95)
MAX_BUDGET_EPOCHS = 50
SHARED = ROOT.parent / "shared" / "datasets"


@dataclass(frozen=True)
class Plan:
    """What to run on one dataset."""

    name: str
    data: Path
    budgets: tuple[int, ...]  # seconds; accuracy is read at each (the last is the references' limit)
    ours: tuple[str, ...]  # "quick", "defaults", "PRESET:EPOCHS", "PRESET:budget" (epochs fitted to each budget)
    fastai_epochs: int
    model: str = "mobilenetv2_100"
    tutorial_arch: str = "mobilenet_v2"
    pretrained: bool = True


@dataclass
class Row:
    method: str
    curve: list[dict] = field(default_factory=list)  # epoch, seconds, val_accuracy
    train_ips: float | None = None
    note: str = ""

    def summary(self, budgets: tuple[int, ...]) -> dict:
        best = max((c["val_accuracy"] for c in self.curve), default=None)
        out = {"method": self.method, "best_val_accuracy": None if best is None else round(best, 4),
               "seconds_total": self.curve[-1]["seconds"] if self.curve else None}
        for t in TARGETS:
            hit = next((c["seconds"] for c in self.curve if c["val_accuracy"] >= t), None)
            out[f"s_to_{t:.2f}"] = hit
        for b in budgets:
            within = [c["val_accuracy"] for c in self.curve if c["seconds"] <= b]
            out[f"acc_at_{b}s"] = round(max(within), 4) if within else None
        out["train_images_per_second"] = self.train_ips
        out["note"] = self.note
        return out


def _fresh_home() -> str:
    """A new, empty data root, so that every run pays its own image decoding (no cache from the previous one)."""
    home = tempfile.mkdtemp(prefix="bench-home-")
    os.environ["TRANSFER_STUDIO_HOME"] = home
    return home


# --- hardware ceiling ---------------------------------------------------------------------------------------------

def model_only(model: str, batch: int, size: int, plan: DevicePlan, keep_frozen: int = 0) -> float:
    """Forward+backward+step images/s of `model` on synthetic `size`² tensors (channels_last, `plan`'s precision),
    with its first `keep_frozen` layer groups frozen as `gradual` keeps them."""
    import torch

    from core.config import FreezeConfig
    from core.freeze import apply_phase, layer_groups, plan_phases, set_train_mode
    from core.zoo import create_model

    net = create_model(model, num_classes=10, pretrained=False)
    groups = layer_groups(net)
    phase = plan_phases(groups, FreezeConfig("gradual", keep_frozen=keep_frozen), epochs=2)[-1]
    apply_phase(net, groups, phase)
    set_train_mode(net, groups, phase)
    x = torch.randn(batch, 3, size, size)
    net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for i in range(8):
        t0 = time.perf_counter()
        with plan.autocast():
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return round(batch / (sum(times) / len(times)), 1)


def ceiling(model: str, batch: int, size: int, data: Path | None, n_decode: int = 200, crop: int | None = None,
            keep_frozen: int = 0) -> dict:
    """Model-only forward+backward images/s (fp32 and the app's precision) at `size` with every layer training, the
    app's precision again at the training `crop` with the defaults' first `keep_frozen` groups frozen (the fair
    yardstick for the defaults' train loop), and PIL decode+resize images/s."""
    from PIL import Image

    from core.device import plan_device

    out = {}
    for precision in ("fp32", "auto"):
        plan = plan_device("auto", precision)
        out[f"model_only_{plan.precision}"] = model_only(model, batch, size, plan)
    app = plan_device("auto", "auto")  # the precision the app trains in
    if crop and (crop != size or keep_frozen):
        kept = f"_first{keep_frozen}frozen" if keep_frozen else ""
        out[f"model_only_{app.precision}_at_{crop}{kept}"] = model_only(model, batch, crop, app, keep_frozen)
    if data is not None:
        files = sorted(p for p in (data / "train").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        files = files[:n_decode]
        t0 = time.perf_counter()
        for f in files:
            with Image.open(f) as im:
                im.draft("RGB", (size, size))
                im = im.convert("RGB")
                scale = size / min(im.size)
                im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
        out["pil_decode_resize"] = round(len(files) / max(1e-6, time.perf_counter() - t0), 1)
    return out


# --- references ---------------------------------------------------------------------------------------------------

def tutorial(plan: Plan, fixed: bool) -> Row:
    from bench.reference import run_tutorial

    res = run_tutorial(plan.data, fixed, budget_s=max(plan.budgets), arch=plan.tutorial_arch)
    ips = max((c["train_images_per_second"] for c in res.curve), default=None)
    note = "stopped by the time budget" if res.stopped_by_budget else ""
    return Row(res.name, [{k: c[k] for k in ("epoch", "seconds", "val_accuracy")} for c in res.curve], ips, note)


def fastai(plan: Plan) -> Row:
    """fastai in its own environment (FASTAI_PYTHON); a row with the reason when it cannot run."""
    python = os.environ.get("FASTAI_PYTHON", "")
    if not python or not Path(python).exists():
        return Row("fastai fine_tune", note="not run: FASTAI_PYTHON is not set to an environment with fastai "
                                            "(see BENCHMARKS.md)")
    from core import zoo

    weights = zoo.weights_file(zoo.get_spec("mobilenetv2_100"))
    cmd = [python, str(ROOT / "bench" / "fastai_recipe.py"), str(plan.data), str(weights), str(plan.fastai_epochs)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=max(plan.budgets) * 3, check=False)
    except subprocess.TimeoutExpired:
        return Row("fastai fine_tune", note="timed out")
    curve = []
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            curve.append({"epoch": len(curve) + 1, "seconds": row["seconds"], "val_accuracy": row["val_accuracy"]})
    if out.returncode != 0:
        return Row(f"fastai fine_tune({plan.fastai_epochs})", curve, note="failed: " + out.stderr.strip()[-300:])
    return Row(f"fastai fine_tune({plan.fastai_epochs})", curve)


# --- the app's engine ---------------------------------------------------------------------------------------------

def _engine(plan: Plan, freeze: str | None, epochs: int | None, label: str, quick: bool = False,
            fresh: bool = True, image_fit: str | None = None) -> Row:
    """The app's engine with the classification defaults (`freeze`/`epochs`/`image_fit` None = the defaults' own; the
    training crop size is always the default's)."""
    from core import runs, trainset, zoo
    from core.config import FreezeConfig, RunConfig
    from core.engine import fit
    from core.quick import keep_graph, train_quick
    from core.recorder import RunRecorder
    from core.tasks.classification import CLASSIFICATION

    if fresh:
        _fresh_home()
        if quick and plan.pretrained:
            keep_graph(plan.model)  # as setup leaves the machine (the embedding graph is exported there, untimed)
    train = CLASSIFICATION.start_train(zoo.get_spec(plan.model).input_size, epochs=epochs,
                                       train_size=0 if quick else None, image_fit=image_fit)
    chosen = FreezeConfig("head") if quick and not freeze else CLASSIFICATION.start_freeze(freeze)
    cfg = RunConfig(plan.model, str(plan.data), chosen, train, quick=quick, pretrained=plan.pretrained)
    run_dir = runs.create_run(cfg, trainset.resolve(str(plan.data)), Path(tempfile.mkdtemp(prefix="bench-runs-")))
    t0 = time.time()
    if quick:
        res = train_quick(run_dir, [RunRecorder(run_dir)])
        seconds = round(time.time() - t0, 2)
        return Row(label, [{"epoch": 1, "seconds": seconds, "val_accuracy": res["best_val_accuracy"]}], None,
                   res.get("message", ""))
    fit(run_dir, [RunRecorder(run_dir)])
    events = runs.read_events(run_dir, ("epoch_ended",))
    curve = [{"epoch": e["epoch"], "seconds": round(e["t"] - t0, 1), "val_accuracy": e["val_accuracy"]}
             for e in events]
    # The last epoch's speed: every layer trains then (a gradual run's head-only first epoch is cheaper than the
    # model-only yardstick, so a max over epochs would flatter the loop).
    ips = events[-1]["images_per_second"] if events else None
    return Row(label, curve, ips)


def _default_crop(plan: Plan) -> int:
    """The classification defaults' training crop for the plan's model."""
    from core import zoo
    from core.tasks.classification import CLASSIFICATION

    return CLASSIFICATION.default_train_size(zoo.get_spec(plan.model).input_size)


def _default_kept(plan: Plan) -> int:
    """How many first layer groups the classification defaults keep frozen for the plan's model (none without
    pretrained weights: a run from scratch trains them)."""
    from core.tasks.classification import CLASSIFICATION

    return CLASSIFICATION.default_freeze().for_weights(plan.pretrained).keep_frozen


def epochs_for(plan: Plan, freeze: str, budget: int, probe: Row | None) -> int:
    """Epochs that fit in `budget` seconds, from a probe run's measured seconds per epoch."""
    if probe is None or len(probe.curve) < 2:
        return 3
    per_epoch = (probe.curve[-1]["seconds"] - probe.curve[0]["seconds"]) / (len(probe.curve) - 1)
    per_epoch = max(per_epoch, 0.1)  # the curve's clock has 0.1 s steps: tiny smoke epochs can read as 0 s
    first = probe.curve[0]["seconds"]  # includes decoding the images once
    return max(1, min(MAX_BUDGET_EPOCHS, int((budget - (first - per_epoch)) // per_epoch)))


def ours(plan: Plan, item: str) -> list[Row]:
    if item == "quick":
        first = _engine(plan, "head", None, "ours: quick model", quick=True)
        again = _engine(plan, "head", None, "ours: quick model again (cached embeddings)", quick=True, fresh=False)
        return [first, again]
    if item == "defaults":
        from core.tasks.classification import CLASSIFICATION

        epochs = CLASSIFICATION.default_train().epochs
        fz = CLASSIFICATION.default_freeze()
        kept = f" (first {fz.keep_frozen} groups frozen)" if fz.keep_frozen else ""
        what = f"{fz.preset}{kept}, {epochs} epochs, {_default_crop(plan)}² crops"
        return [_engine(plan, None, None, f"ours: defaults ({what})")]
    preset, epochs, *rest = item.split(":")  # PRESET:EPOCHS[:FIT], e.g. all:8:pad
    fit = rest[0] if rest else None
    how = f", {fit}" if fit else ""
    if epochs != "budget":
        return [_engine(plan, preset, int(epochs), f"ours: {preset} x{epochs}{how}", image_fit=fit)]
    probe = _engine(plan, preset, 2, f"ours: {preset} x2{how} (probe)", image_fit=fit)
    rows = [probe]
    for budget in plan.budgets:
        n = epochs_for(plan, preset, budget, probe)
        rows.append(_engine(plan, preset, n, f"ours: {preset} x{n}{how} (fits {budget} s)", image_fit=fit))
    return rows


# --- the whole comparison -----------------------------------------------------------------------------------------

def write_curves(out: Path, dataset: str, rows: list[Row]) -> None:
    with open(out / f"curves_{dataset}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "epoch", "seconds", "val_accuracy"])
        for r in rows:
            for c in r.curve:
                w.writerow([r.method, c["epoch"], c["seconds"], round(c["val_accuracy"], 4)])


def run_plan(plan: Plan, out: Path, refs: bool, log: Callable[[str], None]) -> list[dict]:
    rows: list[Row] = []
    steps: list[tuple[str, Callable[[], list[Row]]]] = []
    if refs:
        steps += [("tutorial fine-tune", lambda: [tutorial(plan, False)]),
                  ("tutorial fixed-feature", lambda: [tutorial(plan, True)]),
                  ("fastai", lambda: [fastai(plan)])]
    steps += [(f"ours {item}", lambda item=item: ours(plan, item)) for item in plan.ours]
    for label, step in steps:
        log(f"{plan.name}: {label}…")
        for row in step():
            rows.append(row)
            log(json.dumps(row.summary(plan.budgets)))
    write_curves(out, plan.name, rows)
    summaries = [r.summary(plan.budgets) for r in rows]
    with open(out / f"compare_{plan.name}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(summaries[0]))
        w.writeheader()
        w.writerows(summaries)
    return summaries


def markdown(name: str, summaries: list[dict], ceiling_row: dict) -> str:
    cols = [c for c in summaries[0] if c != "note"]
    lines = [f"### {name}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for s in summaries:
        lines.append("| " + " | ".join("—" if s[c] is None else str(s[c]) for c in cols) + " |")
    notes = [f"- {s['method']}: {s['note']}" for s in summaries if s.get("note")]
    at_crop = [k for k in ceiling_row if "_at_" in k]  # the ceiling at the training crop, when measured
    key = at_crop[0] if at_crop else ("model_only_bfloat16" if "model_only_bfloat16" in ceiling_row
                                      else "model_only_float32")
    ceil = ceiling_row.get(key)
    ratios = [f"- {s['method']}: train loop {s['train_images_per_second']} img/s = "
              f"{s['train_images_per_second'] / ceil:.2f}× model-only ({key})" for s in summaries
              if s.get("train_images_per_second") and ceil and s["method"].startswith("ours")]
    return "\n".join(lines + [""] + notes + ratios) + "\n"


def smoke_plans(tmp: Path) -> list[Plan]:
    from tests.synthetic import make_colour_folders

    data = make_colour_folders(tmp / "colours", train=6, val=3, size=40)
    return [Plan("smoke", data, (5, 10), ("head:1", "all:budget:pad"), 1, model="test_resnet", tutorial_arch="test",
                 pretrained=False)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated datasets: hymenoptera,clothing10")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--no-references", action="store_true")
    ap.add_argument("--ours", default="", help="comma-separated engine items to run instead of each plan's own "
                                               "(quick, defaults, PRESET:EPOCHS[:FIT], e.g. all:8:pad); use with --out "
                                               "elsewhere")
    ap.add_argument("--smoke", action="store_true", help="a tiny synthetic run in seconds (checks the pipeline)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    _fresh_home()
    from core.catalog import system_info
    from core.device import configure_threads, keep_freed_memory

    configure_threads()
    keep_freed_memory()  # as the app's training worker does
    info = system_info()
    if args.smoke:
        plans = smoke_plans(tmp)
    else:
        plans = [Plan("hymenoptera", SHARED / "hymenoptera", (60, 120, 240), ("quick", "defaults", "gradual:4",
                                                                           "all:4"), 3),
                 Plan("clothing10", SHARED / "clothing10", (300, 600), ("quick", "defaults", "all:8:pad"), 2)]
        wanted = {w for w in args.only.split(",") if w}
        plans = [p for p in plans if (not wanted or p.name in wanted)]
        for p in [p for p in plans if not p.data.is_dir()]:
            print(f"skipped {p.name}: {p.data} is absent", file=sys.stderr)
        plans = [p for p in plans if p.data.is_dir()]
        if args.ours:
            plans = [replace(p, ours=tuple(args.ours.split(","))) for p in plans]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report = [f"Machine: {info.get('device_name')} · {os.cpu_count()} cores · torch {info.get('torch')} · "
              f"timm {info.get('timm')} · {time.strftime('%Y-%m-%d')}", ""]
    for plan in plans:
        size = 64 if args.smoke else 224
        ceil = ceiling(plan.model, 32 if not args.smoke else 4, size, plan.data,
                       crop=None if args.smoke else _default_crop(plan), keep_frozen=_default_kept(plan))
        log(f"{plan.name}: ceiling {json.dumps(ceil)}")
        report.append(f"Hardware ceiling ({plan.name}, batch {32 if not args.smoke else 4}): " + json.dumps(ceil))
        summaries = run_plan(plan, out, not args.no_references, log)
        report.append(markdown(plan.name, summaries, ceil))
    text = "\n".join(report)
    name = "smoke" if args.smoke else "_".join(p.name for p in plans)  # one report per set of datasets run
    (out / f"compare_{name}.md").write_text(text)
    print(text)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
