"""Segmentation models: segmentation-models-pytorch U-Net / FPN / DeepLabV3+ on the app's offline encoders.

MobileNetV2's packaged torchvision weights load straight into smp's ``mobilenet_v2`` encoder (same tensor names);
every other backbone (EfficientNet-Lite, user weights, timm test models) is a timm ``tu-`` encoder whose weights
come from ``core.zoo.create_model`` (which maps the packaged files by position) and are copied by name.

Layer groups for freezing: the encoder's stages by output stride (``encoder 1/2`` … ``encoder 1/32``), then
``decoder`` (decoder + segmentation head), which is the task's "head": it always trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core import zoo
from core.freeze import LayerGroup

ARCHITECTURES = {"unet": "U-Net", "fpn": "FPN", "deeplabv3plus": "DeepLabV3+"}
DEFAULT_ARCH = "unet"
ARCH_NOTES = {
    "unet": "U-Net: skip connections at every scale; sharp edges. The default.",
    "fpn": "FPN: a light feature pyramid; the fastest of the three on a CPU, slightly coarser edges.",
    "deeplabv3plus": "DeepLabV3+: dilated encoder + ASPP for context; slower per image on a CPU.",
}
STRIDE_NAMES = ("encoder 1/2", "encoder 1/4", "encoder 1/8", "encoder 1/16", "encoder 1/32")
DIVISOR = 32


class ModelError(Exception):
    """A segmentation model that cannot be built; the message says why."""


def check_arch(arch: str) -> str:
    arch = (arch or DEFAULT_ARCH).lower().replace("-", "").replace("_", "").replace("+", "plus")
    aliases = {"deeplab": "deeplabv3plus", "deeplabv3": "deeplabv3plus"}
    arch = aliases.get(arch, arch)
    if arch not in ARCHITECTURES:
        raise ModelError(f"Unknown architecture '{arch}'. Choose one of: {', '.join(ARCHITECTURES)}.")
    return arch


def encoder_name(backbone: str) -> str:
    """smp's encoder name for a zoo backbone: smp's own mobilenet_v2 for MobileNetV2, a timm tu- encoder otherwise."""
    spec = zoo.get_spec(backbone)
    return "mobilenet_v2" if spec.arch == "mobilenetv2_100" else f"tu-{spec.arch}"


def _smp_model(arch: str, encoder: str, num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    cls = {"unet": smp.Unet, "fpn": smp.FPN, "deeplabv3plus": smp.DeepLabV3Plus}[arch]
    return cls(encoder_name=encoder, encoder_weights=None, classes=num_classes)


def _load_encoder(net: nn.Module, backbone: str, encoder: str) -> None:
    """Copy the backbone's offline ImageNet weights into the smp encoder; every encoder tensor must be filled."""
    spec = zoo.get_spec(backbone)
    if encoder == "mobilenet_v2":
        path = zoo.weights_file(spec)
        if path is None:
            raise zoo.ZooError(f"The pretrained weights for {spec.title} are not installed: "
                               f"{spec.weights.install_command}")
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        try:  # nn.Module's own strict load (smp's override returns nothing)
            nn.Module.load_state_dict(net.encoder, state, strict=True)
        except RuntimeError as err:
            raise zoo.ZooError(f"{spec.name}: the weights do not fit smp's mobilenet_v2 encoder ({err}).") from None
        return
    full = zoo.create_model(backbone, num_classes=1000, pretrained=True).state_dict()
    target = net.encoder.model.state_dict()
    mapped = {k: v for k, v in full.items() if k in target}
    lacking = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    if lacking:
        raise zoo.ZooError(f"{spec.name}: the weights lack {len(lacking)} encoder tensors, e.g. {lacking[:3]}.")
    for key, value in mapped.items():
        if tuple(target[key].shape) != tuple(value.shape):
            raise zoo.ZooError(f"{spec.name}: tensor {key} has shape {tuple(value.shape)}, the encoder "
                               f"{tuple(target[key].shape)}.")
    net.encoder.model.load_state_dict(mapped, strict=False)


class SegmentationModel(nn.Module):
    """An smp model with the facts the rest of the app needs: architecture, backbone, and layer groups."""

    def __init__(self, arch: str, backbone: str, num_classes: int, pretrained: bool = True) -> None:
        super().__init__()
        self.arch = check_arch(arch)
        self.backbone = backbone
        self.encoder_name = encoder_name(backbone)
        self.num_classes = num_classes
        self.net = _smp_model(self.arch, self.encoder_name, num_classes)
        if pretrained:
            _load_encoder(self.net, backbone, self.encoder_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build(backbone: str, num_classes: int, pretrained: bool = True, arch: str = DEFAULT_ARCH) -> SegmentationModel:
    """The segmentation model for `backbone` and `arch` with `num_classes` outputs per pixel."""
    return SegmentationModel(arch, backbone, num_classes, pretrained)


def _feature_modules(model: SegmentationModel) -> list[str]:
    """Names (relative to the encoder) of the modules whose outputs are the 5 feature levels."""
    enc = model.net.encoder
    if model.encoder_name == "mobilenet_v2":
        return [f"features.{i}" for i in enc._out_indexes]
    return [f"model.{n}" for n in enc.model.feature_info.module_name()]


def seg_layer_groups(model: SegmentationModel) -> list[LayerGroup]:
    """Encoder stages by output stride (in forward order), then 'decoder' (decoder + head): every parameter in
    exactly one group."""
    enc_prefix = "net.encoder."
    levels = _feature_modules(model)
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    enc_names = [n for n in sizes if n.startswith(enc_prefix)]
    last_of: dict[str, int] = {}
    for i, mod in enumerate(levels):
        inside = [n for n in enc_names if n[len(enc_prefix):].startswith(mod + ".")]
        if inside:
            last_of[inside[-1]] = i
    buckets: list[list[str]] = [[] for _ in levels]
    level = 0
    for n in enc_names:
        buckets[min(level, len(levels) - 1)].append(n)
        if n in last_of:
            level = last_of[n] + 1
    groups: list[LayerGroup] = []
    for i, names in enumerate(buckets):
        if names:
            label = STRIDE_NAMES[i] if i < len(STRIDE_NAMES) else f"encoder level {i + 1}"
            groups.append(LayerGroup(len(groups), label, tuple(names), sum(sizes[n] for n in names)))
    rest = [n for n in sizes if not n.startswith(enc_prefix)]
    groups.append(LayerGroup(len(groups), "decoder", tuple(rest), sum(sizes[n] for n in rest)))
    assigned = [n for g in groups for n in g.params]
    assert len(assigned) == len(set(assigned)) == len(sizes), "every parameter must be in exactly one layer group"
    return groups


@dataclass(frozen=True)
class ModelFacts:
    arch: str
    backbone: str
    encoder: str
    params: int
    encoder_params: int


def facts(model: SegmentationModel) -> ModelFacts:
    total = sum(p.numel() for p in model.parameters())
    enc = sum(p.numel() for p in model.net.encoder.parameters())
    return ModelFacts(model.arch, model.backbone, model.encoder_name, total, enc)
