"""`transfer-studio train|evaluate|predict|export|report` for segmentation runs (`--task segmentation`, or a run /
export whose config.json / manifest.json names the task). Errors are one line on stderr with exit status 2; with
--json the last line of stdout is one JSON object."""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace
from pathlib import Path

from core.cli_common import fail as _fail
from core.cli_common import pct as _pct
from core.cli_common import print_json as _print_json
from core.cli_common import run_command
from core.tasks import run_name


def run(command: str, args: argparse.Namespace) -> int:
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export,
                "report": cmd_report}
    return run_command(handlers, command, args, "segmentation")


# --- train ------------------------------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from core import runs, zoo
    from core.config import DEFAULT_BACKBONE, FreezeConfig, RunConfig
    from core.recorder import RunRecorder, TextProgress
    from core.tasks.segmentation import TASK
    from core.tasks.segmentation.train import fit

    if args.resume:
        run_dir = Path(args.resume).resolve()
        runs.load_config(run_dir)
    else:
        if getattr(args, "quick", False):
            return _fail("segmentation has no quick model; train without --quick.")
        if not args.data:
            return _fail("--data DIR is required (or --resume RUN_DIR)")
        model = args.model or DEFAULT_BACKBONE
        spec = zoo.get_spec(model)
        if spec.weights.kind == "package" and not zoo.has_weights(spec) and not args.from_scratch:
            return _fail(zoo.weights_status(spec))
        pretrained = zoo.has_weights(spec) and not args.from_scratch
        if not pretrained:
            print(f"note: {zoo.scratch_note(model, args.from_scratch)}", file=sys.stderr)
        defaults = TASK.default_train()
        train = defaults.with_choices(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                      augment=() if args.no_augment else None, device=args.device,
                                      precision=args.precision, class_weights=args.class_weights,
                                      train_size=args.train_size)
        data = str(Path(args.data).resolve()) if Path(args.data).exists() else args.data
        freeze = FreezeConfig(args.freeze) if args.freeze else TASK.default_freeze()
        arch = getattr(args, "arch", None)
        config = RunConfig(model, data, freeze, train, task="segmentation", name=args.name or "",
                           pretrained=pretrained)
        manifest = TASK.resolve_data(data, args.seed, arch=arch, ignore=args.ignore_index,
                                     val_fraction=args.val_fraction)
        for note in manifest.get("notes", [])[:20]:
            print(f"note: {note}", file=sys.stderr)
        if not config.name:  # named as the Train page names it
            config = replace(config, name=run_name("segmentation", model, manifest, data))
        run_dir = runs.create_run(config, manifest, Path(args.runs_dir) if args.runs_dir else None)
    stop = {"asked": False}

    def on_sigint(signum, frame):  # noqa: ARG001
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        print("\nstopping after this batch (Ctrl-C again to abort)…", file=sys.stderr)

    subscribers = [RunRecorder(run_dir)] + ([] if args.quiet else [TextProgress()])
    print(f"run folder: {run_dir}", file=sys.stderr)
    previous = signal.signal(signal.SIGINT, on_sigint)
    runs.clear_stop(run_dir)
    runs.write_status(run_dir, state="running", **runs.this_process())
    try:
        res = fit(run_dir, subscribers, should_stop=lambda: stop["asked"] or runs.stop_requested(run_dir))
    finally:
        signal.signal(signal.SIGINT, previous)
        runs.clear_stop(run_dir)
    manifest = runs.load_dataset(run_dir)
    out = {"run_dir": str(run_dir), "state": res.state, "best_val_miou": res.best_val_accuracy,
           "best_val_accuracy": res.best_val_accuracy, "epochs": res.epochs_done, "seconds": round(res.seconds, 2),
           "device": res.device, "arch": (manifest.get("model") or {}).get("arch"), "classes": manifest["classes"],
           "message": res.message,
           "history": [{k: h.get(k) for k in ("epoch", "train_loss", "val_loss", "val_miou", "seconds")}
                       | {"val_pixel_accuracy": (h.get("metrics") or {}).get("val_pixel_accuracy")}
                       for h in res.history]}
    if args.json:
        _print_json(out)
    else:
        best = out["best_val_miou"]
        print(f"{out['state']}: best val mIoU {best if best is None else round(best, 4)} in {out['seconds']:.1f} s; "
              f"run folder {run_dir}")
    return 0 if out["state"] in ("completed", "stopped") else 1


# --- evaluate ---------------------------------------------------------------------------------------------------

def _progress(quiet: bool):
    if quiet:
        return None

    def show(stage: str, done: int, total: int) -> None:
        if done == total or done % 16 == 0:
            print(f"\r{stage}: {done}/{total}", end="\n" if done >= total else "", file=sys.stderr, flush=True)

    return show


