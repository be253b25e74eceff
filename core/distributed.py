"""Several processes, one run: PyTorch's own distributed engine (torch.distributed + torchrun, DDP).

- `launch(...)` starts `torchrun` (python -m torch.distributed.run) on this machine with one process per GPU (or N
  CPU processes with the gloo backend) running `python -m core.ddp_worker RUN_DIR`, waits, and turns a failure into
  one sentence naming the rank and the reason. Multi-node: the same command on every node with `nnodes`,
  `node_rank` and a rendezvous endpoint, as torchrun does.
- `DistContext` is what the engine sees: rank, world size, and the few collectives it needs (share an object from
  rank 0, sum numbers, any/all flags, wrap the model in DDP). `SINGLE` is the one-process context, so the engine has
  one code path.

Rules that make a 2-process run equal a 1-process run with the same global batch: every rank takes a contiguous
slice of the global batch, augmentation draws are per image (keyed by its place in the epoch), and each rank's loss
is its share of the global batch's loss, so DDP's gradient average is exactly the global mean.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.settings import PROJECT_ROOT

WORKER_MODULE = "core.ddp_worker"


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, make: Callable[[], Any]) -> Any:
        """`make()` on rank 0, the same object on every rank (pickled over the process group)."""
        if not self.enabled:
            return make()
        box = [make() if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of `values` over all ranks (float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._device())
        torch.distributed.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def any(self, flag: bool) -> bool:
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def slice(self, n: int) -> tuple[int, int]:
        """This rank's contiguous [start, end) of a global batch of `n` items (sizes differ by at most one)."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model in DistributedDataParallel (call again after the trainable parameters change)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.backend == "nccl" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


SINGLE = DistContext()


def lr_scale(world_size: int, optimizer: str) -> float:
    """How the learning rate grows with the global batch: linear for SGD (Goyal et al. 2017), square root for
    AdamW (Adam's steps are normalised, so the linear rule overshoots)."""
    if world_size <= 1:
        return 1.0
    return float(world_size) if optimizer == "sgd" else math.sqrt(world_size)


def scaling_note(world_size: int, per_process_batch: int, optimizer: str, lr: float) -> str:
    """One sentence for people: global batch and learning rate, and the rule used."""
    rule = "×N (linear rule, SGD)" if optimizer == "sgd" else "×√N (square-root rule, AdamW)"
    return (f"{world_size} processes × batch {per_process_batch} = global batch {world_size * per_process_batch}; "
            f"learning rate {lr:.3g} ({rule}).")


def init_from_env() -> DistContext:
    """Join the process group torchrun described in the environment (nccl on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and os.environ.get("TS_DDP_DEVICE", "auto") != "cpu"
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    return DistContext(int(os.environ["RANK"]), world, local_rank,
                       int(os.environ.get("LOCAL_WORLD_SIZE", "1")), backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and torch.distributed.is_initialized():
        with contextlib.suppress(Exception):
            torch.distributed.destroy_process_group()


def die_with_parent() -> None:
    """Make this rank end when its torchrun agent ends, however it ends (no orphans after a SIGKILL)."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent already went before prctl took effect
        os._exit(1)

    def watch() -> None:  # a fallback where prctl is not available
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


# --- launching ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LaunchSpec:
    """What `torchrun` is asked for. nnodes > 1 needs `rdzv_endpoint` (HOST:PORT of node 0)."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str = ""
    rdzv_id: str = "transfer-studio"
    device: str = "auto"  # auto | cpu: cpu forces gloo even when GPUs exist (tests)

    def __post_init__(self) -> None:
        if self.nproc < 1 or self.nnodes < 1:
            raise ValueError("--nproc and --nnodes must be at least 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"--node-rank must be between 0 and {self.nnodes - 1}")
        if self.nnodes > 1 and not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", self.rdzv_endpoint or ""):
            raise ValueError("several nodes need --rdzv-endpoint HOST:PORT (node 0's address and a free port)")

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes


def torchrun_command(run_dir: str, spec: LaunchSpec) -> list[str]:
    """The torchrun command line for `core.ddp_worker RUN_DIR`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={spec.nproc}", "--max-restarts=0"]
    if spec.nnodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [f"--nnodes={spec.nnodes}", f"--node-rank={spec.node_rank}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={spec.rdzv_endpoint}", f"--rdzv-id={spec.rdzv_id}"]
    return cmd + ["-m", WORKER_MODULE, run_dir]


@dataclass
class LaunchResult:
    returncode: int
    failure: str = ""  # one sentence naming the failed rank and why; "" on success
    log_tail: list[str] = field(default_factory=list)


_ERROR_LINE = re.compile(r"^\s*(\w+(Error|Exception)\b.*)$")


_ENTRY = re.compile(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)
_TERMINATED = (-signal.SIGTERM, -signal.SIGINT)  # what torchrun sends the other ranks when it stops a job


