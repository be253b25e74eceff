"""The learning-rate finder: a suggestion before the loss minimum, and a real range test on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

from core.config import FreezeConfig, TrainConfig
from core.lrfind import diverged, find_lr, suggest
from tests.synthetic import make_colour_folders


def test_suggestion_is_on_the_steep_fall_before_the_minimum() -> None:
    lrs = [10 ** (-5 + i * 0.1) for i in range(50)]  # 1e-5 .. ~1e-0.1
    # flat, then a steep fall around 1e-3, a minimum near 1e-1.5, then a rise
    losses = [2.0 - 1.5 / (1 + math.exp(-(math.log10(lr) + 3) * 4)) + max(0, math.log10(lr) + 1.5) * 3 for lr in lrs]
    value = suggest(lrs, losses)
    assert 1e-4 < value < 1e-2


def test_range_test_runs_on_a_tiny_model(tmp_path: Path) -> None:
    data = make_colour_folders(tmp_path / "data", train=6, val=2)
    res = find_lr("test_resnet", str(data), FreezeConfig("all"), TrainConfig(batch_size=4, precision="fp32",
                                                                               device="cpu"), steps=20,
                  pretrained=False)
    assert 5 <= len(res.lrs) <= 20 and len(res.losses) == len(res.lrs)
    assert all(a < b for a, b in zip(res.lrs, res.lrs[1:], strict=False))
    assert res.lrs[0] <= res.suggestion <= res.lrs[-1] or "default" in res.note
    # a fit left to the app ("auto", settled when the run starts) does not stop the range test
    auto = find_lr("test_resnet", str(data), FreezeConfig("all"), TrainConfig(batch_size=4, precision="fp32",
                                                                                device="cpu", image_fit="auto"),
                   steps=5, pretrained=False)
    assert auto.lrs and len(auto.losses) == len(auto.lrs)


def test_one_noisy_batch_on_an_easy_set_does_not_end_the_sweep() -> None:
    falling = [2.0 * 0.8**i for i in range(30)]  # down to ~0.003: an easy set's tiny best loss
    noisy = [*falling, 0.05]  # one batch 15× the best, as a small batch of harder photos gives
    assert not diverged(noisy)
    exploding = [*falling] + [0.5 * 2**i for i in range(6)]  # the loss really blows up
    assert diverged(exploding)
    assert diverged([*falling, float("nan")])


def test_lr_finder_and_batch_loss_charts_keep_their_legend_off_the_title() -> None:
    """The legends sat at y=1.15 with a 30 px top margin, over the titles; the LR axis read '10μ'."""
    from core.plots import batch_loss_figure, lr_find_figure

    for fig in (lr_find_figure([1e-5, 1e-4, 1e-3], [1.0, 0.8, 2.0], [1.0, 0.9, 1.5], 1e-4),
                batch_loss_figure([1, 2, 3], [1.0, 0.9, 0.8])):
        assert fig.layout.legend.yanchor == "bottom" and fig.layout.legend.y < 1.1
        assert fig.layout.margin.t >= 60 and fig.layout.title.y > fig.layout.legend.y - 0.1
    assert lr_find_figure([1e-5, 1e-3], [1.0, 2.0], [1.0, 2.0], 1e-4).layout.xaxis.exponentformat == "e"
