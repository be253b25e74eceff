"""Built-in sample datasets in the app's store: imported once from the sample folder made by setup, then reused.

A stored sample is recognised by its source, ``{"kind": "sample", "name": <name>, "version": <sample version>}``,
so a second click (another session, or after a restart) finds the same dataset instead of importing it again.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from core.data.store import DatasetError, import_folder, list_datasets, load_dataset
from core.data.validate import ValidationConfig
from core.settings import datasets_root, sample_data_root

SAMPLE_TITLES = {"textures": "Sample: textures (brick, grass, gravel)"}


def sample_folder(name: str = "textures") -> Path:
    """The sample's folder under ``sample_data_root()`` (raises ``DatasetError`` when setup has not made it)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise DatasetError(f"unknown sample dataset {name!r}")
    folder = sample_data_root() / name
    if not folder.is_dir():
        raise DatasetError(f"the sample data '{name}' is not on this machine yet: run the setup command from the "
                           "README once (it makes sample_data/)")
    return folder


def sample_version() -> int:
    """The version stamp setup wrote with the samples (0 when unknown)."""
    try:
        return int(json.loads((sample_data_root() / "samples.json").read_text()).get("version", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def _source(name: str) -> dict:
    return {"kind": "sample", "name": name, "version": sample_version()}


def find_sample_dataset(name: str = "textures") -> str | None:
    """The id of the stored copy of sample ``name`` (current version), or None."""
    wanted = _source(name)
    for summary in list_datasets(task=None):
        try:
            ds = load_dataset(summary.id)
        except DatasetError:
            continue
        if {k: ds.source.get(k) for k in wanted} == wanted:
            return ds.id
    return None


@contextlib.contextmanager
def _sample_lock(name: str) -> Iterator[None]:
    """One import at a time per sample (two sessions clicking at once get the same dataset)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(datasets_root() / f".sample-{name}.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_sample_dataset(name: str = "textures", *, on_progress: Callable[[int, int], None] | None = None,
                          config: ValidationConfig | None = None) -> str:
    """Import the sample folder into the store once; return the stored dataset's id (the same id every time)."""
    folder = sample_folder(name)
    with _sample_lock(name):
        found = find_sample_dataset(name)
        if found:
            return found
        result = import_folder(folder, SAMPLE_TITLES.get(name, f"Sample: {name}"), config=config,
                               on_progress=on_progress, source=_source(name))
        return result.dataset.id
