"""`transfer-studio train|evaluate|predict|export|report` for faces runs (`--task faces`, or a faces run folder)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from core.cli_common import fail as _fail
from core.cli_common import pct as _pct
from core.cli_common import print_json as _print_json
from core.cli_common import run_command


def run(command: str, args: argparse.Namespace) -> int:
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export,
                "report": cmd_report}
    return run_command(handlers, command, args, "face recognition")


def _progress(quiet: bool):
    from core.events import BatchEnded, FitStarted, Notice

    def show(event) -> None:
        if quiet:
            return
        if isinstance(event, FitStarted):
            print(f"enrolling {len(event.classes)} people on {event.device}: {event.n_train} enrolment + "
                  f"{event.n_val} held-back photos", file=sys.stderr)
        elif isinstance(event, BatchEnded):
            print(f"\rstep {event.step}/{event.total_steps}  {event.images_per_second:.1f} photos/s ", end="",
                  file=sys.stderr, flush=True)
        elif isinstance(event, Notice):
            print(f"\n{event.level}: {event.message}", file=sys.stderr)
    return show


def new_run(data: str, model: str, args: argparse.Namespace) -> Path:
    """Create a faces run folder from the train command's options."""

    from core import runs, zoo
    from core.config import FreezeConfig, RunConfig
    from core.tasks import run_name
    from core.tasks.faces.data import resolve
    from core.tasks.faces.embed import is_face_model
    from core.tasks.faces.gallery import KINDS
    from core.tasks.faces.train import default_train

    pretrained = True
    if not is_face_model(model):
        spec = zoo.get_spec(model)
        if spec.weights.kind == "package" and not zoo.has_weights(spec) and not args.from_scratch:
            raise ValueError(zoo.weights_status(spec))
        pretrained = zoo.has_weights(spec) and not args.from_scratch
    d = default_train()
    train = d.with_choices(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                           augment=() if args.no_augment else None, device=args.device, precision=args.precision)
    gallery_kind = getattr(args, "gallery", None) or "prototype"
    if gallery_kind not in KINDS:
        raise ValueError(f"Unknown gallery '{gallery_kind}'; use {', '.join(KINDS)}.")
    far = getattr(args, "target_far", None) or 0.01
    if not 0 < far < 1:
        raise ValueError("--target-far must be between 0 and 1 (e.g. 0.01)")
    source = str(Path(data).resolve()) if Path(data).exists() else data
    manifest = resolve(source, args.seed)
    manifest["faces"] = {"gallery": gallery_kind, "target_far": far}
    config = RunConfig(model, source, FreezeConfig(args.freeze or "all"), train, task="faces",
                       name=args.name or run_name("faces", model, manifest, source), pretrained=pretrained)
    return runs.create_run(config, manifest, Path(args.runs_dir) if args.runs_dir else None)


