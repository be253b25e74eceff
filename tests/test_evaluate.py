"""Evaluation: metrics against hand-computed cases, calibration, the "not sure" threshold, label issues, run and
folder evaluations, the learning curve and the evaluate/predict/export command line."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score

from core import runs, trainset, zoo
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.evaluate import (
    calibration,
    choose_threshold,
    classification_metrics,
    evaluate_folder,
    evaluate_run,
    label_issues,
    learning_curve,
    load_evaluation,
    load_predictions,
    misclassified,
    most_confused,
    read_learning_curve,
    set_threshold,
    summary,
)
from core.tasks import get_task
from tests.synthetic import make_colour_folders

CLASSES = ("red", "green", "blue")


def one_hot_probs(preds: list[int], c: int, conf: float = 0.8) -> torch.Tensor:
    p = torch.full((len(preds), c), (1 - conf) / (c - 1))
    p[torch.arange(len(preds)), torch.tensor(preds)] = conf
    return p


def make_run(root: Path, model: str = "test_convnext", train: int = 4, val: int = 3, pretrained: bool = False,
             backbone: str | None = None) -> Path:
    data = make_colour_folders(root / "data", train=train, val=val)
    cfg = RunConfig(backbone or model, str(data), FreezeConfig("head"),
                    TrainConfig(epochs=1, batch_size=4, precision="fp32", device="cpu"), pretrained=pretrained)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), root / "runs")
    torch.manual_seed(0)
    net = get_task("classification").build_model(model, len(CLASSES), pretrained=False)
    runs.save_weights(run_dir, net.state_dict(), {"epoch": 1, "val_accuracy": 0.5})
    return run_dir


# --- metric functions on hand-computed cases ----------------------------------------------------------------------

def test_metrics_match_a_hand_computed_case() -> None:
    classes = ["a", "b", "c"]
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = [0, 1, 1, 1, 0, 2]
    m = classification_metrics(one_hot_probs(pred, 3), y, classes, "val")
    assert m["split"] == "val" and m["n_images"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: tp1 fp1 fn1; b: tp2 fp1 fn0; c: tp1 fp0 fn1
    rows = {r["class"]: r for r in m["per_class"]}
    assert (rows["a"]["precision"], rows["a"]["recall"], rows["a"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (rows["b"]["precision"], rows["b"]["recall"], rows["b"]["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (rows["c"]["precision"], rows["c"]["recall"], rows["c"]["f1"]) == pytest.approx((1.0, 0.5, 2 / 3))
    assert [rows[k]["support"] for k in classes] == [2, 2, 2]
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3, abs=1e-6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["loss"] == pytest.approx(-(4 * math.log(0.8) + 2 * math.log(0.1)) / 6, abs=1e-5)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-6)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_balanced_accuracy_counts_only_classes_with_images() -> None:
    y = torch.tensor([0, 0, 0, 1])
    pred = [0, 2, 0, 1]  # class c has no images but is predicted once
    m = classification_metrics(one_hot_probs(pred, 3), y, ["a", "b", "c"], "test")
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    c = m["per_class"][2]
    assert c["support"] == 0 and c["recall"] is None and c["precision"] == 0.0
    empty = classification_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), ["a", "b", "c"], "val")
    assert empty["n_images"] == 0 and empty["accuracy"] is None


def test_mistakes_are_sorted_by_confidence_and_pairs_by_count() -> None:
    classes = ["a", "b", "c"]
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.05, 0.9, 0.05], [0.1, 0.1, 0.8],
                          [0.6, 0.3, 0.1]])
    y = torch.tensor([0, 0, 0, 1, 2])
    names = ["i0", "i1", "i2", "i3", "i4"]
    wrong = misclassified(probs, y, classes, names)
    assert [w["name"] for w in wrong] == ["i2", "i3", "i1", "i4"]
    assert wrong[0] == {"index": 2, "name": "i2", "path": "", "label": "a", "predicted": "b", "confidence": 0.9,
                        "p_label": 0.05}
    cm = classification_metrics(probs, y, classes, "val")["confusion_matrix"]
    pairs = most_confused(cm, classes)
    assert pairs[0] == {"true": "a", "predicted": "b", "count": 2, "share": pytest.approx(2 / 3, abs=1e-4)}
    assert {(p["true"], p["predicted"]) for p in pairs} == {("a", "b"), ("b", "c"), ("c", "a")}


def test_label_issues_flag_a_swapped_label_first() -> None:
    classes = ["cat", "dog"]
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.85, 0.15], [0.2, 0.8], [0.1, 0.9], [0.03, 0.97]])
    y = torch.tensor([0, 0, 0, 1, 1, 0])  # the last one is labelled cat, but looks like a sure dog
    issues = label_issues(probs, y, classes, [f"img{i}" for i in range(6)])
    assert issues and issues[0]["name"] == "img5" and issues[0]["suggested"] == "dog"
    assert "sure" in issues[0]["reason"] and issues[0]["p_label"] == pytest.approx(0.03)
    assert "img0" not in {i["name"] for i in issues}


# --- calibration and the threshold ------------------------------------------------------------------------------

def _synthetic_confidences(n: int = 4000, over: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary predictions right with probability = their true confidence; the over-confident model reports a
    confidence pushed towards 1 for the same predictions."""
    gen = torch.Generator().manual_seed(0)
    true_conf = 0.5 + 0.5 * torch.rand(n, generator=gen)
    correct = torch.rand(n, generator=gen) < true_conf
    shown = true_conf ** 0.2 if over else true_conf
    y = torch.zeros(n, dtype=torch.long)
    probs = torch.stack([torch.where(correct, shown, 1 - shown), torch.where(correct, 1 - shown, shown)], 1)
    return probs, y


