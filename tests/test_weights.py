"""The real pretrained files transfer: ImageNet predictions are right and their features beat random weights."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from core import zoo

pytestmark = pytest.mark.weights


def _top5(name: str, image: np.ndarray) -> list[str]:
    spec = zoo.get_spec(name)
    assert zoo.has_weights(spec), zoo.weights_status(spec)
    model = zoo.create_model(name).eval()
    x = zoo.transforms_for(spec, train=False)(Image.fromarray(image).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        top = model(x).softmax(-1)[0].topk(5).indices.tolist()
    return [zoo.imagenet_label(i).lower() for i in top]


@pytest.mark.parametrize("name", ["mobilenetv2_100", "tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_pretrained_model_names_chelsea_a_cat_and_coffee_an_espresso(name: str) -> None:
    assert "cat" in _top5(name, skimage.data.chelsea())[0]
    assert any(w in _top5(name, skimage.data.coffee())[0] for w in ("espresso", "cup"))


def test_torchvision_mobilenet_v2_loads_the_packaged_file_strictly() -> None:
    import torchvision

    model = zoo.create_torchvision_mobilenet_v2().eval()
    tf = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    x = tf(Image.fromarray(skimage.data.chelsea()))
    with torch.no_grad():
        top = int(model(x.unsqueeze(0)).argmax())
    assert "cat" in zoo.imagenet_label(top).lower()


def _texture_crops(name: str, half: int, n: int, rng: np.random.Generator) -> list[Image.Image]:
    """Crops from the left (half=0) or right (half=1) of a texture, each standardised to one brightness/contrast
    so that plain intensity statistics cannot tell the textures apart."""
    img = getattr(skimage.data, name)().astype(np.float32)
    width = img.shape[1]
    lo, hi = (0, width // 2) if half == 0 else (width // 2, width)
    out = []
    for _ in range(n):
        s = int(rng.integers(64, 128))
        x, y = int(rng.integers(lo, hi - s)), int(rng.integers(0, img.shape[0] - s))
        c = img[y:y + s, x:x + s]
        c = (c - c.mean()) / (c.std() + 1e-6) * 50 + 128
        out.append(Image.fromarray(np.clip(c, 0, 255).astype(np.uint8)).convert("RGB"))
    return out


def _probe_accuracy(pretrained: bool) -> float:
    rng = np.random.default_rng(0)
    names = ["brick", "grass", "gravel"]
    train = [(c, i) for i, n in enumerate(names) for c in _texture_crops(n, 0, 8, rng)]
    test = [(c, i) for i, n in enumerate(names) for c in _texture_crops(n, 1, 30, rng)]
    torch.manual_seed(0)
    model = zoo.create_model("mobilenetv2_100", num_classes=0, pretrained=pretrained).eval()
    tf = zoo.transforms_for(zoo.get_spec("mobilenetv2_100"), train=False)

    def feats(items):
        with torch.no_grad():
            f = model(torch.stack([tf(c) for c, _ in items]))
        return torch.nn.functional.normalize(f, dim=1), torch.tensor([i for _, i in items])

    xtr, ytr = feats(train)
    xte, yte = feats(test)
    w = torch.zeros(xtr.shape[1], 3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ w * 10 + b, ytr) + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return ((xte @ w * 10 + b).argmax(1) == yte).float().mean().item()


def test_pretrained_features_separate_textures_far_better_than_random_weights() -> None:
    pretrained, random = _probe_accuracy(True), _probe_accuracy(False)
    assert pretrained >= 0.95
    assert pretrained - random >= 0.15, (pretrained, random)
