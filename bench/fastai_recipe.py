"""fastai's recipe (`vision_learner` + `fine_tune`) on MobileNetV2 with the app's packaged ImageNet weights.

Runs in its own environment (fastai pins its own dependencies): bench/compare.py calls it as
`FASTAI_PYTHON bench/fastai_recipe.py DATA WEIGHTS EPOCHS` and reads one JSON line per epoch from stdout.
As in fastai's quick start: ImageDataLoaders.from_folder with item_tfms=Resize(224) and batch_tfms=aug_transforms(),
vision_learner (fastai's head on the body cut before the classifier), fine_tune(EPOCHS) with its default learning
rate; num_workers=0 (2 cores; workers only compete with the compute threads)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    import torch
    import torchvision
    from fastai.callback.core import Callback
    from fastai.vision.all import (
        ImageDataLoaders,
        Resize,
        accuracy,
        aug_transforms,
        default_split,
        imagenet_stats,
        model_meta,
        vision_learner,
    )

    data, weights, epochs = Path(argv[0]), Path(argv[1]), int(argv[2])
    t0 = time.time()
    torch.manual_seed(0)

    def mobilenet_v2(pretrained: bool = True) -> torch.nn.Module:
        model = torchvision.models.mobilenet_v2()
        if pretrained:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
        return model

    class Report(Callback):
        order = 100

        def after_epoch(self) -> None:
            vals = self.recorder.values[-1] if self.recorder.values else []
            acc = float(vals[-1]) if vals else float("nan")
            print(json.dumps({"epoch": self.epoch + 1, "seconds": round(time.time() - t0, 1),
                              "val_accuracy": acc}), flush=True)

    # fastai's way to describe a custom architecture (vision_learner does not forward its `cut` argument):
    # the body is everything before the classifier, ImageNet statistics, the default two-group split.
    model_meta[mobilenet_v2] = {"cut": -1, "split": default_split, "stats": imagenet_stats}
    dls = ImageDataLoaders.from_folder(data, train="train", valid="val", item_tfms=Resize(224),
                                       batch_tfms=aug_transforms(), num_workers=0, seed=0)
    learn = vision_learner(dls, mobilenet_v2, metrics=accuracy, cbs=[Report()])
    learn.fine_tune(epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
