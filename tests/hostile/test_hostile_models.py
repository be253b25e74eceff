"""Pickles in disguise: a payload that creates a sentinel file when unpickled, saved as .pt .pth .ckpt .bin
.safetensors .onnx in three forms (plain pickle, torch.save zip, FRAME-first pickle that passes the safetensors
header-length sniff), handed to every loader of the app: zoo user weights, export loading, the predictor (export and
run), a run's own checkpoint and best weights, and the image import. None may run it. Complements
tests/test_export.py and tests/test_zoo.py."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from core import export, inference, runs, zoo
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.data import store
from core.data.validate import ValidationConfig
from tests.hostile.corpus import SUFFIXES, pickle_payloads

REFUSALS = (zoo.ZooError, export.ExportError, inference.PredictError, runs.RunError, SafetensorError)


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    return tmp_path / "PAYLOAD_RAN"


def test_the_payloads_are_live(sentinel: Path) -> None:
    """Control: each form really runs its payload when unpickled the unsafe way."""
    for kind, data in pickle_payloads(sentinel).items():
        if kind == "torch-zip":
            torch.load(io.BytesIO(data), weights_only=False)
        else:
            pickle.loads(data)
        assert sentinel.exists(), kind
        sentinel.unlink()


def _run_with(tmp_path: Path, payload: bytes, where: str) -> Path:
    """A run folder whose checkpoints/<where> is the payload (the manifest even vouches for it)."""
    cfg = RunConfig("test_resnet", "unused", FreezeConfig("head"), TrainConfig(epochs=1, device="cpu"),
                    pretrained=False)
    run_dir = runs.create_run(cfg, {"classes": ["a", "b"], "items": []}, tmp_path / "runs")
    ckpt = run_dir / "checkpoints"
    (ckpt / where).write_bytes(payload)
    if where == "last.pt":
        digest = hashlib.sha256(payload).hexdigest()
        (ckpt / "manifest.json").write_text(json.dumps({"last": {"file": "last.pt", "sha256": digest, "step": 1}}))
    else:
        (ckpt / "best.json").write_text(json.dumps({"epoch": 1, "classes": ["a", "b"]}))
    return run_dir


def _refused(call, what: str) -> str:
    with pytest.raises(REFUSALS) as info:
        call()
    assert str(info.value), what
    return type(info.value).__name__


def test_no_loader_of_the_app_runs_a_disguised_pickle(tmp_path: Path, sentinel: Path, home: Path) -> None:
    refusals = 0
    for kind, payload in pickle_payloads(sentinel).items():
        for suffix in SUFFIXES:
            case = tmp_path / f"{kind}{suffix}"
            case.mkdir()
            lone = case / f"model{suffix}"
            lone.write_bytes(payload)
            _refused(lambda p=lone: zoo.register_user_weights(p, "test_resnet", "evil"), f"zoo {lone}")
            _refused(lambda p=lone: zoo.validate_user_weights(p, "test_resnet"), f"zoo check {lone}")
            _refused(lambda p=lone: export.load_export(p), f"export {lone}")
            _refused(lambda p=lone: inference.load_predictor(p), f"predictor {lone}")
            folder = case / "export"  # an export folder whose model file is the payload
            folder.mkdir()
            for name in {f"model{suffix}", "model.safetensors"}:
                (folder / name).write_bytes(payload)
            (folder / "manifest.json").write_text(json.dumps({"format": "transfer-studio-export", "files": {}}))
            _refused(lambda p=folder: inference.load_predictor(p), f"predictor {folder}")
            zipped = case / "upload.zip"
            with zipfile.ZipFile(zipped, "w") as zf:
                for name in {f"export/model{suffix}", "export/model.safetensors"}:
                    zf.writestr(name, payload)
            _refused(lambda p=zipped: export.load_export(p), f"export {zipped}")
            refusals += 6
        # a run folder's own files replaced by the payload
        run_dir = _run_with(tmp_path / f"{kind}-ckpt", payload, "last.pt")
        state, skipped = runs.load_checkpoint(run_dir)
        assert state is None and skipped and "last.pt" in skipped[0], skipped
        run_dir = _run_with(tmp_path / f"{kind}-best", payload, "best.safetensors")
        _refused(lambda r=run_dir: runs.load_weights(r), f"weights {run_dir}")
        _refused(lambda r=run_dir: inference.load_predictor(r), f"predictor {run_dir}")
        refusals += 3
        # uploaded as photos: rejected as images, never opened as models
        result = store.import_files([(f"photo{s}", payload, "a") for s in (*SUFFIXES, ".jpg")]
                                    + [("ok1.jpg", _jpeg(1), "a"), ("ok2.jpg", _jpeg(2), "b")], f"pickles {kind}",
                                    config=ValidationConfig(workers=0))
        assert result.imported == 2 and len(result.skipped) == len(SUFFIXES) + 1
        refusals += len(SUFFIXES) + 1
        assert not sentinel.exists(), kind
    assert not sentinel.exists()
    print(f"\n[hostile] {refusals} attempts to load a disguised pickle (3 forms x {len(SUFFIXES)} suffixes through "
          "10 entry points): all refused, 0 payloads ran")


def _jpeg(seed: int) -> bytes:
    from tests.data_fixtures import image_bytes

    return image_bytes(seed, "JPEG", (64, 64))