def test_an_over_confident_model_has_a_larger_calibration_error() -> None:
    calibrated = calibration(*_synthetic_confidences())
    over = calibration(*_synthetic_confidences(over=True))
    assert calibrated["ece"] < 0.03 and over["ece"] > 0.1 and over["ece"] > 3 * calibrated["ece"]
    assert over["mce"] >= over["ece"]
    # the diagram's bins reproduce torchmetrics' ECE
    for cal in (calibrated, over):
        n = sum(b["count"] for b in cal["bins"])
        ece = sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in cal["bins"] if b["count"])
        assert ece == pytest.approx(cal["ece"], abs=1e-4)
        assert len(cal["bins"]) == 10 and cal["bins"][0]["lo"] == 0.0 and cal["bins"][-1]["hi"] == 1.0


def test_threshold_is_the_smallest_reaching_the_target_or_a_default() -> None:
    conf = [0.99, 0.95, 0.9, 0.8, 0.7, 0.6]
    right = [True, True, False, True, False, False]
    probs = torch.tensor([[c, 1 - c] for c in conf])
    y = torch.tensor([0 if r else 1 for r in right])
    loose = choose_threshold(probs, y, target_accuracy=0.95, min_coverage=0.3)
    assert loose["reached"] and loose["threshold"] == pytest.approx(0.95) and loose["coverage"] == pytest.approx(2 / 6)
    assert loose["accuracy"] == 1.0
    strict = choose_threshold(probs, y, target_accuracy=0.95, min_coverage=0.5)  # too few answered: the default
    assert not strict["reached"] and strict["threshold"] == pytest.approx(0.8)
    assert strict["accuracy"] == pytest.approx(0.75) and "half" not in strict["reason"]
    easy = choose_threshold(probs, y, target_accuracy=0.5)
    assert easy["reached"] and easy["threshold"] == 0.0 and easy["coverage"] == 1.0
    assert "target" not in easy["reason"] + strict["reason"] + loose["reason"]  # the user never set one
    curve = strict["curve"]
    assert curve[0]["threshold"] == 0 and curve[0]["coverage"] == 1 and curve[-1]["threshold"] == 1
    assert all(a["coverage"] >= b["coverage"] for a, b in zip(curve, curve[1:], strict=False))


# --- a run, a folder ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("evaluate"))