def cmd_evaluate(args: argparse.Namespace) -> int:
    from core.tasks.segmentation.evaluate import evaluate_folder, evaluate_run

    progress = _progress(args.json or getattr(args, "quiet", False))
    if args.data:
        result = evaluate_folder(args.run, args.data, on_progress=progress)
    else:
        if not (Path(args.run) / "config.json").is_file():
            return _fail(f"{args.run} is not a run folder; to evaluate an export, give --data FOLDER.")
        result = evaluate_run(args.run, on_progress=progress)
        result["saved"] = str(Path(args.run) / "evaluation.json")
    keys = ("miou", "pixel_accuracy", "per_class_iou", "per_class", "n_images", "n_skipped", "bad_images",
            "confusion_matrix", "classes", "source", "images_per_second", "notes", "saved")
    out = {k: result.get(k) for k in keys if k in result}
    out["worst"] = [{k: w[k] for k in ("name", "miou", "pixel_accuracy")} for w in result["worst"]]
    if args.json:
        _print_json(out)
        return 0
    print(f"{out['n_images']} images: mIoU {_pct(out['miou'])}, pixel accuracy {_pct(out['pixel_accuracy'])}")
    width = max(len(c) for c in out["classes"])
    for row in out["per_class"]:
        print(f"  {row['class']:{width}}  IoU {_pct(row['iou']):>8}  pixels {row['pixels']}")
    for bad in out.get("bad_images", [])[:20]:
        print(f"  skipped {bad['name']}: {bad['reason']}")
    for w in out["worst"][:5]:
        print(f"  worst: {w['name']} (mIoU {_pct(w['miou'])})")
    if out.get("saved"):
        print(f"saved {out['saved']}")
    return 0


# --- predict ----------------------------------------------------------------------------------------------------

def _target(folder: Path, name: str, used: set[str]) -> Path:
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(name).stem)[:100] or "image"
    candidate, n = f"{stem}.png", 1
    while candidate in used:  # two inputs with one name in this call; files from earlier calls are replaced
        n += 1
        candidate = f"{stem}-{n}.png"
    used.add(candidate)
    return folder / candidate


def cmd_predict(args: argparse.Namespace) -> int:
    from core.storage import write_bytes_atomic
    from core.tasks.segmentation.predict import SegPredictor

    predictor = SegPredictor.load(args.run)
    out_dir = Path(args.out) if getattr(args, "out", None) else Path.cwd() / "predicted_masks"
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    rows, failed = [], 0
    for path in args.images:
        pred = predictor.predict(str(path))
        row = pred.to_dict()
        row["image"] = str(path)
        if pred.ok:
            target = _target(out_dir, str(path), used)
            write_bytes_atomic(target, predictor.mask_png(pred.mask))
            row["mask_path"] = str(target)
            row["shares"] = {k: round(v, 5) for k, v in pred.shares.items()}
        else:
            failed += 1
            print(f"error: {path}: {pred.error}", file=sys.stderr)
        rows.append(row)
    if args.json:
        _print_json({"model": predictor.describe(), "predictions": rows, "n_images": len(rows), "n_failed": failed,
                     "out": str(out_dir)})
    else:
        for row in rows:
            if row["ok"]:
                top = ", ".join(f"{c} {100 * v:.1f} %" for c, v in sorted(row["shares"].items(), key=lambda kv: -kv[1])
                                if v >= 0.005)
                print(f"{row['image']} → {row['mask_path']}  ({top})  {1000 * row['seconds']:.0f} ms"
                      + (f"  [{row['note']}]" if row["note"] else ""))
    return 2 if failed else 0


# --- export, report ---------------------------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    from core.tasks.segmentation.export import export_run

    if not (Path(args.run) / "config.json").is_file():
        return _fail(f"{args.run} is not a run folder.")
    if args.format == "torchscript":
        return _fail("segmentation models export as safetensors or onnx (TorchScript is not offered for them).")
    result = export_run(args.run, args.format, args.out)
    check = result.check
    if args.json:
        _print_json(result.to_dict())
    else:
        verdict = "PASS" if result.ok else "FAIL"
        print(f"exported {args.format} to {result.folder}: {', '.join(result.files)}")
        print(f"parity check {verdict}: {check.get('summary', '')}; on {check.get('n_images')} images "
              f"({check.get('inputs')}), sizes {check.get('sizes')}")
    if not result.ok:
        print(f"error: the exported {args.format} model does not match PyTorch", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from core.tasks.segmentation.report import write_report

    path = write_report(Path(args.run), out=Path(args.out) if getattr(args, "out", None) else None)
    if args.json:
        _print_json({"report": str(path), "bytes": path.stat().st_size})
    else:
        print(f"report written: {path}")
    return 0
