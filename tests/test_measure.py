"""Latency is measured once and cached; training estimates come from real steps."""

from __future__ import annotations

import json
from pathlib import Path

from core import measure
from core.config import FreezeConfig
from core.settings import cache_root


def test_latency_is_measured_once_then_read_from_the_cache(home: Path) -> None:
    assert measure.cached_latency("test_resnet") is None
    ms = measure.measure_latency("test_resnet", repeats=3)
    assert ms > 0
    cache = json.loads((cache_root() / measure.LATENCY_FILE).read_text())
    (key,) = [k for k in cache if k.startswith("test_resnet|")]
    cache[key] = 123.0  # a cached value is used as it is, not measured again
    (cache_root() / measure.LATENCY_FILE).write_text(json.dumps(cache))
    assert measure.measure_latency("test_resnet") == 123.0
    assert measure.measure_latency("test_resnet", repeats=3, force=True) != 123.0


def test_training_estimate_comes_from_real_steps_and_scales_with_the_dataset() -> None:
    head = measure.estimate_training("test_efficientnet", FreezeConfig("head"), batch_size=8, n_images=80, steps=2)
    assert head.seconds_per_step > 0 and head.peak_memory_mb > 0
    assert head.seconds_per_epoch == round(10 * head.seconds_per_step, 1)
    assert head.trainable_params < head.frozen_params
    full = measure.estimate_training("test_efficientnet", FreezeConfig("all"), batch_size=8, n_images=80, steps=2)
    assert full.frozen_params == 0 and full.trainable_params == head.trainable_params + head.frozen_params
    kept = FreezeConfig("gradual", keep_frozen=2)  # no local weights: the run trains from scratch, nothing kept
    scratch = measure.estimate_training("test_efficientnet", kept, batch_size=8, n_images=80, steps=2)
    assert scratch.frozen_params == 0


def test_isolated_estimate_runs_in_a_fresh_process_and_is_cached(home: Path) -> None:
    est = measure.estimate_training_isolated("test_resnet", FreezeConfig("last-1"), batch_size=4, n_images=40)
    assert est.peak_memory_mb > 50  # a whole Python + torch process
    again = measure.estimate_training_isolated("test_resnet", FreezeConfig("last-1"), batch_size=4, n_images=400)
    assert again.seconds_per_step == est.seconds_per_step
    assert again.n_images == 400 and again.seconds_per_epoch >= est.seconds_per_epoch


def test_the_estimate_trains_on_the_crops_a_run_trains_on(home: Path, capsys) -> None:
    est = measure.estimate_training_isolated("test_resnet", FreezeConfig("last-1"), batch_size=4, n_images=40,
                                             train_size=48)
    assert "48×48 training crops" in est.note  # measured in the subprocess on that size
    from core import cli, zoo
    from core.tasks.classification import CLASSIFICATION

    own = zoo.get_spec("test_resnet").input_size
    full = measure.estimate_training_isolated("test_resnet", FreezeConfig("last-1"), batch_size=4, n_images=40)
    assert f"{own}×{own} training crops" in full.note  # another size is another measurement, not the cached one

    assert cli.main(["layers", "test_resnet", "--freeze", "gradual", "--estimate", "40", "--batch-size", "4",
                     "--json"]) == 0
    estimate = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["estimate"]
    size = CLASSIFICATION.default_train_size(own)
    assert size != own and f"{size}×{size} training crops" in estimate["note"]  # `train`'s default crops


def test_a_latency_measured_while_busy_is_flagged_and_measured_again_when_free(home: Path) -> None:
    """A figure taken while a training run used the processor read 2-3x too slow and was kept for good."""
    key_file = cache_root() / measure.LATENCY_FILE
    measure.measure_latency("test_resnet", repeats=3)
    cache = json.loads(key_file.read_text())
    (key,) = [k for k in cache if k.startswith("test_resnet|")]
    assert set(cache[key]) == {"ms", "busy"}
    cache[key] = {"ms": 999.0, "busy": True}
    key_file.write_text(json.dumps(cache))
    assert measure.measured_while_busy("test_resnet") and measure.cached_latency("test_resnet") == 999.0
    if not measure.processor_busy():  # free now (as in a quiet test run): measured again, and no longer flagged
        assert measure.measure_latency("test_resnet", repeats=3) != 999.0
    cache[key] = 7.5  # a cache written before the flag existed still reads
    key_file.write_text(json.dumps(cache))
    assert measure.cached_latency("test_resnet") == 7.5 and not measure.measured_while_busy("test_resnet")
