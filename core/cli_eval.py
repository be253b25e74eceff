"""`transfer-studio evaluate | predict | export`: measure, use and take away a trained model.

Hooked into the main parser by `core.cli.build_parser` via `register(sub)`. Every error is one clear line on
stderr and exit status 2 (no traceback); with --json the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from core.cli_common import error_text, naming_run
from core.cli_common import fail as _fail
from core.cli_common import pct as _pct
from core.cli_common import print_json as _print_json


def _progress(quiet: bool):
    if quiet:
        return None
    last = {"stage": None}

    def show(stage: str, done: int, total: int) -> None:
        if stage != last["stage"] or done == total or done % 64 == 0:
            end = "\n" if done >= total else ""
            print(f"\r{stage}: {done}/{total}", end=end, file=sys.stderr, flush=True)
            last["stage"] = stage

    return show


def _guard(fn):
    """Run a command; known problems become one line on stderr and exit status 2."""
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except KeyboardInterrupt:
            return _fail("interrupted", 130)
        except Exception as err:  # noqa: BLE001 - the user gets a message, never a traceback
            return _fail(naming_run(error_text(err), args))
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# --- evaluate -----------------------------------------------------------------------------------------------------

def _per_class_table(rows: list[dict]) -> str:
    width = max([len("class")] + [len(r["class"]) for r in rows])
    lines = [f"{'class':{width}}  precision  recall     f1         support"]
    for r in rows:
        lines.append(f"{r['class']:{width}}  {_pct(r['precision']):9}  {_pct(r['recall']):9}  {_pct(r['f1']):9}  "
                     f"{r['support']}")
    return "\n".join(lines)


def _flat(block: dict) -> dict:
    keys = ("split", "n_images", "accuracy", "balanced_accuracy", "macro_f1", "loss", "per_class",
            "confusion_matrix", "most_confused")
    out = {k: block.get(k) for k in keys}
    out["ece"] = (block.get("calibration") or {}).get("ece")
    return out


@_guard
def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a run (or an export) on a labelled folder; without --data, on the run's own validation images
    (and store evaluation.json in the run folder)."""
    from core.evaluate import evaluate_folder, evaluate_run
    from core.inference import is_run_dir

    progress = _progress(args.json or args.quiet)
    if args.data:
        result = evaluate_folder(args.run, args.data, on_progress=progress)
        out = {**_flat(result), "source": result["source"], "classes": result["classes"],
               "unknown_classes": result["unknown_classes"], "missing_classes": result["missing_classes"],
               "bad_images": result["bad_images"], "skipped_files": result["skipped_files"],
               "n_unknown_class_images": result["n_unknown_class_images"], "threshold": result["threshold"],
               "notes": result["notes"], "misclassified": result["misclassified"][:20]}
    else:
        if not is_run_dir(args.run):
            return _fail(f"{args.run} is not a run folder; to evaluate an export, give --data FOLDER.")
        result = evaluate_run(args.run, with_learning_curve=not args.no_learning_curve, on_progress=progress)
        primary = result["splits"][result["primary_split"]]
        lc = result.get("learning_curve") or {}
        out = {**_flat(primary), "classes": result["classes"],
               "splits": {k: _flat(v) for k, v in result["splits"].items()},
               "unknown_threshold": {k: v for k, v in (result.get("unknown_threshold") or {}).items() if k != "curve"},
               "learning_curve": lc.get("reading") if lc.get("available") else lc.get("reason"),
               "saved": str(Path(args.run) / "evaluation.json"), "misclassified": primary["misclassified"][:20]}
    if args.json:
        _print_json(out)
        return 0
    print(f"{out['n_images']} images ({out['split']}): accuracy {_pct(out['accuracy'])}, balanced accuracy "
          f"{_pct(out['balanced_accuracy'])}, macro F1 {_pct(out['macro_f1'])}, calibration error (ECE) "
          f"{_pct(out['ece'])}")
    print(_per_class_table(out["per_class"]))
    for pair in (out.get("most_confused") or [])[:3]:
        print(f"  {pair['true']} taken for {pair['predicted']}: {pair['count']} time{'s' * (pair['count'] != 1)}")
    for note in out.get("notes", []):
        print(note)
    for bad in out.get("bad_images", [])[:20]:
        print(f"  unreadable: {bad['name']}: {bad['reason']}")
    if out.get("unknown_threshold"):
        print("not sure threshold:", out["unknown_threshold"].get("reason"))
    if out.get("learning_curve"):
        print("learning curve:", out["learning_curve"])
    if out.get("saved"):
        print(f"saved {out['saved']}")
    return 0


