"""Face recognition: enrol people, then name each face or answer "unknown" (open set), and verify pairs.

Two model paths on the same people: a pretrained face embedder used frozen (dlib's ResNet, instant) and a zoo
backbone (ImageNet weights) fine-tuned with ArcFace. Modules: detect (MTCNN + alignment), embed, enrol (cached
detections/crops/embeddings), gallery, threshold, train (TASK.fit), evaluate, predict, privacy, export, report, cli.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from core.tasks import TITLES
from core.tasks.faces.embed import DLIB_MODEL, build_embedding_net, is_face_model
from core.tasks.faces.train import METRIC, METRIC_LABEL


@dataclass(frozen=True)
class FacesTask:
    name: str = "faces"
    title: str = TITLES["faces"]
    description: str = "Enrol people, then name each face in a photo or answer 'unknown'."
    metric: str = METRIC
    metric_label: str = METRIC_LABEL
    has_quick: bool = False
    default_model: str = DLIB_MODEL

    def build_model(self, backbone: str, num_classes: int, pretrained: bool = True) -> nn.Module:  # noqa: ARG002
        """The embedding network of the fine-tune path (a zoo backbone with a 128-d embedding head); the number of
        people only sizes the ArcFace loss, not the network."""
        return build_embedding_net(backbone, 128, pretrained)

    def resolve_data(self, dataset: str, seed: int = 0) -> dict:
        from core.tasks.faces.data import resolve

        return resolve(dataset, seed)

    def fit(self, run_dir: Path, subscribers: Sequence[Callable[[Any], None]] = (),
            should_stop: Callable[[], bool] = lambda: False) -> Any:
        from core.tasks.faces.train import fit

        return fit(run_dir, subscribers, should_stop)

    def export_formats_for(self, backbone: str) -> tuple[str, ...]:
        """The frozen face model is not a PyTorch network: its runs export the gallery (safetensors) only."""
        from core.export import FORMATS

        return ("safetensors",) if is_face_model(backbone) else FORMATS

    def reproduce_args(self, manifest: dict) -> list[str]:
        """The face options that recreate this run: its gallery kind and false-accept rate."""
        o = manifest.get("faces") or {}
        far = float(o.get("target_far", 0.01))
        return ["--gallery", str(o.get("gallery", "prototype")), "--target-far", f"{far:g}"]

    def default_train(self):
        from core.tasks.faces.train import default_train

        return default_train()

    def cli(self, command: str, args: argparse.Namespace) -> int:
        from core.tasks.faces.cli import run

        return run(command, args)


TASK = FacesTask()
