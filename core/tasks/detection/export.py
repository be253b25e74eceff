"""Take a detector away: safetensors + JSON manifest, or ONNX; each checked against PyTorch after writing.

The ONNX graph holds the whole detector (resize, normalise, backbone, heads, box decoding, NMS): input one float
image `image` (3, H, W) in [0, 1]; outputs `boxes` (N, 4: x1, y1, x2, y2 in the input's pixels), `labels` (N,
1-based class indices into the manifest's classes) and `scores` (N). The check runs both on a few of the run's
validation images and matches every PyTorch detection scoring ≥ 0.05 to one with the same label in the file's
output (box and score within tolerance). Besides the run's own photos it scores copies of the first resized to
other shapes (`_size_variants`): smaller than the model's input (upscaled by its resize, at a size where float32
arithmetic would round the resized side differently from PyTorch's float64), larger portrait, and wide landscape
(limited by the longer side), so a size-dependent difference between the file and PyTorch fails the check.

Loading a user's export accepts only model.safetensors + manifest.json (folder or zip): the safetensors header and
every manifest field are checked, then tensor names and shapes against the detector the manifest describes, before a
single tensor is read (`core.export` holds the shared readers).
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from core import runs, zoo
from core.export import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    FILES,
    MANIFEST_FILE,
    PHONE_PHOTOS,
    PICKLE_SUFFIXES,
    ExportError,
    ExportResult,
    _from_folder,
    _from_zip,
    _sha256,
    check_against_architecture,
    finish_export,
    parse_safetensors_header,
    previous_export,
)
from core.storage import read_json, write_bytes_atomic, write_json_atomic
from core.tasks.detection.model import DETECTORS, DetectorConfig, build_detector, predicting
from core.tasks.detection.predict import Detector, image_tensor

FORMATS = ("safetensors", "onnx")
BOX_TOLERANCE = 0.5  # pixels
SCORE_TOLERANCE = 1e-3
CHECK_SCORE = 0.05
OPSET = 17


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def build_manifest(run_dir: Path) -> dict:
    """The export manifest of a detection run (without `files`)."""
    from core.tasks.detection.train import detector_config

    cfg = runs.load_config(run_dir)
    data = runs.load_dataset(run_dir)
    classes = list(data["classes"])
    spec = zoo.get_spec(cfg.backbone)
    det = detector_config(data)
    best = read_json(run_dir / "checkpoints" / "best.json", {}) or {}
    weights = run_dir / "checkpoints" / "best.safetensors"
    return {
        "format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "task": "detection",
        "backbone": cfg.backbone, "architecture": spec.arch, "num_classes": len(classes), "classes": classes,
        "detector": asdict(det),
        "preprocessing": {"mean": list(spec.mean), "std": list(spec.std), "eval_size": det.eval_size,
                          "max_size": det.max_size, "steps": (
                              "decode, apply EXIF orientation, convert to RGB; float (3, H, W) in [0, 1]. The model "
                              f"resizes (shorter side {det.eval_size} px, longer at most {det.max_size}) and "
                              "normalises by itself; boxes come back in the input image's pixels.")},
        "input": {"name": "image", "shape": [3, "height", "width"], "dtype": "float32", "range": [0, 1]},
        "output": {"boxes": "N x 4, x1 y1 x2 y2 in pixels", "labels": "N, 1-based index into classes",
                   "scores": "N, 0..1, sorted high to low"},
        "metrics": {k: best.get(k) for k in ("val_map50", "val_map", "epoch") if best.get(k) is not None},
        "source": {"run_id": run_dir.name, "weights_sha256": _sha256(weights.read_bytes()) if weights.exists()
                   else ""},
        "versions": {d: _version(d) for d in ("torch", "torchvision", "timm", "safetensors", "onnx")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _check_images(run_dir: Path, n: int) -> list[torch.Tensor]:
    items = runs.load_dataset(run_dir)["items"]
    chosen = [it for it in items if it.get("split") == "val"][:n] or items[:n]
    out = []
    for it in chosen:
        try:
            out.append(image_tensor(it["path"]))
        except Exception:  # noqa: BLE001 - an image gone since training: use the others
            continue
    if not out:
        gen = torch.Generator().manual_seed(0)
        out = [torch.rand(3, 240, 320, generator=gen)]
    return out


def _resized_side_differs(h: int, w: int, eval_size: int, max_size: int) -> bool:
    """Whether the detector's resize of an h × w photo comes out a different size when computed in float32 (as
    torchvision's traced resize does) instead of PyTorch's float64: the trap the ONNX graph must avoid."""
    f32 = torch.tensor([h, w], dtype=torch.float32)
    limits = torch.tensor([eval_size, max_size], dtype=torch.float32)
    scale32 = (limits / torch.stack((f32.min(), f32.max()))).min()
    scale64 = min(eval_size / min(h, w), max_size / max(h, w))
    return torch.floor(f32 * scale32).long().tolist() != [int(h * scale64), int(w * scale64)]


def _check_shapes(eval_size: int, max_size: int) -> list[tuple[int, int]]:
    """(h, w) of the resized copies the export check adds: a small landscape photo (short side about half the
    model's, preferably where float32 would round the resize differently), a large portrait one and a wide one
    whose longer side limits the resize."""
    start = max(8, round(0.47 * eval_size))
    small = next((s for s in range(start, max(7, start // 2), -1)
                  if _resized_side_differs(s, round(s * 4 / 3), eval_size, max_size)), start)
    wide_h = max(8, round(0.9 * eval_size))
    wide_w = round(wide_h * max(2.0, 1.5 * max_size / eval_size))
    return [(small, round(small * 4 / 3)), (round(1.9 * eval_size), round(1.3 * eval_size)), (wide_h, wide_w)]


def _size_variants(images: list[torch.Tensor], eval_size: int, max_size: int) -> list[torch.Tensor]:
    """The check's photos: `images`, then the first of them resized to each of `_check_shapes` (real content, so
    the detections the check compares are like a user's)."""
    base = images[0][None]
    extra = [torch.nn.functional.interpolate(base, size=shape, mode="bilinear", align_corners=False,
                                             antialias=True)[0].clamp(0, 1).contiguous()
             for shape in _check_shapes(eval_size, max_size)]
    return [*images, *extra]


def compare(reference: list[dict], outputs: list[dict]) -> dict:
    """Match every reference detection (score ≥ CHECK_SCORE) to an output detection with the same label, the
    closest box (of boxes within tolerance, the closest score: an untrained head can give one box several
    scores); report the worst box and score differences and whether all were found within tolerance."""
    worst_box, worst_score, missing, total = 0.0, 0.0, 0, 0
    for ref, out in zip(reference, outputs, strict=True):
        keep = ref["scores"] >= CHECK_SCORE
        for b, s, lbl in zip(ref["boxes"][keep], ref["scores"][keep], ref["labels"][keep], strict=True):
            total += 1
            same = out["labels"] == lbl
            if not bool(same.any()):
                missing += 1
                continue
            diffs = (out["boxes"][same] - b).abs().amax(dim=1)
            score_diffs = (out["scores"][same] - s).abs()
            near = diffs <= BOX_TOLERANCE
            j = int(torch.where(near, score_diffs, torch.inf).argmin()) if bool(near.any()) else int(diffs.argmin())
            box_d = float(diffs[j])
            score_d = float(score_diffs[j])
            if box_d > BOX_TOLERANCE or score_d > SCORE_TOLERANCE:
                missing += 1
            worst_box, worst_score = max(worst_box, box_d), max(worst_score, score_d)
    ok = missing == 0
    return {"ok": ok, "n_detections": total, "unmatched": missing, "max_box_diff_px": round(worst_box, 6),
            "max_score_diff": round(worst_score, 8), "max_abs_diff": worst_box, "tolerance": BOX_TOLERANCE,
            "summary": f"{total - missing}/{total} detections match (max box difference {worst_box:.2g} px, max "
                       f"score difference {worst_score:.2g})"}


@torch.inference_mode()
def _torch_outputs(model: torch.nn.Module, images: list[torch.Tensor], size: int) -> list[dict]:
    with predicting(model, size):
        return [{k: v.detach() for k, v in model([im])[0].items()} for im in images]


class _Outputs(torch.nn.Module):
    """The detector on one image with its outputs as a tuple in the file's order (boxes, labels, scores): the
    exporter names outputs by position, and FCOS / RetinaNet return {boxes, scores, labels}, Faster R-CNN
    {boxes, labels, scores}."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(images)[0]
        return out["boxes"], out["labels"], out["scores"]


def onnx_bytes(model: torch.nn.Module, example: torch.Tensor, size: int) -> bytes:
    """The detector as ONNX (TorchScript-based exporter: torchvision's detectors are written for it), dynamic H, W.
    The resize inside is size-exact for every input (`BatchScaleTransform.resize` when traced), so the trace
    image's size does not matter."""
    buf = io.BytesIO()
    with predicting(model, size), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Outputs(model).eval(), ([example],), buf, dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=["boxes", "labels", "scores"],
                          dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "n"}, "labels": {0: "n"},
                                        "scores": {0: "n"}})
    return buf.getvalue()


