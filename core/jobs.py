"""Training jobs: one OS process per run (`python -m core.worker RUN_DIR`), found again from the run folder after a
page refresh or an app restart. Stop = a flag the worker honours within one batch; cancel = SIGTERM then SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from core import runs
from core.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from core.config import RunConfig

JOB_FILE = "job.json"


def start(run_dir: Path) -> int:
    """Start (or resume) the run's worker process (detached, see core.launch); returns its pid."""
    run_dir = Path(run_dir).resolve()
    if is_alive(run_dir) and not _exited(run_dir):
        raise runs.RunError("This run is already running.")
    other = None if is_alive(run_dir) else trainer_pid(run_dir)
    if other is not None:
        raise runs.RunError(f"This run is training in another process (pid {other}, e.g. `transfer-studio train`); "
                            "stop it there first.")
    runs.clear_stop(run_dir)
    # a command-line process that trained it before is not its trainer now (`_command_line_gone` would read the
    # queued run, whose worker has no job record yet, as that process's crash)
    runs.write_status(run_dir, state="queued", message="Starting…", queued_at=time.time(), pid=None, pid_created=None)
    out = subprocess.run([sys.executable, "-m", "core.launch", str(run_dir)], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=60, check=False)
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        runs.write_status(run_dir, state="failed", message=f"Could not start the training process: {out.stderr[-300:]}")
        raise runs.RunError("Could not start the training process.")
    pid = int(out.stdout.strip())
    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:  # it already ended (e.g. a failure at start-up): state() reports it
        created = 0.0
    (run_dir / JOB_FILE).write_text(json.dumps({"pid": pid, "create_time": created, "started": time.time()}))
    return pid


def _exited(run_dir: Path, timeout: float = 15.0) -> bool:
    """A worker that has written a final status (stopped, failed...) is only exiting: wait until it is gone, so a
    Resume pressed right away starts instead of being refused. False when it is really still working."""
    if runs.read_status(run_dir).get("state") not in runs.FINAL_STATES:
        return False
    end = time.time() + timeout
    while is_alive(run_dir):
        if time.time() > end:
            return False
        time.sleep(0.1)
    return True


def _process(run_dir: Path) -> psutil.Process | None:
    try:
        job = json.loads((Path(run_dir) / JOB_FILE).read_text())
        proc = psutil.Process(job["pid"])
        if abs(proc.create_time() - job["create_time"]) > 1 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (OSError, ValueError, KeyError, psutil.Error):
        return None


