"""Shared test setup: every test session writes under its own tmp data root, never the user's."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"

# Before any core import reads it: the app's data root for this test session.
SESSION_HOME = tempfile.mkdtemp(prefix="ts-test-home-")
os.environ["TRANSFER_STUDIO_HOME"] = SESSION_HOME


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:  # noqa: ARG001
    """Remove the session's data root (runs, caches, datasets made by the tests)."""
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty data root for one test."""
    root = tmp_path / "home"
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(root))
    return root


@pytest.fixture(scope="session")
def sample_textures() -> Path:
    """The sample textures dataset (made by setup; made here if missing)."""
    from core.sample_data import ensure_samples
    from core.settings import sample_data_root

    ensure_samples(sample_data_root())
    return sample_data_root() / "textures"


def shared_dataset(name: str) -> Path:
    """A folder of ../shared/datasets, or skip the test when it is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"../shared/datasets/{name} is not on this machine")
    return path