def onnx_outputs(data: bytes, images: list[torch.Tensor]) -> list[dict]:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])  # our own bytes, just exported
    out = []
    for im in images:
        boxes, labels, scores = sess.run(None, {"image": im.numpy()})
        out.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                    "scores": torch.from_numpy(scores)})
    return out




def export_run(run_dir: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None, n_check: int = 4
               ) -> ExportResult:
    """Export the run's best weights as `fmt` into `out` (default RUN/exports/model) and check the written file
    against PyTorch on up to `n_check` validation images; export.json records the check."""
    from core.tasks.detection.train import build_for_run

    t0 = time.time()
    if fmt not in FORMATS:
        raise ExportError(f"Detection runs export as {' or '.join(FORMATS)} (not {fmt}).")
    run_dir = Path(run_dir)
    model, _, _ = build_for_run(run_dir, pretrained=False)
    state = runs.load_weights(run_dir)
    model.load_state_dict(state, strict=True)
    model = model.float().eval()
    manifest = build_manifest(run_dir)
    folder = Path(out) if out else run_dir / "exports" / "model"
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder} exists and is not a folder; give a folder for the export.")
    folder.mkdir(parents=True, exist_ok=True)
    previous = previous_export(folder, manifest, FILES)
    size = manifest["preprocessing"]["eval_size"]
    images = _size_variants(_check_images(run_dir, n_check), size, manifest["preprocessing"]["max_size"])
    reference = _torch_outputs(model, images, size)
    name = FILES[fmt]
    extra: dict = {}
    if fmt == "safetensors":
        from safetensors.torch import save

        data = save({k: v.detach().cpu().contiguous() for k, v in state.items()},
                    metadata={"format": "pt", "producer": "transfer-studio"})
        write_bytes_atomic(folder / name, data)
        manifest["files"] = {**previous, fmt: {"file": name, "sha256": _sha256(data), "bytes": len(data)}}
        write_json_atomic(folder / MANIFEST_FILE, manifest)
        loaded = load_export(folder)  # the full validation path a user's upload takes
        exact = all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
        outputs = _torch_outputs(loaded.model, images, size)
        extra = {"bit_exact": bool(exact), "tensors": len(state)}
    else:
        data = onnx_bytes(model, images[0], size)
        write_bytes_atomic(folder / name, data)
        outputs = onnx_outputs(data, images)
    check = {"format": fmt, **compare(reference, outputs), "n_images": len(images),
             "inputs": "validation images of the run, and the first resized to other sizes (small, large, wide)",
             "sizes": [list(im.shape[-2:]) for im in images], **extra}
    return finish_export(folder, run_dir, fmt, name, data, check, manifest, previous, t0, example_script,
                         task="detection")


