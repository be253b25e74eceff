"""One row per run, read from its folder only: the Runs page's table and `transfer-studio runs list` show the same
facts (name, task, photos, settings, state, best score, time)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from core import jobs, runs
from core.storage import read_json
from core.tasks import TITLES, USED_AS_IS

STORE_HASH = re.compile(r"[0-9a-f]{32}")  # a stored dataset's id


def stored_name(dataset: str) -> str | None:
    """A stored dataset's name; None for a folder path or a dataset deleted since."""
    from core.data.store import load_dataset

    try:
        return load_dataset(dataset).name
    except Exception:  # noqa: BLE001 - a folder path or a dataset deleted since
        return None


def recorded_source(run_dir: Path) -> dict:
    """What the run recorded about its photos (dataset.json's "source"); {} when unreadable."""
    try:
        return runs.load_dataset(Path(run_dir)).get("source") or {}
    except runs.RunError:
        return {}


def dataset_cell(dataset: str, stored: str | None, source: dict) -> str:
    """The photos a run trained on, as text: the stored dataset's name (`stored`); for one deleted since
    "(deleted) <the name the run recorded in `source`>"; a built-in sample ("sample:NAME") by its title; else the
    folder's name ("(folder gone) <name>" when it is no longer there)."""
    if stored is not None:
        return stored
    if dataset.startswith("sample:"):  # a built-in sample (read from its folder or its stored copy): never gone
        from core.data.samples import SAMPLE_TITLES

        sample = dataset.split(":", 1)[1]
        return str(source.get("name") or SAMPLE_TITLES.get(sample, f"Sample: {sample}"))
    if source.get("kind") in ("store", "stored") or STORE_HASH.fullmatch(dataset):
        return f"(deleted) {source['name']}" if source.get("name") else "(deleted)"
    if dataset and not Path(dataset).exists():  # a folder read directly, moved or deleted since
        return f"(folder gone) {Path(dataset).name or dataset}"
    return Path(dataset).name or dataset


def _dataset_cell(run_dir: Path, dataset: str) -> str:
    """`dataset_cell` read afresh (the Runs page passes its cached version)."""
    return dataset_cell(dataset, stored_name(dataset), recorded_source(run_dir))


def seconds_trained(run_dir: Path, status: dict) -> float:
    """Seconds spent training (all sessions): the status's total when the run wrote one at its end, else counted
    from its events (a run training now, cancelled or crashed writes none: it read 0; a resumed one kept the total
    of its stop)."""
    if status.get("seconds") is not None and status.get("state") not in runs.ACTIVE_STATES:
        return float(status["seconds"])
    from core.progress import training_seconds

    return training_seconds(run_dir)


def run_row(run_dir: Path, cell: Callable[[Path, str], str] = _dataset_cell) -> dict:
    """The run's row; `cell(run_dir, dataset)` writes its photos' cell (the Runs page passes a cached one). The
    state comes from `core.jobs.state` (a run whose process died reads "crashed")."""
    run_dir = Path(run_dir)
    cfg, status = runs.read_json_config(run_dir), runs.read_status(run_dir)
    meta = read_json(run_dir / "meta.json", {}) or {}
    train, quick = cfg.get("train", {}), bool(cfg.get("quick"))
    as_is = cfg.get("backbone") in USED_AS_IS  # a frozen face model: nothing was trained, nothing frozen by choice
    dataset = cell(run_dir, str(cfg.get("dataset") or ""))
    created = status.get("created") or run_dir.stat().st_mtime
    task = runs.run_task(run_dir)
    best = status.get("best_val_accuracy")
    return {"run": run_dir.name, "name": runs.display_name(run_dir),
            "task": task, "task_title": TITLES.get(task, task),
            "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(created)), "backbone": cfg.get("backbone"),
            "dataset": dataset,
            "freeze": "quick" if quick else "used as is" if as_is else cfg.get("freeze", {}).get("preset"),
            "pretrained": cfg.get("pretrained", True),
            # a quick model is one pass over cached features, a frozen face model no training: epochs, batch and lr
            # of the form do not apply
            "epochs": None if quick or as_is else train.get("epochs"),
            # done, beside the planned epochs: a stopped or cancelled run read as if it had trained them all
            "epochs_done": None if quick or as_is else status.get("epochs_done"),
            "batch": None if quick or as_is else train.get("batch_size"),
            "lr": "" if quick or as_is else f"{train['lr']:.3g}" if train.get("lr") else "auto",
            "status": jobs.state(run_dir).get("state", status.get("state")),
            # rounded as the Train page writes it (0.8125 → 0.812): a table's printf would show 0.813
            "best_val_accuracy": None if best is None else round(best, 3),
            "seconds": round(seconds_trained(run_dir, status), 1), "device": status.get("device", ""),
            "note": meta.get("note", "")}
