"""Splits: folders when present, else stratified, seeded, deterministic and duplicate-aware."""

from __future__ import annotations

import random
from collections import Counter

from core.data.splits import SplitConfig, SplitItem, assign_splits, split_counts, split_mode


def _items(counts: dict[str, int]) -> list[SplitItem]:
    return [SplitItem(f"{label}-{i:04d}", label) for label, n in counts.items() for i in range(n)]


def _by_key(items: list[SplitItem], splits: list[str]) -> dict[str, str]:
    return {it.key: s for it, s in zip(items, splits, strict=True)}


def test_stratified_every_class_with_two_images_gets_validation() -> None:
    items = _items({"a": 100, "b": 10, "c": 3, "d": 2, "e": 1})
    splits = assign_splits(items, SplitConfig(val_fraction=0.2))
    counts = split_counts([i.label for i in items], splits)
    assert counts["val"] == {"a": 20, "b": 2, "c": 1, "d": 1}
    assert counts["train"] == {"a": 80, "b": 8, "c": 2, "d": 1, "e": 1}


def test_deterministic_and_independent_of_input_order() -> None:
    items = _items({"a": 50, "b": 30})
    cfg = SplitConfig(val_fraction=0.25, seed=7)
    first = _by_key(items, assign_splits(items, cfg))
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    assert _by_key(shuffled, assign_splits(shuffled, cfg)) == first
    assert _by_key(items, assign_splits(items, cfg)) == first


def test_seed_changes_the_split() -> None:
    items = _items({"a": 50})
    a = assign_splits(items, SplitConfig(seed=1))
    b = assign_splits(items, SplitConfig(seed=2))
    assert a != b and Counter(a) == Counter(b)


def test_test_fraction() -> None:
    items = _items({"a": 40, "b": 3, "c": 2})
    splits = assign_splits(items, SplitConfig(val_fraction=0.2, test_fraction=0.1))
    counts = split_counts([i.label for i in items], splits)
    assert counts["test"] == {"a": 4, "b": 1} and counts["val"] == {"a": 8, "b": 1, "c": 1}
    assert counts["train"] == {"a": 28, "b": 1, "c": 1}


def test_adding_images_moves_few_existing_ones() -> None:
    items = _items({"a": 200})
    cfg = SplitConfig(val_fraction=0.2)
    before = _by_key(items, assign_splits(items, cfg))
    more = items + [SplitItem(f"new-{i}", "a") for i in range(5)]
    after = _by_key(more, assign_splits(more, cfg))
    moved = sum(before[k] != after[k] for k in before)
    assert moved <= 5


def test_folders_are_used_when_present() -> None:
    items = [SplitItem("k1", "a", "train"), SplitItem("k2", "a", "val"), SplitItem("k3", "b", "train"),
             SplitItem("k4", "b", "test")]
    assert split_mode(items, SplitConfig()) == "folders"
    assert assign_splits(items, SplitConfig()) == ["train", "val", "train", "test"]
    assert split_mode(items, SplitConfig(use_folders=False)) == "stratified"


def test_train_folder_only_carves_validation_and_keeps_test() -> None:
    items = [SplitItem(f"a{i}", "a", "train") for i in range(10)] + [SplitItem("t", "a", "test")]
    assert split_mode(items, SplitConfig()) == "folders+stratified"
    splits = assign_splits(items, SplitConfig(val_fraction=0.2))
    assert splits[-1] == "test" and Counter(splits[:-1]) == {"train": 8, "val": 2}


def test_duplicate_groups_stay_together() -> None:
    items = _items({"a": 30})
    items += [SplitItem(f"dup-{i}", "a", group="G") for i in range(4)]
    for seed in range(20):
        splits = assign_splits(items, SplitConfig(val_fraction=0.3, seed=seed))
        assert len({s for it, s in zip(items, splits, strict=True) if it.group == "G"}) == 1


def test_group_never_empties_train() -> None:
    items = [SplitItem(f"k{i}", "a", group="same") for i in range(5)]
    assert assign_splits(items, SplitConfig(val_fraction=0.5)) == ["train"] * 5


def test_config_round_trip() -> None:
    cfg = SplitConfig(val_fraction=0.3, test_fraction=0.1, seed=5, use_folders=False)
    assert SplitConfig.from_dict(cfg.to_dict()) == cfg
