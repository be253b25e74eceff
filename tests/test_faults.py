"""Fault injection on training jobs, with real processes: kill -9 at random moments (some inside checkpoint writes),
a write that fails during a save (file size limit = a full disk for that file), a trainer that segfaults or aborts,
50 start/stop/cancel cycles, and an app restart while a job runs.

`core.jobs` starts `python -m core.worker RUN` detached, as the app does; a tiny timm test model trains on tiny
synthetic images; every random choice comes from a seeded generator. The one test hook in product code is
`core.runs.PAUSE_ENV`: it makes a checkpoint save pause between "temporary file complete" and its rename, so a kill
can land inside that window. Resume exactness is checked against an uninterrupted run, tensor by tensor.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import torch

from core import jobs, runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.settings import subdir
from core.storage import read_json
from tests.synthetic import make_colour_folders

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 12  # 12 train images, batch 4: 3 steps per epoch, a checkpoint at the end of each epoch
KILLS = 20
CYCLES = 50


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_folders(tmp_path_factory.mktemp("fault-colours"), train=4, val=2, size=32)


def _new_run(colours: Path, runs_dir: Path, epochs: int = EPOCHS) -> Path:
    cfg = RunConfig("test_resnet", str(colours), FreezeConfig("all"),
                    TrainConfig(epochs=epochs, batch_size=4, precision="fp32", device="cpu", seed=7),
                    pretrained=False)
    return runs.create_run(cfg, trainset.resolve(str(colours)), runs_dir)


def _wait(run_dir: Path, predicate: Callable[[dict], bool], timeout: float = 180) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        status = jobs.state(run_dir)
        if predicate(status):
            return status
        time.sleep(0.1)
    raise AssertionError(f"timed out; status {runs.read_status(run_dir)}; log {jobs._log_tail(run_dir)}")


def _finished(run_dir: Path, timeout: float = 180) -> dict:
    status = _wait(run_dir, lambda s: s.get("state") in runs.FINAL_STATES, timeout)
    assert status["state"] == "completed", status
    return status


def _gone(pid: int, timeout: float = 10) -> bool:
    """True once `pid` has ended (a zombie waiting for its reaper counts as ended)."""
    end = time.time() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.time() >= end:
            return False
        time.sleep(0.02)


def _kill9(run_dir: Path) -> int:
    """SIGKILL the run's worker (its whole process group) and wait until it is gone; returns its pid."""
    proc = jobs._process(run_dir)
    assert proc is not None, f"no live worker; status {runs.read_status(run_dir)}"
    os.killpg(proc.pid, signal.SIGKILL)
    assert _gone(proc.pid)
    return proc.pid


def _recorded_step(run_dir: Path) -> int | None:
    """The step of the newest checkpoint recorded in the manifest (None before the first one)."""
    manifest = read_json(run_dir / "checkpoints" / "manifest.json", {}) or {}
    return manifest.get("last", {}).get("step")


def _temp_files(run_dir: Path, pattern: str = ".*.tmp") -> set[Path]:
    return set((run_dir / "checkpoints").glob(pattern))


CKPT_TEMP = ".last.pt.*.tmp"  # the temporary file of a checkpoint save (see core.storage.write_atomic)


def _events(run_dir: Path, kind: str) -> list[dict]:
    return runs.read_events(run_dir, (kind,))


def _outcome(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[dict]]:
    """Final model weights (last checkpoint), best weights (safetensors) and the metric history without timings."""
    ckpt, skipped = runs.load_checkpoint(run_dir)
    assert ckpt is not None and skipped == []
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in ckpt["state"]["history"]]
    return ckpt["model"], runs.load_weights(run_dir), history


def _assert_bit_identical(run_dir: Path, reference: Path) -> None:
    model, best, history = _outcome(run_dir)
    ref_model, ref_best, ref_history = _outcome(reference)
    assert model.keys() == ref_model.keys() and best.keys() == ref_best.keys()
    assert [k for k in model if not torch.equal(model[k], ref_model[k])] == []
    assert [k for k in best if not torch.equal(best[k], ref_best[k])] == []
    assert history == ref_history and len(history) == EPOCHS