def test_evaluate_run_stores_metrics_threshold_and_predictions(run_dir: Path) -> None:
    result = evaluate_run(run_dir)  # test_convnext has no pretrained weights: the curve says why it is missing
    stored = load_evaluation(run_dir)
    assert stored["stale"] is False and stored["splits"]["val"]["n_images"] == 9
    val = stored["splits"]["val"]
    assert val["split"] == "val" and set(val) >= {"accuracy", "balanced_accuracy", "macro_f1", "per_class",
                                                  "confusion_matrix", "calibration", "misclassified",
                                                  "most_confused", "label_issues", "skipped"}
    assert sum(map(sum, val["confusion_matrix"])) == 9
    th = stored["unknown_threshold"]
    assert th["split"] == "val" and th["reason"] and 0 <= th["suggested"] <= 1 and th["curve"]
    assert th["threshold"] is None  # a suggestion: nothing is applied until the user chooses it
    assert stored["learning_curve"]["available"] is False and "pretrained" in stored["learning_curve"]["reason"]
    preds = load_predictions(run_dir, "val")
    assert len(preds["items"]) == 9 and preds["classes"] == sorted(CLASSES)
    assert sum(it["predicted"] == it["label"] for it in preds["items"]) / 9 == pytest.approx(val["accuracy"], abs=1e-5)
    assert result["weights"]["sha256"] == stored["weights"]["sha256"]


