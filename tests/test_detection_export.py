"""ONNX export of a detector gives PyTorch's answers for photos of any size: smaller than the model's input (upscaled
by its resize), larger (downscaled), portrait and landscape, limited by the short or by the long side. A tiny
untrained detector (timm `test_efficientnet` body, small FPN) is enough: its random heads still score ~100 boxes per
photo, every one of which must come back from onnxruntime with the same box and score."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from core.tasks.detection import export as ex
from core.tasks.detection.model import DetectorConfig, build_detector

pytest.importorskip("onnxruntime")

EVAL, MAX = 96, 160
CFG = DetectorConfig(fpn_channels=32, representation=64, train_sizes=(EVAL,), eval_size=EVAL, max_size=MAX)


def _float32_differs(side: int, target: int) -> bool:
    """Whether floor(side · (target / side)) comes out differently in float32 (what the traced graph used to
    compute) and in float64 (what PyTorch computes): 415.99997 → 415 rows against 416, or 96.0 against 95.99…"""
    f32 = math.floor(np.float32(side) * (np.float32(target) / np.float32(side)))
    return f32 != math.floor(side * (target / side))


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_detector("test_efficientnet", 2, pretrained=False, config=CFG).float().eval()


def _photo(h: int, w: int, seed: int) -> torch.Tensor:
    """A smooth random picture (blocks upscaled) in [0, 1]: detections vary with the content, not with noise."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]


def test_onnx_detector_matches_torch_on_small_and_large_photos(tiny: torch.nn.Module) -> None:
    pytest.importorskip("onnx")
    assert _float32_differs(47, EVAL)  # 47 px → 96 rows in float32, 95 in PyTorch
    shapes = [
        (47, 63),    # smaller than the input: upscaled ~2× (the failing case of the browser tour)
        (110, 37),   # small portrait, 37 px → 95 rows in float32, 96 in PyTorch
        (300, 220),  # larger portrait: downscaled by the short side
        (120, 400),  # wide landscape: limited by the long side (max_size)
    ]
    images = [_photo(h, w, seed) for seed, (h, w) in enumerate(shapes)]
    data = ex.onnx_bytes(tiny, _photo(128, 160, 9), EVAL)  # traced at a size unlike any checked one
    reference = ex._torch_outputs(tiny, images, EVAL)
    outputs = ex.onnx_outputs(data, images)
    for shape, ref, out in zip(shapes, reference, outputs, strict=True):
        assert len(ref["scores"]) > 10, shape  # enough detections for the comparison to mean something
        result = ex.compare([ref], [out])
        assert result["ok"], (shape, result["summary"])
        assert len(out["scores"]) == len(ref["scores"]), shape
        assert float(out["boxes"][:, 2].max()) <= shape[1] + 1e-3 and float(out["boxes"][:, 3].max()) <= shape[0] + 1e-3


def test_onnx_outputs_keep_their_names_when_the_detector_orders_them_otherwise() -> None:
    """FCOS (like RetinaNet) returns {boxes, scores, labels}; the file's outputs are still boxes, labels, scores."""
    torch.manual_seed(0)
    fcos = build_detector("test_efficientnet", 2, pretrained=False, config=replace(CFG, kind="fcos")).eval()
    images = [_photo(47, 63, 0), _photo(120, 400, 1)]
    outputs = ex.onnx_outputs(ex.onnx_bytes(fcos, _photo(128, 160, 9), EVAL), images)
    assert all(o["labels"].dtype == torch.int64 and o["scores"].is_floating_point() for o in outputs)
    result = ex.compare(ex._torch_outputs(fcos, images, EVAL), outputs)
    assert result["ok"] and result["n_detections"] > 10, result["summary"]


def test_the_export_check_scores_photos_of_several_sizes() -> None:
    base = [_photo(120, 160, 0)]
    images = ex._size_variants(base, eval_size=416, max_size=704)
    shapes = [tuple(im.shape[-2:]) for im in images]
    assert shapes[0] == (120, 160)  # the run's own photos first
    extra = shapes[1:]
    assert any(min(s) < 416 and _float32_differs(min(s), 416) for s in extra)  # upscaled, float32-sensitive
    assert any(h > w for h, w in extra) and any(w > h for h, w in extra)  # portrait and landscape
    assert any(min(s) > 416 for s in extra)  # downscaled
    assert any(max(s) * 416 / min(s) > 704 for s in extra)  # limited by the long side
    assert all(im.dtype == torch.float32 and 0 <= float(im.min()) and float(im.max()) <= 1 for im in images)
