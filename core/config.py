"""Frozen, JSON-serialisable configs. Defaults live here."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

PRESETS = ("head", "last-N", "all", "gradual", "custom")
PRESET_HELP = {
    "head": "Train only the new head; the pretrained backbone stays as it is. Fastest, needs the fewest photos.",
    "last-N": "Train the head and the last N layer groups of the backbone (e.g. last-2).",
    "all": "Train every layer. Best with many photos; slower and uses more memory.",
    "gradual": "Train the head first, then unfreeze everything with lower learning rates for earlier groups.",
    "custom": "Choose per layer group what trains.",
}
_LAST_N = re.compile(r"^last-(\d{1,3})$")


@dataclass(frozen=True)
class FreezeConfig:
    """What trains. preset: head | last-N (e.g. last-2) | all | gradual | custom (with `groups`)."""

    preset: str = "head"
    groups: tuple[str, ...] = ()
    train_bn: bool = False
    head_epochs: int = 1
    lr_floor: float = 0.01

    def __post_init__(self) -> None:
        if self.preset not in ("head", "all", "gradual", "custom") and not _LAST_N.match(self.preset):
            raise ValueError(f"Unknown freeze preset '{self.preset}'. Use head, last-N (e.g. last-2), all, gradual "
                             "or custom.")
        if not 0 < self.lr_floor <= 1:
            raise ValueError("lr_floor must be in (0, 1].")

    @property
    def last_n(self) -> int | None:
        match = _LAST_N.match(self.preset)
        return int(match.group(1)) if match else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FreezeConfig:
        data = dict(data)
        data["groups"] = tuple(data.get("groups", ()))
        return cls(**data)
