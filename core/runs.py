"""Run store: one folder per run, the contract between the training worker and the UI/CLI.

<runs root>/<run id>/
  config.json        RunConfig (what to reproduce)
  dataset.json       classes and the exact split manifest (absolute file paths, label, split)
  events.jsonl       append-only event log (one JSON object per line)
  status.json        current state, written atomically
  meta.json          name and note the user gave on the Runs page (the name wins over config.json's)
  checkpoints/       last.pt (resume), best.safetensors + best.json (best weights), manifest.json
  exports/           exported models
  STOP               present = stop requested (the worker finishes its batch, saves and stops)
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from core.config import RunConfig
from core.settings import runs_root
from core.storage import read_json, write_atomic, write_json_atomic

if TYPE_CHECKING:  # torch is imported where weights are read or written: listing runs needs none (~2 s)
    import torch

ACTIVE_STATES = ("queued", "running", "stopping")
FINAL_STATES = ("completed", "stopped", "failed", "crashed", "cancelled")


class RunError(Exception):
    """A run folder that cannot be used as asked; the message says why."""


def new_run_id() -> str:
    """Sortable by creation time, unguessable by the random part."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(6)


_RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{12}$")


def is_run_id(text: str) -> bool:
    """True for a name `new_run_id` could have made (so never a path)."""
    return bool(_RUN_ID.match(text))


def create_run(config: RunConfig, dataset: dict, runs_dir: Path | None = None) -> Path:
    """Make a run folder with its config, dataset manifest and a 'created' status."""
    root = Path(runs_dir) if runs_dir else runs_root()
    run_dir = root / new_run_id()
    (run_dir / "checkpoints").mkdir(parents=True)
    write_json_atomic(run_dir / "config.json", config.to_dict())
    write_json_atomic(run_dir / "dataset.json", dataset)
    write_status(run_dir, state="created", created=time.time(), message="Ready to train.")
    return run_dir


def save_config(run_dir: Path, config: RunConfig) -> None:
    """Rewrite the run's config.json (e.g. with a setting resolved when training started)."""
    write_json_atomic(Path(run_dir) / "config.json", config.to_dict())


def load_config(run_dir: Path) -> RunConfig:
    data = read_json(Path(run_dir) / "config.json")
    if data is None:
        raise RunError(f"{run_dir} is not a run folder (no readable config.json).")
    return RunConfig.from_dict(data)


def read_json_config(run_dir: Path) -> dict:
    """config.json as a plain dict ({} when unreadable)."""
    return read_json(Path(run_dir) / "config.json", {}) or {}


def display_name(run_dir: Path, fallback: str | None = None) -> str:
    """The run's name as the user last gave it: meta.json's (a rename on the Runs page), else config.json's, else
    `fallback` (the run id when not given)."""
    run_dir = Path(run_dir)
    meta = read_json(run_dir / "meta.json", {}) or {}
    name = str(meta.get("name") or "").strip() or str(read_json_config(run_dir).get("name") or "").strip()
    return name or (run_dir.name if fallback is None else fallback)


def load_dataset(run_dir: Path) -> dict:
    data = read_json(Path(run_dir) / "dataset.json")
    if data is None:
        raise RunError(f"{run_dir} has no readable dataset.json.")
    return data


def read_status(run_dir: Path) -> dict:
    return read_json(Path(run_dir) / "status.json", {}) or {}


def this_process() -> dict[str, float]:
    """Status fields naming the process that trains a run: its pid and start time (a pid alone may be another
    process's after the first has died)."""
    import psutil

    return {"pid": os.getpid(), "pid_created": psutil.Process().create_time()}


def write_status(run_dir: Path, **fields: Any) -> dict:
    """Merge `fields` into status.json (atomic)."""
    status = read_status(run_dir)
    status.update(fields, updated=time.time())
    write_json_atomic(Path(run_dir) / "status.json", status)
    return status