# --- predict ------------------------------------------------------------------------------------------------------

@_guard
def cmd_predict(args: argparse.Namespace) -> int:
    """Classify image files with a run or an export; top-k classes per image."""
    from core.inference import load_predictor

    threshold = "stored" if args.threshold is None else (None if args.threshold < 0 else args.threshold)
    predictor = load_predictor(args.run, threshold=threshold)
    preds = predictor.predict([str(p) for p in args.images], top_k=args.top_k)
    failed = [p for p in preds if not p.ok]
    if args.json:
        _print_json({"model": predictor.describe(), "predictions": [p.to_dict() for p in preds],
                     "n_images": len(preds), "n_failed": len(failed)})
    else:
        for p in preds:
            if not p.ok:
                continue
            top = ", ".join(f"{c} {100 * v:.1f} %" for c, v in p.top_k)
            print(f"{p.name}: {p.label}  ({top})  {1000 * p.seconds:.0f} ms")
    for p in failed:
        print(f"error: {p.name}: {p.error}", file=sys.stderr)
    return 2 if failed else 0


# --- export -------------------------------------------------------------------------------------------------------

@_guard
def cmd_export(args: argparse.Namespace) -> int:
    """Export a run's best weights and check the written model against PyTorch."""
    from core.export import export_run
    from core.inference import is_run_dir

    if not is_run_dir(args.run):
        return _fail(f"{args.run} is not a run folder (give a run id as `transfer-studio runs list` shows, or a run "
                     f"folder).")
    result = export_run(args.run, args.format, args.out)
    check = result.check
    if args.json:
        _print_json(result.to_dict())
    else:
        verdict = "PASS" if result.ok else "FAIL"
        diff = check.get("max_abs_diff")
        extra = f", bit-exact weights: {check['bit_exact']}" if "bit_exact" in check else ""
        print(f"exported {args.format} to {result.folder}: {', '.join(result.files)}")
        print(f"parity check {verdict}: max |difference| to PyTorch {diff:.2e} (tolerance {check['tolerance']:g}) "
              f"on {check.get('n_images')} images ({check.get('inputs')}), batch sizes "
              f"{check.get('batch_sizes')}, top-1 agreement {_pct(check.get('top1_agreement'))}{extra}")
    if not result.ok:
        print(f"error: the exported {args.format} model does not match PyTorch within {check['tolerance']:g}",
              file=sys.stderr)
        return 1
    return 0