def seconds_since_start(run_dir: Path, until: float) -> float | None:
    """Seconds from the job's start (the user's click, the worker's own start-up included) to ``until``; None when
    the run has no job record."""
    try:
        started = float(json.loads((Path(run_dir) / JOB_FILE).read_text())["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return max(0.0, until - started)


def is_alive(run_dir: Path) -> bool:
    return _process(run_dir) is not None


def _same_training(config: dict, wanted: dict) -> bool:
    """Two configs train the same (names aside; a fit of "auto" matches the fit a run settled on when it began)."""
    a = {k: v for k, v in config.items() if k != "name"}
    b = {k: v for k, v in wanted.items() if k != "name"}
    if (b.get("train") or {}).get("image_fit") == "auto":
        a["train"] = {k: v for k, v in (a.get("train") or {}).items() if k != "image_fit"}
        b["train"] = {k: v for k, v in b["train"].items() if k != "image_fit"}
    return a == b


def active_twin(config: RunConfig, extras: Mapping[str, Any] | None = None) -> Path | None:
    """A queued or training run that trains just as `config` would (its photos' manifest also holding `extras`, e.g.
    a face gallery's choices), or None. Starting `config` again would only repeat that run: a double click on
    Start, or a Start pressed again after a reload."""
    wanted = json.loads(json.dumps(config.to_dict()))  # as config.json reads back (tuples become lists)
    extras = json.loads(json.dumps(dict(extras or {})))
    for run_dir in runs.list_runs():  # the status first: most runs have ended, and their config is not read
        if runs.read_status(run_dir).get("state") not in runs.ACTIVE_STATES or \
                state(run_dir).get("state") not in runs.ACTIVE_STATES:  # a dead worker's run reads as crashed
            continue
        if not _same_training(runs.read_json_config(run_dir), wanted):  # the task is part of the config
            continue
        try:
            manifest = runs.load_dataset(run_dir) if extras else {}
        except runs.RunError:
            continue
        if all(manifest.get(k) == v for k, v in extras.items()):
            return run_dir
    return None


def trainer_pid(run_dir: Path) -> int | None:
    """The live process, other than this one, that trains this run: the app's worker, or a `transfer-studio train`
    process (which writes its pid into status.json); None when no other process does."""
    proc = _process(run_dir)
    if proc is not None:
        return proc.pid
    status = runs.read_status(run_dir)
    if status.get("state") not in runs.ACTIVE_STATES or not status.get("pid") or not status.get("pid_created"):
        return None
    try:
        proc = psutil.Process(int(status["pid"]))
        if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE or \
                abs(proc.create_time() - float(status["pid_created"])) > 1:
            return None  # this process, ended, or the pid is another process's now
        return proc.pid
    except (OSError, ValueError, TypeError, psutil.Error):
        return None


def state(run_dir: Path) -> dict:
    """The run's status; a run that says it is active but has no live worker is marked 'crashed' with a reason."""
    status = runs.read_status(run_dir)
    if _command_line_gone(run_dir, status):  # `transfer-studio train` killed (kill -9, a closed terminal)
        return runs.write_status(run_dir, state="crashed", ended=time.time(),
                                 message="The command-line process that trained it ended unexpectedly.")
    if status.get("state") in runs.ACTIVE_STATES and (Path(run_dir) / JOB_FILE).exists() and not is_alive(run_dir):
        time.sleep(0.2)  # the worker may be writing its last status
        status = runs.read_status(run_dir)
        if status.get("state") in runs.ACTIVE_STATES:
            tail = _log_tail(run_dir)
            status = runs.write_status(run_dir, state="crashed", ended=time.time(),
                                       message="The training process ended unexpectedly" + (f": {tail}" if tail
                                                                                            else "."))
    return status


def _command_line_gone(run_dir: Path, status: dict) -> bool:
    """True when a run says a command-line process trains it (no app worker) and that process is gone."""
    if status.get("state") not in runs.ACTIVE_STATES or (Path(run_dir) / JOB_FILE).exists() or \
            not status.get("pid_created") or status.get("pid") == os.getpid():
        return False
    if trainer_pid(run_dir) is not None:
        return False
    time.sleep(0.2)  # it may be writing its last status
    return runs.read_status(run_dir).get("state") in runs.ACTIVE_STATES


def _log_tail(run_dir: Path, n: int = 400) -> str:
    try:
        text = (Path(run_dir) / "worker.log").read_text(errors="replace").strip()
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][-n:] if lines else ""


def stop(run_dir: Path) -> None:
    """Ask the worker to finish its batch, save and stop."""
    runs.request_stop(run_dir)
    if runs.read_status(run_dir).get("state") in ("running", "queued"):
        runs.write_status(run_dir, state="stopping", message="Stopping after this batch…")


def cancel(run_dir: Path, grace: float = 1.5) -> None:
    """End the worker now: SIGTERM, then SIGKILL after `grace` seconds. The last checkpoint stays. A run that a
    `transfer-studio train` process trains ends that process (only it: not the shell's pipeline around it)."""
    proc = _process(run_dir)
    if proc is not None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except psutil.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(2)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    elif (pid := trainer_pid(run_dir)) is not None:
        _end(pid, grace)
    if runs.read_status(run_dir).get("state") in runs.ACTIVE_STATES:
        runs.write_status(run_dir, state="cancelled", message="Cancelled.", ended=time.time())


def _end(pid: int, grace: float) -> None:
    """SIGTERM one process, SIGKILL it when it is still there after `grace` seconds."""
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(grace)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(2)
    except psutil.NoSuchProcess:
        pass


def queue_position(run_dir: Path) -> int | None:
    """1-based place among queued runs (by time queued), or None when not queued."""
    me = runs.read_status(run_dir)
    if me.get("state") != "queued":
        return None
    mine = me.get("queued_at", 0)
    others = [runs.read_status(p) for p in runs.list_runs(Path(run_dir).parent)]
    return 1 + sum(1 for s in others if s.get("state") == "queued" and s.get("queued_at", 0) < mine)