@pytest.fixture(scope="module")
def reference(colours: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, trained without interruption by a worker process."""
    run_dir = _new_run(colours, tmp_path_factory.mktemp("fault-reference"))
    jobs.start(run_dir)
    _finished(run_dir)
    return run_dir


# --- kill -9 at random moments ------------------------------------------------------------------------------------

def _new_fit_started(run_dir: Path, before: int) -> bool:
    return len(_events(run_dir, "fit_started")) > before


def _batch_after_resume(run_dir: Path, before: int) -> bool:
    """A batch ended in the current worker (events after its fit_started)."""
    events = runs.read_events(run_dir, ("fit_started", "batch_ended"))
    starts = [i for i, e in enumerate(events) if e["type"] == "fit_started"]
    return len(starts) > before and any(e["type"] == "batch_ended" for e in events[starts[-1]:])


def _moment(run_dir: Path, kind: str, rng: random.Random, recorded: int | None, stale: set[Path],
            fits_before: int) -> None:
    """Return when it is time to kill the worker for this kind of moment (the worker must still be alive)."""
    if kind == "startup":  # while the worker imports, loads its data or its checkpoint
        time.sleep(rng.uniform(0.05, 2.5))
        return
    conditions = {
        "batch": lambda: _batch_after_resume(run_dir, fits_before),
        "checkpoint_write": lambda: bool(_temp_files(run_dir, CKPT_TEMP) - stale),  # a checkpoint save is under way
        "after_save": lambda: _recorded_step(run_dir) not in (recorded,),  # a new checkpoint was just recorded
    }
    ready = conditions[kind]
    end = time.time() + 120
    while not ready():
        assert jobs.is_alive(run_dir), f"the worker ended before the '{kind}' moment: {runs.read_status(run_dir)}"
        assert time.time() < end, f"no '{kind}' moment within 120 s"
        time.sleep(0.01)
    if kind == "batch":
        time.sleep(rng.uniform(0.0, 0.3))


@pytest.mark.slow
def test_twenty_kill_9s_at_random_moments_each_resume_from_a_complete_checkpoint_bit_identical(
        colours: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runs.PAUSE_ENV, "0.3")  # widen the temp-file → rename window of every checkpoint save
    rng = random.Random(10)
    kinds = ["startup", "batch", "checkpoint_write", "after_save"] * (KILLS // 4)
    rng.shuffle(kinds)
    run_dir = _new_run(colours, tmp_path)
    inside_saves, resumed_from, t0 = 0, [], time.monotonic()
    for n, kind in enumerate(kinds):
        recorded, stale = _recorded_step(run_dir), _temp_files(run_dir, CKPT_TEMP)
        fits_before = len(_events(run_dir, "fit_started"))
        jobs.start(run_dir)
        _moment(run_dir, kind, rng, recorded, stale, fits_before)
        _kill9(run_dir)
        status = jobs.state(run_dir)
        assert status["state"] == "crashed" and "ended unexpectedly" in status["message"], (n, kind, status)
        if kind == "checkpoint_write":
            assert _temp_files(run_dir, CKPT_TEMP) - stale, f"kill {n} did not land inside a checkpoint save"
            inside_saves += 1
        # the newest recorded checkpoint survives every kill, complete and loadable
        ckpt, _ = runs.load_checkpoint(run_dir)
        newest = _recorded_step(run_dir)
        assert (ckpt is None and newest is None) or (ckpt is not None and ckpt["step"] == newest), (n, kind)
        if _new_fit_started(run_dir, fits_before):
            started = _events(run_dir, "fit_started")[-1]
            resumed_from.append((started["resumed_from"] or {}).get("step"))
            assert resumed_from[-1] == recorded, (n, kind, started["resumed_from"], recorded)
    assert inside_saves == KILLS // 4
    assert _recorded_step(run_dir) is not None and _recorded_step(run_dir) < EPOCHS * 3  # it was not finished

    recorded = _recorded_step(run_dir)
    jobs.start(run_dir)
    status = _finished(run_dir)
    assert status["epochs_done"] == EPOCHS
    assert _events(run_dir, "fit_started")[-1]["resumed_from"]["step"] == recorded
    _assert_bit_identical(run_dir, reference)
    assert _temp_files(run_dir, CKPT_TEMP) == set(), "temporary checkpoint files of killed saves were left behind"
    assert not (run_dir / "checkpoints" / "last.prev.pt").exists()
    print(f"\n[faults] {KILLS}/{KILLS} kills -9 resumed from the newest recorded checkpoint "
          f"({dict(Counter(kinds))}; {inside_saves} inside a checkpoint save; resumed from steps {resumed_from}); "
          f"final weights, best weights and metric history bit-identical to the uninterrupted run "
          f"({time.monotonic() - t0:.0f} s)")


# --- a write that fails during a save ------------------------------------------------------------------------------

_START_WITH_FILE_LIMIT = """
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from core import jobs
print(jobs.start(Path(sys.argv[1])))
"""


@pytest.mark.slow
def test_a_failing_checkpoint_write_keeps_the_previous_one_and_says_so(colours: Path, reference: Path,
                                                                       tmp_path: Path) -> None:
    run_dir = _new_run(colours, tmp_path)
    jobs.start(run_dir)
    _wait(run_dir, lambda s: (s.get("epochs_done") or 0) >= 2)
    jobs.stop(run_dir)
    _wait(run_dir, lambda s: s.get("state") == "stopped")
    ckpt_dir = run_dir / "checkpoints"
    kept = (ckpt_dir / "last.pt").read_bytes()
    manifest = json.loads((ckpt_dir / "manifest.json").read_text())
    best = (ckpt_dir / "best.safetensors").read_bytes()
    # Files may grow to a size between the best weights and the checkpoint: the next checkpoint save fails (EFBIG),
    # as it would on a full disk; status, events and the best weights still fit.
    limit = (len(best) + len(kept)) // 2
    out = subprocess.run([sys.executable, "-c", _START_WITH_FILE_LIMIT, str(run_dir), str(limit)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    status = _wait(run_dir, lambda s: s.get("state") in runs.FINAL_STATES)
    assert status["state"] == "failed", status
    message = status["message"]
    assert "Could not save the checkpoint" in message and "larger than this system allows" in message, message
    assert f"the previous checkpoint (step {manifest['last']['step']}) is kept" in message, message
    failed = _events(run_dir, "fit_failed")
    assert failed and "Could not save the checkpoint" in failed[-1]["reason"]
    assert (ckpt_dir / "last.pt").read_bytes() == kept
    assert json.loads((ckpt_dir / "manifest.json").read_text()) == manifest
    assert _temp_files(run_dir) == set() and not (ckpt_dir / "last.prev.pt").exists()
    state, skipped = runs.load_checkpoint(run_dir)
    assert state is not None and state["step"] == manifest["last"]["step"] and skipped == []
    print(f"\n[faults] file size limit {limit / 1e6:.1f} MB during a save: {message!r}")

    jobs.start(run_dir)  # space is back: resume finishes exactly as if nothing happened
    _finished(run_dir)
    _assert_bit_identical(run_dir, reference)


_SAVE_UNDER_LIMIT = """
import json, resource, sys
from pathlib import Path
import torch
from core import runs

small = {"model": {"w": torch.zeros(8)}, "epoch": 1, "pos": 0, "step": 3}
big = {"model": {"w": torch.zeros(2_000_000)}, "epoch": 2, "pos": 0, "step": 6}
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
out = {}
for scenario, folder in zip(sys.argv[1::2], sys.argv[2::2]):
    run_dir = Path(folder)
    if scenario == "interrupted":  # a save was killed after its rename but before the manifest recorded it
        runs.save_checkpoint(run_dir, small)
        ckpt = run_dir / "checkpoints"
        (ckpt / "last.prev.pt").write_bytes((ckpt / "last.pt").read_bytes())
        torch.save(dict(small, step=5), ckpt / "last.pt")
    elif scenario == "second":
        runs.save_checkpoint(run_dir, small)
        runs.save_weights(run_dir, {"w": torch.ones(8)}, {"epoch": 1})
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    out[scenario] = {}
    for what, save in (("checkpoint", lambda: runs.save_checkpoint(run_dir, big)),
                       ("weights", lambda: runs.save_weights(run_dir, {"w": torch.ones(2_000_000)}, {"epoch": 2}))):
        try:
            save()
            out[scenario][what] = "saved"
        except runs.RunError as err:
            out[scenario][what] = str(err)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
print(json.dumps(out))
"""
SCENARIOS = ("first", "second", "interrupted")


def test_saves_that_cannot_be_written_leave_the_previous_files(tmp_path: Path) -> None:
    """save_checkpoint / save_weights under a 200 kB file size limit, in a child process: the first save ever, a save
    after a good one, and a save after one that was killed between its rename and its manifest entry."""
    args = []
    for scenario in SCENARIOS:
        (tmp_path / scenario / "checkpoints").mkdir(parents=True)
        args += [scenario, str(tmp_path / scenario)]
    out = subprocess.run([sys.executable, "-c", _SAVE_UNDER_LIMIT, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for scenario in SCENARIOS:
        result, run_dir = results[scenario], tmp_path / scenario
        assert result["checkpoint"].startswith("Could not save the checkpoint"), (scenario, result)
        assert result["weights"].startswith("Could not save the best weights"), (scenario, result)
        assert all("larger than this system allows" in v for v in result.values()), (scenario, result)
        ckpt_dir = run_dir / "checkpoints"
        assert sorted(p.name for p in ckpt_dir.iterdir() if p.name.startswith(".")) == [], scenario  # no temp file
        state, skipped = runs.load_checkpoint(run_dir)
        if scenario == "first":
            assert "there is no earlier checkpoint" in result["checkpoint"]
            assert "no best weights were saved before" in result["weights"]
            assert state is None and sorted(p.name for p in ckpt_dir.iterdir()) == []
            continue
        assert "the previous checkpoint (step 3) is kept" in result["checkpoint"], (scenario, result)
        assert state is not None and state["step"] == 3 and skipped == [], scenario  # the recorded one, not step 5
        assert not (ckpt_dir / "last.prev.pt").exists()
        if scenario == "second":
            assert torch.equal(runs.load_weights(run_dir)["w"], torch.ones(8))
            assert "the previous best weights are kept" in result["weights"]


def test_resume_right_after_a_final_status_waits_for_the_exiting_worker(colours: Path, tmp_path: Path) -> None:
    """The worker writes 'stopped'/'failed' a moment before its process ends; a Resume pressed in that moment must
    start the run, not fail with 'already running'. A live worker that has not finished is still refused."""
    run_dir = _new_run(colours, tmp_path, epochs=1)
    exiting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    try:
        job = {"pid": exiting.pid, "create_time": psutil.Process(exiting.pid).create_time(), "started": time.time()}
        (run_dir / jobs.JOB_FILE).write_text(json.dumps(job))
        runs.write_status(run_dir, state="running", message="Epoch 1")
        with pytest.raises(runs.RunError, match="already running"):
            jobs.start(run_dir)
        runs.write_status(run_dir, state="stopped", message="Stopped.")
        assert jobs.is_alive(run_dir)
        pid = jobs.start(run_dir)
        assert exiting.poll() is not None and pid != exiting.pid
        jobs.cancel(run_dir)
        assert _gone(pid)
    finally:
        exiting.kill()
        exiting.wait()


# --- a trainer that crashes hard ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_segfault_or_abort_in_the_trainer_shows_crashed_and_resume_finishes(colours: Path, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))  # the workers inherit it: no core files in the project
    try:
        run_dir = _new_run(colours, tmp_path, epochs=2)
        seen = []
        for sig in (signal.SIGSEGV, signal.SIGABRT):  # what a native crash and os.abort() deliver
            step_before = _recorded_step(run_dir) or 0
            fits_before = len(_events(run_dir, "fit_started"))
            jobs.start(run_dir)
            _wait(run_dir, lambda s, n=fits_before: _batch_after_resume(run_dir, n))
            proc = jobs._process(run_dir)
            os.kill(proc.pid, sig)
            assert _gone(proc.pid)
            status = jobs.state(run_dir)  # the caller (this process, like the app) carries on and reports it
            assert status["state"] == "crashed" and "ended unexpectedly" in status["message"], status
            assert runs.read_status(run_dir)["state"] == "crashed"  # written down for every later reader
            seen.append((sig.name, status["state"], step_before))
        jobs.start(run_dir)  # the device lock died with the worker: the next job starts at once
        status = _finished(run_dir)
        assert status["epochs_done"] == 2
        print(f"\n[faults] {seen}: both reported as crashed; resume completed")
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


# --- start / stop / cancel cycles ---------------------------------------------------------------------------------

def _workers_of(runs_dir: Path) -> list[int]:
    """Live (non-zombie) processes whose command line names a run under runs_dir."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if str(runs_dir) in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p.pid)
    return out


@pytest.mark.slow
def test_fifty_start_stop_cancel_cycles_leave_no_orphans(colours: Path, tmp_path: Path) -> None:
    rng = random.Random(50)
    kinds = ["cancel_at_once"] * 16 + ["cancel_soon"] * 16 + ["stop_then_cancel"] * 15 + ["stop_and_wait"] * 3
    rng.shuffle(kinds)
    runs_dir = tmp_path / "runs"
    run_dirs = [_new_run(colours, runs_dir, epochs=200) for _ in range(2)]
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    pids, ends = [], Counter()
    for n, kind in enumerate(kinds):
        run_dir = run_dirs[n % 2]
        fits_before = len(_events(run_dir, "fit_started"))
        pid = jobs.start(run_dir)
        pids.append(pid)
        if kind == "cancel_soon":
            time.sleep(rng.uniform(0.0, 1.0))
        elif kind == "stop_then_cancel":
            time.sleep(rng.uniform(0.0, 0.6))
            jobs.stop(run_dir)
            time.sleep(rng.uniform(0.0, 0.3))
        if kind == "stop_and_wait":
            _wait(run_dir, lambda s, d=run_dir, n=fits_before: _batch_after_resume(d, n), 120)
            jobs.stop(run_dir)
            _wait(run_dir, lambda s: s.get("state") == "stopped", 60)
        else:
            jobs.cancel(run_dir)
        assert _gone(pid), f"cycle {n} ({kind}): worker {pid} still alive"
        status = jobs.state(run_dir)
        assert status["state"] in ("cancelled", "stopped"), (n, kind, status)
        assert not jobs.is_alive(run_dir)
        ends[status["state"]] += 1
    assert [p for p in pids if not _gone(p, 0)] == []
    assert _workers_of(runs_dir) == []
    new_children = [p for p in me.children(recursive=True) if p.pid not in before and _alive(p)]
    assert new_children == [], [(p.pid, p.cmdline()) for p in new_children]
    with open(subdir("locks") / "cpu.lock", "a") as lock:  # nobody holds the device any more
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(lock, fcntl.LOCK_UN)
    for run_dir in run_dirs:  # what was saved is still usable
        state, skipped = runs.load_checkpoint(run_dir)
        assert skipped == []
    print(f"\n[faults] {CYCLES} start/stop/cancel cycles ({dict(Counter(kinds))}) ended {dict(ends)}; "
          f"0 of {len(pids)} workers alive, 0 orphan processes")


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- an app restart while a job runs ------------------------------------------------------------------------------

_APP_STARTS_A_JOB = """
import sys, time
from pathlib import Path
from core import jobs
print(jobs.start(Path(sys.argv[1])), flush=True)
time.sleep(600)
"""

_FRESH_APP_LOOKS = """
import json, sys
from pathlib import Path
from core import jobs, runs
found = []
for run_dir in runs.list_runs(Path(sys.argv[1])):
    job = json.loads((run_dir / "job.json").read_text())
    found.append([run_dir.name, jobs.state(run_dir).get("state"), jobs.is_alive(run_dir), job["pid"]])
print(json.dumps(found))
"""


@pytest.mark.slow
def test_after_an_app_restart_a_running_job_is_found_again_and_finishes(colours: Path, tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    run_dir = _new_run(colours, runs_dir, epochs=3)
    app = subprocess.Popen([sys.executable, "-c", _APP_STARTS_A_JOB, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                           text=True, start_new_session=True)
    try:
        pid = int(app.stdout.readline())
    finally:
        os.killpg(app.pid, signal.SIGKILL)  # the app dies hard, with everything in its process group
        app.wait(10)
        app.stdout.close()
    assert psutil.pid_exists(pid) and _alive(psutil.Process(pid)), "the worker died with the app"
    assert psutil.Process(pid).ppid() != app.pid
    out = subprocess.run([sys.executable, "-c", _FRESH_APP_LOOKS, str(runs_dir)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(found) == 1
    name, state, alive, job_pid = found[0]
    assert (name, alive, job_pid) == (run_dir.name, True, pid) and state in ("queued", "running"), found
    status = _finished(run_dir)
    assert status["epochs_done"] == 3
    assert _gone(pid)
    print(f"\n[faults] app killed while its job ran: a fresh process found {name} '{state}' (worker {pid} alive), "
          "and it completed")