def test_evaluate_folder_reports_unknown_classes_and_bad_images(run_dir: Path, tmp_path: Path) -> None:
    folder = make_colour_folders(tmp_path / "extra", train=0, val=2, classes=("red", "green"))
    extra = folder / "val"
    purple = extra / "purple"
    purple.mkdir()
    for i in range(3):
        (purple / f"p{i}.png").write_bytes((extra / "red" / "red_0.png").read_bytes())
    (extra / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (extra / "green" / "notes.txt").write_text("not an image")
    result = evaluate_folder(run_dir, extra)
    assert result["n_images"] == 4 and result["split"] == "folder"
    assert result["unknown_classes"] == [{"folder": "purple", "n_images": 3}]
    assert result["missing_classes"] == ["blue"]
    assert [b["name"] for b in result["bad_images"]] == ["green/broken.png"] and result["bad_images"][0]["reason"]
    assert any("notes.txt" in s["name"] for s in result["skipped_files"])
    assert any("purple (3 images)" in n for n in result["notes"])
    per_class = {r["class"]: r["support"] for r in result["per_class"]}
    assert per_class == {"blue": 0, "green": 2, "red": 2}
    from core.evaluate import EvaluationError

    with pytest.raises(EvaluationError, match="match the model's classes"):
        evaluate_folder(run_dir, _only_purple(tmp_path))


def _only_purple(tmp_path: Path) -> Path:
    folder = tmp_path / "only" / "purple"
    folder.mkdir(parents=True)
    (folder / "x.png").write_bytes(b"")
    return folder.parent


# --- learning curve -------------------------------------------------------------------------------------------------

def test_reading_of_a_learning_curve_names_the_weakest_class() -> None:
    def point(f: float, acc: float, recalls: dict) -> dict:
        return {"fraction": f, "n_train": int(40 * f), "images_per_class": {k: int(20 * f) for k in recalls},
                "val_accuracy": acc, "per_class_recall": recalls}

    rising = [point(0.1, 0.5, {"ants": 0.5, "bees": 0.5}), point(0.5, 0.7, {"ants": 0.8, "bees": 0.6}),
              point(1.0, 0.8, {"ants": 0.95, "bees": 0.65})]
    text, weak = read_learning_curve(rising, 40)
    assert "more photos are likely to help" in text and "bees (65 % found" in text.replace("65%", "65 %")
    assert weak[0]["class"] == "bees" and "noise" in text
    assert text.startswith("This curve comes from the quick model") and "differ from this run's" in text
    flat = [point(0.5, 0.9, {"ants": 1.0, "bees": 0.8}), point(1.0, 0.905, {"ants": 1.0, "bees": 0.81})]
    text, _ = read_learning_curve(flat, 200)
    assert "probably not help much" in text and "noise" not in text


def test_learning_curve_from_cached_embeddings(home: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net = zoo.create_model("test_convnext", pretrained=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    zoo.register_user_weights(tmp_path / "w.safetensors", "test_convnext", "lc")  # "pretrained" weights
    run_dir = make_run(tmp_path, train=7, val=3, backbone="test_convnext.lc", pretrained=True)  # ≤ 32 files: no pool
    curve = learning_curve(run_dir, fractions=(0.25, 0.5, 1.0), repeats=2)
    assert curve["available"] and [p["fraction"] for p in curve["points"]] == [0.25, 0.5, 1.0]
    assert [p["images_per_class"]["red"] for p in curve["points"]] == [2, 4, 7]
    assert all(0 <= p["val_accuracy"] <= 1 for p in curve["points"])
    assert "With all 21 training images" in curve["reading"]
    assert isinstance(curve["train_label_issues"], list)
    assert set(curve["points"][-1]["per_class_recall"]) == set(CLASSES)


# --- command line ---------------------------------------------------------------------------------------------------

def _cli(argv: list[str]) -> int:
    from core.cli_eval import register

    parser = argparse.ArgumentParser(prog="transfer-studio")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_evaluate_predict_export(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = Path(runs.load_config(run_dir).dataset)
    assert _cli(["evaluate", "--run", str(run_dir), "--data", str(data / "val"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_images"] == 9 and {"accuracy", "macro_f1", "per_class"} <= set(out)
    assert [r["class"] for r in out["per_class"]] == sorted(CLASSES)
    image = sorted((data / "val" / "red").iterdir())[0]
    assert _cli(["predict", "--run", str(run_dir), str(image), "--top-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["predictions"][0]["image"] == str(image) and len(out["predictions"][0]["top_k"]) == 2
    assert out["predictions"][0]["top_k"][0]["label"] in CLASSES
    assert _cli(["predict", "--run", str(run_dir), str(image)]) == 0
    assert str(image) in capsys.readouterr().out
    assert _cli(["export", "--run", str(run_dir), "--format", "safetensors", "--out", str(tmp_path / "e")]) == 0
    assert "parity check PASS" in capsys.readouterr().out
    assert _cli(["predict", "--run", str(tmp_path / "e"), str(image), "--json"]) == 0
    capsys.readouterr()


def test_cli_errors_are_one_line_and_exit_2(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _cli(["evaluate", "--run", str(tmp_path / "missing"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "evil.pt"
    bad.write_bytes(b"\x80\x04\x95junk")
    assert _cli(["predict", "--run", str(bad), str(bad)]) == 2
    assert "never loaded" in capsys.readouterr().err
    assert _cli(["export", "--run", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert _cli(["predict", "--run", str(run_dir), str(tmp_path / "nope.jpg")]) == 2
    assert "nope.jpg" in capsys.readouterr().err


def test_a_run_whose_dataset_was_deleted_is_not_evaluated(home: Path, tmp_path: Path) -> None:
    from core.data.store import delete_dataset, import_folder
    from core.data.validate import ValidationConfig
    from core.evaluate import EVALUATION_FILE, EvaluationError

    data = make_colour_folders(tmp_path / "data", train=4, val=3)
    ds = import_folder(data, "up1", config=ValidationConfig(workers=0)).dataset
    cfg = RunConfig("test_convnext", ds.id, FreezeConfig("head"),
                    TrainConfig(epochs=1, batch_size=4, precision="fp32", device="cpu"), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.from_store(ds.id), tmp_path / "runs")
    net = get_task("classification").build_model("test_convnext", len(CLASSES), pretrained=False)
    runs.save_weights(run_dir, net.state_dict(), {"epoch": 1, "val_accuracy": 0.5})
    delete_dataset(ds.id)
    with pytest.raises(EvaluationError, match=r"\(dataset 'up1'\) are no longer on this machine.*can still be tested"):
        evaluate_run(run_dir, with_learning_curve=False)
    assert not (run_dir / EVALUATION_FILE).exists() and load_evaluation(run_dir) is None


def test_a_run_whose_photos_cannot_be_read_is_not_evaluated(tmp_path: Path) -> None:
    from core.evaluate import EVALUATION_FILE, EvaluationError

    run_dir = make_run(tmp_path, train=2, val=2)
    for item in runs.load_dataset(run_dir)["items"]:
        Path(item["path"]).write_bytes(b"not a photo any more")
    with pytest.raises(EvaluationError, match=r"None of the 6 val photos of this run can be read \(e\.g\. "):
        evaluate_run(run_dir, with_learning_curve=False)
    assert not (run_dir / EVALUATION_FILE).exists()


# --- classes without validation photos ------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_a_class_without_photos_in_the_split_is_named_unchecked() -> None:
    y = torch.tensor([0, 0, 1, 1])
    m = classification_metrics(one_hot_probs([0, 0, 1, 1], 3), y, ["ants", "bees", "owls"], "val")
    assert m["unchecked_classes"] == ["owls"] and m["balanced_accuracy"] == 1.0
    full = classification_metrics(one_hot_probs([0, 1, 2], 3), torch.tensor([0, 1, 2]), ["a", "b", "c"], "val")
    assert full["unchecked_classes"] == []
    assert summary({"splits": {"val": m}, "primary_split": "val"})["unchecked_classes"] == ["owls"]


def test_the_learning_curve_reading_does_not_claim_a_class_it_could_not_check() -> None:
    point = {"fraction": 1.0, "n_train": 30, "images_per_class": {"ants": 10, "bees": 10, "owls": 10},
             "val_accuracy": 1.0, "per_class_recall": {"ants": 1.0, "bees": 1.0, "owls": None}}
    text, weak = read_learning_curve([point], 8)
    assert weak == [] and "Every class is recognised" not in text
    assert "Every class with validation images is recognised" in text
    assert "Class 'owls' has no validation photos, so it was not checked." in text
    point["per_class_recall"]["owls"] = 1.0
    assert "Every class is recognised on all its validation images." in read_learning_curve([point], 8)[0]


# --- the "not sure" threshold is applied only once the user chooses it ----------------------------------------------

def test_the_suggested_threshold_changes_nothing_until_the_user_chooses_it(tmp_path: Path) -> None:
    from core.export import build_manifest
    from core.inference import Predictor

    run_dir = make_run(tmp_path)
    th = evaluate_run(run_dir, with_learning_curve=False)["unknown_threshold"]
    assert th["threshold"] is None and th["suggested"] is not None and th["chosen_by"] is None
    assert "not in use until you choose it" in th["reason"]
    assert Predictor.from_run(run_dir).threshold is None and build_manifest(run_dir)["threshold"] is None
    chosen = set_threshold(run_dir, 0.42)
    assert chosen["threshold"] == 0.42 and chosen["suggested"] == th["suggested"]
    assert Predictor.from_run(run_dir).threshold == pytest.approx(0.42)
    assert build_manifest(run_dir)["threshold"] == pytest.approx(0.42)
    again = evaluate_run(run_dir, with_learning_curve=False)["unknown_threshold"]  # the same weights: kept
    assert again["threshold"] == pytest.approx(0.42) and again["chosen_by"] == "user"
    assert set_threshold(run_dir, None)["threshold"] is None and Predictor.from_run(run_dir).threshold is None


def test_an_evaluation_saved_by_an_earlier_version_only_suggests_its_threshold(tmp_path: Path) -> None:
    from core.inference import Predictor

    run_dir = make_run(tmp_path)
    evaluate_run(run_dir, with_learning_curve=False)
    path = run_dir / "evaluation.json"
    old = json.loads(path.read_text())
    old["version"] = 1  # version 1 stored the suggestion as the threshold in use
    old["unknown_threshold"] = {k: v for k, v in old["unknown_threshold"].items() if k != "suggested"}
    old["unknown_threshold"].update(threshold=0.61, chosen_by="validation", reason="Answering only when…")
    path.write_text(json.dumps(old))
    th = load_evaluation(run_dir)["unknown_threshold"]
    assert th["threshold"] is None and th["suggested"] == 0.61 and "not in use" in th["reason"]
    assert Predictor.from_run(run_dir).threshold is None
    assert set_threshold(run_dir, 0.61)["suggested"] == 0.61
    assert Predictor.from_run(run_dir).threshold == pytest.approx(0.61)
    old["unknown_threshold"].update(threshold=0.3, chosen_by="user")  # chosen by the user in an earlier version
    path.write_text(json.dumps(old))
    assert Predictor.from_run(run_dir).threshold == pytest.approx(0.3)
