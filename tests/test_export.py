"""Export: safetensors round trip bit-exact, ONNX and TorchScript within 1e-4 of PyTorch, a manifest that is checked
before anything is loaded, pickles refused without running them, and the command that reproduces a run."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shlex
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import runs, trainset
from core.config import FreezeConfig, RunConfig
from core.export import (
    FILES,
    ExportError,
    build_manifest,
    export_run,
    load_export,
    reproduce_command,
    validate_manifest,
    zip_export,
)
from core.inference import load_predictor
from core.pipeline import predict_input
from core.tasks import get_task
from tests.data_fixtures import IPHONE_ROTATED, example_module
from tests.synthetic import make_colour_folders

CLASSES = ("red", "green", "blue")


def make_run(root: Path, model: str = "test_convnext", train: int = 4, val: int = 3, init_seed: int = 0,
             pretrained: bool = False, freeze: FreezeConfig | None = None, **train_kw) -> Path:
    data = make_colour_folders(root / "data", train=train, val=val)
    # weights saved here without training: the fit a trained run's config holds ("auto" is settled by training)
    tc = {"epochs": 1, "batch_size": 4, "precision": "fp32", "device": "cpu", "image_fit": "crop", **train_kw}
    train_cfg = get_task("classification").default_train().with_choices(**tc)  # what the app starts from
    cfg = RunConfig(model, str(data), freeze or FreezeConfig("head"), train_cfg, pretrained=pretrained)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), root / "runs")
    torch.manual_seed(init_seed)
    net = get_task("classification").build_model(model, len(CLASSES), pretrained=pretrained)
    head = net.get_classifier()
    torch.nn.init.normal_(head.weight, std=0.05)  # a head that is not zero, so outputs differ per image
    runs.save_weights(run_dir, net.state_dict(), {"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.0})
    return run_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """One run exported in all three formats into one folder (ONNX export is the slow part: do it once)."""
    root = tmp_path_factory.mktemp("export")
    run_dir = make_run(root)
    folder = root / "out"
    results = {fmt: export_run(run_dir, fmt, folder, n_check=4) for fmt in ("safetensors", "onnx", "torchscript")}
    return run_dir, folder, results


def test_every_format_matches_pytorch_and_the_check_is_saved(exported) -> None:
    run_dir, folder, results = exported
    for fmt, res in results.items():
        assert res.ok, (fmt, res.check)
        assert res.check["max_abs_diff"] <= 1e-4 and res.check["top1_agreement"] == 1.0
        assert res.check["batch_sizes"] == [4, 1] and res.check["inputs"] == "4 validation images"
        assert (folder / FILES[fmt]).is_file()
    assert results["safetensors"].check["bit_exact"] is True and results["safetensors"].check["max_abs_diff"] == 0
    record = json.loads((folder / "export.json").read_text())
    assert set(record["formats"]) == {"safetensors", "onnx", "torchscript"} and record["run_id"] == run_dir.name
    assert all(v["check"]["ok"] for v in record["formats"].values())
    assert sorted(p.name for p in folder.iterdir()) == sorted(["export.json", "manifest.json", "model.onnx",
                                                               "model.safetensors", "model.torchscript.pt",
                                                               "predict_example.py"])


def test_manifest_round_trip_is_bit_exact(exported) -> None:
    run_dir, folder, _ = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    for key in ("architecture", "backbone", "task", "classes", "preprocessing", "metrics", "threshold", "versions",
                "created", "files"):
        assert key in manifest
    assert manifest["architecture"] == "test_convnext" and manifest["classes"] == sorted(CLASSES)
    assert manifest["versions"]["torch"] == torch.__version__ and manifest["versions"]["timm"]
    for fmt, entry in manifest["files"].items():
        assert hashlib.sha256((folder / FILES[fmt]).read_bytes()).hexdigest() == entry["sha256"]
    loaded = load_export(folder)
    original = runs.load_weights(run_dir)
    assert loaded.state_dict.keys() == original.keys()
    assert all(torch.equal(loaded.state_dict[k], v) and loaded.state_dict[k].dtype == v.dtype
               for k, v in original.items())
    assert loaded.prep == load_predictor(run_dir).prep
    assert validate_manifest(json.loads(json.dumps(manifest))) == manifest
    # and from a zip of the folder, as a user would upload it
    zpath = folder.parent / "export.zip"
    zpath.write_bytes(zip_export(folder))
    again = load_export(zpath)
    assert all(torch.equal(again.state_dict[k], v) for k, v in original.items())


def test_a_file_that_failed_its_check_is_left_out_of_the_download(exported, tmp_path: Path) -> None:
    _, folder, _ = exported
    copy = tmp_path / "export"
    shutil.copytree(folder, copy)
    record = json.loads((copy / "export.json").read_text())
    assert {"safetensors", "onnx"} <= set(record["formats"])
    names = zipfile.ZipFile(io.BytesIO(zip_export(copy))).namelist()
    assert "model.onnx" in names and "model.safetensors" in names  # both checked: both in the download
    record["formats"]["onnx"]["check"]["ok"] = False  # as when ONNX answers differ from PyTorch
    (copy / "export.json").write_text(json.dumps(record))
    names = zipfile.ZipFile(io.BytesIO(zip_export(copy))).namelist()
    assert "model.onnx" not in names and "model.safetensors" in names and "manifest.json" in names


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_onnx_has_a_dynamic_batch_and_the_example_script_classifies(exported) -> None:
    run_dir, folder, _ = exported
    import onnxruntime as ort

    images = sorted((Path(runs.load_config(run_dir).dataset) / "val").rglob("*.png"))[:3]
    prep = load_predictor(run_dir).prep
    x = torch.cat([predict_input(str(p), prep) for p in images])
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert out.shape == (3, 3)
    # written by the traced exporter (~1 s for MobileNetV2; the dynamo one took ~15 s and writes opset 20)
    import onnx

    graph = onnx.load(str(folder / "model.onnx"))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # predict_example.py: the same preprocessing as the app, and the same answers with every format
    example = example_module(folder, "predict_example")
    assert example.FORMATS == ["safetensors", "onnx", "torchscript"]
    for p in images:
        assert np.array_equal(example.preprocess(p), predict_input(str(p), prep).numpy())
    for i, (w, h) in enumerate([(97, 61), (45, 130)]):  # landscape and portrait photos: the centre box is resampled
        odd = run_dir.parent / f"odd{i}.jpg"
        Image.open(images[0]).convert("RGB").resize((w, h)).save(odd)
        assert np.array_equal(example.preprocess(odd), predict_input(str(odd), prep).numpy())
    expected = load_predictor(run_dir).predict([str(p) for p in images], top_k=3)
    for fmt in example.FORMATS:
        run = example.LOADERS[fmt]()
        for p, want in zip(images, expected, strict=True):
            label, top = example.classify(run, p, 3)
            assert label == want.label and [c for c, _ in top] == [c for c, _ in want.top_k]


def test_re_export_after_more_training_drops_stale_formats_and_refuses_another_run(exported, tmp_path) -> None:
    run_dir, folder, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    state = runs.load_weights(run_dir)
    other = make_run(tmp_path / "other")
    with pytest.raises(ExportError, match="another run"):
        export_run(other, "safetensors", copy, n_check=2)
    changed = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in state.items()}
    run2 = tmp_path / "elsewhere" / run_dir.name  # the same run (same id), trained further
    shutil.copytree(run_dir, run2)
    runs.save_weights(run2, changed, {"epoch": 2})
    res = export_run(run2, "safetensors", copy, n_check=2)
    assert res.ok and not (copy / "model.onnx").exists() and not (copy / "model.torchscript.pt").exists()
    assert set(json.loads((copy / "manifest.json").read_text())["files"]) == {"safetensors"}
    assert "torchscript" not in json.loads((copy / "export.json").read_text())["formats"]


# --- refusing what must not be loaded ----------------------------------------------------------------------------

class _Payload:
    """Unpickling this creates the sentinel file: proof that the payload ran."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _pickle_bytes(sentinel: Path, kind: str) -> bytes:
    if kind == "pickle":
        return pickle.dumps({"state_dict": _Payload(sentinel)}, protocol=4)
    buf = io.BytesIO()
    torch.save({"state_dict": _Payload(sentinel)}, buf)  # the .pt zip format, with the pickle inside
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".onnx"])
def test_a_pickle_in_disguise_is_refused_and_never_runs(exported, tmp_path: Path, suffix: str, kind: str) -> None:
    _, folder, _ = exported
    sentinel = tmp_path / "PWNED"
    payload = _pickle_bytes(sentinel, kind)
    # the payload is live: unpickling it would create the sentinel
    if kind == "pickle":
        pickle.loads(payload)
        assert sentinel.exists()
        sentinel.unlink()
    attempts = []
    lone = tmp_path / f"model{suffix}"
    lone.write_bytes(payload)
    attempts.append(lone)  # the file on its own
    disguised = tmp_path / "disguised"  # in an export folder, as model.safetensors, with a matching manifest
    disguised.mkdir()
    (disguised / "model.safetensors").write_bytes(payload)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["safetensors"]["sha256"] = hashlib.sha256(payload).hexdigest()
    (disguised / "manifest.json").write_text(json.dumps(manifest))
    attempts.append(disguised)
    zipped = tmp_path / "upload.zip"  # the same, zipped
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("export/model.safetensors", payload)
        zf.writestr("export/manifest.json", json.dumps(manifest))
    attempts.append(zipped)
    only = tmp_path / "only"  # a folder with the file under its own name and no model.safetensors
    only.mkdir()
    (only / f"weights{suffix}").write_bytes(payload)
    (only / "manifest.json").write_text(json.dumps(manifest))
    if suffix != ".safetensors":
        attempts.append(only)
    for target in attempts:
        with pytest.raises(ExportError) as info:
            load_export(target)
        message = str(info.value)
        assert "never loaded" in message or "not a safetensors" in message, (target, message)
        with pytest.raises(ExportError):
            load_predictor(target)
    assert not sentinel.exists()


