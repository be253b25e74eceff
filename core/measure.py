"""Measurements on this machine: inference latency per backbone (cached) and a training-cost estimate from real
forward/backward steps (time per step and peak memory), never a formula alone."""

from __future__ import annotations

import json
import math
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import psutil
import torch

from core import zoo
from core.config import FreezeConfig
from core.device import DevicePlan, inference_mode, keep_freed_memory, plan_device
from core.freeze import apply_phase, layer_groups, plan_phases, set_train_mode, trainable_counts
from core.settings import cache_root
from core.storage import write_json_atomic

LATENCY_FILE = "latency.json"


def _latency_key(name: str, plan: DevicePlan) -> str:
    return f"{name}|{plan.device}:{plan.name}|{plan.precision}|threads={plan.threads}|torch={torch.__version__}"


def _read_cache() -> dict:
    path = cache_root() / LATENCY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(data: dict) -> None:
    write_json_atomic(cache_root() / LATENCY_FILE, dict(sorted(data.items())))


BUSY_CPU_PERCENT = 50.0  # the processor's use just before measuring above which a latency reads too slow


def _entry(name: str, plan: DevicePlan) -> dict | None:
    """{"ms": float, "busy": bool} from the cache (files before session 39 held the bare ms)."""
    value = _read_cache().get(_latency_key(name, plan))
    if value is None:
        return None
    return {"ms": float(value), "busy": False} if isinstance(value, int | float) else \
        {"ms": float(value["ms"]), "busy": bool(value.get("busy"))}


def cached_latency(name: str, plan: DevicePlan | None = None) -> float | None:
    """The cached latency (ms per image) of a backbone on this machine, or None when not measured yet."""
    entry = _entry(name, plan or plan_device())
    return entry["ms"] if entry else None


def measured_while_busy(name: str, plan: DevicePlan | None = None) -> bool:
    """True when the cached latency was measured while other work (e.g. a training run) used the processor."""
    entry = _entry(name, plan or plan_device())
    return bool(entry and entry["busy"])


_BUSY_SEEN: dict[str, float] = {}  # the last answer of processor_busy and when (monotonic seconds)


def processor_busy(seconds: float = 0.25, max_age: float = 5.0) -> bool:
    """Whether other work uses the processor now (all cores' use over `seconds`, this process idle meanwhile); an
    answer younger than `max_age` is reused, so a page listing many models samples once, not once per model."""
    now = time.monotonic()
    if now - _BUSY_SEEN.get("at", -1e9) > max_age:
        _BUSY_SEEN.update(at=now, busy=float(psutil.cpu_percent(interval=seconds) > BUSY_CPU_PERCENT))
    return bool(_BUSY_SEEN["busy"])


def measure_latency(name: str, plan: DevicePlan | None = None, repeats: int = 10, force: bool = False) -> float:
    """Median latency (ms) of one image at the backbone's input size, through the same BatchNorm-folded copy
    predictions use; measured once, then cached. A figure taken while the processor was busy is measured again
    once it is free."""
    plan = plan or plan_device()
    entry = None if force else _entry(name, plan)
    if entry is not None and not (entry["busy"] and not processor_busy()):
        return entry["ms"]
    busy = processor_busy()
    spec = zoo.get_spec(name)
    model = zoo.create_model(name, pretrained=False).eval().to(plan.torch_device())
    x = torch.randn(1, 3, spec.input_size, spec.input_size, device=plan.torch_device())
    if plan.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    model = zoo.inference_copy(model, spec.input_size, plan.channels_last)  # as Predictor runs it (core.inference)
    times = []
    with inference_mode(plan):
        for i in range(repeats + 3):
            start = time.perf_counter()
            model(x)
            if plan.device == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - start)
    ms = round(statistics.median(times) * 1000, 2)
    cache = _read_cache()
    cache[_latency_key(name, plan)] = {"ms": ms, "busy": busy}
    _write_cache(cache)
    return ms