_WHAT = re.compile(r"what\(\):\s*(.+)$", re.M)


def _native_error(log: str) -> str:
    """The message of a C++ exception that aborted a process ("terminate called ... what(): ..."), if any."""
    found = _WHAT.findall(log)
    return found[-1].strip()[:200] if found else ""


def describe_failure(log: str, returncode: int) -> str:
    """A sentence from torchrun's failure report: which rank failed first, with what exit code or error.

    torchrun lists every failed rank; the ones it terminated itself (SIGTERM) or that only lost a peer are
    consequences, so a rank killed by another signal or exiting with its own error is named instead."""
    report = log[log.find("Failures:"):] if "Failures:" in log else log[log.rfind("Root Cause"):]
    entries = [(int(r), int(c)) for r, c in _ENTRY.findall(report)]
    root = log[log.rfind("Root Cause"):] if "Root Cause" in log else log
    errors = [m.group(1).strip() for line in root.splitlines() if (m := _ERROR_LINE.match(line))]
    killed = [(r, c) for r, c in entries if c < 0 and c not in _TERMINATED]
    chosen = killed[0] if killed else (entries[0] if entries else None)
    if chosen is None:
        return f"the distributed job ended with exit code {returncode}."
    rank, code = chosen
    who = f"process rank {rank}"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = _native_error(log)
        return (f"{who} was killed ({name}{': ' + why if why else ''}); the job was stopped. Resume continues "
                "from the last checkpoint.")
    if errors:
        return f"{who} failed: {errors[-1][:300]}"
    return f"{who} exited with code {code}; the job was stopped."


def launch(run_dir: str, spec: LaunchSpec, *, extra_env: dict[str, str] | None = None,
           echo: Callable[[str], None] | None = None, on_start: Callable[[subprocess.Popen], None] | None = None,
           new_session: bool = False) -> LaunchResult:
    """Run torchrun for the run and wait. Its output is passed to `echo` as it comes (progress bars included) and
    kept to explain a failure. Threads per process = this machine's cores / processes (never oversubscribed).
    `new_session`: keep a terminal's Ctrl-C away from torchrun (the CLI turns it into a clean stop)."""
    from core.settings import cpu_threads

    env = dict(os.environ)
    env.update(extra_env or {})
    env["OMP_NUM_THREADS"] = str(max(1, cpu_threads() // spec.nproc))
    env["TRANSFER_STUDIO_THREADS"] = env["OMP_NUM_THREADS"]
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if spec.device == "cpu":
        env["TS_DDP_DEVICE"] = "cpu"
    proc = subprocess.Popen(torchrun_command(run_dir, spec), cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=new_session)
    if on_start is not None:
        on_start(proc)
    chunks: list[str] = []
    assert proc.stdout is not None
    while True:
        data = os.read(proc.stdout.fileno(), 65536)
        if not data:
            break
        text = data.decode("utf-8", errors="replace")
        chunks.append(text)
        if len(chunks) > 400:
            chunks = chunks[-200:]
        if echo is not None:
            echo(text)
    code = proc.wait()
    log = "".join(chunks)
    tail = [ln for ln in log.splitlines() if ln.strip()][-30:]
    return LaunchResult(code, "" if code == 0 else describe_failure(log, code), tail)


def gpu_rows() -> list[dict]:
    """The GPUs of this machine: index, name, memory (GB)."""
    if not torch.cuda.is_available():
        return []
    rows = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        rows.append({"index": i, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
    return rows


def multi_gpu_note(rows: list[dict]) -> str:
    """Why the several-GPU choice is or is not offered, in one line."""
    if len(rows) >= 2:
        return f"{len(rows)} GPUs: train on several at once (one process per GPU, DistributedDataParallel)."
    if len(rows) == 1:
        return "Training on several GPUs needs 2 or more; this machine has one, so the run uses it."
    return "Training on several GPUs needs 2 or more; this machine has none."  # (--nproc N: CPU processes, README)


def run_distributed(run_dir: Path, spec: LaunchSpec, **kwargs: Any) -> LaunchResult:
    """`launch` for a run folder on this node (node 0): afterwards the run's status says what happened — a failed
    rank is recorded as 'failed' with its rank and reason when rank 0 could not say so itself."""
    from core import runs

    result = launch(str(run_dir), spec, **kwargs)
    if result.returncode != 0:
        status = runs.read_status(run_dir)
        if status.get("state") in runs.ACTIVE_STATES or status.get("state") is None:
            runs.write_status(run_dir, state="failed", ended=time.time(),
                              message=f"Distributed training stopped: {result.failure}")
            runs.append_event(run_dir, {"type": "fit_failed", "reason": result.failure, "epochs_done":
                                        int(status.get("epochs_done") or 0), "log_tail": result.log_tail})
    return result
