"""Paths and machine settings. Environment variables override the defaults; tests point them at tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TRANSFER_STUDIO_HOME"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The one folder under which the app writes everything (datasets, runs, caches, exports, user weights)."""
    env = os.environ.get(HOME_ENV)
    if env:
        root = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        root = Path(base) / "transfer-studio"
    root.mkdir(parents=True, exist_ok=True)
    return root


def subdir(name: str) -> Path:
    """A named folder under the data root (created on demand)."""
    path = data_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def datasets_root() -> Path:
    return subdir("datasets")


def runs_root() -> Path:
    """Where runs live: TRANSFER_STUDIO_RUNS if set, else `<data root>/runs`."""
    env = os.environ.get("TRANSFER_STUDIO_RUNS")
    if env:
        Path(env).mkdir(parents=True, exist_ok=True)
        return Path(env)
    return subdir("runs")


def cache_root() -> Path:
    return subdir("cache")


def weights_root() -> Path:
    return subdir("weights")


def sample_data_root() -> Path:
    """Sample datasets made by the setup step (from scikit-image's CC0 images)."""
    return Path(os.environ.get("TRANSFER_STUDIO_SAMPLES", PROJECT_ROOT / "sample_data"))


def cpu_threads() -> int:
    """Compute threads for torch on the CPU: every core this process may use (override TRANSFER_STUDIO_THREADS)."""
    env = os.environ.get("TRANSFER_STUDIO_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
