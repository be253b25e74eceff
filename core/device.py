"""Device and precision choice: CUDA + autocast when a GPU is present, otherwise a fast CPU path with a plain note."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from core.settings import cpu_threads


@dataclass(frozen=True)
class DevicePlan:
    """Where and how tensors run: device, autocast dtype (None = fp32) and memory format."""

    device: str
    name: str
    memory_gb: float | None
    amp_dtype: str | None
    channels_last: bool
    threads: int
    note: str

    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for this plan (a no-op for fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=getattr(torch, self.amp_dtype))

    @property
    def precision(self) -> str:
        return self.amp_dtype or "float32"

    @property
    def predict_batch(self) -> int:
        """Images per forward pass when predicting. On a CPU, 8: as fast as 32–64 in a training process and 1.6×
        faster in the app's, whose C library maps every block over 32 MB afresh (a batch of 32 at 224² has 150 MB
        maps; BENCHMARKS.md, session 35). A GPU wants bigger batches."""
        return 8 if self.device == "cpu" else 64


def configure_threads() -> int:
    """Set torch's compute threads to the cores this process may use; returns the count."""
    n = cpu_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc mallopt parameters


def keep_freed_memory() -> bool:
    """For a training process (not the app's): glibc serves every allocation over 32 MB with a fresh mmap and
    gives it back when freed, so each large activation map of every step page-faults its memory in again (a bf16
    4 × 96 × 208 × 272 map: 2 ms to compute, ~20 ms to fault in). Keep freed memory in the heap for reuse instead
    (the process keeps its peak footprint until it ends). TRANSFER_STUDIO_KEEP_MEMORY=0 turns it off; a no-op on
    other C libraries. Returns whether it applied."""
    if os.environ.get("TRANSFER_STUDIO_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    big = 2**31 - 1
    return all(mallopt(k, v) == 1 for k, v in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, big), (M_TOP_PAD, 2**28)))


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX), where bf16 autocast pays off."""
    try:
        flags = open("/proc/cpuinfo", encoding="ascii", errors="ignore").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def plan_device(prefer: str = "auto", precision: str = "auto") -> DevicePlan:
    """Choose the device and precision. prefer: auto|cpu|cuda; precision: auto|fp32|bf16|fp16."""
    threads = configure_threads()
    if prefer in ("auto", "cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        amp = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}.get(precision)
        if precision == "auto":
            amp = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return DevicePlan("cuda", props.name, round(props.total_memory / 2**30, 1), amp, True, threads,
                          f"GPU: {props.name} ({props.total_memory / 2**30:.1f} GB), {amp or 'float32'} autocast.")
    if prefer == "cuda":
        note = "No CUDA GPU was found, so training runs on the CPU."
    else:
        note = "No GPU on this machine: training runs on the CPU."
    amp = None
    if precision == "bf16" or (precision == "auto" and cpu_supports_bf16()):
        amp = "bfloat16"
    detail = "bf16 autocast + channels_last" if amp else "float32 + channels_last"
    if precision == "bf16" and not cpu_supports_bf16():
        detail += (" (this processor has no native bf16, so bf16 runs slower here than float32; "
                   "precision 'auto' picks the faster one)")
    return DevicePlan("cpu", "CPU", None, amp, True, threads, f"{note} Using {threads} threads, {detail}.")


@contextlib.contextmanager
def inference_mode(plan: DevicePlan) -> Iterator[None]:
    """no_grad + the plan's autocast."""
    with torch.inference_mode(), plan.autocast():
        yield
