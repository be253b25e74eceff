"""Which runs were trained on a stored dataset, read from the runs' own folders.

A run names its dataset in ``<run>/config.json`` (``"dataset"``: a store id or a folder path) and keeps the exact
file list it trained on in ``<run>/dataset.json``. Only the small ``config.json``, ``meta.json`` and ``status.json``
are read here, with plain JSON (``core.runs`` loads torch, which the data package never needs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import runs_root

ACTIVE_STATES = ("queued", "running", "stopping")  # = core.runs.ACTIVE_STATES (a test keeps them equal)


@dataclass(frozen=True)
class RunUse:
    """A run trained on a dataset: its folder name, the name the user knows it by and its state as its status.json
    says (``core.jobs.state`` tells whether a run that says it trains still has a live process)."""

    run_id: str
    name: str
    state: str = ""

    @property
    def says_active(self) -> bool:
        """Queued, training or stopping, by its own status file."""
        return self.state in ACTIVE_STATES


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def runs_using(dataset_id: str, runs_dir: Path | None = None) -> list[RunUse]:
    """Runs whose config names ``dataset_id``, newest first (as ``core.runs.list_runs`` orders them). The name is
    the one the user gave on the Runs page, else the run's own, else its id (as ``core.runs.display_name``)."""
    root = Path(runs_dir) if runs_dir else runs_root()
    if not dataset_id or not root.is_dir():
        return []
    found = []
    for folder in sorted((p for p in root.iterdir() if (p / "config.json").is_file()), reverse=True):
        config = _read(folder / "config.json")
        if config.get("dataset") != dataset_id:
            continue
        meta = _read(folder / "meta.json")
        name = str(meta.get("name") or "").strip() or str(config.get("name") or "").strip() or folder.name
        found.append(RunUse(folder.name, name, str(_read(folder / "status.json").get("state") or "")))
    return found


def describe_runs(used: list[RunUse], shown: int = 3) -> str:
    """'2 runs ('a', 'b')' or '5 runs ('a', 'b', 'c' and 2 more)': plain text, for the caller to escape."""
    names = ", ".join(f"'{u.name}'" for u in used[:shown])
    more = f" and {len(used) - shown} more" if len(used) > shown else ""
    return f"{len(used)} run{'s' * (len(used) != 1)} ({names}{more})"
