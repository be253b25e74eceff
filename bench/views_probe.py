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


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return round(float((probs.argmax(1) == labels).float().mean()), 4)


def val_views(manifest: dict, prep, views: tuple[str, ...]) -> dict:
    """For each view: the decoded validation photos only (cached on disk like the app's) and their labels."""
    from core.pipeline import build_cache

    items = [it for it in manifest["items"] if it["split"] == "val"]
    label_of = {c: k for k, c in enumerate(manifest["classes"])}
    out = {}
    for view in views:
        cache = build_cache([it["path"] for it in items], replace(prep, fit=view))
        idx = [i for i in range(len(items)) if i not in cache.failed]
        out[view] = (cache, idx, torch.tensor([label_of[items[i]["label"]] for i in idx]))
    return out


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
    probs, fits, rows, photos = {}, {}, [], {}
    for run_dir in dirs:
        if runs.load_dataset(run_dir)["items"] != manifest["items"]:
            raise SystemExit(f"{run_dir}: not the same photos as {dirs[0]}")
        pred = load_predictor(run_dir, args.weights)
        base = replace(pred.prep, fit="crop")  # decoded once per preprocessing, shared by runs of one backbone
        photos[base] = photos.get(base) or val_views(manifest, base, VIEWS)
        p = {v: pred.logits_for_cache(cache, idx, batch_size=64).softmax(1)
             for v, (cache, idx, _) in photos[base].items()}
        y = photos[base]["crop"][2]
        probs[run_dir.name], fits[run_dir.name] = p, pred.prep.fit
        row = {"run": run_dir.name, "trained_on": pred.prep.fit, "weights": args.weights,
               **{v: accuracy(p[v], y) for v in VIEWS}, "crop+pad": accuracy(p["crop"] + p["pad"], y)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for a, b in itertools.combinations(probs, 2):
        own = probs[a][fits[a]] + probs[b][fits[b]]
        both = probs[a]["crop"] + probs[a]["pad"] + probs[b]["crop"] + probs[b]["pad"]
        row = {"runs": [a, b], "trained_on": [fits[a], fits[b]], "weights": args.weights,
               "two_runs": accuracy(own, y), "two_runs_crop+pad": accuracy(both, y)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