@dataclass(frozen=True)
class TrainingEstimate:
    """Measured cost of training steps for a backbone + freeze choice + batch size on this device."""

    model: str
    freeze: str
    batch_size: int
    device: str
    precision: str
    seconds_per_step: float
    images_per_second: float
    peak_memory_mb: float
    model_memory_mb: float
    n_images: int
    seconds_per_epoch: float
    trainable_params: int
    frozen_params: int
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_training(name: str, freeze: FreezeConfig, batch_size: int, n_images: int, num_classes: int = 2,
                      steps: int = 3, plan: DevicePlan | None = None, train_size: int = 0) -> TrainingEstimate:
    """Run a warm-up and `steps` real forward/backward/optimizer steps on random images of `train_size` pixels
    (0 = the model's input size) and time them.

    For `gradual` the most expensive phase (the backbone unfrozen) is measured. Memory is this process's peak
    resident size (run it in a fresh process: `estimate_training_isolated`); on a GPU, the peak allocated."""
    plan = plan or plan_device()
    spec = zoo.get_spec(name)
    dev = plan.torch_device()
    before = psutil.Process().memory_info().rss
    model = zoo.create_model(name, num_classes=num_classes, pretrained=False).to(dev)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = layer_groups(model)
    freeze = freeze.for_weights(zoo.has_weights(spec))  # as the run will train (from scratch: nothing kept)
    phase = plan_phases(groups, freeze, epochs=max(2, freeze.head_epochs + 1))[-1]
    apply_phase(model, groups, phase)
    set_train_mode(model, groups, phase, freeze.train_bn)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    size = train_size or spec.input_size
    x = torch.randn(batch_size, 3, size, size, device=dev)
    if plan.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), device=dev)
    model_mb = (psutil.Process().memory_info().rss - before) / 2**20

    def step() -> None:
        with plan.autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if plan.device == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up (allocator, kernels)
        step()
    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if plan.device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_step = statistics.median(times)
    trainable, frozen = trainable_counts(groups, phase)
    epoch = math.ceil(n_images / batch_size) * per_step
    mem = "peak GPU memory" if plan.device == "cuda" else "peak memory of the training process"
    note = (f"Measured with {steps} real training steps at batch {batch_size} on {size}×{size} training crops "
            f"({plan.precision}, {plan.device}); "
            f"memory is the {mem}. Reading photos adds to the time; the app caches decoded images to keep it small.")
    return TrainingEstimate(name, freeze.preset, batch_size, plan.device, plan.precision, round(per_step, 4),
                            round(batch_size / per_step, 1), round(peak_mb, 1), round(model_mb, 1), n_images,
                            round(epoch, 1), trainable, frozen, note)


ESTIMATE_FILE = "estimates.json"


def _estimate_key(name: str, freeze: FreezeConfig, batch_size: int, num_classes: int, train_size: int,
                  plan: DevicePlan) -> str:
    return (f"{name}|{json.dumps(freeze.to_dict(), sort_keys=True)}|{batch_size}|{num_classes}|"
            f"{_latency_key('', plan)}|{train_size}|kept")


def _estimates() -> dict:
    try:
        cache = json.loads((cache_root() / ESTIMATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def cached_estimate(name: str, freeze: FreezeConfig, batch_size: int, n_images: int, num_classes: int = 2,
                    train_size: int = 0, plan: DevicePlan | None = None) -> TrainingEstimate | None:
    """An estimate measured before on this machine for this choice (`estimate_training_isolated`), scaled to
    `n_images`; None when it was never measured. Reads one small file: cheap enough for every page draw when the
    caller passes its device `plan` (planning reads the CPU's flags)."""
    key = _estimate_key(name, freeze, batch_size, num_classes, train_size, plan or plan_device())
    row = _estimates().get(key)
    if not isinstance(row, dict):
        return None
    row = {**row, "n_images": n_images}
    row["seconds_per_epoch"] = round(math.ceil(n_images / batch_size) * row["seconds_per_step"], 1)
    try:
        return TrainingEstimate(**row)
    except TypeError:  # written by an older version with other fields: measured again when asked
        return None


def estimate_training_isolated(name: str, freeze: FreezeConfig, batch_size: int, n_images: int,
                               num_classes: int = 2, timeout: float = 300, train_size: int = 0) -> TrainingEstimate:
    """`estimate_training` in a fresh Python process set up as a training worker is (freed memory kept), so its
    time and memory are a training process's and the caller (e.g. the web app) never holds the spike. Results are
    cached per machine and choice."""
    found = cached_estimate(name, freeze, batch_size, n_images, num_classes, train_size)
    if found is not None:
        return found
    args = json.dumps({"name": name, "freeze": freeze.to_dict(), "batch_size": batch_size, "n_images": n_images,
                       "num_classes": num_classes, "train_size": train_size})
    proc = subprocess.run([sys.executable, "-m", "core.measure", args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"The measurement failed: {tail}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    cache = _estimates()
    cache[_estimate_key(name, freeze, batch_size, num_classes, train_size, plan_device())] = row
    write_json_atomic(cache_root() / ESTIMATE_FILE, cache)
    return TrainingEstimate(**row)


def _main(argv: list[str]) -> int:
    keep_freed_memory()  # as the training worker does: without it every large map is page-faulted in each step
    req = json.loads(argv[0])
    est = estimate_training(req["name"], FreezeConfig.from_dict(req["freeze"]), int(req["batch_size"]),
                            int(req["n_images"]), int(req["num_classes"]), train_size=int(req.get("train_size", 0)))
    print(json.dumps(est.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
