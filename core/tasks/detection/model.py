"""Detectors on the zoo's offline backbones: torchvision's detection heads over a timm feature body.

No detector pretrained on COCO ships in any package here, so only the backbone is transferred (its ImageNet
weights come from `core.zoo`); the neck (FPN) and the heads learn from the user's boxes.

The body keeps timm's parameter names (`backbone.body.conv_stem`, `backbone.body.blocks.3...`), so the layer groups
are the backbone's own groups from `core.freeze` (the ones the Layers page shows) plus one `head` group holding the
FPN and the detection heads. Every BatchNorm of the body is frozen and folded into its convolution (detection
batches are a handful of images: their statistics would be noise); that is also faster on a CPU.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from core import zoo
from core.config import FreezeConfig
from core.freeze import LayerGroup

DETECTORS = ("fasterrcnn", "fcos", "retinanet")
DEFAULT_DETECTOR = "fasterrcnn"
HEAD = "head"


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's shape: kind, FPN width, image sizes (short side) for training and prediction."""

    kind: str = DEFAULT_DETECTOR
    fpn_channels: int = 96
    representation: int = 256  # Faster R-CNN box head width
    train_sizes: tuple[int, ...] = (320, 352, 384, 416, 448, 480)
    eval_size: int = 416
    max_size: int = 704
    score_thresh: float = 0.01
    detections_per_img: int = 100
    box_batch_per_image: int = 64  # sampled proposals per image for the box head (its RoIAlign dominates a step)
    roi_sampling: int = 2  # RoIAlign sampling points per bin side
    test_proposals: int = 150  # region proposals kept per image when predicting (300 scored the same, ~20 % slower)
    levels: tuple[int, ...] = (8, 16, 32)  # the body's strides the FPN reads (it adds one level at twice the last)

    @classmethod
    def from_dict(cls, raw: dict | None) -> DetectorConfig:
        """The config recorded in a manifest (JSON lists back to tuples). A record from before a field existed
        gets that field's value of the time, so old runs and exports rebuild the detector they were trained as."""
        data = {**LEGACY_FIELDS, **dict(raw or {})}
        for key in ("train_sizes", "levels"):
            if key in data:
                data[key] = tuple(int(v) for v in data[key])
        return cls(**data)

    def anchor_sizes(self) -> tuple[tuple[int, ...], ...]:
        """Anchor sizes (px) per pyramid level, the same count on every level (one RPN head serves them all).
        From stride 8: one size of 4 × the stride per level. From a coarser stride: two sizes, 2 and 4 × it, so
        32 px objects keep an anchor."""
        strides = [*self.levels, 2 * self.levels[-1]]
        if self.levels[0] <= 8:
            return tuple((4 * s,) for s in strides)
        return tuple((2 * s, 4 * s) for s in strides)


LEGACY_FIELDS: dict = {"levels": (8, 16, 32)}  # what a manifest without these fields was trained with


class TimmBody(nn.Module):
    """The stem and blocks of a timm EfficientNet-family model, returning the features at the given strides
    (of 8, 16 and 32)."""

    def __init__(self, timm_model: nn.Module, strides: tuple[int, ...] = (8, 16, 32)) -> None:
        super().__init__()
        self.conv_stem = timm_model.conv_stem
        self.bn1 = timm_model.bn1
        self.blocks = timm_model.blocks
        info = timm_model.feature_info
        picks = {}
        for row in info:  # the last block at each reduction
            if row["reduction"] in strides:
                picks[row["reduction"]] = row
        missing = [s for s in strides if s not in picks]
        if missing:
            raise ValueError(f"The backbone has no features at stride {missing}; use strides of 8, 16 and 32.")
        self.taps = [int(picks[r]["module"].split(".")[1]) for r in strides]
        self.channels = [int(picks[r]["num_chs"]) for r in strides]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.bn1(self.conv_stem(x))
        out = OrderedDict()
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                out[str(self.taps.index(i))] = x
            if i >= self.taps[-1]:
                break
        return out


