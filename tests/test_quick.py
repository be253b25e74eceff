"""The quick model's parts: embeddings through ONNX Runtime, BatchNorm folding, the L2 choice and its memo."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from core import quick, zoo
from core.pipeline import Prep, centre_u8, eval_batch
from core.settings import cache_root
from tests.synthetic import model_with_batchnorm_statistics

PREP = Prep(32, 40, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _tiny(seed: int = 0) -> torch.nn.Module:
    """timm's test EfficientNet with non-trivial BatchNorm statistics (fresh ones fold to almost nothing)."""
    return model_with_batchnorm_statistics("test_efficientnet", seed)


def _squares(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, PREP.scale_size, PREP.scale_size, 3), dtype=np.uint8)


@torch.inference_mode()
def test_folding_batchnorm_keeps_the_answers_and_removes_every_batchnorm() -> None:
    model, x = _tiny(), eval_batch(_squares(3), PREP, channels_last=False)
    before = model(x)
    zoo.fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(x), before, atol=1e-4, rtol=1e-4)


class _SideOutput(torch.nn.Module):
    """A convolution whose output feeds its BatchNorm and, besides, the result: folding by registration order
    would change the second use."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.bn.running_mean.uniform_(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return (self.bn(y) + y).mean((2, 3))


def test_batchnorm_is_folded_only_where_the_answers_stay_the_same() -> None:
    folded = zoo.folded_if_same(_tiny(), 32)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    odd = _SideOutput()
    assert zoo.folded_if_same(odd, 32) is odd  # kept as it is, BatchNorm and all


@torch.inference_mode()
def test_onnx_embeddings_take_uint8_crops_and_match_torch_in_float32() -> None:
    model = _tiny()
    zoo.fold_batchnorm(model)
    squares = _squares(5)  # more than one fixed-size batch of 4: the last one is padded and cut back
    forward = quick._onnx_forward(model, PREP, batch_size=4, threads=1)
    assert forward is not None
    got = torch.cat([forward(centre_u8(squares[:4], PREP.size)), forward(centre_u8(squares[4:], PREP.size))])
    torch.testing.assert_close(got, model(eval_batch(squares, PREP, channels_last=False)), atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_the_exported_graph_is_kept_and_a_damaged_one_is_exported_again(home: Path) -> None:
    model = _tiny()
    zoo.fold_batchnorm(model)
    crops = centre_u8(_squares(4), PREP.size)
    want = quick._onnx_forward(model, PREP, batch_size=4, threads=1)(crops)
    kept = quick._graph_path(model, PREP, 4)
    assert kept.is_file() and home in kept.parents
    stamp = kept.stat().st_mtime_ns
    torch.testing.assert_close(quick._onnx_forward(model, PREP, batch_size=4, threads=1)(crops), want)
    assert kept.stat().st_mtime_ns == stamp  # read back, not exported again
    other = _tiny(1)  # other weights: another graph
    zoo.fold_batchnorm(other)
    assert quick._graph_path(other, PREP, 4) != kept and quick._graph_path(model, PREP, 8) != kept
    kept.write_bytes(b"not a graph")
    torch.testing.assert_close(quick._onnx_forward(model, PREP, batch_size=4, threads=1)(crops), want)
    assert kept.read_bytes() != b"not a graph"


def test_l2_differences_within_noise_go_to_the_stronger_regularisation() -> None:
    grid = (1.0, 0.1)
    strong = torch.ones(200, dtype=torch.bool)
    strong[:10] = False  # 190 right
    weak = strong.clone()
    weak[:3] = True
    weak[10:12] = False  # 191 right: one more, disagreeing on 5 images (noise ~2.2)
    assert quick._within_noise({1.0: strong, 0.1: weak}, grid) == 1.0
    weak[:10] = True  # 198 right: eight more, disagreeing on 12 images (noise ~3.5)
    assert int(weak.sum()) - int(strong.sum()) == 8
    assert quick._within_noise({1.0: strong, 0.1: weak}, grid) == 0.1


def _separable(n: int = 120, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, d, generator=gen) + 4.0 * torch.nn.functional.one_hot(y, d).float()
    return x, y


def test_cross_validation_is_remembered_and_any_label_change_searches_again(home: Path) -> None:
    x, y = _separable()
    first = quick.cached_cross_validate(x, y, 3, "key")
    memos = sorted((cache_root() / "embeddings").glob("cv-*.safetensors"))
    assert len(memos) == 1
    again = quick.cached_cross_validate(x, y, 3, "key")
    assert again[0] == first[0] and torch.equal(again[1][0], first[1][0])
    y2 = y.clone()
    y2[0] = (y2[0] + 1) % 3
    quick.cached_cross_validate(x, y2, 3, "key")
    assert len(list((cache_root() / "embeddings").glob("cv-*.safetensors"))) == 2
    memos[0].write_bytes(b"damaged")  # a broken memo is searched again and rewritten, not an error
    repaired = quick.cached_cross_validate(x, y, 3, "key")
    assert repaired[0] == first[0] and torch.allclose(repaired[1][0], first[1][0])
    assert memos[0].stat().st_size > len(b"damaged")


def test_the_warm_started_final_fit_separates_the_classes() -> None:
    x, y = _separable()
    l2, init = quick.cross_validate(x, y, 3)
    w, b = quick.fit_linear(x, y, 3, l2=l2, iters=quick.FINAL_ITERS, init=init)
    assert float(((x @ w.T + b).argmax(1) == y).float().mean()) > 0.95
    cold = quick.fit_linear(x, y, 3, l2=l2, iters=200)
    assert float((w - cold[0]).abs().max()) < 0.05 * float(cold[0].abs().max())  # the same optimum


def _portraits(root: Path, per_class: int = 16, val: int = 4) -> Path:
    """Tall photos whose class shows only in coloured bands at the top and bottom: the centre square is the same
    grey noise for every class, so cropping hides the class and keeping the whole photo shows it."""
    from PIL import Image

    from tests.synthetic import COLOURS

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(90, 166, (128, 48, 3)).astype(np.uint8)
                img[:40] = img[-40:] = colour
                Image.fromarray(img).save(folder / f"{name}_{i}.png")
    return root


def _model_with_weights(tmp_path: Path) -> str:
    """test_resnet with saved (random) weights registered as pretrained, so `embed` can load them."""
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    state = zoo.create_model("test_resnet", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return zoo.register_user_weights(path, "test_resnet", "fitcheck").name


def test_setup_keeps_the_graph_every_fit_of_the_quick_model_looks_up(home: Path, tmp_path: Path) -> None:
    from core.pipeline import prep_for

    name = _model_with_weights(tmp_path)
    kept = quick.keep_graph(name)
    assert kept is not None and kept.is_file()
    spec = zoo.get_spec(name)
    for fit in ("crop", "pad", "squash"):  # the graph takes crops: one for every fit
        prep = prep_for(spec, fit)
        model = zoo.folded_if_same(zoo.create_model(name, num_classes=0, pretrained=True), prep.size)
        assert quick._graph_path(model, prep, quick.EMBED_BATCH) == kept
    assert quick.keep_graph("test_resnet") is None  # no pretrained weights: nothing to embed with


def test_auto_fit_pads_only_when_the_whole_photo_is_clearly_better(home: Path, tmp_path: Path) -> None:
    from core import trainset
    from core.device import plan_device
    from tests.synthetic import make_colour_folders

    model, plan = _model_with_weights(tmp_path), plan_device("cpu", "fp32")
    bands = quick.choose_fit(model, trainset.resolve(str(_portraits(tmp_path / "bands"))), plan)
    assert bands.fit == "pad" and bands.images == 48
    assert bands.correct["pad"] - bands.correct["crop"] > 10
    assert "whole frame" in bands.message() and f"{bands.correct['pad'] / 48:.1%}" in bands.message()
    # the class fills every photo: both fits see it, nothing is clearly better, the crop stays
    plain = quick.choose_fit(model, trainset.resolve(str(make_colour_folders(tmp_path / "plain", train=12))), plan)
    assert plain.fit == "crop" and plain.correct and "not clearly better" in plain.message()
    few = quick.choose_fit(model, trainset.resolve(str(make_colour_folders(tmp_path / "few", train=4))), plan)
    assert few.fit == "crop" and not few.correct and "too few training photos" in few.message()


def test_a_run_left_to_auto_saves_the_fit_it_chose_and_says_why(home: Path, tmp_path: Path) -> None:
    from core import engine, runs, trainset
    from core.config import FreezeConfig, RunConfig, TrainConfig
    from core.events import Notice, Preparing

    data = str(_portraits(tmp_path / "bands"))
    cfg = RunConfig(_model_with_weights(tmp_path), data, FreezeConfig("head"),
                    TrainConfig(epochs=1, batch_size=8, device="cpu", precision="fp32", image_fit="auto"))
    run_dir = runs.create_run(cfg, trainset.resolve(data), tmp_path / "runs")
    seen = []
    assert engine.fit(run_dir, [seen.append]).state == "completed"
    assert runs.load_config(run_dir).train.image_fit == "pad"  # resume, export and predictions read this
    notes = [e.message for e in seen if isinstance(e, Notice)]
    assert any("keep their whole frame" in m for m in notes), notes
    stages = list(dict.fromkeys(e.stage for e in seen if isinstance(e, Preparing)))  # the status line names each pass
    assert stages == ["Comparing crop and whole photo 1/4: reading the photos, centre cropped",
                      "Comparing crop and whole photo 2/4: analysing the photos, centre cropped",
                      "Comparing crop and whole photo 3/4: reading the photos, whole",
                      "Comparing crop and whole photo 4/4: analysing the photos, whole",
                      "Preparing images"], stages
    quick_run = runs.create_run(replace(cfg, quick=True), trainset.resolve(data), tmp_path / "runs")
    seen.clear()
    quick.train_quick(quick_run, [seen.append])  # the quick model settles "auto" the same way
    assert {e.stage for e in seen if isinstance(e, Preparing)} >= {"Preparing images", "Analysing the photos"}
    assert runs.load_config(quick_run).train.image_fit == "pad"
