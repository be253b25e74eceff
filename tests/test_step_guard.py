"""StepGuard: the stop / out-of-memory / non-finite-loss / progress bookkeeping the four training loops share."""

from __future__ import annotations

from core.device import cpu_supports_bf16, plan_device
from core.engine import LoopState, StepGuard


def _guard(events: list, max_bad: int = 3, unit: str = "image") -> StepGuard:
    return StepGuard(events.append, plan_device("cpu", "fp32"), epochs=2, n_train=10, total_steps=6,
                     max_bad_steps=max_bad, t0=0.0, unit=unit)


def test_non_finite_losses_warn_then_give_up_after_the_limit_in_a_row() -> None:
    events: list = []
    guard = _guard(events)
    assert guard.loss_was(False) is None and guard.loss_was(False) is None
    assert guard.loss_was(True) is None  # a good step resets the count
    assert guard.loss_was(False) is None and guard.loss_was(False) is None
    reason = guard.loss_was(False)
    assert reason is not None and "3 times in a row" in reason and "learning rate" in reason
    assert [e.type for e in events] == ["notice"] * 4 and "skipped" in events[0].message


def test_out_of_memory_halves_the_batch_until_one_image_then_gives_up() -> None:
    events: list = []
    guard, st = _guard(events), LoopState(batch_size=5)
    assert guard.out_of_memory(st, "use a smaller model") is None and st.batch_size == 2
    assert guard.out_of_memory(st, "use a smaller model") is None and st.batch_size == 1
    reason = guard.out_of_memory(st, "use a smaller model")
    assert reason == "Out of memory even with a batch of 1 image: use a smaller model."
    assert [e.message for e in events] == ["Out of memory: the batch size is now 2.",
                                           "Out of memory: the batch size is now 1."]


def test_advance_moves_the_position_and_reports_rate_and_time_left() -> None:
    events: list = []
    guard, st = _guard(events), LoopState(epoch=1, pos=4, step=3)
    guard.advance(st, 1, 3, 0.5, 0.01)
    assert (st.pos, st.step) == (7, 4)
    e = events[-1]
    assert e.type == "batch_ended" and (e.epoch, e.pos, e.step, e.total_steps) == (1, 7, 4, 6)
    assert e.images_per_second > 0 and e.eta_seconds >= 0


def test_a_stop_names_the_place_to_resume_from_in_the_task_s_unit() -> None:
    events: list = []
    st = LoopState(epoch=0, pos=6, best=0.5)
    result = _guard(events, unit="photo").stopped(st, 0)
    assert result.state == "stopped" and result.best_val_accuracy == 0.5
    assert result.message == "Stopped at epoch 1, photo 6 of 10; resume to continue."
    between = _guard(events).stopped(LoopState(epoch=2, pos=0), 2)  # before the first batch of the third epoch
    assert between.message.startswith("Stopped after epoch 2 of ")  # not "at epoch 3, image 0"
    assert events[-1].type == "fit_ended" and events[-1].state == "stopped"


def test_bf16_asked_for_on_a_cpu_without_native_bf16_says_it_is_slower_there() -> None:
    note = plan_device("cpu", "bf16").note
    assert plan_device("cpu", "bf16").amp_dtype == "bfloat16"
    assert ("no native bf16" in note) is (not cpu_supports_bf16())
    assert "no native bf16" not in plan_device("cpu", "auto").note


def test_the_speed_counts_from_the_first_batch_not_from_the_start_up_before_it() -> None:
    import time

    events: list = []
    guard, st = _guard(events), LoopState(batch_size=5)
    guard.started = time.time() - 100.0  # 100 s of loading before the first batch ended
    guard.advance(st, 0, 5, 0.5, 0.01)
    time.sleep(0.05)
    guard.advance(st, 0, 5, 0.5, 0.01)
    first, second = (e.images_per_second for e in events)
    assert first < 0.1  # 5 images in 100 s: all it knows yet
    assert 5 / 1.0 < second <= 5 / 0.05 + 1e-6  # 5 images in the ~0.05 s since: start-up left out


def test_a_new_phase_counts_its_own_speed() -> None:
    """Head-only batches ran fast, the later ones slowly: the speed and time left after the phase change were an
    average over both (the time left grew all through the run)."""
    import time

    events: list = []
    guard, st = _guard(events), LoopState(batch_size=5)
    for _ in range(4):  # fast: 5 images every ~0 s
        guard.advance(st, 0, 5, 0.5, 0.01)
    guard.new_phase()
    time.sleep(0.1)
    guard.advance(st, 1, 5, 0.5, 0.01)
    slow = events[-1].images_per_second
    assert slow <= 5 / 0.1 + 1e-6  # 5 images in the ~0.1 s since the phase began, not 25 images in ~0.1 s
