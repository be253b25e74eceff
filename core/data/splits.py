"""Train/val/test assignment: the dataset's own folders when it has them, else a stratified, seeded split.

The stratified split orders each class's items by a keyed hash (seed + item key), so it does not depend on the input
order, and adding a few images moves few existing ones. Items sharing a ``group`` (duplicates) land in one split,
so our own split never leaks an image from train into val.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0
    use_folders: bool = True

    def to_dict(self) -> dict[str, object]:
        return {"val_fraction": self.val_fraction, "test_fraction": self.test_fraction, "seed": self.seed,
                "use_folders": self.use_folders}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SplitConfig:
        return cls(val_fraction=float(data.get("val_fraction", 0.2)),  # type: ignore[arg-type]
                   test_fraction=float(data.get("test_fraction", 0.0)),  # type: ignore[arg-type]
                   seed=int(data.get("seed", 0)),  # type: ignore[call-overload]
                   use_folders=bool(data.get("use_folders", True)))


@dataclass(frozen=True)
class SplitItem:
    key: str  # stable identity (e.g. the file's sha256)
    label: str
    folder_split: str | None = None  # from train/val/test folders
    group: str | None = None  # items with the same group stay together


def split_mode(items: Iterable[SplitItem], config: SplitConfig) -> str:
    """'folders' (val folder present), 'folders+stratified' (only train/test folders) or 'stratified'."""
    found = {it.folder_split for it in items if it.folder_split}
    if not config.use_folders or not found:
        return "stratified"
    return "folders" if "val" in found else "folders+stratified"


def assign_splits(items: Sequence[SplitItem], config: SplitConfig = SplitConfig()) -> list[str]:
    """Return one split name per item, aligned with ``items``."""
    mode = split_mode(items, config)
    if mode == "folders":
        return [it.folder_split or "train" for it in items]
    if mode == "folders+stratified":
        result = ["test" if it.folder_split == "test" else "" for it in items]
        rest = [i for i, r in enumerate(result) if not r]
        sub = _stratified([items[i] for i in rest], config.val_fraction, 0.0, config.seed)
        for i, split in zip(rest, sub, strict=True):
            result[i] = split
        return result
    return _stratified(items, config.val_fraction, config.test_fraction, config.seed)


def _targets(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Val and test sizes for a class of n items: at least one each when asked for, and always one train item."""
    if n < 2:
        return 0, 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 and n >= 3 else 0
    n_val = min(n_val, n - 1)
    n_test = min(n_test, n - 1 - n_val)
    return n_val, n_test


def _rank(seed: int, key: str) -> str:
    return hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=16).hexdigest()


def _stratified(items: Sequence[SplitItem], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    result = ["train"] * len(items)
    by_label: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, it in enumerate(items):
        by_label[it.label][it.group or it.key].append(i)
    for units in by_label.values():
        n = sum(len(v) for v in units.values())
        n_val, n_test = _targets(n, val_fraction, test_fraction)
        counts = {"val": 0, "test": 0}
        limits = {"val": n_val, "test": n_test}
        for unit in sorted(units, key=lambda u: (_rank(seed, u), u)):
            members = units[unit]
            for split in ("val", "test"):
                room = n - 1 - counts["val"] - counts["test"]  # keep at least one training item
                if counts[split] < limits[split] and len(members) <= room:
                    counts[split] += len(members)
                    for i in members:
                        result[i] = split
                    break
    return result


def split_counts(labels: Sequence[str], splits: Sequence[str]) -> dict[str, dict[str, int]]:
    """{split: {label: count}} for aligned sequences."""
    out: dict[str, dict[str, int]] = {}
    for label, split in zip(labels, splits, strict=True):
        out.setdefault(split, {}).setdefault(label, 0)
        out[split][label] += 1
    return out
