"""Grad-CAM heat maps: which parts of the photo made the model choose a class (the method of pytorch_grad_cam's
GradCAM, computed here).

The target layer is found for any timm model without a per-architecture table: the module whose output IS the
tensor `forward_features` returns (the last feature map before pooling: `layer4` of a ResNet, `bn2` of an
EfficientNet, …). Token models (ViT-like: `patch_embed` + `blocks`, features of shape (N, tokens, C)) use the last
block's first norm with a reshape of the patch tokens to their grid, as the pytorch_grad_cam docs do; NHWC feature
maps are permuted to NCHW.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.pipeline import eval_batch, load_square

_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TargetLayer:
    name: str
    module: nn.Module
    reshape: Callable[[torch.Tensor], torch.Tensor] | None
    kind: str  # "feature map" | "tokens" | "feature map (NHWC)"


@dataclass
class CamResult:
    """A heat map for one image and one class."""

    heatmap: np.ndarray  # H x W float32 in [0, 1], at the model's input size
    overlay: Image.Image  # the model's view of the photo with the heat map on top
    image: Image.Image  # the model's view (centre crop at the input size)
    target_index: int
    target_label: str
    probability: float
    layer: str

    @property
    def has_evidence(self) -> bool:
        """False when nothing in the photo speaks for the target class (Grad-CAM is zero everywhere): say so
        instead of showing a blank map."""
        return bool(self.heatmap.max() > 0)


def _token_reshape(model: nn.Module, n_tokens: int) -> Callable[[torch.Tensor], torch.Tensor]:
    prefix = int(getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0))
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    n_patches = n_tokens - prefix
    if grid and math.prod(grid) == n_patches:
        gh, gw = int(grid[0]), int(grid[1])
    else:
        gh = gw = math.isqrt(n_patches)
        if gh * gw != n_patches:
            raise ValueError(f"cannot arrange {n_patches} patch tokens on a square grid")

    def reshape(t: torch.Tensor) -> torch.Tensor:
        t = t[:, prefix:, :]
        return t.reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)

    return reshape


def find_target_layer(model: nn.Module, x: torch.Tensor) -> TargetLayer:
    """The layer Grad-CAM should look at for this timm model (cached per model)."""
    cached = _LAYERS.get(model)
    if cached is not None:
        return cached
    outputs: list[tuple[str, object]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=name: outputs.append((n, out)))
             for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            feats = model.forward_features(x[:1])
    finally:
        for h in hooks:
            h.remove()
    if isinstance(feats, tuple | list):
        feats = feats[0]
    modules = dict(model.named_modules())
    blocks = getattr(model, "blocks", None)
    if feats.ndim == 3 and isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks):
        last = blocks[-1]
        name = "blocks." + str(len(blocks) - 1)
        module, name = (last.norm1, name + ".norm1") if hasattr(last, "norm1") else (last, name)
        result = TargetLayer(name, module, _token_reshape(model, feats.shape[1]), "tokens")
    elif feats.ndim == 4:
        same = [n for n, out in outputs if out is feats]
        if not same:  # the features were made by a functional op: take the last module with that output shape
            same = [n for n, out in outputs if isinstance(out, torch.Tensor) and out.shape == feats.shape]
        if not same:
            raise ValueError(f"{type(model).__name__}: no layer produces the final feature map")
        name = same[-1]  # the outermost: its output is final (inner in-place ops have already run)
        nf = getattr(model, "num_features", feats.shape[1])
        nhwc = feats.shape[-1] == nf and feats.shape[1] != nf
        reshape = (lambda t: t.permute(0, 3, 1, 2)) if nhwc else None
        result = TargetLayer(name, modules[name], reshape, "feature map (NHWC)" if nhwc else "feature map")
    else:
        raise ValueError(f"{type(model).__name__}: Grad-CAM needs a feature map or patch tokens, got features of "
                         f"shape {tuple(feats.shape)}")
    _LAYERS[model] = result
    return result


def _scale(maps: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Each map shifted to start at 0 and divided by its maximum (+1e-7), then resized to `size` (width, height)
    bilinearly: `pytorch_grad_cam.utils.image.scale_cam_image` for 2-D maps."""
    import cv2

    out = []
    for m in maps:
        m = m - np.min(m)
        m = m / (1e-7 + np.max(m))
        out.append(cv2.resize(np.float32(m), size) if size is not None else m)
    return np.float32(out)


