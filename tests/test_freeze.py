"""Layer groups cover every parameter once; presets train exactly what they say; BatchNorm of frozen groups is fixed."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from core import zoo
from core.config import FreezeConfig
from core.freeze import (
    apply_phase,
    frozen_view,
    layer_groups,
    optimizer_groups,
    phase_at,
    plan_phases,
    set_phase_lrs,
    set_train_mode,
    trainable_counts,
)

TINY = [n for n in timm.list_models("test_*")]
REGISTERED = [s.name for s in zoo.list_backbones()]


def _model(name: str) -> torch.nn.Module:
    return zoo.create_model(name, num_classes=3, pretrained=False)


@pytest.mark.parametrize("name", sorted(set(TINY + REGISTERED)))
def test_groups_cover_every_parameter_exactly_once(name: str) -> None:
    model = _model(name)
    groups = layer_groups(model)
    names = [n for g in groups for n in g.params]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))
    assert groups[0].name == "stem" and groups[-1].name == "head"
    assert sum(g.n_params for g in groups) == sum(p.numel() for p in model.parameters())


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "test_vit", "mobilenetv2_100"])
def test_each_preset_leaves_exactly_the_intended_parameters_trainable(name: str) -> None:
    model = _model(name)
    groups = layer_groups(model)
    head = set(groups[-1].params)
    expected = {
        "head": head,
        "all": {n for n, _ in model.named_parameters()},
        "last-1": head | set(groups[-2].params),
        "last-2": head | set(groups[-2].params) | set(groups[-3].params),
    }
    for preset, want in expected.items():
        phase = plan_phases(groups, FreezeConfig(preset), epochs=5)[0]
        apply_phase(model, groups, phase)
        assert _trainable_names(model) == want, preset
        assert trainable_counts(groups, phase)[0] == sum(p.numel() for n, p in model.named_parameters() if n in want)
    custom = FreezeConfig("custom", groups=(groups[1].name,))
    apply_phase(model, groups, plan_phases(groups, custom, 5)[0])
    assert _trainable_names(model) == head | set(groups[1].params)


def test_gradual_trains_the_head_first_then_everything_with_lower_rates_early() -> None:
    model = _model("test_efficientnet")
    groups = layer_groups(model)
    phases = plan_phases(groups, FreezeConfig("gradual", head_epochs=2, lr_floor=0.01), epochs=6)
    assert [p.start_epoch for p in phases] == [0, 2]
    assert phase_at(phases, 1) is phases[0] and phase_at(phases, 2) is phases[1]
    apply_phase(model, groups, phases[0])
    assert _trainable_names(model) == set(groups[-1].params)
    apply_phase(model, groups, phases[1])
    assert all(p.requires_grad for p in model.parameters())
    mult = phases[1].lr_mult
    assert mult[0] == pytest.approx(0.01) and mult[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(mult, mult[1:], strict=False))
    kept = plan_phases(groups, FreezeConfig("gradual", head_epochs=2, keep_frozen=2), epochs=6)[1]
    apply_phase(model, groups, kept)  # the first two groups (stem first) stay frozen, the rest trains
    assert _trainable_names(model) == {n for g in groups[2:] for n in g.params}
    assert kept.lr_mult == mult and "first 2 groups" in kept.label
    with pytest.raises(ValueError, match="keep_frozen"):
        FreezeConfig("gradual", keep_frozen=-1)


def test_unknown_presets_and_groups_are_refused() -> None:
    with pytest.raises(ValueError, match="Unknown freeze preset"):
        FreezeConfig("middle")
    groups = layer_groups(_model("test_resnet"))
    with pytest.raises(ValueError, match="Unknown layer groups"):
        plan_phases(groups, FreezeConfig("custom", groups=("nope",)), 3)


def test_frozen_batchnorm_keeps_its_statistics_unless_asked() -> None:
    torch.manual_seed(0)
    model = _model("test_resnet")
    groups = layer_groups(model)
    phase = plan_phases(groups, FreezeConfig("head"), 3)[0]
    apply_phase(model, groups, phase)
    set_train_mode(model, groups, phase)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.randn(4, 3, 64, 64) * 3 + 1)
    assert torch.equal(bn.running_mean, before)
    assert not bn.training
    set_train_mode(model, groups, phase, train_bn=True)
    model(torch.randn(4, 3, 64, 64) * 3 + 1)
    assert not torch.equal(bn.running_mean, before)


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet", "test_byobnet"])
@pytest.mark.parametrize("phase_index", [0, 1], ids=["head-only", "first-groups-frozen"])
def test_a_step_through_the_frozen_view_trains_the_model_as_a_step_through_the_model(name: str, phase_index: int
                                                                                      ) -> None:
    from tests.synthetic import model_with_batchnorm_statistics

    model = model_with_batchnorm_statistics(name, num_classes=3)
    groups = layer_groups(model)
    phase = plan_phases(groups, FreezeConfig("gradual", keep_frozen=2), 3)[phase_index]
    assert any(phase.trainable) and not all(phase.trainable)
    apply_phase(model, groups, phase)
    set_train_mode(model, groups, phase)
    reference = copy.deepcopy(model)  # the same step taken through the model itself
    modes = [m.training for m in model.modules()]
    view = frozen_view(model, groups, phase, False, 32)
    assert view is not None
    assert [m.training for m in model.modules()] == modes  # the model's train/eval modes are untouched
    assert zoo.batchnorm_count(view) < zoo.batchnorm_count(model)  # frozen groups folded ...
    if phase_index == 1:
        assert zoo.batchnorm_count(view) > 0  # ... and only those: the BatchNorm that trains is still there
    if name == "test_byobnet":  # ReLU after a frozen convolution fed by frozen layers: oneDNN applies it
        assert any(isinstance(m, zoo.Conv2dAct) for m in view.modules())
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    for net, owner in ((view, model), (reference, reference)):
        opt = torch.optim.SGD([p for p in owner.parameters() if p.requires_grad], lr=0.1)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    after, expected = model.state_dict(), reference.state_dict()
    assert after.keys() == expected.keys()  # saved as the model, not as the view
    for key, value in after.items():  # trained weights and trained BatchNorm statistics moved as without the view,
        torch.testing.assert_close(value.float(), expected[key].float(), atol=1e-4, rtol=1e-4)  # frozen ones stayed
    head = zoo.classifier_prefix(model)
    assert not torch.equal(after[head + ".weight"], model_with_batchnorm_statistics(name, num_classes=3)
                           .state_dict()[head + ".weight"])  # the step did train the model's head
    all_phase = plan_phases(groups, FreezeConfig("all"), 1)[0]
    apply_phase(model, groups, all_phase)
    assert frozen_view(model, groups, all_phase, False, 32) is None  # nothing frozen: no copy
    apply_phase(model, groups, phase)
    assert frozen_view(model, groups, phase, True, 32) is None  # BatchNorm statistics train: nothing folds


def test_a_model_without_batchnorm_trains_its_head_as_it_is() -> None:
    model = _model("test_vit")
    groups = layer_groups(model)
    head_phase = plan_phases(groups, FreezeConfig("head"), 2)[0]
    apply_phase(model, groups, head_phase)
    assert frozen_view(model, groups, head_phase, False, 32) is None  # nothing to fold: no copy


def test_optimizer_groups_hold_each_parameter_once_with_phase_rates() -> None:
    model = _model("test_vit")
    groups = layer_groups(model)
    opt = torch.optim.AdamW(optimizer_groups(model, groups, base_lr=1e-3))
    assert len(opt.param_groups) == len(groups)
    phases = plan_phases(groups, FreezeConfig("gradual", lr_floor=0.1), epochs=4)
    set_phase_lrs(opt, phases[1], 1e-3)
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-3)
    # A frozen group gets no gradient, so a step leaves it unchanged.
    apply_phase(model, groups, phases[0])
    stem = [p.detach().clone() for p in opt.param_groups[0]["params"]]
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(stem, opt.param_groups[0]["params"], strict=True))


def test_user_choices_replace_task_defaults_and_none_keeps_them() -> None:
    """None means "not chosen" (a task's default lr survives); 0, False and () are real choices."""
    from core.config import TrainConfig

    defaults = TrainConfig(epochs=18, lr=0.01, train_size=256, class_weights=True)
    kept = defaults.with_choices(epochs=None, lr=None, train_size=None)
    assert (kept.epochs, kept.lr, kept.train_size) == (18, 0.01, 256)
    chosen = defaults.with_choices(epochs=2, lr=0.1, train_size=0, class_weights=False, augment=())
    assert (chosen.epochs, chosen.lr, chosen.train_size, chosen.class_weights, chosen.augment) == (2, 0.1, 0, False, ())