# --- loading a user's export -----------------------------------------------------------------------------------------

def validate_manifest(data: object) -> dict:
    """Every field a detection export's manifest must have, with types and ranges. Raises ExportError."""
    import timm

    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise ExportError("manifest.json is not a Transfer Studio export manifest.")
    if data.get("task") != "detection":
        raise ExportError(f"manifest.json is for the task {data.get('task')!r}, not detection.")
    if not isinstance(data.get("format_version"), int) or not 1 <= data["format_version"] <= EXPORT_VERSION:
        raise ExportError(f"manifest.json has format_version {data.get('format_version')!r}.")
    arch = data.get("architecture")
    if not isinstance(arch, str) or len(arch) > 100 or arch not in timm.list_models():
        raise ExportError(f"manifest.json names the architecture {arch!r}, which is not a timm model.")
    classes = data.get("classes")
    if not (isinstance(classes, list) and 1 <= len(classes) <= 10_000 and all(
            isinstance(c, str) and 0 < len(c) <= 200 for c in classes)) or len(set(classes)) != len(classes):
        raise ExportError("manifest.json: classes must be a list of 1 to 10,000 unique non-empty names.")
    if data.get("num_classes") != len(classes):
        raise ExportError("manifest.json: num_classes does not match the number of class names.")
    det = data.get("detector")
    if not isinstance(det, dict) or det.get("kind") not in DETECTORS:
        raise ExportError("manifest.json: detector is missing or names an unknown detector.")
    allowed = set(DetectorConfig.__dataclass_fields__)
    if set(det) - allowed:
        raise ExportError(f"manifest.json: detector has unknown fields {sorted(set(det) - allowed)}.")
    for key in ("fpn_channels", "representation", "eval_size", "max_size", "detections_per_img", "box_batch_per_image"):
        v = det.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4096:
            raise ExportError(f"manifest.json: detector.{key} must be a whole number from 1 to 4096.")
    sizes = det.get("train_sizes", [320])
    if not (isinstance(sizes, list) and 1 <= len(sizes) <= 32 and all(
            isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in sizes)):
        raise ExportError("manifest.json: detector.train_sizes must be whole numbers from 8 to 4096.")
    levels = det.get("levels", [8, 16, 32])
    if not (isinstance(levels, list) and levels and levels == sorted(set(levels)) and all(
            isinstance(v, int) and not isinstance(v, bool) and v in (8, 16, 32) for v in levels)):
        raise ExportError("manifest.json: detector.levels must be increasing strides among 8, 16 and 32.")
    score = det.get("score_thresh", 0.01)
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise ExportError("manifest.json: detector.score_thresh must be between 0 and 1.")
    entry = (data.get("files") or {}).get("safetensors") if isinstance(data.get("files"), dict) else None
    if not isinstance(entry, dict) or entry.get("file") != FILES["safetensors"] or not isinstance(
            entry.get("sha256"), str) or len(entry["sha256"]) != 64:
        raise ExportError("manifest.json does not list model.safetensors with its sha256; only safetensors exports "
                          "can be loaded (ONNX files are never loaded from users).")
    return data


