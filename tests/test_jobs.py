"""Training runs in its own process: start, stop, kill -9 and resume, queue, crash reporting, no orphans."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from core import jobs, runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from tests.synthetic import make_colour_folders


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_folders(tmp_path_factory.mktemp("colours"), train=10, val=3)


def _run(colours: Path, runs_dir: Path, epochs: int = 3, quick: bool = False) -> Path:
    cfg = RunConfig("test_resnet", str(colours), FreezeConfig("all"),
                    TrainConfig(epochs=epochs, batch_size=2, precision="fp32", device="cpu"), pretrained=False,
                    quick=quick)
    return runs.create_run(cfg, trainset.resolve(str(colours)), runs_dir)


def _wait(run_dir: Path, predicate, timeout: float = 120) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        status = jobs.state(run_dir)
        if predicate(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"timed out; status {runs.read_status(run_dir)}; log {jobs._log_tail(run_dir)}")


def test_worker_trains_in_its_own_process_and_stops_on_request(colours: Path, tmp_path: Path) -> None:
    run_dir = _run(colours, tmp_path, epochs=20)
    pid = jobs.start(run_dir)
    assert pid != os.getpid()
    _wait(run_dir, lambda s: (s.get("step") or 0) >= 3)
    assert psutil.Process(pid).nice() > min(os.nice(0), 18)  # the app's process gets the CPU first (a responsive UI)
    jobs.stop(run_dir)
    status = _wait(run_dir, lambda s: s.get("state") == "stopped", 60)
    assert "resume" in status["message"].lower()
    ckpt, _ = runs.load_checkpoint(run_dir)
    assert ckpt is not None and ckpt["step"] >= 3
    _wait(run_dir, lambda s: not jobs.is_alive(run_dir), 30)


def test_kill_9_mid_run_is_reported_as_crashed_and_resume_finishes(colours: Path, tmp_path: Path) -> None:
    run_dir = _run(colours, tmp_path, epochs=3)
    jobs.start(run_dir)
    _wait(run_dir, lambda s: (s.get("epochs_done") or 0) >= 1)
    proc = jobs._process(run_dir)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    status = _wait(run_dir, lambda s: s.get("state") == "crashed", 30)
    assert "ended unexpectedly" in status["message"]
    jobs.start(run_dir)
    status = _wait(run_dir, lambda s: s.get("state") == "completed", 180)
    assert status["epochs_done"] == 3
    started = runs.read_events(run_dir, ("fit_started",))
    assert started[-1]["resumed_from"]["epoch"] >= 1


def test_second_start_is_queued_until_the_first_ends(colours: Path, tmp_path: Path) -> None:
    first = _run(colours, tmp_path, epochs=20)
    second = _run(colours, tmp_path, epochs=1)
    jobs.start(first)
    _wait(first, lambda s: s.get("state") == "running" and (s.get("step") or 0) >= 1)
    jobs.start(second)
    status = _wait(second, lambda s: s.get("state") == "queued" and "Waiting" in s.get("message", ""), 60)
    assert jobs.queue_position(second) == 1 and status["state"] == "queued"
    jobs.cancel(first)
    assert runs.read_status(first)["state"] == "cancelled"
    _wait(second, lambda s: s.get("state") == "completed", 180)


def test_cancel_ends_the_process_quickly_and_leaves_no_orphans(colours: Path, tmp_path: Path) -> None:
    run_dir = _run(colours, tmp_path, epochs=50)
    pid = jobs.start(run_dir)
    _wait(run_dir, lambda s: (s.get("step") or 0) >= 1)
    t0 = time.time()
    jobs.cancel(run_dir)
    assert time.time() - t0 < 2.5
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    left = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if str(run_dir) in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            left.append(p.pid)
    assert left == []


def test_quick_model_runs_as_a_job(colours: Path, tmp_path: Path, home: Path) -> None:
    cfg = RunConfig("test_resnet", str(colours), FreezeConfig("head"), TrainConfig(device="cpu"), pretrained=True,
                    quick=True)
    run_dir = runs.create_run(cfg, trainset.resolve(str(colours)), tmp_path)
    jobs.start(run_dir)
    status = _wait(run_dir, lambda s: s.get("state") in ("completed", "failed"), 120)
    assert status["state"] == "failed" and "no local pretrained" in status["message"]


def test_worker_priority_setting_is_read_safely() -> None:
    """TRANSFER_STUDIO_WORKER_NICE sets how far the worker steps back; 0 turns it off and a typo keeps the 5."""
    import subprocess
    import sys

    def niceness(value: str) -> int:
        out = subprocess.run([sys.executable, "-c", "import os; from core.worker import lower_priority; "
                              "lower_priority(); print(os.nice(0))"], capture_output=True, text=True, check=True,
                             env=dict(os.environ, TRANSFER_STUDIO_WORKER_NICE=value))
        return int(out.stdout.strip())

    base = os.nice(0)
    assert niceness("0") == base
    assert niceness("abc") == niceness("5") == min(19, base + 5)


def test_an_active_twin_is_a_queued_or_training_run_with_the_same_choices(home: Path, colours: Path) -> None:
    base = RunConfig("test_resnet", str(colours), FreezeConfig("all"), TrainConfig(epochs=2, image_fit="crop"),
                     name="first", pretrained=False)
    run_dir = runs.create_run(base, {"faces": {"gallery": "prototype"}})
    assert jobs.active_twin(base) is None  # created, not queued: starting it is no repeat
    runs.write_status(run_dir, state="queued")
    auto = RunConfig(base.backbone, base.dataset, base.freeze, TrainConfig(epochs=2, image_fit="auto"),
                     name="another name", pretrained=False)
    assert jobs.active_twin(auto) == run_dir  # names aside; "auto" matches the fit the run settled on
    assert jobs.active_twin(auto, {"faces": {"gallery": "prototype"}}) == run_dir
    assert jobs.active_twin(auto, {"faces": {"gallery": "nearest"}}) is None  # another choice in the manifest
    assert jobs.active_twin(RunConfig(base.backbone, base.dataset, base.freeze, TrainConfig(epochs=3),
                                      pretrained=False)) is None
    runs.write_status(run_dir, state="completed")
    assert jobs.active_twin(base) is None


def test_a_command_line_trainer_killed_leaves_its_run_crashed_not_running(tmp_path: Path, colours: Path) -> None:
    import subprocess
    import sys

    run_dir = _run(colours, tmp_path / "runs")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        runs.write_status(run_dir, state="running", pid=other.pid,
                          pid_created=psutil.Process(other.pid).create_time())  # as `transfer-studio train` writes
        assert jobs.state(run_dir)["state"] == "running" and jobs.trainer_pid(run_dir) == other.pid
    finally:
        other.kill()  # kill -9, or the terminal closed
        other.wait()
    status = jobs.state(run_dir)
    assert status["state"] == "crashed" and "command-line process" in status["message"]
    runs.write_status(run_dir, state="running", pid=os.getpid(), pid_created=psutil.Process().create_time())
    assert jobs.state(run_dir)["state"] == "running"  # this very process trains it (the tests' in-process runs)
