"""What made users wait outside training (bench/wait_bench.py), kept short without changing what they see."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.gradcam import find_target_layer, grad_cam, overlay_heatmap
from tests.test_results_pages import trained  # noqa: F401 - a fixture: a tiny finished run

REPO = Path(__file__).resolve().parents[1]


def _page(page: str, run_dir: Path) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=240)
    at.switch_page(page)
    at.session_state["draft_run_id"] = run_dir.name
    return at


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "test_vit"])
def test_a_heat_map_is_pytorch_grad_cams_and_leaves_no_gradients_in_the_weights(name: str) -> None:
    """The map and its overlay are exactly those of pytorch_grad_cam's GradCAM, but making them no longer writes a
    gradient into every weight of the (cached, shared) model: the backward pass stops at the target layer."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3).eval()
    x = torch.randn(1, 3, 160, 160)
    layer = find_target_layer(model, x)
    ours = grad_cam(model, x, 1, layer)
    assert all(p.grad is None for p in model.parameters())
    with GradCAM(model=model, target_layers=[layer.module], reshape_transform=layer.reshape) as cam:
        ref = cam(input_tensor=x.clone().requires_grad_(True), targets=[ClassifierOutputTarget(1)])[0]
    assert np.array_equal(ours, np.clip(np.nan_to_num(np.asarray(ref, dtype=np.float32)), 0.0, 1.0))
    photo = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    expected = show_cam_on_image(photo.astype(np.float32) / 255.0, ours, use_rgb=True, image_weight=0.55)
    assert np.array_equal(np.asarray(overlay_heatmap(Image.fromarray(photo), ours)), expected)


def test_a_heat_map_does_not_import_pytorch_grad_cam() -> None:
    """The package pulls in scikit-learn and scipy: importing it made the Test page's first heat-map wait seconds."""
    code = ("import sys, numpy as np, timm, torch\n"
            "from core.gradcam import grad_cam, overlay_heatmap\n"
            "model = timm.create_model('test_resnet', pretrained=False, num_classes=3).eval()\n"
            "heat = grad_cam(model, torch.randn(1, 3, 64, 64), 0)\n"
            "overlay_heatmap(np.zeros((64, 64, 3), np.uint8), heat)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytorch_grad_cam', 'sklearn')))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_the_runs_page_makes_the_export_zip_only_when_it_is_downloaded(trained: Path) -> None:  # noqa: F811
    """Every rerun of the Runs page (any click on it) zipped the export again for its download button: now the
    button hands the browser a deferred file, made when it is clicked (no zip sent with the page)."""
    from core.export import export_run

    export_run(trained, "safetensors", trained / "exports" / "model", n_check=2)
    at = _page("views/runs.py", trained).run()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    buttons = at.get("download_button")
    assert [b.label for b in buttons] == ["Download the export (.zip)"]
    assert buttons[0].proto.deferred_file_id and not buttons[0].proto.url  # made on the click, not on every run
    assert any("The zip holds every format exported for these weights (safetensors)" in c.value for c in at.caption)


def test_the_test_page_prepares_the_model_before_a_photo_is_dropped(trained: Path) -> None:  # noqa: F811
    """The first photo waited for Grad-CAM's first pass (its target layer found, a backward pass): it is made as
    the page opens, before any photo, and leaves no gradients in the cached model's weights."""
    import core.gradcam

    before = set(map(id, core.gradcam._LAYERS.keys()))
    at = _page("views/test.py", trained).run()
    assert not at.exception, [e.value for e in at.exception]
    for thread in threading.enumerate():
        if thread.name == "test-warm-up":
            thread.join(timeout=120)
    warmed = [m for m in core.gradcam._LAYERS.keys() if id(m) not in before]
    assert len(warmed) == 1, "the run's model got its Grad-CAM layer with no photo dropped yet"
    assert all(p.grad is None for p in warmed[0].parameters())