def expand_images(paths: list[str]) -> list[str]:
    """The files `predict` reads: each file as given, and a folder's photos (in its sub-folders too, sorted by path;
    hidden files left out). ValueError naming a folder without photos."""
    from core.data.names import IMAGE_EXTENSIONS

    out: list[str] = []
    for text in paths:
        folder = Path(text)
        if not folder.is_dir():
            out.append(text)
            continue
        found = sorted(str(f) for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                       and not any(part.startswith(".") for part in f.relative_to(folder).parts))
        if not found:
            raise ValueError(f"{text} is a folder without photos ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
        out.extend(found)
    return out


#: Exported files that only run outside the app (predict and evaluate here read run folders and safetensors exports).
_OUTSIDE_FORMATS = {"model.onnx": "ONNX", "model.torchscript.pt": "TorchScript"}


def _outside_export(run: str) -> str | None:
    """The reason `run` cannot be used here when it is an ONNX or TorchScript export, else None."""
    folder = Path(run)
    if not folder.is_dir() or (folder / "model.safetensors").is_file() or (folder / "config.json").is_file():
        return None
    for file, kind in _OUTSIDE_FORMATS.items():
        if (folder / file).is_file():
            article = "an" if kind[0] in "AEIOU" else "a"
            return (f"{run} is {article} {kind} export, for running the model outside this app (see its "
                    f"predict_example.py); predict and evaluate read a run (id or folder) or a safetensors export "
                    f"(transfer-studio export --format safetensors).")
    return None


def by_task(command: str, classification: Callable[[argparse.Namespace], int]
            ) -> Callable[[argparse.Namespace], int]:
    """`command` for the task of `--run` (its config.json or manifest.json): classification here, any other task
    through its own `cli`."""
    def dispatch(args: argparse.Namespace) -> int:
        from core.tasks import get_task, task_of

        if command in ("predict", "evaluate"):
            reason = _outside_export(args.run)
            if reason:
                return _fail(reason)
        if command == "predict":
            try:
                args.images = expand_images(args.images)
            except ValueError as err:
                return _fail(str(err))
        task = task_of(args.run)
        if task == "classification":
            return classification(args)
        try:
            handler = get_task(task)
        except KeyError as err:
            return _fail(str(err.args[0]))
        return handler.cli(command, args)
    dispatch.__name__ = f"{command}_by_task"
    return dispatch


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the evaluate, predict and export subcommands to the main parser's subparsers."""
    p = subparsers.add_parser("evaluate", help="metrics of a run (or export) on a labelled folder or its own "
                                               "validation images")
    p.add_argument("--run", required=True, metavar="RUN", help="run id (as `runs list` shows) or run folder; or an "
                   "exported model (safetensors folder or zip) with --data")
    p.add_argument("--data", metavar="DIR", help="folder with one sub-folder per class; default: the run's own "
                                                 "validation images (saved as evaluation.json)")
    p.add_argument("--no-learning-curve", action="store_true", help="skip the learning curve (run evaluation only)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="last line: a JSON summary")
    p.add_argument("--annotations", metavar="FILE", help="detection: the annotation file (COCO json, VOC or YOLO)")
    p.add_argument("--ignore-index", type=int, default=None, help="segmentation: mask value to ignore (void)")
    p.set_defaults(func=by_task("evaluate", cmd_evaluate))

    p = subparsers.add_parser("predict", help="answer photos with a run or an exported model (classes, boxes, masks "
                                              "or people, by the run's task)")
    p.add_argument("--run", required=True, metavar="RUN_OR_EXPORT",
                   help="run id (as `runs list` shows), run folder, or a safetensors export (folder or zip)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photo files, or folders (their photos, sub-folders too)")
    p.add_argument("--top-k", type=int, default=5, help="classification: how many classes to show per photo")
    p.add_argument("--threshold", type=float, default=None,
                   help="answer 'not sure' below this top probability (default: the stored one; -1: never)")
    p.add_argument("--json", action="store_true", help="last line: a JSON object with every prediction")
    p.add_argument("--out", metavar="DIR", help="segmentation: folder for the predicted mask PNGs (default: "
                   "./predicted_masks in the current folder)")
    p.set_defaults(func=by_task("predict", cmd_predict))

    p = subparsers.add_parser("export", help="export a run as safetensors, ONNX or TorchScript, with a parity check")
    p.add_argument("--run", required=True, metavar="RUN", help="run id (as `runs list` shows) or run folder")
    p.add_argument("--format", required=True, choices=["safetensors", "onnx", "torchscript"],
                   help="detection and segmentation: safetensors or onnx; face recognition with the dlib model: "
                   "safetensors")
    p.add_argument("--out", required=True, metavar="PATH", help="folder that receives the files")
    p.add_argument("--json", action="store_true", help="last line: a JSON object with the files and the check")
    p.set_defaults(func=by_task("export", cmd_export))