def _tampered(folder: Path, tmp_path: Path, change) -> Path:
    out = tmp_path / "tampered"
    out.mkdir()
    shutil.copy(folder / "model.safetensors", out / "model.safetensors")
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(architecture="os.system"), "not a timm model"),
    (lambda m: m.update(architecture="test_resnet"), "does not fit"),
    (lambda m: m.update(classes=["a", "b", "c", "d"], num_classes=4), "shape"),
    (lambda m: m.update(num_classes=5), "num_classes"),
    (lambda m: m.update(task="mining"), "task"),
    (lambda m: m["files"]["safetensors"].update(sha256="0" * 64), "sha256"),
    (lambda m: m["preprocessing"].update(std=[0, 1, 1]), "std"),
    (lambda m: m["preprocessing"].update(interpolation="magic"), "interpolation"),
    (lambda m: m.update(format="something-else"), "not a Transfer Studio"),
    (lambda m: m.update(format_version=99), "format_version"),
])
def test_manifest_and_weights_are_checked_before_loading(exported, tmp_path: Path, change, message) -> None:
    _, folder, _ = exported
    with pytest.raises(ExportError, match=message):
        load_export(_tampered(folder, tmp_path, change))


def test_a_safetensors_file_with_extra_or_wrong_tensors_is_refused(exported, tmp_path: Path) -> None:
    from safetensors.torch import save

    _, folder, _ = exported
    state = load_export(folder).state_dict
    for variant, message in ((dict(state, extra=torch.zeros(2)), "does not have"),
                             ({k: v.double() if v.is_floating_point() else v for k, v in state.items()}, "F64")):
        data = save(variant)
        out = tmp_path / f"v{len(message)}"
        out.mkdir()
        (out / "model.safetensors").write_bytes(data)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"]["safetensors"]["sha256"] = hashlib.sha256(data).hexdigest()
        (out / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ExportError, match=message):
            load_export(out)
    broken = tmp_path / "broken"
    broken.mkdir()
    raw = (folder / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(raw[:8] + b"[" + raw[9:])
    shutil.copy(folder / "manifest.json", broken / "manifest.json")
    with pytest.raises(ExportError, match="not a safetensors"):
        load_export(broken)


# --- reproduce ----------------------------------------------------------------------------------------------------

def test_reproduce_command_parses_back_to_the_same_config(tmp_path: Path) -> None:
    from core.cli import build_parser

    run_dir = make_run(tmp_path, epochs=3, batch_size=8, lr=0.02, seed=7, augment=(), class_weights=True,
                       train_size=40)
    command = reproduce_command(run_dir)
    assert command.startswith("transfer-studio train ") and "#" not in command  # everything is expressible
    args = build_parser().parse_args(shlex.split(command)[1:])
    cfg = runs.load_config(run_dir)
    assert Path(args.data).resolve() == Path(cfg.dataset) and args.model == cfg.backbone
    assert (args.epochs, args.batch_size, args.lr, args.seed, args.train_size) == (3, 8, 0.02, 7, 40)
    assert args.no_augment and args.class_weights and args.freeze == "head"
    assert (args.device, args.precision) == ("cpu", "fp32")
    assert not args.from_scratch  # test_convnext has no local weights: the command line trains it from scratch
    assert build_manifest(run_dir)["source"]["run_id"] == run_dir.name
    older = make_run(tmp_path / "older", label_smoothing=0.1)  # trained before the default became 0
    again = reproduce_command(older)
    assert "#" not in again and build_parser().parse_args(shlex.split(again)[1:]).label_smoothing == 0.1
    from core.tasks.classification import CLASSIFICATION

    for keep in (0, 3):  # a gradual run's command says how many first groups stayed frozen (the default moved)
        gradual = make_run(tmp_path / f"gradual{keep}", freeze=FreezeConfig("gradual", keep_frozen=keep))
        line = reproduce_command(gradual)
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert "#" not in line and f"--keep-frozen {keep}" in line
        assert CLASSIFICATION.start_freeze(args.freeze, args.keep_frozen) == runs.load_config(gradual).freeze


def test_reproduce_command_keeps_the_full_size_when_the_default_is_smaller(tmp_path: Path) -> None:
    """A run trained at the model's size says `--train-size 0`: the command line's default crops are smaller."""
    from core.cli import build_parser

    run_dir = make_run(tmp_path, epochs=1, train_size=0)
    args = build_parser().parse_args(shlex.split(reproduce_command(run_dir))[1:])
    assert args.train_size == 0


def test_reproduce_command_asks_for_scratch_when_weights_exist(home: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from core import zoo
    from core.cli import build_parser

    net = zoo.create_model("test_convnext", pretrained=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    zoo.register_user_weights(tmp_path / "w.safetensors", "test_convnext", "mine")
    data = make_colour_folders(tmp_path / "data", train=2, val=1)
    cfg = RunConfig("test_convnext.mine", str(data), FreezeConfig("last-2"),
                    get_task("classification").default_train().with_choices(epochs=2, warmup_fraction=0.1),
                    pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), tmp_path / "runs")
    command = reproduce_command(run_dir)
    assert command.endswith("  # not settable from the command line: warmup_fraction=0.1")
    args = build_parser().parse_args(shlex.split(command, comments=True)[1:])  # as a shell reads it
    assert args.from_scratch and args.model == "test_convnext.mine" and args.freeze == "last-2"


# --- real pretrained weights ----------------------------------------------------------------------------------------

@pytest.mark.weights
def test_mobilenetv2_with_pretrained_weights_exports_within_tolerance(tmp_path: Path) -> None:
    from core import zoo

    if not zoo.has_weights(zoo.get_spec("mobilenetv2_100")):
        pytest.skip(zoo.weights_status(zoo.get_spec("mobilenetv2_100")))
    run_dir = make_run(tmp_path, model="mobilenetv2_100", pretrained=True)
    for fmt in ("safetensors", "onnx", "torchscript"):
        res = export_run(run_dir, fmt, tmp_path / "out", n_check=8)
        assert res.ok, (fmt, res.check)
        assert res.check["max_abs_diff"] <= 1e-4
    loaded = load_predictor(tmp_path / "out")
    files = sorted(str(p) for p in (Path(runs.load_config(run_dir).dataset) / "val").rglob("*.png"))
    assert [p.top_k for p in loaded.predict(files)] == [p.top_k for p in load_predictor(run_dir).predict(files)]


@pytest.mark.parametrize("fit", ["squash", "pad"])
def test_a_run_exports_its_image_fit_and_the_example_script_does_the_same(tmp_path: Path, fit: str) -> None:
    run_dir = make_run(tmp_path, model="test_resnet", image_fit=fit)
    folder = tmp_path / "out"
    assert export_run(run_dir, "safetensors", folder, n_check=2).ok
    manifest = json.loads((folder / "manifest.json").read_text())
    words = {"squash": "resize the whole image", "pad": "square of the mean colour"}[fit]
    assert manifest["preprocessing"]["fit"] == fit and words in manifest["preprocessing"]["steps"]
    assert load_export(folder).prep.fit == fit
    assert f"--image-fit {fit}" in reproduce_command(run_dir)
    crop_min = runs.load_config(run_dir).train.crop_min_area
    assert f"--crop-min-area {crop_min:g}" in reproduce_command(run_dir)
    example = example_module(folder, f"predict_example_{fit}")
    prep = load_predictor(run_dir).prep
    source = sorted((Path(runs.load_config(run_dir).dataset) / "val").rglob("*.png"))[0]
    for i, (w, h) in enumerate([(97, 61), (45, 130)]):
        odd = tmp_path / f"odd{i}.jpg"
        Image.open(source).convert("RGB").resize((w, h)).save(odd)
        assert np.array_equal(example.preprocess(odd), predict_input(str(odd), prep).numpy())
        assert not np.array_equal(example.preprocess(odd), predict_input(str(odd), replace(prep, fit="crop")).numpy())
    bad = {**manifest, "preprocessing": {**manifest["preprocessing"], "fit": "letterbox"}}
    with pytest.raises(ExportError, match="preprocessing.fit"):
        validate_manifest(bad)


def test_the_example_script_skips_a_bad_file_and_reads_16_bit_photos_as_the_app(exported, tmp_path: Path,
                                                                               capsys) -> None:
    """One unreadable file stopped the script with a traceback (the photos after it got no answer), and a 16-bit
    PNG was clipped to white, so the script's answer differed from the app's."""
    run_dir, folder, _ = exported
    photo = sorted((Path(runs.load_config(run_dir).dataset) / "val").rglob("*.png"))[0]
    grey16 = tmp_path / "grey16.png"
    Image.fromarray(np.asarray(Image.open(photo).convert("L")).astype(np.uint16) * 257).save(grey16)
    assert Image.open(grey16).mode.startswith("I")
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    example = example_module(folder, "predict_example_bad_files")
    prep = load_predictor(run_dir).prep
    assert np.array_equal(example.preprocess(grey16), predict_input(str(grey16), prep).numpy())
    assert example.DEFAULT == "onnx"  # the format that needs the fewest packages (no torch)
    assert example.main([str(notes), str(photo), "--top-k", "1"]) == 1
    out, err = capsys.readouterr()
    assert f"{notes}: cannot read this file" in err
    want = load_predictor(run_dir).predict([str(photo)], top_k=1)[0].label
    assert out.startswith(f"{photo}: {want}  (")


def test_the_example_script_reads_an_iphone_photo_as_the_app(exported, capsys) -> None:
    """A HEIC photo (an iPhone's default) is prepared exactly as the app prepares it, upright, and answered."""
    run_dir, folder, _ = exported
    example = example_module(folder, "predict_example_heic")
    predictor = load_predictor(run_dir)
    app_input = predict_input(str(IPHONE_ROTATED), predictor.prep).numpy()
    assert np.array_equal(example.preprocess(IPHONE_ROTATED), app_input)
    assert example.main([str(IPHONE_ROTATED), "--top-k", "1"]) == 0
    want = predictor.predict([str(IPHONE_ROTATED)], top_k=1)[0].label
    assert capsys.readouterr().out.startswith(f"{IPHONE_ROTATED}: {want}  (")


def test_the_example_script_says_which_package_a_format_needs(exported, monkeypatch) -> None:
    _, folder, _ = exported
    example = example_module(folder, "predict_example_missing")

    def missing():
        raise ModuleNotFoundError("No module named 'onnxruntime'")

    monkeypatch.setitem(example.LOADERS, "onnx", missing)
    with pytest.raises(SystemExit) as stop:
        example.main(["photo.jpg", "--format", "onnx"])
    assert stop.value.code == 2
    assert "Needs: pip install pillow numpy, plus" in example.__doc__ and "onnxruntime for --format onnx" in \
        example.__doc__


def test_an_export_says_when_the_runs_threshold_or_weights_changed_after_it(exported, tmp_path: Path) -> None:
    """A threshold chosen after exporting was silently missing from the download the Runs page still offered."""
    from core.evaluate import EVALUATION_FILE
    from core.export import out_of_date

    run_dir, folder, _ = exported
    run_copy, out = tmp_path / run_dir.name, tmp_path / "out"
    shutil.copytree(run_dir, run_copy)
    shutil.copytree(folder, out)
    assert out_of_date(out, run_copy) == []
    weights = run_copy / "checkpoints" / "best.safetensors"
    made_for = {"name": "best", "bytes": weights.stat().st_size, "mtime_ns": weights.stat().st_mtime_ns}
    (run_copy / EVALUATION_FILE).write_text(json.dumps({"weights": made_for, "unknown_threshold": {
        "threshold": 0.61, "chosen_by": "user"}}))  # "Use this threshold" on the Results tab
    assert out_of_date(out, run_copy) == ["its files always answer, but the run now says to answer “not sure” "
                                          "below 61%"]
    (run_copy / EVALUATION_FILE).unlink()
    weights.write_bytes(weights.read_bytes() + b" ")  # trained further
    assert out_of_date(out, run_copy) == ["the run's weights changed since (it trained further)"]
