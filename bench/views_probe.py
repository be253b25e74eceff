"""Score saved classification runs on their validation photos under other views of each photo, offline: the centre
square (crop), the whole photo padded (pad) or squashed, the average of two views, and the average of two runs.
Used in BENCHMARKS.md (issue 9) to measure prediction-time levers without retraining.

    .venv/bin/python bench/views_probe.py RUN_DIR [RUN_DIR ...] [--weights best|last] [--json FILE]

Runs come from `bench/recipe_probe.py --runs-dir DIR` (or the app's runs folder); all must use the same dataset.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VIEWS = ("crop", "pad", "squash")


def load_predictor(run_dir: Path, weights: str):
    """A Predictor of the run's best weights, or of its last checkpoint's model (weights="last")."""
    from core import runs
    from core.inference import Predictor

    pred = Predictor.from_run(run_dir, weights="best", precision="auto", threshold=None)
    if weights == "last":
        ckpt, _ = runs.load_checkpoint(run_dir)
        if ckpt is None:
            raise SystemExit(f"{run_dir}: no readable last checkpoint")
        pred.model.load_state_dict(ckpt["model"])
    return pred


def view_probs(pred, manifest: dict, views: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Softmax probabilities on the validation photos for each view, and the true labels."""
    from core.pipeline import prepare_run_data

    out, labels = {}, None
    for view in views:
        data = prepare_run_data(manifest, replace(pred.prep, fit=view))
        out[view] = pred.logits_for_cache(data.cache, data.val_idx, batch_size=64).softmax(1)
        labels = data.labels[data.val_idx]
    return out, labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--weights", choices=("best", "last"), default="last")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    from core import runs
    from core.device import configure_threads

    configure_threads()
    dirs = [Path(r) for r in args.runs]
    manifest = runs.load_dataset(dirs[0])
    acc = lambda p, y: round(float((p.argmax(1) == y).float().mean()), 4)  # noqa: E731
    probs, fits, rows = {}, {}, []
    for run_dir in dirs:
        if runs.load_dataset(run_dir)["items"] != manifest["items"]:
            raise SystemExit(f"{run_dir}: not the same photos as {dirs[0]}")
        pred = load_predictor(run_dir, args.weights)
        probs[run_dir.name], y = view_probs(pred, manifest, VIEWS)
        fits[run_dir.name] = pred.prep.fit
        p = probs[run_dir.name]
        row = {"run": run_dir.name, "trained_on": pred.prep.fit, "weights": args.weights,
               **{v: acc(p[v], y) for v in VIEWS}, "crop+pad": acc(p["crop"] + p["pad"], y)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for a, b in itertools.combinations(probs, 2):
        own = probs[a][fits[a]] + probs[b][fits[b]]
        both = probs[a]["crop"] + probs[a]["pad"] + probs[b]["crop"] + probs[b]["pad"]
        row = {"runs": [a, b], "trained_on": [fits[a], fits[b]], "weights": args.weights,
               "two_runs": acc(own, y), "two_runs_crop+pad": acc(both, y)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
