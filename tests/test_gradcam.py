"""Grad-CAM: a map at the input size in [0, 1] for any timm model, which changes with the target class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from core import runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.gradcam import explain, find_target_layer, grad_cam
from core.inference import load_predictor
from core.tasks import get_task
from tests.synthetic import make_colour_folders


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gradcam")
    data = make_colour_folders(root / "data", train=2, val=2)
    cfg = RunConfig("test_resnet", str(data), FreezeConfig("head"), TrainConfig(epochs=1, device="cpu"),
                    pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), root / "runs")
    torch.manual_seed(0)
    net = get_task("classification").build_model("test_resnet", 3, pretrained=False)
    runs.save_weights(run_dir, net.state_dict(), {"epoch": 1})
    return load_predictor(run_dir)


def _photo(tmp_path: Path) -> Path:
    """Noise with a red left half: regions a class can prefer."""
    arr = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    arr[:, :60] = (200, 40, 40)
    Image.fromarray(arr).save(tmp_path / "photo.png")
    return tmp_path / "photo.png"


def test_explain_gives_a_map_at_the_input_size_that_changes_with_the_class(predictor, tmp_path: Path) -> None:
    photo = _photo(tmp_path)
    size = predictor.prep.size
    maps = {}
    for target in range(3):
        res = explain(predictor, str(photo), target)
        assert res.heatmap.shape == (size, size) and res.heatmap.dtype == np.float32
        assert 0.0 <= res.heatmap.min() and res.heatmap.max() <= 1.0
        assert res.has_evidence == (res.heatmap.max() > 0)
        assert res.overlay.size == (size, size) and res.image.size == (size, size) and res.overlay.mode == "RGB"
        assert res.target_index == target and res.target_label == predictor.classes[target]
        assert res.layer == "layer4" and 0 < res.probability < 1
        maps[target] = res.heatmap
    assert np.abs(maps[0] - maps[1]).mean() > 0.01 and np.abs(maps[1] - maps[2]).mean() > 0.01
    by_name = explain(predictor, photo.read_bytes(), predictor.classes[1])
    assert np.allclose(by_name.heatmap, maps[1], atol=1e-5)
    predicted = explain(predictor, str(photo))  # default: the predicted class, which has evidence
    assert predicted.target_label == predictor.predict([str(photo)], top_k=1)[0].label
    assert predicted.has_evidence and predicted.heatmap.max() == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="Unknown class"):
        explain(predictor, str(photo), "purple")
    # the predictor still predicts normally afterwards (no hooks left behind)
    assert not predictor.model._forward_hooks and not any(m._forward_hooks for m in predictor.model.modules())


@pytest.mark.parametrize("name, layer, kind", [
    ("test_efficientnet", "bn2", "feature map"),
    ("test_vit", "blocks.5.norm1", "tokens"),
    ("test_convnext", "norm_pre", "feature map"),
])
def test_the_target_layer_is_found_for_other_families(name: str, layer: str, kind: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # a frozen backbone still gets a map
    x = torch.randn(1, 3, 160, 160)
    target = find_target_layer(model, x)
    assert (target.name, target.kind) == (layer, kind)
    a, b = grad_cam(model, x, 0, target), grad_cam(model, x, 2, target)
    assert a.shape == b.shape == (160, 160)
    assert np.abs(a - b).mean() > 0.01
