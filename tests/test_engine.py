"""The training engine on tiny timm models and synthetic images: events, phases, stop, exact resume, NaN, runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from core import engine, runs, trainset, zoo
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.events import BatchEnded, EpochEnded, FitEnded, FitFailed, FitStarted, PhaseChanged, Preparing
from core.recorder import RunRecorder, TextProgress
from core.tasks import get_task
from tests.synthetic import make_colour_folders


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_folders(tmp_path_factory.mktemp("colours"))


def _run(colours: Path, tmp_path: Path, model: str = "test_resnet", freeze: str = "all", **train) -> Path:
    opts = {"epochs": 2, "batch_size": 4, "precision": "fp32", "device": "cpu", **train}
    cfg = RunConfig(model, str(colours), FreezeConfig(freeze), TrainConfig(**opts), pretrained=False)
    return runs.create_run(cfg, trainset.resolve(str(colours)), tmp_path / "runs")


def test_events_come_in_order_and_the_run_folder_is_complete(colours: Path, tmp_path: Path) -> None:
    run_dir = _run(colours, tmp_path)
    seen = []
    result = engine.fit(run_dir, [seen.append, RunRecorder(run_dir)])
    kinds = [type(e) for e in seen if not e.type == "preparing"]
    assert kinds[0] is FitStarted and kinds[1] is PhaseChanged and kinds[-1] is FitEnded
    assert kinds.count(EpochEnded) == 2
    steps = [e.step for e in seen if isinstance(e, BatchEnded)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 2 * 6  # 24 train images / batch 4
    assert result.state == "completed" and result.epochs_done == 2
    status = runs.read_status(run_dir)
    assert status["state"] == "completed" and status["best_val_accuracy"] == result.best_val_accuracy
    # the share as the page's metric beside it writes it ("88.9%"; the message said 0.889)
    assert status["message"] == f"Finished 2 epochs; best validation accuracy {result.best_val_accuracy:.1%}."
    logged = [e["type"] for e in runs.read_events(run_dir)]
    assert logged[0] == "fit_started" and logged[-1] == "fit_ended" and logged.count("epoch_ended") == 2
    assert (run_dir / "checkpoints" / "last.pt").exists() and (run_dir / "checkpoints" / "best.safetensors").exists()


def test_the_live_status_counts_images_within_the_epoch(colours: Path, tmp_path: Path) -> None:
    run_dir = _run(colours, tmp_path)  # 2 epochs of 24 images, batch 4
    lines = []

    def read(event) -> None:
        if isinstance(event, BatchEnded):
            lines.append(runs.read_status(run_dir)["message"])

    engine.fit(run_dir, [RunRecorder(run_dir, min_interval=0.0), read])
    assert lines[0] == "Epoch 1 of 2, image 4 of 24" and lines[-1] == "Epoch 2 of 2, image 24 of 24"


def test_gradual_changes_phase_on_the_planned_epoch(colours: Path, tmp_path: Path) -> None:
    run_dir = _run(colours, tmp_path, model="test_efficientnet", freeze="gradual", epochs=3)
    phases = []
    engine.fit(run_dir, [lambda e: phases.append(e) if isinstance(e, PhaseChanged) else None])
    assert [p.epoch for p in phases] == [0, 1]
    model = zoo.create_model("test_efficientnet", num_classes=3, pretrained=False)
    head = sum(p.numel() for p in model.get_classifier().parameters())
    assert phases[0].trainable_params == head
    assert phases[1].frozen_params == 0


def test_a_run_from_scratch_unfreezes_the_groups_gradual_would_keep(colours: Path, tmp_path: Path) -> None:
    """keep_frozen keeps pretrained first layers; random ones must learn, so a scratch run trains them (and says so)."""
    run_dir = _run(colours, tmp_path, model="test_efficientnet", freeze="gradual", epochs=2)
    cfg = runs.load_config(run_dir)
    kept = RunConfig(cfg.backbone, cfg.dataset, FreezeConfig("gradual", keep_frozen=2), cfg.train, pretrained=False)
    run_dir = runs.create_run(kept, trainset.resolve(cfg.dataset), tmp_path / "kept")
    seen = []
    engine.fit(run_dir, [seen.append])
    assert [p.frozen_params for p in seen if isinstance(p, PhaseChanged)][-1] == 0
    assert any(getattr(e, "level", "") == "info" and "from scratch" in e.message for e in seen)


def test_stop_is_honoured_within_one_batch_and_saves(colours: Path, tmp_path: Path) -> None:
    run_dir = _run(colours, tmp_path)
    batches = []

    def sub(event) -> None:
        if isinstance(event, BatchEnded):
            batches.append(event)

    result = engine.fit(run_dir, [sub, RunRecorder(run_dir)], should_stop=lambda: len(batches) >= 3)
    assert result.state == "stopped" and len(batches) == 3
    ckpt, skipped = runs.load_checkpoint(run_dir)
    assert ckpt["pos"] == 12 and ckpt["epoch"] == 0 and skipped == []
    assert runs.read_status(run_dir)["state"] == "stopped"


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt, _ = runs.load_checkpoint(run_dir)
    return ckpt["model"]


@pytest.mark.parametrize("model", ["test_resnet", "test_vit"])
def test_resume_after_interruption_gives_the_same_weights_on_cpu(colours: Path, tmp_path: Path, model: str) -> None:
    straight = _run(colours, tmp_path / "a", model=model, epochs=2)
    engine.fit(straight)
    interrupted = _run(colours, tmp_path / "b", model=model, epochs=2)
    count = {"n": 0}

    def sub(event) -> None:
        if isinstance(event, BatchEnded):
            count["n"] += 1

    first = engine.fit(interrupted, [sub], should_stop=lambda: count["n"] >= 7)  # mid second epoch
    assert first.state == "stopped"
    resumed = []
    second = engine.fit(interrupted, [resumed.append])
    assert second.state == "completed"
    started = next(e for e in resumed if isinstance(e, FitStarted))
    assert started.resumed_from == {"epoch": 1, "pos": 4, "step": 7}
    a, b = _final_weights(straight), _final_weights(interrupted)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_epoch_resumed_mid_way_counts_its_time_before_the_stop(colours: Path, tmp_path: Path) -> None:
    """The epoch a resume finishes reports all its seconds (and so honest images/s), not only the resumed part."""
    import time

    run_dir = _run(colours, tmp_path, epochs=1)
    batches = []

    def slow(event) -> None:  # three slow batches before the stop: 1.5 s of the epoch spent before it
        if isinstance(event, BatchEnded):
            batches.append(event)
            time.sleep(0.5)

    engine.fit(run_dir, [slow], should_stop=lambda: len(batches) >= 3)
    ckpt, _ = runs.load_checkpoint(run_dir)
    before = ckpt["state"]["epoch_seconds"]
    assert before >= 1.5
    resumed = []
    engine.fit(run_dir, [resumed.append])
    ended = next(e for e in resumed if isinstance(e, EpochEnded))
    assert ended.seconds >= before
    assert ended.images_per_second <= 24 / before
    assert runs.load_checkpoint(run_dir)[0]["state"]["epoch_seconds"] == 0.0


def test_a_damaged_checkpoint_falls_back_and_is_named(colours: Path, tmp_path: Path) -> None:
    run_dir = _run(colours, tmp_path, epochs=2)
    engine.fit(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    (ckpt_dir / "last.prev.pt").write_bytes((ckpt_dir / "last.pt").read_bytes())
    (ckpt_dir / "last.pt").write_bytes(b"torn")
    state, skipped = runs.load_checkpoint(run_dir)
    assert state is not None and skipped and "last.pt" in skipped[0]


def test_non_finite_loss_stops_with_advice_and_keeps_weights(colours: Path, tmp_path: Path, home: Path) -> None:
    model = zoo.create_model("test_resnet", pretrained=False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = next(k for k in state if k.endswith("weight") and state[k].dim() == 4)
    state[first][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    zoo.register_user_weights(path, "test_resnet", "broken")
    cfg = RunConfig("test_resnet.broken", str(colours), FreezeConfig("all"),
                    TrainConfig(epochs=1, batch_size=4, precision="fp32", device="cpu"))
    run_dir = runs.create_run(cfg, trainset.resolve(str(colours)), tmp_path / "runs")
    events = []
    result = engine.fit(run_dir, [events.append, RunRecorder(run_dir)])
    assert result.state == "failed" and "lower the learning rate" in result.message
    assert any(isinstance(e, FitFailed) for e in events)
    assert runs.read_status(run_dir)["state"] == "failed"
    assert runs.load_checkpoint(run_dir)[0] is not None


def test_the_status_line_names_what_is_being_prepared(tmp_path: Path) -> None:
    import io

    stage = "Comparing crop and whole photo 1/4: reading the photos, centre cropped"
    RunRecorder(tmp_path)(Preparing(3, 10, stage))
    assert runs.read_status(tmp_path)["message"] == f"{stage} 3/10"
    RunRecorder(tmp_path)(Preparing(10, 10))
    assert runs.read_status(tmp_path)["message"] == "Preparing images 10/10"
    out = io.StringIO()
    TextProgress(out)(Preparing(64, 100, "Analysing the photos"))
    assert out.getvalue() == "\ranalysing the photos 64/100"


def test_a_head_only_run_trains_through_a_folded_copy_and_saves_the_whole_model(colours: Path, tmp_path: Path,
                                                                                home: Path) -> None:
    path = tmp_path / "w.safetensors"
    pretrained = zoo.create_model("test_resnet", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in pretrained.items()}, str(path))
    name = zoo.register_user_weights(path, "test_resnet", "headonly").name
    cfg = RunConfig(name, str(colours), FreezeConfig("head"),
                    TrainConfig(epochs=2, batch_size=4, precision="fp32", device="cpu"))
    run_dir = runs.create_run(cfg, trainset.resolve(str(colours)), tmp_path / "runs")
    assert engine.fit(run_dir, [RunRecorder(run_dir)]).state == "completed"
    saved = runs.load_weights(run_dir)
    head = zoo.classifier_prefix(zoo.create_model(name, num_classes=3, pretrained=False))
    want = zoo.create_model(name, num_classes=3, pretrained=False).state_dict()
    assert set(saved) == set(want)  # BatchNorm and all: the folded copy never reaches the run folder
    assert all(torch.equal(saved[k], v) for k, v in pretrained.items() if not k.startswith(head + "."))
    torch.manual_seed(cfg.train.seed)  # the engine's own start: the same head initialisation
    start = get_task(cfg.task).build_model(name, 3, True).state_dict()
    assert not torch.equal(saved[f"{head}.weight"], start[f"{head}.weight"])  # the model's own head trained


def test_learning_rate_schedule_warms_up_then_decays() -> None:
    lrs = [engine.lr_at(s, 100, 1.0, 0.05) for s in range(100)]
    assert lrs[0] == pytest.approx(0.2) and max(lrs) == pytest.approx(1.0)
    assert lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[5:], lrs[6:], strict=False))


def test_dataset_problems_are_named(tmp_path: Path) -> None:
    one = make_colour_folders(tmp_path / "one", classes=("red",))
    with pytest.raises(trainset.DatasetProblem, match="at least 2 classes"):
        trainset.resolve(str(one))
    with pytest.raises(trainset.DatasetProblem, match="not a folder"):
        trainset.from_folder(tmp_path / "missing")


def test_half_built_image_caches_of_dead_processes_are_removed(colours: Path, home: Path) -> None:
    import os
    import subprocess

    from core.pipeline import build_cache, prep_for
    from core.settings import cache_root

    folder = cache_root() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    ended = subprocess.Popen(["true"])
    ended.wait()  # its pid belongs to no live process now
    stale = folder / f"abc.{ended.pid}.tmp"
    stale.write_bytes(b"x" * 1000)
    mine = folder / f"def.{os.getpid()}.tmp"  # a live builder's part stays
    mine.write_bytes(b"x")
    paths = sorted(str(p) for p in (colours / "train").rglob("*.png"))[:4]
    build_cache(paths, prep_for(zoo.get_spec("test_resnet")))
    assert not stale.exists() and mine.exists()


def test_validation_runs_through_a_folded_copy_that_scores_as_the_model_itself(colours: Path, home: Path) -> None:
    from core.device import plan_device
    from core.pipeline import build_cache, prep_for
    from tests.synthetic import model_with_batchnorm_statistics

    paths = sorted(str(p) for p in colours.rglob("*.png"))
    cache = build_cache(paths, prep_for(zoo.get_spec("test_efficientnet")))
    labels = torch.arange(len(paths)) % 3
    model = model_with_batchnorm_statistics("test_efficientnet", num_classes=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    plan, idx = plan_device("cpu", "fp32"), list(range(len(paths)))
    folded = zoo.inference_copy(model, cache.prep.size, plan.channels_last)
    assert zoo.batchnorm_count(folded) < zoo.batchnorm_count(model)  # a copy with BatchNorm folded in exists
    loss, acc = engine.validate(model, cache, idx, labels, plan)
    plain_loss, plain_acc, _ = engine.evaluate_indices(model, cache, idx, labels, plan)
    assert acc == pytest.approx(plain_acc, abs=1e-6) and loss == pytest.approx(plain_loss, rel=1e-4)  # its figures
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())  # and the model is left as it was


def test_out_of_memory_halves_the_batch_and_finishes(colours: Path, tmp_path: Path, home: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFER_STUDIO_TEST_OOM_ABOVE", "3")  # batches above 3 images fail like an OOM
    run_dir = _run(colours, tmp_path, batch_size=8, epochs=1)
    res = engine.fit(run_dir, [RunRecorder(run_dir)])
    assert res.state == "completed"
    notices = [e["message"] for e in runs.read_events(run_dir) if e["type"] == "notice"]
    assert notices[:2] == ["Out of memory: the batch size is now 4.", "Out of memory: the batch size is now 2."]
    ckpt, _ = runs.load_checkpoint(run_dir)
    assert ckpt["state"]["batch_size"] == 2 and ckpt["state"]["pos"] == 0 and ckpt["state"]["epoch"] == 1


def test_out_of_memory_at_one_image_fails_with_advice(colours: Path, tmp_path: Path, home: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFER_STUDIO_TEST_OOM_ABOVE", "0")
    run_dir = _run(colours, tmp_path, batch_size=2, epochs=1)
    res = engine.fit(run_dir, [RunRecorder(run_dir)])
    assert res.state == "failed" and "batch of 1 image" in res.message
    assert runs.read_status(run_dir)["state"] == "failed"



def test_training_crops_can_be_smaller_than_the_model_input(colours: Path, tmp_path: Path) -> None:
    """train_size shrinks the training crops only; validation still sees the model's own input size."""
    from core.pipeline import Prep, eval_batch, image_generators, train_batch

    with pytest.raises(ValueError, match="training image size"):
        TrainConfig(train_size=8)
    prep = Prep(64, 72, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    squares = np.random.default_rng(0).integers(0, 255, (3, 72, 72, 3), dtype=np.uint8)
    gens = image_generators(0, 0, 0, 3)
    assert train_batch(squares, prep, ("crop", "flip"), gens, size=40).shape == (3, 3, 40, 40)
    assert train_batch(squares, prep, (), image_generators(0, 0, 0, 3)).shape == (3, 3, 64, 64)
    assert eval_batch(squares, prep).shape == (3, 3, 64, 64)
    run_dir = _run(colours, tmp_path, epochs=1, train_size=48)
    assert engine.fit(run_dir, [RunRecorder(run_dir)]).state == "completed"
    assert runs.load_config(run_dir).train.train_size == 48


def test_squash_keeps_the_whole_photo_and_crop_cuts_its_ends(tmp_path: Path) -> None:
    """A portrait photo with coloured top and bottom bands: "crop" keeps only the middle, "squash" keeps the bands
    (stretched); each fit has its own image cache, and caches made before `fit` existed keep their key."""
    from PIL import Image

    from core.pipeline import FITS, Prep, _cache_key, square

    assert tuple(FITS) == ("crop", "squash", "pad")
    img = np.zeros((120, 40, 3), np.uint8)
    img[:20] = (255, 0, 0)   # red top band
    img[-20:] = (0, 0, 255)  # blue bottom band
    photo = Image.fromarray(img)
    crop = square(photo, Prep(32, 40, "bilinear", (0.5,) * 3, (0.5,) * 3))
    squash = square(photo, Prep(32, 40, "bilinear", (0.5,) * 3, (0.5,) * 3, "squash"))
    assert crop.shape == squash.shape == (40, 40, 3)
    assert crop.max() < 30, "the centre square of a 1:3 portrait holds none of its end bands"
    assert squash[0, 20, 0] > 200 and squash[-1, 20, 2] > 200 and squash[20, 20].max() < 30
    pad = square(photo, Prep(32, 40, "bilinear", (0.5,) * 3, (0.5,) * 3, "pad"))
    assert pad.shape == (40, 40, 3) and tuple(pad[20, 0]) == (128, 128, 128), "mean-coloured side borders"
    assert pad[1, 20, 0] > 200 and pad[-2, 20, 2] > 200 and pad[20, 20].max() < 30, "both bands, not stretched"
    crop_prep = Prep(32, 40, "bilinear", (0.5,) * 3, (0.5,) * 3)
    assert "fit" not in crop_prep.key() and '"fit": "squash"' in Prep(32, 40, "bilinear", (0.5,) * 3, (0.5,) * 3,
                                                                      "squash").key()
    assert _cache_key(["a.jpg"], crop_prep) != _cache_key(["a.jpg"], Prep(32, 40, "bilinear", (0.5,) * 3,
                                                                          (0.5,) * 3, "squash"))
    with pytest.raises(ValueError, match="image fit"):
        TrainConfig(image_fit="letterbox")
    assert TrainConfig.from_dict({"epochs": 2}).image_fit == "crop", "runs saved before the option crop"


def test_crop_min_area_bounds_how_far_random_crops_zoom_in() -> None:
    """A gradient photo: a crop's share of the x range shows how much of the photo it keeps."""
    from core.pipeline import Prep, image_generators, train_batch

    with pytest.raises(ValueError, match="smallest crop area"):
        TrainConfig(crop_min_area=0.01)
    with pytest.raises(ValueError, match="smallest crop area"):
        TrainConfig(crop_min_area=1.5)
    assert TrainConfig.from_dict({"epochs": 2}).crop_min_area == 0.25, "runs saved before the field"
    prep = Prep(48, 48, "bilinear", (0.5,) * 3, (0.5,) * 3)
    ramp = np.broadcast_to(np.linspace(0, 255, 48, dtype=np.float32)[None, :, None], (48, 48, 3))
    squares = np.ascontiguousarray(np.broadcast_to(ramp.astype(np.uint8), (24, 48, 48, 3)))
    full = float(np.ptp(train_batch(squares[:1], prep, (), image_generators(0, 0, 0, 1))[0, 0].numpy()))

    def kept(min_area: float) -> np.ndarray:
        x = train_batch(squares, prep, ("crop",), image_generators(3, 0, 0, 24), min_area=min_area)
        return np.ptp(x[:, 0].numpy(), axis=(1, 2)) / full

    assert kept(1.0).min() > 0.8, "whole-photo crops keep (almost) every column"
    assert kept(0.05).min() < 0.4 and kept(0.05).mean() < kept(0.25).mean() < kept(1.0).mean()


def test_a_squash_run_trains_and_predicts_with_squashed_photos(colours: Path, tmp_path: Path) -> None:
    from core.inference import Predictor
    from core.pipeline import predict_input

    run_dir = _run(colours, tmp_path, epochs=1, image_fit="squash")
    assert engine.fit(run_dir, [RunRecorder(run_dir)]).state == "completed"
    predictor = Predictor.from_run(run_dir)
    assert predictor.prep.fit == "squash"
    from PIL import Image

    band = np.zeros((90, 30, 3), np.uint8)
    band[:15] = 255
    photo = tmp_path / "portrait.png"
    Image.fromarray(band).save(photo)
    x = predictor.inputs([str(photo)])
    assert torch.equal(x, predict_input(str(photo), predictor.prep))
    assert not torch.equal(x, predict_input(str(photo), replace(predictor.prep, fit="crop")))


def test_the_kept_weights_are_the_most_accurate_and_among_those_the_surest(colours: Path, tmp_path: Path) -> None:
    """A small validation set is often at 100 % after an epoch or two: the later epoch with the lower loss is kept,
    not the first one to reach it."""
    run_dir = _run(colours, tmp_path, epochs=4)
    history = engine.fit(run_dir).history
    top = max(h["val_accuracy"] for h in history)
    tied = [h for h in history if h["val_accuracy"] == top]
    assert len(tied) >= 2, "this run should reach its best accuracy in more than one epoch"
    kept = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert kept["epoch"] == min(tied, key=lambda h: h["val_loss"])["epoch"] != tied[0]["epoch"]
    assert engine.improves(0.9, 0.5, 0.8, 0.1) and not engine.improves(0.8, 0.5, 0.9, 0.6)
    assert engine.improves(0.9, 0.4, 0.9, 0.5) and not engine.improves(0.9, 0.5, 0.9, 0.4)
    assert not engine.improves(0.9, float("nan"), 0.9, None) and engine.improves(0.9, 0.5, None, None)
