"""`transfer-studio`: the command-line front door onto the same core functions as the pages."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from core.cli_common import fail, too_small
from core.cli_common import print_json as _print_json
from core.config import FIT_CHOICES
from core.settings import PROJECT_ROOT


def _table(rows: list[dict], columns: list[str]) -> str:
    import pandas as pd

    if not rows:
        return "(none)"
    return pd.DataFrame(rows)[columns].to_string(index=False)


def cmd_info(args: argparse.Namespace) -> int:
    from core.catalog import system_info

    info = system_info()
    if args.json:
        _print_json(info)
        return 0
    for key in ("python", "torch", "torchvision", "timm", "streamlit", "device_name", "precision", "threads",
                "data_root"):
        print(f"{key:12} {info[key]}")
    print(info["device_note"])
    print("weight packages:")
    for row in info["weight_packages"]:
        state = f"{row['version']}" if row["version"] else f"MISSING - {row['install']}"
        print(f"  {row['model']:24} {row['package']:36} {state}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from core.catalog import backbone_rows

    def progress(i: int, n: int, title: str) -> None:
        if title and not args.json and not args.no_measure:  # --no-measure reads the cache: nothing is measured
            print(f"measuring latency {i + 1}/{n}: {title}", file=sys.stderr, flush=True)

    rows = backbone_rows(measure=not args.no_measure, include_scratch=not args.pretrained_only, on_progress=progress)
    if args.json:
        _print_json({"models": rows})
        return 0
    def cell(v: object) -> object:  # "-" rather than None / NaN for a fact that is not known
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else v

    shown = [{**r, "imagenet_top1": cell(r["imagenet_top1"]), "latency_ms": cell(r["latency_ms"])} for r in rows]
    print(_table(shown, ["name", "title", "family", "params_m", "input_size", "imagenet_top1", "licence",
                         "pretrained", "latency_ms"]))
    if any(r["latency_ms"] is not None for r in rows):
        print(f"\nlatency: one image, {rows[0]['latency_device']}, measured on this machine.")
    if any(r["latency_ms"] is None for r in rows):
        print("\nlatency '-': not measured on this machine yet (`transfer-studio models` without --no-measure "
              "measures it, once).")
    for row in rows:
        if not row["pretrained"]:
            print(f"{row['name']}: {row['weights']}")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from core import zoo
    from core.catalog import group_rows
    from core.tasks.classification import CLASSIFICATION
    from core.zoo import ZooError

    problem = too_small((("--classes", args.classes, 2), ("--epochs", args.epochs, 1),
                         ("--batch-size", args.batch_size, 1), ("--estimate", args.estimate, 1)))
    if problem:
        return fail(problem)
    try:
        freeze = CLASSIFICATION.start_freeze(args.freeze, args.keep_frozen)
        rows = group_rows(args.model, freeze, num_classes=args.classes, epochs=args.epochs)
    except (ZooError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    estimate = None
    if args.estimate:
        from core.measure import estimate_training_isolated

        size = args.train_size
        if size is None:  # the crops `train` uses by default
            size = CLASSIFICATION.default_train_size(zoo.get_spec(args.model).input_size)
        estimate = estimate_training_isolated(args.model, freeze, args.batch_size, args.estimate,
                                              num_classes=args.classes, train_size=size).to_dict()
    if args.json:
        _print_json({"model": args.model, "freeze": freeze.to_dict(), "groups": rows, "estimate": estimate})
        return 0
    print(f"{args.model}: {len(rows)} layer groups, freeze preset '{args.freeze}'")
    print(_table(rows, list(rows[0])))
    total = sum(r["params"] for r in rows)
    trains_key = [k for k in rows[0] if k.startswith("trains")][-1]
    trainable = sum(r["params"] for r in rows if r[trains_key])
    print(f"trainable {trainable:,} / {total:,} parameters ({100 * trainable / total:.1f} %)")
    if estimate:
        print(f"estimate for {estimate['n_images']} images at batch {estimate['batch_size']}: "
              f"{estimate['seconds_per_epoch']} s/epoch, {estimate['images_per_second']} img/s, "
              f"peak memory {estimate['peak_memory_mb']:.0f} MB. {estimate['note']}")
    return 0


def cmd_weights_add(args: argparse.Namespace) -> int:
    from core.zoo import ZooError, register_user_weights

    if not Path(args.file).is_file():
        print(f"error: {args.file} is not a file (a .safetensors file is expected).", file=sys.stderr)
        return 2
    try:
        spec = register_user_weights(Path(args.file), args.arch, args.label, title=args.title or "")
    except (ZooError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"registered {spec.name} ({spec.title}); use it as --model {spec.name}")
    return 0


# Options only classification's own training reads (other tasks say they ignore them).
_CLASSIFICATION_FLAGS = {"image_fit": "--image-fit", "crop_min_area": "--crop-min-area",
                         "label_smoothing": "--label-smoothing", "keep_frozen": "--keep-frozen"}


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume, or fit the quick model) in this process, with a text progress bar on stderr."""
    import signal

    from core import runs, trainset
    from core.config import FreezeConfig, RunConfig
    from core.recorder import RunRecorder, TextProgress
    from core.tasks import get_task, run_name, task_of

    problem = too_small((("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1), ("--nproc", args.nproc, 1),
                         ("--nnodes", args.nnodes, 1), ("--keep-frozen", args.keep_frozen, 0)))
    if problem:
        return fail(problem)
    if not 0.0 < args.val_fraction < 1.0:
        print(f"error: --val-fraction must be between 0 and 1 (a share of the photos), not {args.val_fraction:g}.",
              file=sys.stderr)
        return 2
    task = task_of(args.resume) if args.resume else args.task
    if args.resume and (Path(args.resume) / "config.json").is_file():
        refused = _not_resumable(Path(args.resume).resolve(), args.json)
        if refused is not None:
            return refused
    if not args.resume and not args.model and task != "faces":  # faces: its own face embedder by default
        from core.config import DEFAULT_BACKBONE

        args.model = DEFAULT_BACKBONE
    if (args.nproc or 1) * args.nnodes > 1 and (task != "classification" or args.quick):
        what = "the quick model" if args.quick else f"{task}"
        print(f"note: {what} trains on one device; --nproc/--nnodes are ignored.", file=sys.stderr)
        args.nproc, args.nnodes, args.node_rank = 1, 1, 0
    if task != "classification":
        ignored = [flag for key, flag in _CLASSIFICATION_FLAGS.items() if getattr(args, key, None) is not None]
        if ignored:
            verb = "applies" if len(ignored) == 1 else "apply"
            print(f"note: {', '.join(ignored)} {verb} to classification only; ignored for {task}.", file=sys.stderr)
        return get_task(task).cli("train", args)
    try:
        spec = _launch_spec(args, None)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if spec.node_rank > 0:  # another node of a multi-node job: rank 0's node owns the run folder
        return _join_distributed(args, spec)
    stop = {"asked": False}

    def on_sigint(signum, frame):  # noqa: ARG001
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        print("\nstopping after this batch (Ctrl-C again to abort)…", file=sys.stderr)

    try:
        if args.resume:
            run_dir = Path(args.resume).resolve()
            config = runs.load_config(run_dir)
        else:
            if not args.data:
                print("error: --data DIR is required (or --resume RUN_DIR)", file=sys.stderr)
                return 2
            from core import zoo
            from core.tasks.classification import CLASSIFICATION

            spec = zoo.get_spec(args.model)
            train = CLASSIFICATION.start_train(
                spec.input_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                augment=() if args.no_augment else None, device=args.device, precision=args.precision,
                class_weights=args.class_weights, nproc=args.nproc, train_size=0 if args.quick else args.train_size,
                image_fit=args.image_fit, crop_min_area=args.crop_min_area, label_smoothing=args.label_smoothing)
            if spec.weights.kind == "package" and not zoo.has_weights(spec) and not args.from_scratch:
                print(f"error: {zoo.weights_status(spec)}", file=sys.stderr)
                return 2
            pretrained = zoo.has_weights(spec) and not args.from_scratch
            if not pretrained:
                print(f"note: {zoo.scratch_note(args.model, args.from_scratch)}", file=sys.stderr)
            data = str(Path(args.data).resolve()) if Path(args.data).exists() else args.data  # or an id/sample:
            freeze = FreezeConfig("head") if args.quick and not args.freeze else \
                CLASSIFICATION.start_freeze(args.freeze, args.keep_frozen)
            config = RunConfig(args.model, data, freeze, train,
                               task=args.task, name=args.name or "", quick=args.quick, pretrained=pretrained)
            if args.quick and not pretrained:
                print("error: the quick model needs pretrained weights.", file=sys.stderr)
                return 2
            manifest = trainset.resolve(config.dataset, args.val_fraction, args.seed)
            if not config.name:  # named as the Train page names it: runs told apart on the Runs page
                config = replace(config, name=run_name(task, args.model, manifest, data, args.quick))
            run_dir = runs.create_run(config, manifest, Path(args.runs_dir) if args.runs_dir else None)
    except (trainset.DatasetProblem, runs.RunError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # ZooError, DatasetError: a clear message, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    subscribers = [RunRecorder(run_dir)] + ([] if args.quiet else [TextProgress()])
    print(f"run folder: {run_dir}", file=sys.stderr)
    spec = _launch_spec(args, config.train.nproc)
    if config.quick:
        from core.quick import train_quick

        runs.write_status(run_dir, state="running", **runs.this_process())
        result = train_quick(run_dir, subscribers)
        out = {"run_dir": str(run_dir), "state": "completed", **result}
        out["seconds"] = round(float(out.get("seconds") or 0.0), 2)
    elif spec.world_size > 1:
        out = _train_distributed(args, run_dir, spec)
    else:
        from core.engine import fit

        previous = signal.signal(signal.SIGINT, on_sigint)
        runs.clear_stop(run_dir)
        runs.write_status(run_dir, state="running", **runs.this_process())
        try:
            res = fit(run_dir, subscribers, should_stop=lambda: stop["asked"] or runs.stop_requested(run_dir))
        finally:
            signal.signal(signal.SIGINT, previous)
            runs.clear_stop(run_dir)
        out = {"run_dir": str(run_dir), "state": res.state, "best_val_accuracy": res.best_val_accuracy,
               "epochs": res.epochs_done, "seconds": round(res.seconds, 2), "device": res.device,
               "message": res.message}
    out.setdefault("world_size", 1)
    if args.json:
        _print_json(out)
    else:
        best = out["best_val_accuracy"]
        print(f"{out['state']}: best validation accuracy {'-' if best is None else f'{100 * best:.1f} %'} in "
              f"{out['seconds']:.1f} s; run folder {run_dir}")
    return 0 if out["state"] in ("completed", "stopped") else 1


def _not_resumable(run_dir: Path, as_json: bool) -> int | None:
    """The exit status when a run must not be resumed (another process trains it, or it has nothing left to train),
    after saying why; None when it may."""
    from core import jobs, runs

    name = runs.display_name(run_dir)
    pid = jobs.trainer_pid(run_dir)
    if pid is not None:
        return fail(f"run '{name}' is training now (process {pid}); let it finish, or stop it first with "
                    f"`transfer-studio runs stop {run_dir.name}`.")
    status = jobs.state(run_dir)
    if status.get("state") != "completed":
        return None
    print(f"nothing to resume: run '{name}' has finished. To train longer, start a new run.", file=sys.stderr)
    if as_json:  # the keys of a run that trained, as a script reading them expects
        _print_json({"run_dir": str(run_dir), "state": "completed", "best_val_accuracy":
                     status.get("best_val_accuracy"), "epochs": runs.load_config(run_dir).train.epochs,
                     "seconds": 0.0, "device": status.get("device"), "message": "nothing to resume",
                     "world_size": 1})
    return 0


def _launch_spec(args: argparse.Namespace, config_nproc: int | None):
    """The torchrun plan from --nproc/--nnodes/--node-rank/--rdzv-endpoint (a resumed run keeps its own --nproc
    unless a new one is given)."""
    from core.distributed import LaunchSpec

    nproc = args.nproc or config_nproc or 1
    return LaunchSpec(nproc=nproc, nnodes=args.nnodes, node_rank=args.node_rank,
                      rdzv_endpoint=args.rdzv_endpoint or "", device="cpu" if args.device == "cpu" else "auto")


def _train_distributed(args: argparse.Namespace, run_dir: Path, spec) -> dict:
    """Run the job with torchrun (this node = node 0, which owns the run folder); Ctrl-C asks for a clean stop."""
    import signal

    from core import runs
    from core.distributed import run_distributed

    def on_sigint(signum, frame):  # noqa: ARG001
        if runs.stop_requested(run_dir):
            raise KeyboardInterrupt
        runs.request_stop(run_dir)
        print("\nstopping after this batch (Ctrl-C again to abort)…", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    runs.clear_stop(run_dir)
    runs.write_status(run_dir, state="running", **runs.this_process(), message=f"Starting {spec.world_size} processes…")
    t0 = time.time()
    try:
        res = run_distributed(run_dir, spec, extra_env={"TS_DDP_PROGRESS": "0" if args.quiet else "1"},
                              echo=None if args.quiet else sys.stderr.write, new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)
        runs.clear_stop(run_dir)
    status = runs.read_status(run_dir)
    return {"run_dir": str(run_dir), "state": status.get("state", "failed"),
            "best_val_accuracy": status.get("best_val_accuracy"), "epochs": status.get("epochs_done", 0),
            "seconds": round(float(status.get("seconds") or time.time() - t0), 2), "device": status.get("device"),
            "world_size": spec.world_size, "message": res.failure or status.get("message", "")}


def _join_distributed(args: argparse.Namespace, spec) -> int:
    """Node R > 0 of a multi-node job: start this node's processes; rank 0 (on node 0) writes the run folder."""
    from core.distributed import launch

    print(f"joining {spec.rdzv_endpoint} as node {spec.node_rank} of {spec.nnodes}", file=sys.stderr)
    res = launch("-", spec, echo=None if args.quiet else sys.stderr.write, new_session=True)
    out = {"node_rank": spec.node_rank, "world_size": spec.world_size,
           "state": "completed" if res.returncode == 0 else "failed", "message": res.failure}
    if args.json:
        _print_json(out)
    elif res.failure:
        print(f"error: {res.failure}", file=sys.stderr)
    return 0 if res.returncode == 0 else 1


def cmd_report(args: argparse.Namespace) -> int:
    """Write the run's self-contained HTML report (evaluating first when needed)."""
    from core.report import write_report

    try:
        path = write_report(Path(args.run), out=Path(args.out) if args.out else None)
    except Exception as err:  # RunError, EvaluationError…: one clear line
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        _print_json({"report": str(path), "bytes": path.stat().st_size})
    else:
        print(f"report written: {path}")
    return 0


def app_command(passthrough: list[str]) -> list[str]:
    """The Streamlit command line: bound to 127.0.0.1 unless the user names another address."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "app.py")]
    if not any(a.startswith("--server.address") for a in passthrough):
        cmd.append("--server.address=127.0.0.1")
    return cmd + passthrough


def cmd_app(args: argparse.Namespace, passthrough: list[str]) -> int:
    """Launch the Streamlit UI from the project root (so .streamlit/config.toml applies), bound to 127.0.0.1."""
    cmd = app_command(passthrough)
    os.chdir(PROJECT_ROOT)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def resolve_run(text: str) -> str:
    """`text` as given when it is a path that exists, else the folder of the run with that id in the data root
    (`runs list` shows the ids); unchanged otherwise, so the command names what the user typed."""
    from core import runs
    from core.settings import runs_root

    path = Path(text).expanduser()
    if path.exists() or not runs.is_run_id(text):
        return str(path) if path.exists() else text
    candidate = runs_root() / text
    return str(candidate) if (candidate / "config.json").is_file() else text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transfer-studio", description="Train image models by transfer learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, device, data root and weight packages")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("models", help="list the backbones with their facts and measured CPU latency")
    p.add_argument("--json", action="store_true", help="one JSON object: {'models': [...]}")
    p.add_argument("--no-measure", action="store_true", help="show cached latencies only")
    p.add_argument("--pretrained-only", action="store_true", help="hide architectures without local weights")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("layers", help="a backbone's layer groups and what a freeze preset trains")
    p.add_argument("model")
    p.add_argument("--freeze", default="head", help="head | last-N (e.g. last-2) | all | gradual")
    p.add_argument("--keep-frozen", type=int, default=None, metavar="N",
                   help="gradual: the first N layer groups stay frozen (default: the classification default)")
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--estimate", type=int, metavar="N_IMAGES", help="measure training cost for N images")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-size", type=int, default=None, metavar="PIXELS",
                   help="--estimate: side of the training crops (default: what `train` uses; 0 = the model's own)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("weights", help="register your own safetensors weights for a timm architecture")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    w = wsub.add_parser("add", help="validate and register a .safetensors file")
    w.add_argument("file")
    w.add_argument("--arch", required=True, help="timm architecture, e.g. resnet18")
    w.add_argument("--label", required=True, help="short tag; the model is then named ARCH.LABEL")
    w.add_argument("--title", default="")
    w.set_defaults(func=cmd_weights_add)

    from core.tasks import task_names

    p = sub.add_parser("train", help="train a model on a folder of images (or resume a run)")
    p.add_argument("--data", help="folder with one sub-folder per class (optionally inside train/ and val/)")
    p.add_argument("--model", help="backbone name (default: mobilenetv2_100; faces: the face embedder)")
    p.add_argument("--task", default="classification", choices=task_names())
    p.add_argument("--annotations", metavar="FILE",
                   help="detection: COCO json / VOC folder / YOLO folder (default: found in --data)")
    p.add_argument("--ignore-index", type=int, default=None, help="segmentation: mask value to ignore (void)")
    p.add_argument("--arch", default=None, help="segmentation: unet (default) | fpn | deeplabv3plus")
    p.add_argument("--target-far", type=float, default=None, help="faces: false-accept rate for 'unknown' (0.01)")
    p.add_argument("--gallery", choices=["prototype", "nearest"], default=None, help="faces: gallery (prototype)")
    p.add_argument("--freeze", default=None, help="head | last-N (e.g. last-2) | all | gradual (default: the "
                   "task's; gradual for classification)")
    p.add_argument("--keep-frozen", type=int, default=None, metavar="N",
                   help="classification, gradual: the first N layer groups stay frozen when the rest unfreezes "
                   "(default: 3 with pretrained weights; faster epochs at the same accuracy)")
    p.add_argument("--epochs", type=int, default=None, help="default: the task's (5 for classification)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the task's (32 for classification)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: chosen for the freeze preset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int, default=None, metavar="PX",
                   help="side of the training crops; validation keeps the full size. Classification: default "
                   "about 0.72 x the model's input (224 -> 160, about 2x faster per epoch than 224 on a CPU), 0 = "
                   "the model's input size; segmentation: default the task's, 0 = 352")
    p.add_argument("--image-fit", choices=FIT_CHOICES, default=None,
                   help="classification: how a photo becomes the model's square: crop its centre, squash "
                   "(stretch) the whole photo, pad it with borders, or auto: crop unless padding is clearly better "
                   "in a quick check on the training photos when the run starts (default: the task's, crop)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="used when the data has no val/ folder")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--crop-min-area", type=float, default=None, metavar="SHARE",
                   help="classification: the smallest share of the photo a random training crop keeps, 0.05-1 "
                   "(default: the task's)")
    p.add_argument("--label-smoothing", type=float, default=None, metavar="EPS",
                   help="classification: share of the target spread over the other classes, 0-0.5 (default: the "
                   "task's, 0; runs saved by earlier versions used 0.1)")
    p.add_argument("--class-weights", action=argparse.BooleanOptionalAction, default=None,
                   help="weight the loss against class imbalance (default: the task's; on for segmentation)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--quick", action="store_true", help="a linear head on cached embeddings, in seconds")
    p.add_argument("--nproc", type=int, default=None,
                   help="processes on this machine: one per GPU (DDP); on a CPU, N gloo processes")
    p.add_argument("--nnodes", type=int, default=1, help="machines in a multi-node job (as torchrun)")
    p.add_argument("--node-rank", type=int, default=0, help="this machine's place, 0..nnodes-1 (as torchrun)")
    p.add_argument("--rdzv-endpoint", default="", metavar="HOST:PORT", help="node 0's address for a multi-node job")
    p.add_argument("--from-scratch", action="store_true", help="random initial weights (to see what transfer buys)")
    p.add_argument("--resume", metavar="RUN", help="continue a stopped or interrupted run to its planned end (run id, "
                   "as `runs list` shows, or run folder)")
    p.add_argument("--runs-dir", help="where to create the run folder (default: the data root's runs/)")
    p.add_argument("--name", default="")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="last line: a JSON summary")
    p.set_defaults(func=cmd_train)

    from core.cli_data import register as register_data

    register_data(sub)
    from core.cli_eval import register as register_eval

    register_eval(sub)
    from core.cli_runs import register as register_runs

    register_runs(sub)

    p = sub.add_parser("report", help="write a run's self-contained HTML report for people")
    p.add_argument("--run", required=True, metavar="RUN", help="run id (as `runs list` shows) or run folder")
    p.add_argument("--out", help="file to write (default: report.html in the run folder)")
    p.add_argument("--json", action="store_true", help="last line: {report, bytes}")
    from core.cli_eval import by_task

    p.set_defaults(func=by_task("report", cmd_report))

    p = sub.add_parser("app", help="open the web app (extra options go to Streamlit, e.g. --server.port 8600)")
    p.set_defaults(func=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] == "app":
        if any(a in ("-h", "--help") for a in argv[1:]):
            parser.parse_args(argv)
        return cmd_app(argparse.Namespace(), argv[1:])
    args = parser.parse_args(argv)
    for key in ("run", "resume"):  # a run id (as `runs list` shows it) names its folder in the data root
        if getattr(args, key, None):
            setattr(args, key, resolve_run(getattr(args, key)))
    if getattr(args, "computes", True):  # listing runs or datasets needs no torch (its import alone takes ~2 s)
        from core.device import configure_threads, keep_freed_memory

        configure_threads()
        keep_freed_memory()  # a CLI process trains or predicts, then ends
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`): end quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit has somewhere to go
        return 141
    return code


if __name__ == "__main__":
    raise SystemExit(main())
