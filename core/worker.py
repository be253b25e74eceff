"""The training worker: `python -m core.worker RUN_DIR` trains one run in its own process.

It waits its turn for the device (a file lock: one job per device; the OS frees it if the worker dies), records
events and status in the run folder, stops cleanly when the STOP file appears, and marks the run cancelled on
SIGTERM. The app only reads the run folder."""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from core import runs
from core.device import configure_threads, keep_freed_memory
from core.settings import subdir


def _lock_path(device: str) -> Path:
    return subdir("locks") / f"{device}.lock"


def _wait_for_device(run_dir: Path, device: str):
    """Block until this worker holds the device lock; while waiting, status says 'queued'."""
    fh = open(_lock_path(device), "w")  # noqa: SIM115 - held for the worker's life
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fh
    except BlockingIOError:
        runs.write_status(run_dir, state="queued", message="Waiting for the running job to finish.",
                          queued_at=runs.read_status(run_dir).get("queued_at", time.time()))
    while True:
        if runs.stop_requested(run_dir):
            runs.write_status(run_dir, state="stopped", message="Stopped before it started.")
            raise SystemExit(0)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fh
        except BlockingIOError:
            time.sleep(0.5)


def _on_sigterm(run_dir: Path):
    def handler(signum, frame):  # noqa: ARG001
        runs.write_status(run_dir, state="cancelled", message="Cancelled.", ended=time.time())
        os._exit(143)
    return handler


def lower_priority(niceness: int | None = None) -> int:
    """Give the app's own process the CPU first: training yields for the moments the UI needs a core (a page
    switch, a widget) and loses almost nothing while the UI is idle. TRANSFER_STUDIO_WORKER_NICE overrides the 5."""
    if niceness is None:
        raw = os.environ.get("TRANSFER_STUDIO_WORKER_NICE", "5")
        niceness = int(raw) if raw.strip().lstrip("-").isdigit() else 5  # a typo never stops a run
    try:
        return os.nice(max(0, niceness))
    except OSError:  # not allowed here: run at normal priority
        return os.nice(0)


def main(argv: list[str]) -> int:
    run_dir = Path(argv[0]).resolve()
    signal.signal(signal.SIGTERM, _on_sigterm(run_dir))
    lower_priority()
    configure_threads()
    keep_freed_memory()
    config = runs.load_config(run_dir)
    device = "cuda" if config.train.device in ("auto", "cuda") and _cuda() else "cpu"
    lock = _wait_for_device(run_dir, device)
    runs.write_status(run_dir, state="running", **runs.this_process(), message="Starting…", started=time.time())
    from core.quick import train_quick
    from core.recorder import RunRecorder
    from core.tasks import get_task

    try:
        if config.quick:
            train_quick(run_dir, [RunRecorder(run_dir)])
        elif config.train.nproc > 1 and config.task == "classification":
            from core.distributed import LaunchSpec, run_distributed

            run_distributed(run_dir, LaunchSpec(nproc=config.train.nproc, device=config.train.device))
        else:
            get_task(config.task).fit(run_dir, [RunRecorder(run_dir)],
                                      should_stop=lambda: runs.stop_requested(run_dir))
    except Exception as err:  # the worker reports any crash in the run folder, never to the app's process
        said = str(err) if isinstance(err, runs.RunError) else f"{type(err).__name__}: {err}"
        runs.write_status(run_dir, state="failed", message=f"Training failed: {said}", ended=time.time())
        runs.append_event(run_dir, {"type": "fit_failed", "reason": f"{type(err).__name__}: {err}",
                                    "traceback": traceback.format_exc()})
        return 1
    finally:
        runs.clear_stop(run_dir)
        lock.close()
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
