"""The facts shown about backbones and layer groups, shared by the Model/Layers pages and the CLI."""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys
from collections.abc import Callable

import torch

from core import zoo
from core.config import FreezeConfig
from core.device import plan_device
from core.freeze import layer_groups, plan_phases
from core.measure import cached_latency, measure_latency, measured_while_busy
from core.settings import data_root


def backbone_rows(measure: bool = True, include_scratch: bool = True,
                  on_progress: Callable[[int, int, str], None] | None = None, again: bool = False) -> list[dict]:
    """One row per backbone: title, family, parameters, input size, top-1, licence, weights, CPU latency
    (`again`: measured anew, not read from the cache)."""
    plan = plan_device()
    specs = zoo.list_backbones(include_scratch=include_scratch)
    rows = []
    for i, spec in enumerate(specs):
        if on_progress:
            on_progress(i, len(specs), spec.title)
        latency = measure_latency(spec.name, plan, force=again) if measure else cached_latency(spec.name, plan)
        rows.append({
            "name": spec.name,
            "title": spec.title,
            "family": spec.family,
            "params_m": round(zoo.param_count(spec.arch) / 1e6, 2),
            "input_size": spec.input_size,
            "imagenet_top1": spec.top1,
            "licence": spec.licence,
            "pretrained": zoo.has_weights(spec),
            "weights": zoo.weights_status(spec),
            "latency_ms": latency,
            "latency_device": f"{plan.device} ({plan.precision}, {plan.threads} threads)",
            "latency_busy": measured_while_busy(spec.name, plan),
            "interpolation": spec.interpolation,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "crop_pct": spec.crop_pct,
            "notes": spec.notes,
        })
    if on_progress:
        on_progress(len(specs), len(specs), "")
    return rows


def prediction_speed(latency_ms: float, busy: bool = False) -> str:
    """How many photos a second a backbone answers on this machine, in words; a figure measured while the processor
    was busy says so (it reads slower than the machine is)."""
    per_second = max(1, round(1000 / latency_ms))
    word = "image" if per_second == 1 else "images"
    return (f"About {per_second} {word} per second for predictions on this machine"
            + (" (measured while the processor was busy: more when it is free)." if busy else "."))


def group_rows(name: str, freeze: FreezeConfig, num_classes: int = 2, epochs: int = 10) -> list[dict]:
    """Layer groups of a backbone in order with parameter counts and, per phase of the freeze choice, whether each
    group trains and its learning-rate multiplier (a backbone without local weights trains from scratch: no group
    is kept frozen)."""
    model = zoo.create_model(name, num_classes=num_classes, pretrained=False)
    groups = layer_groups(model)
    phases = plan_phases(groups, freeze.for_weights(zoo.has_weights(zoo.get_spec(name))), epochs)
    rows = []
    for g in groups:
        row = {"index": g.index, "group": g.name, "params": g.n_params}
        for k, ph in enumerate(phases):
            suffix = "" if len(phases) == 1 else f" (phase {k + 1} from epoch {ph.start_epoch + 1})"
            row["trains" + suffix] = ph.trainable[g.index]
            row["lr ×" + suffix] = round(ph.lr_mult[g.index], 4)
        rows.append(row)
    return rows


def weight_packages() -> list[dict]:
    """Each weight package the built-in backbones need, and whether it is installed."""
    out = []
    for spec in zoo.BUILTIN:
        dist = spec.weights.package.split("==")[0]
        try:
            version = md.version(dist)
        except md.PackageNotFoundError:
            version = None
        out.append({"model": spec.name, "package": dist, "version": version, "file": str(zoo.weights_file(spec) or ""),
                    "install": spec.weights.install_command})
    return out


def system_info() -> dict:
    """Versions, device, data root and weight packages, for `transfer-studio info` and the Home page."""
    import timm
    import torchvision

    plan = plan_device()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "streamlit": md.version("streamlit"),
        "device": plan.device,
        "device_name": plan.name,
        "device_memory_gb": plan.memory_gb,
        "precision": plan.precision,
        "threads": plan.threads,
        "device_note": plan.note,
        "data_root": str(data_root()),
        "weight_packages": weight_packages(),
    }