def append_event(run_dir: Path, event: dict) -> None:
    """Append one event line (one write call, so concurrent readers never see half a line as complete)."""
    line = json.dumps({"t": round(time.time(), 3), **event}, default=str) + "\n"
    with open(Path(run_dir) / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write(line)


def read_events(run_dir: Path, types: tuple[str, ...] | None = None) -> list[dict]:
    """All complete events (a torn last line from a crash is ignored)."""
    path = Path(run_dir) / "events.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if types is None or event.get("type") in types:
            out.append(event)
    return out


def request_stop(run_dir: Path) -> None:
    (Path(run_dir) / "STOP").write_text(str(time.time()))


def stop_requested(run_dir: Path) -> bool:
    return (Path(run_dir) / "STOP").exists()


def clear_stop(run_dir: Path) -> None:
    (Path(run_dir) / "STOP").unlink(missing_ok=True)


def list_runs(runs_dir: Path | None = None, task: str | None = None) -> list[Path]:
    """Run folders, newest first; only those of `task` when given."""
    root = Path(runs_dir) if runs_dir else runs_root()
    if not root.is_dir():
        return []
    found = sorted((p for p in root.iterdir() if (p / "config.json").is_file()), reverse=True)
    return found if task is None else [p for p in found if run_task(p) == task]


def run_task(run_dir: Path) -> str:
    """The task a run trains (runs from before tasks existed are classification)."""
    return read_json_config(run_dir).get("task") or "classification"


# --- checkpoints ------------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(run_dir: Path) -> dict:
    return read_json(run_dir / "checkpoints" / "manifest.json", {}) or {}


def save_checkpoint(run_dir: Path, state: dict, name: str = "last") -> Path:
    """Write a resumable checkpoint atomically, then record it (with its sha256) in the manifest.

    The previous complete checkpoint is kept as `<name>.prev.pt` until the new one is recorded. A write that fails
    (full disk, file size limit, read-only folder) puts the previous checkpoint back and raises RunError saying so.
    Temporary files left by a worker killed in the middle of a save are removed first."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    path, prev = ckpt_dir / f"{name}.pt", ckpt_dir / f"{name}.prev.pt"
    for pattern in (f".{name}.pt.*.tmp", ".manifest.json.*.tmp"):  # temp files of a save that was killed
        for stale in ckpt_dir.glob(pattern):
            stale.unlink(missing_ok=True)
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    manifest = _manifest(Path(run_dir))
    before = manifest.get(name)
    if path.exists():
        # After a save killed between its rename and the manifest, last.pt is newer than the record: prev is the
        # recorded checkpoint then, and it stays until this save is recorded.
        unrecorded = prev.exists() and not (before and _sha256(path) == before.get("sha256"))
        if not unrecorded:
            os.replace(path, prev)
    try:
        write_atomic(path, lambda fh: fh.write(buf.getbuffer()), before_replace=_test_pause)
        manifest[name] = {"file": path.name, "sha256": hashlib.sha256(buf.getbuffer()).hexdigest(),
                          "epoch": state.get("epoch"), "pos": state.get("pos"), "step": state.get("step"),
                          "saved": time.time()}
        write_json_atomic(ckpt_dir / "manifest.json", manifest)
    except OSError as err:
        if prev.exists():
            os.replace(prev, path)  # the previous checkpoint is the newest again, as the manifest still says
        kept = (f"the previous checkpoint (step {before.get('step')}) is kept" if before and path.exists()
                else "there is no earlier checkpoint")
        raise RunError(f"Could not save the checkpoint: {_write_problem(err)}; {kept}. Free some disk space, "
                       "then resume.") from err
    prev.unlink(missing_ok=True)
    return path


#: Tests only (tests/test_faults.py): seconds to pause between "temporary checkpoint complete" and its rename into
#: place, so a kill -9 can land inside that window. Unset (no pause) in normal use.
PAUSE_ENV = "TRANSFER_STUDIO_TEST_CHECKPOINT_PAUSE_S"


def _test_pause() -> None:
    try:
        seconds = float(os.environ.get(PAUSE_ENV) or 0)
    except ValueError:
        return
    if seconds > 0:
        time.sleep(seconds)


def _write_problem(err: Exception) -> str:
    """Plain English for a failed write (full disk, size limit, read-only folder...), with the system's words."""
    code = getattr(err, "errno", None)
    plain = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
             errno.EFBIG: "the file is larger than this system allows", errno.EROFS: "the disk is read-only",
             errno.EACCES: "the run folder is not writable", errno.EPERM: "the run folder is not writable"}
    detail = getattr(err, "strerror", None) or str(err)
    return f"{plain.get(code, 'the file could not be written')} ({detail})"


def load_checkpoint(run_dir: Path, name: str = "last") -> tuple[dict | None, list[str]]:
    """The newest complete checkpoint (checked against the manifest), and the files it had to skip, with why."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    import torch

    entry = _manifest(Path(run_dir)).get(name)
    skipped: list[str] = []
    for candidate in (ckpt_dir / f"{name}.pt", ckpt_dir / f"{name}.prev.pt"):
        if not candidate.exists():
            continue
        if entry and candidate.name == entry["file"] and _sha256(candidate) != entry["sha256"]:
            skipped.append(f"{candidate.name}: incomplete or damaged (checksum differs)")
            continue
        try:
            return torch.load(candidate, map_location="cpu", weights_only=True), skipped
        except Exception as err:  # a torn or foreign file: fall back to the previous one
            skipped.append(f"{candidate.name}: unreadable ({type(err).__name__})")
    return None, skipped


def save_weights(run_dir: Path, state_dict: dict[str, torch.Tensor], meta: dict, name: str = "best") -> Path:
    """Model weights as safetensors (+ a JSON sidecar with the metrics), written atomically.

    A write that fails (full disk...) leaves the previous weights in place and raises RunError saying so."""
    from safetensors.torch import save_file

    ckpt_dir = Path(run_dir) / "checkpoints"
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    tmp = ckpt_dir / f".{name}.safetensors.tmp"
    for stale in ckpt_dir.glob(f".{name}.json.*.tmp"):  # left by a save that was killed
        stale.unlink(missing_ok=True)
    try:
        save_file(tensors, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, ckpt_dir / f"{name}.safetensors")
        write_json_atomic(ckpt_dir / f"{name}.json", meta)
    except (OSError, SafetensorError) as err:
        tmp.unlink(missing_ok=True)
        problem = _write_problem(err if isinstance(err, OSError) else OSError(_errno_in(str(err)), str(err)))
        kept = (f"the previous {name} weights are kept" if (ckpt_dir / f"{name}.safetensors").exists()
                else f"no {name} weights were saved before")
        raise RunError(f"Could not save the {name} weights: {problem}; {kept}. Free some disk space, then "
                       "resume.") from err
    return ckpt_dir / f"{name}.safetensors"


def _errno_in(text: str) -> int | None:
    """The errno in a library's message such as '... File too large (os error 27)', if any."""
    found = re.search(r"os error (\d+)", text)
    return int(found.group(1)) if found else None


def load_weights(run_dir: Path, name: str = "best") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(run_dir) / "checkpoints" / f"{name}.safetensors"
    if not path.exists():
        raise RunError(f"This run has no saved {name} weights yet.")
    return load_file(str(path))
