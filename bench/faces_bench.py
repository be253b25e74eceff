"""Face recognition on ../shared/datasets/lfw_faces (62 people x 15 photos): identification of enrolled people and
rejection of strangers, for the frozen dlib face model (prototype and nearest-neighbour galleries, threshold from
the enrolment photos alone), frozen ImageNet MobileNetV2 features, and MobileNetV2 fine-tuned with ArcFace.

Split: every 5th person (sorted by name) is a stranger (12 people, all 15 photos probe); the other 50 people enrol
their first 10 photos and are probed with their last 5. Folders are copied to a tmp folder (never into the repo).

Run: .venv/bin/python bench/faces_bench.py [--data ../shared/datasets/lfw_faces] [--epochs 12] [--skip-finetune]"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from core import runs
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.device import configure_threads, keep_freed_memory
from core.recorder import RunRecorder
from core.tasks.faces import gallery as gal
from core.tasks.faces import threshold as thr
from core.tasks.faces.data import resolve
from core.tasks.faces.evaluate import evaluate_folder
from core.tasks.faces.predict import Recognizer
from core.tasks.faces.train import fit, read_photos


def split(src: Path, dest: Path) -> tuple[Path, Path, list[str], list[str]]:
    people = sorted(p.name for p in src.iterdir() if p.is_dir())
    strangers = people[4::5]
    enrolled = [p for p in people if p not in strangers]
    enrol, probe = dest / "enrol", dest / "probe"
    for person in people:
        photos = sorted((src / person).iterdir())
        (probe / person).mkdir(parents=True)
        if person in strangers:
            for f in photos:
                shutil.copy(f, probe / person / f.name)
            continue
        (enrol / person).mkdir(parents=True)
        for f in photos[:10]:
            shutil.copy(f, enrol / person / f.name)
        for f in photos[10:]:
            shutil.copy(f, probe / person / f.name)
    return enrol, probe, enrolled, strangers


def run(enrol: Path, runs_dir: Path, model: str, kind: str = "prototype", epochs: int = 12,
        freeze: str = "all") -> tuple[Path, float]:
    manifest = resolve(str(enrol))
    manifest["faces"] = {"gallery": kind, "target_far": 0.01}
    cfg = RunConfig(model, str(enrol), FreezeConfig(freeze), TrainConfig(epochs=epochs, batch_size=32,
                    augment=("crop", "flip", "color"), label_smoothing=0.0), task="faces", name=f"{model} {kind}")
    run_dir = runs.create_run(cfg, manifest, runs_dir)
    t0 = time.time()
    res = fit(run_dir, [RunRecorder(run_dir)])
    assert res.state == "completed", res.message
    return run_dir, time.time() - t0


def row(name: str, run_dir: Path, train_s: float, probe: Path, recognizer=None) -> dict:
    ev = evaluate_folder(run_dir, probe, recognizer=recognizer, save=recognizer is None)
    meta = json.loads((run_dir / "gallery.json").read_text())
    photos = read_photos(run_dir)
    return {"model": name, "accuracy": ev["accuracy"], "unknown_rejection": ev["unknown_rejection"],
            "closed_set": ev["closed_set_accuracy"], "tar@1e-2": ev["tar_at_far_1e-2"],
            "tar@1e-3": ev["tar_at_far_1e-3"], "threshold": round(meta["threshold"], 4), "train_s": round(train_s, 1),
            "enrol_photos_per_s": round(len(photos) / train_s, 2),
            "ms_per_probe": round(1000 * ev["seconds_per_image"]),
            "n_probe": ev["n_images"], "n_stranger_photos": ev["n_unknown_images"], "no_face": ev["n_no_face"]}


def frozen_imagenet(dlib_run: Path, enrol: Path, probe: Path) -> dict:
    """MobileNetV2's ImageNet features (no training) on the same aligned crops, threshold from enrolment."""
    from core import zoo
    from core.tasks.faces.data import cache_folder
    from core.tasks.faces.embed import NetEmbedder
    from core.tasks.faces.enrol import FaceCache

    spec = zoo.get_spec("mobilenetv2_100")
    net = NetEmbedder(zoo.create_model("mobilenetv2_100", num_classes=0, pretrained=True), "imagenet_mnv2",
                      mean=spec.mean, std=spec.std)
    manifest = runs.load_dataset(dlib_run)
    cache = FaceCache(cache_folder(manifest, dlib_run))
    ok = [p for p in read_photos(dlib_run) if p["status"] == "ok"]
    t0 = time.time()
    emb = net.embed_crops([cache.crop(p["key"]) for p in ok])
    g = gal.build(sorted({p["label"] for p in ok}), emb, [p["label"] for p in ok], "prototype",
                  [p["key"] for p in ok], "imagenet_mnv2")
    cal, _ = thr.calibrate_gallery(g, 0.01)
    seconds = time.time() - t0
    rec = Recognizer(g, {"threshold": cal.threshold, "target_far": 0.01}, net, source="frozen ImageNet")
    out = row("MobileNetV2 ImageNet features, frozen (no training)", dlib_run, seconds, probe, rec)
    out["threshold"] = round(cal.threshold, 4)
    out["enrol_photos_per_s"] = None  # embedding only: the crops came from the dlib run's cache
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "lfw_faces"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    configure_threads()
    keep_freed_memory()  # as the app's training worker does
    work = Path(tempfile.mkdtemp(prefix="faces-bench-"))
    try:
        enrol, probe, enrolled, strangers = split(Path(args.data), work / "data")
        print(f"{len(enrolled)} enrolled people x 10 photos, probes: 5 each + {len(strangers)} strangers x 15",
              flush=True)
        rows = []
        dlib_run, s = run(enrol, work / "runs", "dlib_resnet_face")
        rows.append(row("dlib ResNet face model, frozen, prototype gallery", dlib_run, s, probe))
        print(rows[-1], flush=True)
        nn_run, s2 = run(enrol, work / "runs", "dlib_resnet_face", kind="nearest")
        rows.append(row("dlib ResNet face model, frozen, nearest-neighbour gallery", nn_run, s2, probe))
        print(rows[-1], flush=True)
        rows.append(frozen_imagenet(dlib_run, enrol, probe))
        print(rows[-1], flush=True)
        if not args.skip_finetune:
            ft_run, s3 = run(enrol, work / "runs", "mobilenetv2_100", epochs=args.epochs, freeze="all")
            rows.append(row(f"MobileNetV2 (ImageNet) fine-tuned with ArcFace, all layers, {args.epochs} epochs",
                            ft_run, s3, probe))
            print(rows[-1], flush=True)
        print("\n| model | enrolled named | strangers rejected | closed-set | TAR@1e-2 | TAR@1e-3 | enrol s | "
              "enrol photos/s | ms/probe |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['model']} | {r['accuracy']:.3f} | {r['unknown_rejection']:.3f} | {r['closed_set']:.3f} | "
                  f"{r['tar@1e-2']} | {r['tar@1e-3']} | {r['train_s']} | {r['enrol_photos_per_s']} | "
                  f"{r['ms_per_probe']} |")
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
