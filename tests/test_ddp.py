"""Distributed training (torchrun + DDP) on CPU with gloo: same weights as one process, rank 0 alone writes, a dead
rank stops the job without orphans, and a resume with another number of processes finishes the run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from core import engine, runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.distributed import DistContext, LaunchSpec, describe_failure, lr_scale, run_distributed, torchrun_command
from core.recorder import RunRecorder
from core.settings import PROJECT_ROOT
from tests.synthetic import make_colour_folders


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_folders(tmp_path_factory.mktemp("ddp-colours"), train=10, val=4)


def _run(data: Path, runs_dir: Path, **train) -> Path:
    opts = {"epochs": 2, "batch_size": 4, "precision": "fp32", "device": "cpu", "optimizer": "sgd", "lr": 0.02,
            "momentum": 0.9, **train}
    cfg = RunConfig("test_vit", str(data), FreezeConfig("all"), TrainConfig(**opts), pretrained=False)
    return runs.create_run(cfg, trainset.resolve(str(data)), runs_dir)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt, _ = runs.load_checkpoint(run_dir)
    assert ckpt is not None
    return ckpt["model"]


def _epochs(run_dir: Path) -> list[dict]:
    return [e for e in runs.read_events(run_dir) if e["type"] == "epoch_ended"]


def test_slices_cover_a_global_batch_once() -> None:
    for n in (1, 5, 8, 9):
        parts = [DistContext(rank=r, world_size=3).slice(n) for r in range(3)]
        covered = [i for lo, hi in parts for i in range(lo, hi)]
        assert covered == list(range(n))
        assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1


def test_learning_rate_rule_and_launch_spec_checks() -> None:
    assert lr_scale(1, "sgd") == 1.0 and lr_scale(4, "sgd") == 4.0 and lr_scale(4, "adamw") == 2.0
    with pytest.raises(ValueError, match="rdzv-endpoint"):
        LaunchSpec(nproc=2, nnodes=2)
    with pytest.raises(ValueError, match="node-rank"):
        LaunchSpec(nproc=1, nnodes=2, node_rank=2, rdzv_endpoint="node0:29500")
    multi = torchrun_command("RUN", LaunchSpec(nproc=4, nnodes=2, node_rank=1, rdzv_endpoint="node0:29500"))
    assert "--nnodes=2" in multi and "--node-rank=1" in multi and "--rdzv-endpoint=node0:29500" in multi
    assert "--standalone" in torchrun_command("RUN", LaunchSpec(nproc=2))


def test_failure_report_names_the_rank_and_signal() -> None:
    log = ("Root Cause (first observed failure):\n[0]:\n  rank      : 1 (local_rank: 1)\n"
           "  exitcode  : -9 (pid: 4242)\n  traceback : Signal 9 (SIGKILL) received by PID 4242\n")
    assert describe_failure(log, 1).startswith("process rank 1 was killed (SIGKILL)")
    crash = "Root Cause\n  rank      : 0 (local_rank: 0)\n  exitcode  : 1 (pid: 7)\nValueError: bad things\n"
    assert describe_failure(crash, 1) == "process rank 0 failed: ValueError: bad things"


@pytest.mark.slow
def test_two_processes_train_the_same_weights_as_one(colours: Path, tmp_path: Path, home: Path) -> None:
    """Global batch 8 either way: 1 process × 8 at lr 0.02, or 2 processes × 4 at 0.01 (×2 by the SGD rule)."""
    one = _run(colours, tmp_path / "one", batch_size=8, lr=0.02)
    res = engine.fit(one, [RunRecorder(one)])
    assert res.state == "completed"
    two = _run(colours, tmp_path / "two", batch_size=4, lr=0.01, nproc=2)
    out = run_distributed(two, LaunchSpec(nproc=2, device="cpu"))
    assert out.returncode == 0, out.log_tail
    assert runs.read_status(two)["state"] == "completed"
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-5, worst
    initial = _initial()
    moved = max(float((a[k].float() - initial[k].float()).abs().max()) for k in a)
    assert moved > 1e-3  # training really changed the weights: the comparison means something
    ea, eb = _epochs(one), _epochs(two)
    assert [e["epoch"] for e in eb] == [1, 2]  # rank 0 alone recorded: no duplicated epochs
    assert [e["val_accuracy"] for e in ea] == [e["val_accuracy"] for e in eb]
    assert all(abs(x["val_loss"] - y["val_loss"]) < 1e-5 for x, y in zip(ea, eb, strict=True))
    started = [e for e in runs.read_events(two) if e["type"] == "fit_started"]
    assert len(started) == 1 and started[0]["world_size"] == 2 and started[0]["batch_size"] == 8
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


def _initial() -> dict[str, torch.Tensor]:
    """The weights both runs started from (the engine seeds with the run's seed, 0, before building)."""
    from core.tasks import get_task

    torch.manual_seed(0)
    return get_task("classification").build_model("test_vit", 3, pretrained=False).state_dict()


def _worker_ranks() -> list[psutil.Process]:
    me = psutil.Process()
    found = []
    for p in me.children(recursive=True):
        try:
            if "core.ddp_worker" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_and_one_process_resumes_it(tmp_path: Path, home: Path) -> None:
    data = make_colour_folders(tmp_path / "data", train=40, val=4)
    run_dir = _run(data, tmp_path / "runs", epochs=20, nproc=2, optimizer="adamw", lr=None)
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=run_distributed(run_dir, LaunchSpec(2, device="cpu"))))
    thread.start()
    deadline = time.time() + 240
    while not _epochs(run_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert _epochs(run_dir), "the distributed run never finished an epoch"
    victim = next(p for p in _worker_ranks() if p.environ().get("RANK") == "1")
    killed_at = time.time()
    victim.kill()
    thread.join(120)
    assert not thread.is_alive()
    stopped_after = time.time() - killed_at
    assert stopped_after < 60
    out = result["r"]
    assert out.returncode != 0 and "rank 1" in out.failure and "SIGKILL" in out.failure
    status = runs.read_status(run_dir)
    assert status["state"] == "failed" and "rank 1" in status["message"]
    deadline = time.time() + 10
    while _worker_ranks() and time.time() < deadline:
        time.sleep(0.2)
    assert not _worker_ranks(), "a training process outlived the job"
    ckpt, _ = runs.load_checkpoint(run_dir)
    assert ckpt is not None and ckpt["state"]["world_size"] == 2

    cmd = [sys.executable, "-m", "core.cli", "train", "--resume", str(run_dir), "--nproc", "1", "--quiet", "--json"]
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["state"] == "completed" and summary["world_size"] == 1 and summary["epochs"] == 20
    assert [e["epoch"] for e in _epochs(run_dir)][-1] == 20
    notices = [e for e in runs.read_events(run_dir) if e["type"] == "notice"]
    assert any("instead of 2" in n["message"] for n in notices)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpus_with_nccl(colours: Path, tmp_path: Path, home: Path) -> None:
    run_dir = _run(colours, tmp_path / "gpu", device="auto", precision="auto", nproc=2)
    out = run_distributed(run_dir, LaunchSpec(nproc=2))
    assert out.returncode == 0, out.log_tail
    started = next(e for e in runs.read_events(run_dir) if e["type"] == "fit_started")
    assert started["device"] == "cuda" and started["world_size"] == 2


def test_failure_report_names_the_killed_rank_not_the_one_torchrun_terminated() -> None:
    log = ("Failures:\n[1]:\n  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 11)\n"
           "Root Cause (first observed failure):\n[0]:\n  rank      : 0 (local_rank: 0)\n"
           "  exitcode  : -15 (pid: 10)\n")
    assert describe_failure(log, 1).startswith("process rank 1 was killed (SIGKILL)")


def test_failure_report_quotes_the_native_error_of_an_aborted_rank() -> None:
    log = ("terminate called after throwing an instance of 'gloo::IoException'\n"
           "  what():  [pair.cc:598] Connection closed by peer [127.0.0.1]:5555\n"
           "Failures:\n  <NO_OTHER_FAILURES>\nRoot Cause (first observed failure):\n[0]:\n"
           "  rank      : 1 (local_rank: 1)\n  exitcode  : -6 (pid: 12)\n")
    text = describe_failure(log, 1)
    assert text.startswith("process rank 1 was killed (SIGABRT: [pair.cc:598] Connection closed by peer")