def _read(path: Path) -> tuple[bytes, bytes]:
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(4)
        if path.suffix.lower() == ".zip" or (head == b"PK\x03\x04" and path.suffix.lower() not in PICKLE_SUFFIXES):
            return _from_zip(path)
        raise ExportError(f"{path.name}: give the export folder (or a zip of it) with model.safetensors and "
                          "manifest.json; other model files are never loaded.")
    raise ExportError(f"{path} does not exist.")


def load_export(path: str | os.PathLike) -> Detector:
    """A validated detection export as a ready Detector (header → manifest → sha256 → names and shapes → tensors)."""
    from safetensors.torch import load as load_bytes

    p = Path(path).expanduser()
    manifest_bytes, data = _read(p)
    header = parse_safetensors_header(data)
    try:
        manifest = validate_manifest(json.loads(manifest_bytes.decode("utf-8")))
    except (UnicodeDecodeError, ValueError):
        raise ExportError("manifest.json is not valid JSON.") from None
    if _sha256(data) != manifest["files"]["safetensors"]["sha256"]:
        raise ExportError("model.safetensors does not match the sha256 in manifest.json: the file is damaged or was "
                          "changed after the export.")
    model = build_detector(manifest["architecture"], len(manifest["classes"]), pretrained=False,
                           config=DetectorConfig.from_dict(manifest.get("detector")))
    expected = {k: (tuple(v.shape), "F32") for k, v in model.state_dict().items()}
    check_against_architecture(header, expected)
    model.load_state_dict(load_bytes(data), strict=True)
    return Detector(model.float(), list(manifest["classes"]), f"export {p.name}",
                    backbone=str(manifest.get("backbone", "")))