def grad_cam(model: nn.Module, x: torch.Tensor, target_index: int, layer: TargetLayer | None = None) -> np.ndarray:
    """The Grad-CAM map (H x W float32 in [0, 1], at the input size) of one prepared image (1,3,H,W) for a class.

    The same numbers as `pytorch_grad_cam.GradCAM` (channel weights = mean gradient of the class score over the
    layer's map, weighted sum, ReLU, min-max scaling, bilinear resize), without importing that package (2–7 s on a
    first heat-map: it pulls in scikit-learn and scipy) and with the backward pass stopped at the target layer
    instead of running through the whole network into every weight's `.grad`."""
    return _cam(model, x, layer or find_target_layer(model, x), lambda _: int(target_index))[0]


def _cam(model: nn.Module, x: torch.Tensor, layer: TargetLayer,
         pick: Callable[[torch.Tensor], int]) -> tuple[np.ndarray, torch.Tensor]:
    """(Grad-CAM map, the model's outputs for the image) in one forward pass; `pick(outputs)` names the class."""
    was_training = model.training
    model.eval()
    seen: list[torch.Tensor] = []
    handle = layer.module.register_forward_hook(lambda mod, inp, out: seen.append(out))
    try:
        # the input asks for gradients, so activations have them even when the backbone's weights are frozen
        inp = x[:1].detach().float().clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(inp)
            act = seen[0]  # the layer's first output in the pass, as pytorch_grad_cam takes it
            (grad,) = torch.autograd.grad(out[0, pick(out.detach())], act)
    finally:
        handle.remove()
        model.train(was_training)
    act, grad = act.detach(), grad.detach()
    if layer.reshape is not None:
        act, grad = layer.reshape(act), layer.reshape(grad)
    acts, grads = act.cpu().numpy(), grad.cpu().numpy()
    weights = np.mean(grads, axis=(2, 3))
    cam = np.maximum((weights[:, :, None, None] * acts).sum(axis=1), 0)
    per_layer = _scale(cam, (inp.size(-1), inp.size(-2)))[:, None, :]  # one target layer
    maps = _scale(np.mean(np.maximum(per_layer, 0), axis=1))
    heat = np.nan_to_num(np.asarray(maps[0], dtype=np.float32))
    return np.clip(heat, 0.0, 1.0), out.detach()


def overlay_heatmap(image: np.ndarray | Image.Image, heatmap: np.ndarray, image_weight: float = 0.55) -> Image.Image:
    """The image (uint8 RGB) with the heat map in the JET colours on top (as
    `pytorch_grad_cam.utils.image.show_cam_on_image` draws it)."""
    import cv2

    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32) / 255.0
    if rgb.shape[:2] != heatmap.shape:
        heatmap = np.asarray(Image.fromarray((heatmap * 255).astype(np.uint8)).resize(
            (rgb.shape[1], rgb.shape[0]), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    colours = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * heatmap), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    cam = (1 - image_weight) * (np.float32(colours) / 255) + image_weight * rgb
    return Image.fromarray(np.uint8(255 * (cam / np.max(cam))))


def explain(predictor, source: str | os.PathLike | bytes, target: int | str | None = None) -> CamResult:
    """Grad-CAM for one image with a `core.inference.Predictor`; target: a class index or name, None = the
    predicted class."""
    square = load_square(source, predictor.prep)
    x = eval_batch(square[None], predictor.prep, channels_last=False).to(predictor.plan.torch_device())
    off = (square.shape[0] - predictor.prep.size) // 2
    view = square[off:off + predictor.prep.size, off:off + predictor.prep.size]
    if isinstance(target, str):
        if target not in predictor.classes:
            raise ValueError(f"Unknown class {target!r}; the model knows {', '.join(predictor.classes)}.")
        target = predictor.classes.index(target)
    elif target is not None and not 0 <= int(target) < len(predictor.classes):
        raise ValueError(f"Class index {int(target)} is out of range (0-{len(predictor.classes) - 1}).")
    with predictor.lock:  # one forward pass gives the probabilities (the predicted class) and the map
        layer = find_target_layer(predictor.model, x)
        heat, out = _cam(predictor.model, x, layer, lambda o: int(torch.softmax(o.float(), 1)[0].argmax())
                         if target is None else int(target))
    probs = torch.softmax(out.float(), 1)[0].cpu()
    index = int(probs.argmax()) if target is None else int(target)
    return CamResult(heat, overlay_heatmap(view, heat), Image.fromarray(np.ascontiguousarray(view)), index,
                     predictor.classes[index], float(probs[index]), layer.name)