def cmd_train(args: argparse.Namespace) -> int:
    from core import runs
    from core.recorder import RunRecorder
    from core.storage import read_json
    from core.tasks.faces.embed import DLIB_MODEL
    from core.tasks.faces.train import fit, read_photos
    from core.trainset import DatasetProblem

    try:
        if args.resume:
            run_dir = Path(args.resume).resolve()
            runs.load_config(run_dir)
        else:
            if not args.data:
                return _fail("--data DIR is required (one folder per person), or --resume RUN_DIR")
            run_dir = new_run(args.data, args.model or DLIB_MODEL, args)
    except (DatasetProblem, runs.RunError, ValueError, KeyError) as err:
        return _fail(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))
    print(f"run folder: {run_dir}", file=sys.stderr)
    stop = {"asked": False}

    def on_sigint(signum, frame):  # noqa: ARG001
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        print("\nstopping after this step (Ctrl-C again to abort)…", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    runs.clear_stop(run_dir)
    runs.write_status(run_dir, state="running", **runs.this_process())
    try:
        res = fit(run_dir, [RunRecorder(run_dir), _progress(args.quiet or args.json)],
                  should_stop=lambda: stop["asked"] or runs.stop_requested(run_dir))
    finally:
        signal.signal(signal.SIGINT, previous)
        runs.clear_stop(run_dir)
    if not (args.quiet or args.json):
        print(file=sys.stderr)
    meta = read_json(run_dir / "gallery.json", {}) or {}
    photos = read_photos(run_dir)
    out = {"run_dir": str(run_dir), "state": res.state, "model": runs.read_json_config(run_dir).get("backbone"),
           "people": meta.get("people", []), "n_people": len(meta.get("people", [])),
           "threshold": meta.get("threshold"), "target_far": meta.get("target_far"),
           "val_identification": res.best_val_accuracy, "calibration": meta.get("calibration"),
           "n_photos": len(photos), "no_face": [p["name"] for p in photos if p["status"] == "no_face"],
           "unreadable": [p["name"] for p in photos if p["status"] == "unreadable"],
           "several_faces": [p["name"] for p in photos if p.get("n_faces", 0) > 1],
           "seconds": round(res.seconds, 2), "device": res.device, "message": res.message,
           "biometric": "This run folder holds face embeddings: biometric data of the enrolled people."}
    if args.json:
        _print_json(out)
    else:
        print(f"{res.state}: {res.message}\nrun folder {run_dir}")
        for name in out["no_face"]:
            print(f"  no face found: {name}")
    return 0 if res.state in ("completed", "stopped") else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from core.storage import read_json
    from core.tasks.faces.evaluate import evaluate_folder

    if not args.data:
        meta = read_json(Path(args.run) / "gallery.json")
        if not meta:
            return _fail(f"{args.run} has no face gallery yet: train it first.")
        cal = meta.get("calibration") or {}
        out = {"split": "held-back enrolment photos", **cal, "people": meta.get("people")}
        if args.json:
            _print_json(out)
        else:
            print(f"held-back enrolment photos: {_pct(cal.get('identification'))} named correctly at threshold "
                  f"{cal.get('threshold')}; simulated strangers accepted {_pct(cal.get('achieved_far'))} "
                  f"(target {cal.get('target_far')}). {cal.get('note', '')}")
        return 0

    def progress(stage: str, done: int, total: int) -> None:
        if not (args.json or args.quiet) and (done == total or done % 20 == 0):
            print(f"\r{stage}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    res = evaluate_folder(args.run, args.data, progress)
    if args.json:
        _print_json({**res, "mistakes": res["mistakes"][:50]})
        return 0
    print(f"{res['n_images']} photos ({res['n_known_images']} of enrolled people, {res['n_unknown_images']} of "
          f"strangers), threshold {res['threshold']:.3f}")
    print(f"enrolled people named correctly: {_pct(res['accuracy'])}; strangers answered 'unknown': "
          f"{_pct(res['unknown_rejection'])}")
    print(f"TAR at FAR 1e-2: {_pct(res['tar_at_far_1e-2'])}; at 1e-3: {_pct(res['tar_at_far_1e-3'])}; "
          f"{res['n_no_face']} photos without a face; {1000 * (res['seconds_per_image'] or 0):.0f} ms per photo")
    for pair in res["most_confused"][:5]:
        print(f"  {pair['true']} answered {pair['predicted']}: {pair['count']} time{'s' * (pair['count'] != 1)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from core.tasks.faces.predict import load_recognizer

    rec = load_recognizer(args.run)
    if args.threshold is not None:
        rec = rec.with_threshold(-1.0 if args.threshold < 0 else float(args.threshold))
    preds = [rec.predict_file(p, name=str(p)) for p in args.images]  # named as given: folders may repeat a name
    failed = [p for p in preds if p.get("error")]
    if args.json:
        _print_json({"model": rec.describe(), "predictions": preds, "n_images": len(preds), "n_failed": len(failed)})
    else:
        for p in preds:
            if p.get("error"):
                continue
            if not p["faces"]:
                print(f"{p['name']}: no face found ({1000 * p['seconds']:.0f} ms)")
            for f in p["faces"]:
                print(f"{p['name']}: {f['label']} (score {f['score']:.3f}) at {f['box']}  {1000 * p['seconds']:.0f} ms")
    for p in failed:
        print(f"error: {p['name']}: {p['error']}", file=sys.stderr)
    return 2 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    from core.tasks.faces.export import export_run

    result = export_run(args.run, args.format, args.out)
    if args.json:
        _print_json(result)
    else:
        print(f"exported {args.format} to {result['folder']}: {', '.join(result['files'])}")
        print(f"check {'PASS' if result['ok'] else 'FAIL'}: {result['check'].get('summary', '')}")
        print("note: this export contains face embeddings, which are biometric data of the enrolled people.")
    return 0 if result["ok"] else 1


def cmd_report(args: argparse.Namespace) -> int:
    from core.tasks.faces.report import write_report

    path = write_report(Path(args.run), Path(args.out) if args.out else None)
    if args.json:
        _print_json({"report": str(path), "bytes": path.stat().st_size, "biometric": True})
    else:
        print(f"report written: {path} (it contains biometric data: face crops of the enrolled people)")
    return 0