class BodyWithFPN(nn.Module):
    """Body + feature pyramid (the `backbone` torchvision's detectors expect: `out_channels` and a dict of maps)."""

    def __init__(self, body: TimmBody, channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def _body(backbone: str, pretrained: bool, strides: tuple[int, ...] = (8, 16, 32)) -> TimmBody:
    spec = zoo.get_spec(backbone)
    if pretrained and not zoo.has_weights(spec):
        raise zoo.ZooError(zoo.weights_status(spec))
    timm_model = zoo.create_model(backbone, num_classes=0, pretrained=pretrained and spec.weights.kind != "none")
    if not all(hasattr(timm_model, k) for k in ("conv_stem", "bn1", "blocks", "feature_info")):
        raise zoo.ZooError(f"{backbone}: detection works with the MobileNet / EfficientNet family of backbones "
                           "(e.g. mobilenetv2_100, tf_efficientnet_lite0); choose one of those.")
    body = TimmBody(timm_model, strides)
    zoo.fold_batchnorm(body)
    zoo.fuse_conv_act(body)
    return body


class BatchScaleTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform with one random training size per batch instead of one per image: the
    batch is padded to its largest image, so mixed sizes (320–480 px) waste ~20 % of every step on padding."""

    _side: int | None = None  # the short side drawn for the current batch

    def forward(self, images, targets=None):  # noqa: ANN001, ANN201 - torchvision's signature
        self._side = None
        return super().forward(images, targets)

    def torch_choice(self, k: list[int]) -> int:
        if self._side is None:
            self._side = super().torch_choice(k)
        return self._side

    def resize(self, image, target=None):  # noqa: ANN001, ANN201 - torchvision's signature
        """torchvision's resize; when traced for ONNX, with the resized size computed as PyTorch computes it.

        PyTorch sizes the image as floor(side · min(short / min(h, w), long / max(h, w))) in float64 (Python
        floats). torchvision's traced version does the same arithmetic in float32, which lands on the other side
        of a whole number for ~1 size in 10 (194 px × 416/194 = 415.99997 → 415 rows instead of 416; 47 px ×
        96/47 = 96.0 against 95.99…): the exported model then sees an image one pixel shorter, resampled
        differently, and its detections move by pixels (ONNX check failed by 22 px). Here the graph computes the
        size in float64 and resizes to it, exactly as eager PyTorch does for every input size."""
        if not (torchvision._is_tracing() and target is None and self.fixed_size is None and not self.training):
            return super().resize(image, target)
        from torch.onnx import operators

        hw = operators.shape_as_tensor(image)[-2:].to(torch.float64)
        # 1-D tensors throughout: the exporter turns Python floats and 0-d constants into float32 scalars
        limits = torch.tensor([float(self.min_size[-1]), float(self.max_size)], dtype=torch.float64)
        scale = (limits / torch.stack((hw.min(), hw.max()))).min()
        size = torch.floor(hw * scale).to(torch.int64)
        image = nn.functional.interpolate(image[None], size=(size[0], size[1]), mode="bilinear",
                                          align_corners=False)[0]
        return image, target


def build_detector(backbone: str, num_classes: int, pretrained: bool = True,
                   config: DetectorConfig | None = None) -> nn.Module:
    """A torchvision detector (`config.kind`) on the zoo backbone `backbone` for `num_classes` object classes
    (background excluded). Outputs in eval mode: a list of {boxes (x1,y1,x2,y2 px), scores, labels (1-based)}."""
    cfg = config or DetectorConfig()
    if cfg.kind not in DETECTORS:
        raise ValueError(f"Unknown detector '{cfg.kind}'. Use one of: {', '.join(DETECTORS)}.")
    spec = zoo.get_spec(backbone)
    body = _body(backbone, pretrained, cfg.levels)
    neck = BodyWithFPN(body, cfg.fpn_channels)
    common = dict(min_size=cfg.train_sizes, max_size=cfg.max_size, image_mean=list(spec.mean),
                  image_std=list(spec.std), detections_per_img=cfg.detections_per_img)
    if cfg.kind == "fasterrcnn":
        sizes = cfg.anchor_sizes()
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        roi = MultiScaleRoIAlign([str(k) for k in range(len(cfg.levels))], 7, cfg.roi_sampling)
        box_head = TwoMLPHead(cfg.fpn_channels * 49, cfg.representation)
        predictor = FastRCNNPredictor(cfg.representation, num_classes + 1)
        model = FasterRCNN(neck, rpn_anchor_generator=anchors, box_roi_pool=roi, box_head=box_head,
                           box_predictor=predictor, box_score_thresh=cfg.score_thresh,
                           rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
                           rpn_pre_nms_top_n_test=2 * cfg.test_proposals,
                           rpn_post_nms_top_n_test=cfg.test_proposals,
                           box_batch_size_per_image=cfg.box_batch_per_image, **common)
    else:
        base = [4 * s for s in (*cfg.levels, 2 * cfg.levels[-1])]
        sizes = tuple((s, int(s * 1.26), int(s * 1.59)) for s in base)
        if cfg.kind == "fcos":
            anchors = AnchorGenerator(tuple((s,) for s in base), ((1.0,),) * len(base))
            model = FCOS(neck, num_classes + 1, anchor_generator=anchors, score_thresh=cfg.score_thresh, **common)
        else:
            anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(base))
            model = RetinaNet(neck, num_classes + 1, anchor_generator=anchors, score_thresh=cfg.score_thresh,
                              **common)
    model.transform = BatchScaleTransform(cfg.train_sizes, cfg.max_size, list(spec.mean), list(spec.std))
    model.detector_config = cfg
    return model


@contextlib.contextmanager
def predicting(model: nn.Module, size: int | None = None) -> Iterator[nn.Module]:
    """The model in eval mode at one short-side size (the config's eval size), restored afterwards."""
    cfg = getattr(model, "detector_config", DetectorConfig())
    was_training, sizes = model.training, model.transform.min_size
    model.eval()
    model.transform.min_size = (int(size or cfg.eval_size),)
    try:
        yield model
    finally:
        model.transform.min_size = sizes
        model.train(was_training)


def detector_groups(model: nn.Module, backbone: str) -> list[LayerGroup]:
    """The detector's layer groups: the backbone's groups as `core.freeze` names them for the backbone alone
    (stem, blocks.0 … — what the Layers page shows), each holding the body's parameters of its modules, then one
    'head' group with the FPN and the detection heads. Every parameter is in exactly one group."""
    from core.freeze import layer_groups

    with torch.device("meta"):
        reference = zoo.create_model(backbone, num_classes=2, pretrained=False)
    module_group: dict[str, str] = {}
    order: list[str] = []
    for g in layer_groups(reference):
        if g.name == "head":
            continue
        order.append(g.name)
        for name in g.params:
            module_group[name.rsplit(".", 1)[0]] = g.name
    members: dict[str, list[str]] = {name: [] for name in [*order, HEAD]}
    sizes: dict[str, int] = {}
    prefix = "backbone.body."
    for name, param in model.named_parameters():
        sizes[name] = param.numel()
        group = HEAD
        if name.startswith(prefix):
            group = module_group.get(name[len(prefix):].rsplit(".", 1)[0], HEAD)
        members[group].append(name)
    names = [n for n in [*order, HEAD] if members[n]]
    groups = [LayerGroup(i, n, tuple(members[n]), sum(sizes[p] for p in members[n])) for i, n in enumerate(names)]
    assigned = [p for g in groups for p in g.params]
    assert len(assigned) == len(set(assigned)) == len(sizes), "every parameter must be in exactly one layer group"
    return groups


def suggest_config(short_sides: list[int], kind: str = DEFAULT_DETECTOR) -> DetectorConfig:
    """The default detector, with image sizes scaled down for small photos (median shorter side under 320 px):
    upscaling a 96 px picture to 480 px costs time and teaches nothing."""
    base = DetectorConfig(kind=kind)
    if not short_sides:
        return base
    median = sorted(short_sides)[len(short_sides) // 2]
    if median >= base.train_sizes[0]:
        return base
    factor = max(median, 64) / base.train_sizes[0]

    def scaled(v: int) -> int:
        return max(32, int(round(v * factor / 32)) * 32)

    sizes = tuple(dict.fromkeys(scaled(v) for v in base.train_sizes))
    return DetectorConfig(kind=kind, train_sizes=sizes, eval_size=scaled(base.eval_size),
                          max_size=scaled(base.max_size))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())



def group_rows(backbone: str, freeze: FreezeConfig, num_classes: int = 2, epochs: int = 24) -> list[dict]:
    """The detector's layer groups with parameter counts and, per phase of the freeze choice, whether each trains
    (the Layers page's table for detection; the 'head' group is the FPN and the detection heads)."""
    from core.freeze import plan_phases

    model = build_detector(backbone, num_classes, pretrained=False)
    groups = detector_groups(model, backbone)
    if freeze.preset == "custom":
        freeze = replace(freeze, groups=tuple(g for g in freeze.groups if g in {x.name for x in groups}))
    phases = plan_phases(groups, freeze, epochs)
    rows = []
    for g in groups:
        row = {"index": g.index, "group": g.name, "params": g.n_params}
        for k, ph in enumerate(phases):
            suffix = "" if len(phases) == 1 else f" (phase {k + 1} from epoch {ph.start_epoch + 1})"
            row["trains" + suffix] = ph.trainable[g.index]
            row["lr ×" + suffix] = round(ph.lr_mult[g.index], 4)
        rows.append(row)
    return rows
