"""`transfer-studio … --task detection` and the detection runs' `evaluate | predict | export | report`.

Each command prints one clear line on stderr and exits with status 2 on bad input (no traceback); with --json the
last line of stdout is one JSON object."""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace
from pathlib import Path

from core.cli_common import error_text, run_command
from core.cli_common import fail as _fail
from core.cli_common import print_json as _print_json
from core.tasks import run_name


def _progress(quiet: bool):
    if quiet:
        return None

    def show(stage: str, done: int, total: int) -> None:
        if done == total or done % 16 == 0:
            print(f"\r{stage}: {done}/{total}", end="\n" if done >= total else "", file=sys.stderr, flush=True)

    return show


def run(command: str, args: argparse.Namespace) -> int:
    """Dispatch one command; known problems become one line on stderr and exit status 2."""
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export,
                "report": cmd_report}
    return run_command(handlers, command, args, "detection")


def train_config(args: argparse.Namespace):
    """The run's TrainConfig: the task's defaults with what the command line sets."""
    from core.tasks.detection import DETECTION

    d = DETECTION.default_train()
    return d.with_choices(epochs=args.epochs, batch_size=getattr(args, "batch_size", None),
                          lr=getattr(args, "lr", None), seed=args.seed,
                          augment=() if getattr(args, "no_augment", False) else None,
                          device=getattr(args, "device", "auto"), precision=getattr(args, "precision", "auto"))


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume) a detector in this process, with a progress bar on stderr."""
    from core import runs, zoo
    from core.config import FreezeConfig, RunConfig
    from core.recorder import RunRecorder, TextProgress
    from core.tasks.detection import DETECTION
    from core.tasks.detection.dataset import resolve
    from core.tasks.detection.train import fit
    from core.trainset import DatasetProblem

    try:
        if args.resume:
            run_dir = Path(args.resume).resolve()
            runs.load_config(run_dir)
        else:
            if not args.data:
                return _fail("--data DIR is required (or --resume RUN_DIR)")
            spec = zoo.get_spec(args.model)
            if spec.weights.kind == "package" and not zoo.has_weights(spec) and not args.from_scratch:
                return _fail(zoo.weights_status(spec))
            pretrained = zoo.has_weights(spec) and not args.from_scratch
            if not pretrained:
                print(f"note: {zoo.scratch_note(args.model, args.from_scratch)}", file=sys.stderr)
            data = str(Path(args.data).resolve()) if Path(args.data).exists() else args.data
            annotations = str(Path(args.annotations).resolve()) if getattr(args, "annotations", None) else None
            freeze = FreezeConfig(args.freeze) if args.freeze else DETECTION.default_freeze()
            config = RunConfig(args.model, data, freeze, train_config(args), task="detection",
                               name=args.name or "", pretrained=pretrained)
            manifest = resolve(data, seed=args.seed, annotations=annotations,
                               val_fraction=getattr(args, "val_fraction", 0.2) or 0.2)
            if not config.name:  # named as the Train page names it
                config = replace(config, name=run_name("detection", args.model, manifest, data))
            run_dir = runs.create_run(config, manifest, Path(args.runs_dir) if args.runs_dir else None)
    except (DatasetProblem, runs.RunError, ValueError, KeyError, zoo.ZooError) as err:
        return _fail(error_text(err))
    stop = {"asked": False}

    def on_sigint(signum, frame):  # noqa: ARG001
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        print("\nstopping after this batch (Ctrl-C again to abort)…", file=sys.stderr)

    subscribers = [RunRecorder(run_dir)] + ([] if getattr(args, "quiet", False) else [TextProgress()])
    print(f"run folder: {run_dir}", file=sys.stderr)
    previous = signal.signal(signal.SIGINT, on_sigint)
    runs.clear_stop(run_dir)
    runs.write_status(run_dir, state="running", **runs.this_process())
    try:
        res = fit(run_dir, subscribers, should_stop=lambda: stop["asked"] or runs.stop_requested(run_dir))
    finally:
        signal.signal(signal.SIGINT, previous)
        runs.clear_stop(run_dir)
    last = res.history[-1] if res.history else {}
    best_map = max((h.get("val_map") or 0.0 for h in res.history), default=None)
    out = {"run_dir": str(run_dir), "state": res.state, "best_val_map50": res.best_val_accuracy,
           "best_val_map": best_map, "epochs": res.epochs_done, "seconds": round(res.seconds, 2),
           "device": res.device, "last_epoch": last, "message": res.message}
    if args.json:
        _print_json(out)
    else:
        shown = "-" if res.best_val_accuracy is None else f"{res.best_val_accuracy:.3f}"
        print(f"{res.state}: best val mAP@0.5 {shown} in {res.seconds:.1f} s; run folder {run_dir}")
    return 0 if res.state in ("completed", "stopped") else 1


def _per_class_lines(rows: list[dict]) -> list[str]:
    width = max([5] + [len(r["class"]) for r in rows])
    lines = [f"{'class':{width}}  AP@0.5   AP@[.5:.95]  boxes"]
    for r in rows:
        ap50 = "-" if r["ap50"] is None else f"{r['ap50']:.3f}"
        ap = "-" if r["ap"] is None else f"{r['ap']:.3f}"
        lines.append(f"{r['class']:{width}}  {ap50:7}  {ap:11}  {r['n_boxes']}")
    return lines


def cmd_evaluate(args: argparse.Namespace) -> int:
    """mAP of a run (or export) on a folder with annotations, or on the run's own validation images."""
    from core.tasks.detection.evaluate import evaluate_folder, evaluate_run

    progress = _progress(args.json or getattr(args, "quiet", False))
    if args.data:
        result = evaluate_folder(args.run, args.data, getattr(args, "annotations", None), progress)
    else:
        if not (Path(args.run) / "config.json").is_file():
            return _fail(f"{args.run} is not a run folder; to evaluate an export, give --data FOLDER.")
        result = evaluate_run(args.run, progress)
        result["saved"] = str(Path(args.run) / "evaluation.json")
    out = {k: result.get(k) for k in ("map50", "map", "map75", "mar100", "per_class", "n_images", "n_boxes",
                                      "classes", "split", "bad_images", "unknown_classes", "seconds_per_image",
                                      "saved")}
    if args.json:
        _print_json(out)
        return 0
    print(f"{out['n_images']} images, {out['n_boxes']} boxes ({out['split']}): mAP@0.5 {out['map50']:.3f}, "
          f"mAP@0.5:0.95 {out['map']:.3f}, {1000 * (out['seconds_per_image'] or 0):.0f} ms per image")
    print("\n".join(_per_class_lines(out["per_class"])))
    for bad in out["bad_images"][:20]:
        print(f"  unreadable: {bad['name']}: {bad['reason']}")
    if out["unknown_classes"]:
        print(f"  boxes of classes the model does not know were left out: {', '.join(out['unknown_classes'])}")
    if out.get("saved"):
        print(f"saved {out['saved']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Boxes for image files: per image a list of {label, score, box: [x1, y1, x2, y2]} in original pixels."""
    from core.tasks.detection.predict import DEFAULT_THRESHOLD, load_detector

    detector = load_detector(args.run)
    threshold = DEFAULT_THRESHOLD if getattr(args, "threshold", None) is None else max(0.0, args.threshold)
    results = detector.predict([str(p) for p in args.images], threshold=threshold)
    failed = [r for r in results if not r.ok]
    if args.json:
        _print_json({"model": detector.describe(), "threshold": threshold, "n_images": len(results),
                     "n_failed": len(failed), "predictions": [r.to_dict() for r in results]})
    else:
        for r in results:
            if not r.ok:
                continue
            boxes = "; ".join(f"{d.label} {d.score:.2f} [{', '.join(f'{v:.0f}' for v in d.box)}]"
                              for d in r.detections)
            if not boxes:
                boxes = "nothing found" + (f" (best guess: {r.best.label} {r.best.score:.2f})" if r.best else "")
            print(f"{r.name}: {boxes}  ({1000 * r.seconds:.0f} ms)")
    for r in failed:
        print(f"error: {r.name}: {r.error}", file=sys.stderr)
    return 2 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    """safetensors + manifest or ONNX, each checked against PyTorch after writing."""
    from core.tasks.detection.export import export_run

    if not (Path(args.run) / "config.json").is_file():
        return _fail(f"{args.run} is not a run folder.")
    result = export_run(args.run, args.format, args.out)
    if args.json:
        _print_json(result.to_dict())
    else:
        c = result.check
        print(f"exported {args.format} to {result.folder}: {', '.join(result.files)}")
        print(f"parity check {'PASS' if result.ok else 'FAIL'}: {c.get('summary', '')}")
    if not result.ok:
        return _fail(f"the exported {args.format} model does not match PyTorch", 1)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The run's self-contained HTML report with example detections."""
    from core.tasks.detection.report import write_report

    path = write_report(Path(args.run), out=Path(args.out) if getattr(args, "out", None) else None)
    if args.json:
        _print_json({"report": str(path), "bytes": path.stat().st_size})
    else:
        print(f"report written: {path}")
    return 0