_EXAMPLE = '''"""Detect objects with the exported model (run __RUN__). Needs: __NEEDS__

    python predict_example.py photo.jpg [--format __FORMAT_CHOICES__] [--threshold 0.5]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
__PHONE_PHOTOS__
HERE = Path(__file__).resolve().parent
MANIFEST = json.loads((HERE / "manifest.json").read_text())
CLASSES = MANIFEST["classes"]


def load(path):
    """float (3, H, W) in [0, 1], EXIF orientation applied: what the model expects."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0


def onnx_runner():
    import onnxruntime as ort

    sess = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
    return lambda image: tuple(sess.run(None, {"image": image}))


def safetensors_runner():
    # the app's own loader rebuilds the detector from the manifest and checks the file first
    import torch
    from core.tasks.detection.export import load_export

    detector = load_export(HERE)

    def run(image):
        out = detector.raw(torch.from_numpy(image))
        return out["boxes"].numpy(), out["labels"].numpy(), out["scores"].numpy()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description="Detect objects in images with this exported model.")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--format", default=__DEFAULT__, choices=__FORMATS__)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    run = onnx_runner() if args.format == "onnx" else safetensors_runner()  # loaded once for all photos
    unread = 0
    for path in args.images:
        try:
            image = load(path)
        except (OSError, ValueError, Image.DecompressionBombError) as err:  # not an image, unreadable, too big
            unread += 1
            print(f"{path}: cannot read this file ({err}){phone_hint(path)}", file=sys.stderr)
            continue
        boxes, labels, scores = run(image)
        found = [{"label": CLASSES[int(k) - 1], "score": round(float(s), 3), "box": [round(float(v), 1) for v in b]}
                 for b, k, s in zip(boxes, labels, scores) if s >= args.threshold]
        print(path, json.dumps(found))
    return 1 if unread else 0


if __name__ == "__main__":
    sys.exit(main())
'''


def example_script(manifest: dict) -> str:
    """predict_example.py for the formats in the export."""
    formats = [f for f in FORMATS if f in (manifest.get("files") or {})] or ["safetensors"]
    needs = {"safetensors": ["torch", "torchvision", "timm", "safetensors"], "onnx": ["onnxruntime", "numpy", "pillow"]}
    pkgs = " ".join(sorted({p for f in formats for p in needs[f]}))
    if "safetensors" in formats:  # the detector is rebuilt by the app's own code: say how to reach it
        pkgs += ("\n    and, for safetensors, Transfer Studio's own `core` package: run it with the app's Python\n"
                 "    (.venv/bin/python in the app's folder)")
    default = "onnx" if "onnx" in formats else "safetensors"
    return (_EXAMPLE.replace("__PHONE_PHOTOS__", PHONE_PHOTOS)
            .replace("__RUN__", str(manifest.get("source", {}).get("run_id", "")))
            .replace("__FORMAT_CHOICES__", "|".join(formats)).replace("__FORMATS__", repr(formats))
            .replace("__DEFAULT__", repr(default)).replace("__NEEDS__", pkgs))
