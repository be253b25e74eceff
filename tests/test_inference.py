"""Prediction: the same tensors as training's eval path, top-k answers in batches, "not sure", runs and exports."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import runs, trainset, zoo
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.inference import NOT_SURE, PredictError, Predictor, load_predictor
from core.pipeline import build_cache, eval_batch, predict_input
from core.tasks import get_task
from tests.synthetic import make_colour_folders

CLASSES = ("red", "green", "blue")


def make_run(root: Path, model: str = "test_convnext", train: int = 4, val: int = 3, seed: int = 0) -> Path:
    """A run folder with random-init weights saved as its best weights (no training: fast)."""
    data = make_colour_folders(root / "data", train=train, val=val)
    cfg = RunConfig(model, str(data), FreezeConfig("head"),
                    TrainConfig(epochs=1, batch_size=4, precision="fp32", device="cpu"), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), root / "runs")
    torch.manual_seed(seed)
    net = get_task("classification").build_model(model, len(CLASSES), pretrained=False)
    runs.save_weights(run_dir, net.state_dict(), {"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.0,
                                                  "classes": sorted(CLASSES)})
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("inference"))


def _odd_images(folder: Path) -> list[Path]:
    """A wide RGBA PNG, a tall JPEG with an EXIF rotation and a small grey PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rgba = Image.fromarray(rng.integers(0, 256, (50, 91, 4), dtype=np.uint8), "RGBA")
    rgba.save(folder / "wide.png")
    jpg = Image.fromarray(rng.integers(0, 256, (120, 70, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    jpg.save(folder / "tall.jpg", exif=exif.tobytes(), quality=90)
    Image.fromarray(rng.integers(0, 256, (33, 40), dtype=np.uint8), "L").save(folder / "grey.png")
    return [folder / "wide.png", folder / "tall.jpg", folder / "grey.png"]


def test_predict_time_tensors_equal_the_training_eval_path(tmp_path: Path, run_dir: Path) -> None:
    predictor = load_predictor(run_dir)
    prep = predictor.prep
    files = _odd_images(tmp_path / "odd")
    cache = build_cache([str(f) for f in files], prep)  # what training caches and validation reads
    assert not cache.failed
    for i, f in enumerate(files):
        trained = eval_batch(cache.squares[[i]], prep, channels_last=True)  # the engine's evaluate_indices input
        predicted = predict_input(str(f), prep)
        assert torch.equal(trained, predicted), f.name
        assert torch.equal(predictor.inputs([str(f)]), trained)
        assert torch.equal(predictor.inputs([f.read_bytes()]), trained)  # uploads (bytes) too
    assert predicted.shape == (1, 3, prep.size, prep.size)


def test_predict_gives_top_k_class_names_in_batches(run_dir: Path) -> None:
    predictor = load_predictor(run_dir)
    assert predictor.origin == "run" and predictor.classes == sorted(CLASSES)
    assert not predictor.model.training
    conv = next(p for p in predictor.model.parameters() if p.ndim == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and conv.dtype == torch.float32
    files = sorted(str(p) for p in (Path(runs.load_config(run_dir).dataset) / "val").rglob("*.png"))
    one_batch = predictor.predict(files, top_k=2, batch_size=64)
    small_batches = predictor.predict(files, top_k=2, batch_size=2)
    assert len(one_batch) == len(files)
    for a, b, f in zip(one_batch, small_batches, files, strict=True):
        assert a.name == f and a.ok and a.label in CLASSES and a.predicted == a.label
        assert len(a.top_k) == 2 and a.top_k[0][1] >= a.top_k[1][1] and a.confidence == a.top_k[0][1]
        assert a.top_k[0][0] == b.top_k[0][0] and a.top_k[0][1] == pytest.approx(b.top_k[0][1], abs=1e-5)
        assert a.seconds > 0
    # the answer is the model's: softmax of the logits of the validation input
    logits = predictor.logits(predictor.inputs(files[:1]))
    probs = torch.softmax(logits, 1)[0]
    assert one_batch[0].top_k[0] == (predictor.classes[int(probs.argmax())], pytest.approx(float(probs.max()),
                                                                                          abs=1e-6))
    assert len(predictor.predict(files[:1], top_k=10)[0].top_k) == 3  # never more than the classes
    with pytest.raises(PredictError):
        predictor.predict(files[:1], top_k=0)


def test_threshold_answers_not_sure_but_keeps_the_raw_top_k(run_dir: Path) -> None:
    files = sorted(str(p) for p in (Path(runs.load_config(run_dir).dataset) / "val").rglob("*.png"))[:3]
    unsure = Predictor.from_run(run_dir, threshold=0.99).predict(files, top_k=3)
    sure = Predictor.from_run(run_dir, threshold=None).predict(files, top_k=3)
    for u, s in zip(unsure, sure, strict=True):
        assert u.label == NOT_SURE and u.unsure and u.top_k == s.top_k and u.predicted == s.label
        assert s.label in CLASSES and not s.unsure
        assert u.to_dict()["top_k"][0]["label"] == s.label
    with pytest.raises(PredictError, match="between 0 and 1"):
        Predictor.from_run(run_dir, threshold=1.5)


def test_unreadable_images_are_named_and_the_others_answered(run_dir: Path, tmp_path: Path) -> None:
    good = next((Path(runs.load_config(run_dir).dataset) / "val").rglob("*.png"))
    (tmp_path / "notes.png").write_text("this is text, not a picture")
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (10, 200, 10)).save(buf, "PNG")
    preds = load_predictor(run_dir).predict([str(good), str(tmp_path / "notes.png"), buf.getvalue(),
                                             str(tmp_path / "missing.jpg")], top_k=1)
    assert [p.ok for p in preds] == [True, False, True, False]
    assert preds[1].name.endswith("notes.png") and preds[1].error and preds[1].label == ""
    assert preds[2].name == "image 3" and preds[2].label in CLASSES
    assert "cannot read" in preds[3].error


def test_load_predictor_detects_run_and_export_and_they_agree(run_dir: Path, tmp_path: Path) -> None:
    from core.export import export_run

    export_run(run_dir, "safetensors", tmp_path / "export")
    files = sorted(str(p) for p in (Path(runs.load_config(run_dir).dataset) / "val").rglob("*.png"))
    from_run = load_predictor(run_dir).predict(files, top_k=3)
    exported = load_predictor(tmp_path / "export")
    assert exported.origin == "export" and exported.classes == sorted(CLASSES)
    assert exported.prep == load_predictor(run_dir).prep
    for a, b in zip(from_run, exported.predict(files, top_k=3), strict=True):
        assert a.top_k == b.top_k
    with pytest.raises(PredictError, match="does not exist"):
        load_predictor(tmp_path / "nowhere")


def test_stored_threshold_applies_only_to_the_weights_it_was_chosen_for(tmp_path: Path) -> None:
    from core.evaluate import evaluate_run, load_evaluation, set_threshold

    run_dir = make_run(tmp_path)
    evaluate_run(run_dir, with_learning_curve=False)
    set_threshold(run_dir, 0.42)
    assert Predictor.from_run(run_dir).threshold == pytest.approx(0.42)
    net = get_task("classification").build_model("test_convnext", 3, pretrained=False)
    runs.save_weights(run_dir, net.state_dict(), {"epoch": 2})  # trained further: the evaluation is out of date
    assert load_evaluation(run_dir)["stale"] is True
    assert Predictor.from_run(run_dir).threshold is None


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_square_resamples_only_the_centre_box_and_matches_resize_then_crop(interpolation: str) -> None:
    """`square` resamples just the centre square's source box: the same picture as resizing the whole photo and
    cropping, within rounding, for landscape and portrait photos."""
    from PIL import Image

    from core.pipeline import Prep, square

    prep = Prep(56, 64, interpolation, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:150, 0:211]
    smooth = np.stack([xx * 255 // 211, yy * 255 // 150, (xx + yy) * 255 // 361], -1)
    photo = np.clip(smooth + rng.integers(-20, 20, smooth.shape), 0, 255).astype(np.uint8)
    for img in (Image.fromarray(photo), Image.fromarray(photo).transpose(Image.Transpose.ROTATE_90)):
        w, h = img.size
        scale = 64 / min(w, h)
        nw, nh = max(64, round(w * scale)), max(64, round(h * scale))
        resample = Image.Resampling.BILINEAR if interpolation == "bilinear" else Image.Resampling.BICUBIC
        left, top = (nw - 64) // 2, (nh - 64) // 2
        whole = np.asarray(img.resize((nw, nh), resample).crop((left, top, left + 64, top + 64)), dtype=int)
        got = square(img, prep)
        assert got.shape == (64, 64, 3) and got.dtype == np.uint8
        diff = np.abs(got.astype(int) - whole)
        assert diff.mean() < 0.05 and diff.max() <= 8, (diff.mean(), diff.max())


def test_cache_key_follows_how_squares_are_made() -> None:
    """Caches made by an older way of squaring photos are not reused (they differ by a level here and there): the
    key hashes the squaring version with the preprocessing and the files."""
    import hashlib

    from core import pipeline

    prep = pipeline.Prep(56, 64, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    h = hashlib.sha256(f"square v{pipeline.SQUARE_VERSION}|{prep.key()}".encode())
    h.update(b"/nonexistent/a.jpg|missing\n")
    assert pipeline._cache_key(["/nonexistent/a.jpg"], prep) == h.hexdigest()[:24]
    assert pipeline.SQUARE_VERSION >= 2


def test_predictions_run_through_a_folded_copy_and_leave_the_model_as_it_was() -> None:
    from core.device import plan_device
    from core.pipeline import Prep
    from tests.synthetic import model_with_batchnorm_statistics

    model = model_with_batchnorm_statistics("test_efficientnet", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prep = Prep(32, 36, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    predictor = Predictor(model, list(CLASSES), prep, plan_device("cpu", "fp32"))
    x = torch.randn(11, 3, 32, 32)  # more than one forward pass of the CPU's predict_batch (8)
    with torch.no_grad():
        expected = predictor.model(x)
    torch.testing.assert_close(predictor.logits(x), expected, atol=1e-4, rtol=1e-4)  # the same answers
    fast = predictor._fast  # made by the first prediction
    assert fast is not None and fast is predictor._forward_model()
    assert zoo.batchnorm_count(fast) < zoo.batchnorm_count(predictor.model)  # ... through folded layers
    assert not any(p.requires_grad for p in fast.parameters())
    assert zoo.batchnorm_count(predictor.model) == zoo.batchnorm_count(model_with_batchnorm_statistics(
        "test_efficientnet", num_classes=3))  # Grad-CAM and the export checks still see the model as built
    after = predictor.model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


def test_a_model_without_batchnorm_predicts_as_it_is() -> None:
    model = get_task("classification").build_model("test_vit", 3, pretrained=False)
    assert zoo.inference_copy(model, 32) is model and not model.training  # nothing to fold: no copy


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_a_refused_export_is_named_as_the_user_knows_it(tmp_path: Path) -> None:
    from core.export import ExportError

    stored = tmp_path / "4513051f279f1051.zip"  # the app's copy of an upload, named by its hash
    _zip(stored, {"model.onnx": b"onnx bytes", "manifest.json": b"{}", "predict_example.py": b""})
    with pytest.raises(ExportError) as refused:
        Predictor.from_export(stored, shown_name="cats onnx.zip")
    message = str(refused.value)
    assert message.startswith("cats onnx.zip is an ONNX export: it is for running the model outside this app.")
    assert "“safetensors” on Runs & export" in message and "4513051f" not in message
    _zip(stored, {"model.torchscript.pt": b"x", "manifest.json": b"{}"})
    with pytest.raises(ExportError, match="^cats.zip is a TorchScript export: it is for running the model outside"):
        Predictor.from_export(stored, shown_name="cats.zip")
    stored.write_bytes(b"not a zip")
    with pytest.raises(ExportError, match=r"^cats\.zip is not a readable zip file") as refused:
        Predictor.from_export(stored, shown_name="cats.zip\x00")
    assert "4513051f" not in str(refused.value)
    _zip(stored, {"model.onnx": b"onnx bytes", "manifest.json": b"{}"})
    with pytest.raises(ExportError, match="^4513051f279f1051.zip is an ONNX export"):  # no name given: the file's
        Predictor.from_export(stored)


def test_the_models_one_time_start_up_is_not_counted_as_a_photos_time(run_dir: Path, monkeypatch) -> None:
    """The first prediction of a freshly loaded model used to count its start-up (folding BatchNorm, the math
    library's setup: 1.4 s on the Test page) as the time of the first photos."""
    import time

    real = zoo.inference_copy

    def slow_copy(*args, **kwargs):
        time.sleep(0.5)  # a start-up cost, as on a busy CPU
        return real(*args, **kwargs)

    monkeypatch.setattr(zoo, "inference_copy", slow_copy)
    predictor = load_predictor(run_dir)
    answer = predictor.predict([_png_bytes()])[0]
    assert answer.ok and answer.seconds < 0.4, answer


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 200, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
