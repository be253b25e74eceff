"""Export a segmentation run: safetensors + manifest (the only thing ever loaded back from users) and ONNX, each
checked against PyTorch after writing on a few of the run's validation images (and batch sizes 1 and N): the masks
must be PyTorch's (a pixel may differ only at a tie) and the logits must agree within 1e-4 of their scale (the largest
|logit|): float32 graphs differ by ~1e-5 of it, e.g. 1e-4 on logits near 10, which changes no mask. The folder
layout and export.json match core.export, so the Runs page reads it.

    model.safetensors   weights (bit-exact copy of the run's best weights)
    model.onnx          dynamic batch, height and width (multiples of 32)
    manifest.json       task, architecture, backbone, classes + class table, preprocessing, metrics, file hashes
    export.json         the parity check of every format
    predict_example.py  a short script that writes mask PNGs with these files
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core import runs, zoo
from core.export import (
    EXPORT_FORMAT,
    MANIFEST_FILE,
    MAX_MANIFEST_BYTES,
    MAX_WEIGHTS_BYTES,
    ONNX_OPSET,
    PHONE_PHOTOS,
    ExportError,
    ExportResult,
    _read_capped,
    check_against_architecture,
    finish_export,
    parse_safetensors_header,
    previous_export,
)
from core.storage import read_json, write_bytes_atomic, write_json_atomic
from core.tasks.segmentation.augment import pad_to
from core.tasks.segmentation.data import ClassTable
from core.tasks.segmentation.model import ARCHITECTURES, DEFAULT_ARCH, DIVISOR, build
from core.tasks.segmentation.predict import PREDICT_MAX_SIDE
from core.tasks.segmentation.train import to_input

FORMATS = ("safetensors", "onnx")
FILES = {"safetensors": "model.safetensors", "onnx": "model.onnx"}
TOLERANCE = 1e-4  # relative: of the logits' scale (the largest |logit| PyTorch gives, at least 1)
CHECK_SIDE = 256


@dataclass
class LoadedSegExport:
    model: torch.nn.Module
    manifest: dict
    state_dict: dict


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run_model(run_dir: Path) -> tuple[torch.nn.Module, dict, str]:
    cfg = runs.load_config(run_dir)
    manifest = runs.load_dataset(run_dir)
    arch = (manifest.get("model") or {}).get("arch", DEFAULT_ARCH)
    state = runs.load_weights(run_dir)
    model = build(cfg.backbone, len(manifest["classes"]), pretrained=False, arch=arch)
    model.load_state_dict(state, strict=True)
    return model.eval().float(), state, arch


def build_manifest(run_dir: Path, arch: str) -> dict:
    cfg = runs.load_config(run_dir)
    data = runs.load_dataset(run_dir)
    spec = zoo.get_spec(cfg.backbone)
    best = read_json(run_dir / "checkpoints" / "best.json", {}) or {}
    weights = run_dir / "checkpoints" / "best.safetensors"
    table = data["table"]
    return {
        "format": EXPORT_FORMAT, "format_version": 1, "task": "segmentation", "architecture": arch,
        "backbone": cfg.backbone, "num_classes": len(data["classes"]), "classes": list(data["classes"]),
        "table": table,
        "preprocessing": {"mean": list(spec.mean), "std": list(spec.std), "divisor": DIVISOR,
                          "max_side": PREDICT_MAX_SIDE, "steps": (
                              "decode, apply EXIF orientation, RGB (alpha on white); if the longer side is above "
                              f"{PREDICT_MAX_SIDE} px, downscale (bilinear); x = (pixel - 255*mean) / (255*std), "
                              f"channels first; pad right/bottom with 0 to multiples of {DIVISOR}; crop the logits "
                              "back and resize them (bilinear) to the image size; argmax over classes")},
        "input": {"name": "input", "shape": ["batch", 3, "height", "width"], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", len(data["classes"]), "height", "width"],
                   "meaning": "argmax over the class axis gives the class index of each pixel"},
        "metrics": {k: best.get(k) for k in ("val_miou", "val_pixel_accuracy", "epoch") if best.get(k) is not None},
        "versions": {"torch": torch.__version__, "timm": _version("timm"),
                     "segmentation_models_pytorch": _version("segmentation-models-pytorch")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {"run_id": run_dir.name, "run_name": runs.display_name(run_dir),
                   "weights_sha256": _sha(weights.read_bytes())},
        "files": {},
    }


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def check_inputs(run_dir: Path, mean: tuple, std: tuple, n: int = 4) -> tuple[torch.Tensor, str]:
    """Up to `n` validation images of the run, resized to CHECK_SIDE² (multiples of 32), normalised; synthetic if
    none can be read."""
    from PIL import Image

    from core.data.images import load_rgb

    items = runs.load_dataset(run_dir)["items"]
    ordered = [it for it in items if it["split"] == "val"] + [it for it in items if it["split"] != "val"]
    arrays = []
    for it in ordered:
        if len(arrays) >= n:
            break
        try:
            img = load_rgb(it["image"]).resize((CHECK_SIDE, CHECK_SIDE * 3 // 4 // DIVISOR * DIVISOR),
                                               Image.Resampling.BILINEAR)
        except Exception:  # noqa: BLE001 - a missing file is just not used for the check
            continue
        arrays.append(np.asarray(img, dtype=np.uint8))
    note = f"{len(arrays)} validation images"
    if len(arrays) < 2:
        rng = np.random.default_rng(0)
        arrays = list(rng.integers(0, 256, (n, CHECK_SIDE * 3 // 4 // DIVISOR * DIVISOR, CHECK_SIDE, 3),
                                   dtype=np.uint8))
        note = f"{n} synthetic images (the run's images were not readable)"
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return to_input(x, mean, std, channels_last=False), note


def compare(reference: list[torch.Tensor], outputs: list[torch.Tensor], tolerance: float = TOLERANCE) -> dict:
    """Check exported logits against PyTorch's, batch by batch.

    The masks decide first: every pixel must get PyTorch's class, except at a tie (PyTorch's two best logits within
    twice the allowed difference, where rounding may pick either). The logits must also agree within `tolerance`
    times their scale (the largest |logit| of PyTorch's, at least 1): float32 ONNX and PyTorch differ by ~1e-5 of it,
    so an absolute bound would fail sound files whose logits are large. Within that bound a mask can only change at
    a tie, so a failure means a real difference. `tolerance` in the result is the allowed absolute difference."""
    scale = max([1.0] + [float(r.abs().max()) for r in reference if r.numel()])
    allowed = tolerance * scale
    base = {"relative_tolerance": tolerance, "logit_scale": scale, "tolerance": allowed,
            "reference": "PyTorch, float32, eval mode, CPU"}
    diffs, agree, beyond_ties = [], [], 0
    for ref, out in zip(reference, outputs, strict=True):
        out = torch.as_tensor(out).float()
        if out.shape != ref.shape:
            error = f"output shape {tuple(out.shape)} differs from PyTorch's {tuple(ref.shape)}"
            return {**base, "ok": False, "error": error, "summary": f"check failed: {error}"}
        diffs.append(float((out - ref).abs().max()))
        differ = out.argmax(1) != ref.argmax(1)
        agree.append(1.0 - float(differ.float().mean()))
        top2 = ref.topk(2, dim=1).values if ref.shape[1] > 1 else torch.cat([ref, ref - 1], 1)
        margin = top2[:, 0] - top2[:, 1]
        beyond_ties += int((differ & (margin > 2 * allowed)).sum())  # a differing pixel that is not a tie
    worst = max(diffs)
    identical = all(a == 1.0 for a in agree)
    finite = math.isfinite(worst)
    masks_ok = finite and beyond_ties == 0
    logits_ok = finite and worst <= allowed
    relative = worst / scale if finite else float("nan")
    logits = (f"logits within {relative:.1e} of their scale (max |difference| {worst:.1e} on logits up to "
              f"{scale:.3g}; allowed {allowed:.1e})")
    if not finite:
        summary = "check failed: the exported model gives NaN or infinite logits"
    elif not masks_ok:
        summary = (f"check failed: {beyond_ties} pixels get another class than in PyTorch where PyTorch is not near "
                   f"a tie; {logits}")
    elif not logits_ok:
        summary = (f"check failed: the masks agree, but the logits differ by {relative:.1e} of their scale "
                   f"(max |difference| {worst:.1e} on logits up to {scale:.3g}; allowed {allowed:.1e})")
    else:
        summary = ("masks identical to PyTorch's" if identical else
                   f"masks agree with PyTorch's except at ties ({1 - min(agree):.2%} of the pixels at most)") + \
                  f"; {logits}"
    return {**base, "ok": bool(masks_ok and logits_ok), "summary": summary, "max_abs_diff": worst,
            "max_rel_diff": relative, "max_abs_diff_per_batch": diffs, "mask_agreement": min(agree),
            "masks_identical": identical, "differing_pixels_not_ties": beyond_ties,
            "tie_rule": f"a pixel may differ only where PyTorch's two best logits are within {2 * allowed:g}",
            "top1_agreement": min(agree), "batch_sizes": [int(r.shape[0]) for r in reference]}


def _onnx_bytes_traced(model: torch.nn.Module, example: torch.Tensor) -> bytes | None:
    """The model as ONNX from the TorchScript-based exporter (~1 s for a U-Net where the dynamo one takes ~15 s),
    batch, height and width dynamic; None when it cannot export the model."""
    buf = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # exporter deprecation notices: nothing a user can act on
            torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=ONNX_OPSET, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": axes, "logits": axes})
    except Exception:  # noqa: BLE001 - an operator it lacks (or it is gone from torch): the dynamo exporter then
        return None
    return buf.getvalue()


def _onnx_bytes(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=1024)
    h = torch.export.Dim("h32", min=1, max=256) * DIVISOR
    w = torch.export.Dim("w32", min=1, max=256) * DIVISOR
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), None, dynamo=True, input_names=["input"],
                                    output_names=["logits"], dynamic_shapes=({0: batch, 2: h, 3: w},),
                                    verbose=False, external_data=False)
    buf = io.BytesIO()
    program.save(buf, external_data=False)
    return buf.getvalue()


def _onnx_outputs(data: bytes, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])  # our own bytes, just exported
    name = sess.get_inputs()[0].name
    return [torch.from_numpy(sess.run(None, {name: b.numpy()})[0]) for b in batches]


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None, tolerance: float = TOLERANCE
               ) -> ExportResult:
    """Export the run's best weights as `fmt` into `out` (default RUN/exports/model) and check it against PyTorch."""
    t0 = time.time()
    if fmt not in FORMATS:
        raise ExportError(f"Segmentation models export as {' or '.join(FORMATS)} (not {fmt}).")
    run_dir = Path(run_dir)
    model, state, arch = _run_model(run_dir)
    manifest = build_manifest(run_dir, arch)
    folder = Path(out) if out else run_dir / "exports" / "model"
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder} exists and is not a folder; give a folder for the export.")
    folder.mkdir(parents=True, exist_ok=True)
    previous = previous_export(folder, manifest, FILES)
    x, note = check_inputs(run_dir, tuple(manifest["preprocessing"]["mean"]), tuple(manifest["preprocessing"]["std"]))
    batches = [x, x[:1]]
    with torch.inference_mode():
        reference = [model(b) for b in batches]
    name = FILES[fmt]
    extra: dict = {}
    if fmt == "safetensors":
        from safetensors.torch import save

        data = save({k: v.detach().cpu().contiguous() for k, v in state.items()},
                    metadata={"format": "pt", "producer": "transfer-studio"})
        write_bytes_atomic(folder / name, data)
        manifest["files"] = {**previous, fmt: {"file": name, "sha256": _sha(data), "bytes": len(data)}}
        write_json_atomic(folder / MANIFEST_FILE, manifest)
        loaded = load_export(folder)
        exact = loaded.state_dict.keys() == state.keys() and all(
            loaded.state_dict[k].dtype == v.dtype and torch.equal(loaded.state_dict[k], v) for k, v in state.items())
        with torch.inference_mode():
            outputs = [loaded.model(b) for b in batches]
        extra = {"bit_exact": bool(exact), "tensors": len(state)}
    else:
        # a second size too: the ONNX graph must accept other image sizes (multiples of 32)
        odd = pad_to(torch.nn.functional.interpolate(x[:1], size=(x.shape[2] + DIVISOR, x.shape[3] - DIVISOR),
                                                     mode="bilinear"), DIVISOR)[0]
        batches.append(odd)
        with torch.inference_mode():
            reference.append(model(odd))
        data = _onnx_bytes_traced(model, x[:2])
        outputs = _onnx_outputs(data, batches) if data is not None else []
        if data is None or not compare(reference, outputs, tolerance)["ok"]:  # e.g. a size it baked in
            data = _onnx_bytes(model, x[:2])
            outputs = _onnx_outputs(data, batches)
        write_bytes_atomic(folder / name, data)
    check = {"format": fmt, **compare(reference, outputs, tolerance), "n_images": int(x.shape[0]), "inputs": note,
             "sizes": [list(b.shape[2:]) for b in batches], **extra}
    if extra.get("bit_exact") is False:
        check["summary"] = "check failed: the saved weights differ from the run's; " + check["summary"]
    shown = dict.fromkeys('×'.join(map(str, s)) for s in check["sizes"])  # batches of one size: named once
    check["summary"] += f", on {note} at {'sizes' if len(shown) > 1 else 'size'} {', '.join(shown)}"
    return finish_export(folder, run_dir, fmt, name, data, check, manifest, previous, t0, example_script,
                         task="segmentation")




# --- loading an export: safetensors + manifest only -----------------------------------------------------------------

def validate_manifest(data: object) -> dict:
    """Check the manifest fields we use; raises ExportError."""
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise ExportError("manifest.json is not a Transfer Studio export manifest.")
    if data.get("task") != "segmentation":
        raise ExportError(f"manifest.json is for the task {data.get('task')!r}, not segmentation.")
    if data.get("architecture") not in ARCHITECTURES:
        raise ExportError(f"manifest.json names the architecture {data.get('architecture')!r}; expected one of "
                          f"{', '.join(ARCHITECTURES)}.")
    backbone = data.get("backbone")
    if not isinstance(backbone, str) or len(backbone) > 100:
        raise ExportError("manifest.json: backbone must be a model name.")
    try:
        zoo.get_spec(backbone)
        table = ClassTable.from_dict(data.get("table") or {})
    except Exception as err:  # noqa: BLE001 - ZooError, SegDataError, KeyError, TypeError: a bad manifest
        raise ExportError(f"manifest.json: {err}") from None
    if list(table.names) != data.get("classes") or data.get("num_classes") != len(table.names):
        raise ExportError("manifest.json: classes, num_classes and the class table disagree.")
    prep = data.get("preprocessing")
    if not isinstance(prep, dict) or not all(isinstance(prep.get(k), list) and len(prep[k]) == 3
                                             and all(isinstance(v, int | float) for v in prep[k])
                                             for k in ("mean", "std")):
        raise ExportError("manifest.json: preprocessing mean/std must be 3 numbers each.")
    if any(v <= 0 for v in prep["std"]):
        raise ExportError("manifest.json: preprocessing std must be positive.")
    entry = (data.get("files") or {}).get("safetensors")
    if not isinstance(entry, dict) or entry.get("file") != FILES["safetensors"] or not isinstance(
            entry.get("sha256"), str) or len(entry["sha256"]) != 64:
        raise ExportError("manifest.json does not list model.safetensors with its sha256.")
    return data


def _read_export(path: Path) -> tuple[bytes, bytes]:
    if path.is_dir():
        weights, manifest = path / FILES["safetensors"], path / MANIFEST_FILE
        if not weights.is_file() or not manifest.is_file():
            raise ExportError(f"{path.name} needs model.safetensors and manifest.json (other model files are never "
                              "loaded).")
        if weights.is_symlink() or manifest.is_symlink():
            raise ExportError("Links are not followed: copy the files themselves into the folder.")
        return (_read_capped(manifest, MAX_MANIFEST_BYTES, "manifest.json"),
                _read_capped(weights, MAX_WEIGHTS_BYTES, "model.safetensors"))
    from core.export import _from_zip

    if path.is_file():
        return _from_zip(path)
    raise ExportError(f"{path} does not exist.")


def load_export(path: str | os.PathLike) -> LoadedSegExport:
    """Validate and load a segmentation export (folder or zip): header, manifest, sha256, tensor names and shapes
    against the architecture (built on the meta device), then the tensors (safetensors never runs code)."""
    manifest_bytes, data = _read_export(Path(path).expanduser())
    header = parse_safetensors_header(data)
    try:
        manifest = validate_manifest(json.loads(manifest_bytes.decode("utf-8")))
    except (UnicodeDecodeError, ValueError) as err:
        if isinstance(err, ExportError):
            raise
        raise ExportError("manifest.json is not valid JSON.") from None
    if _sha(data) != manifest["files"]["safetensors"]["sha256"]:
        raise ExportError("model.safetensors does not match the sha256 in manifest.json: the file is damaged or was "
                          "changed after the export.")
    with torch.device("meta"):
        ref = build(manifest["backbone"], manifest["num_classes"], pretrained=False, arch=manifest["architecture"])
    from core.export import _DTYPE_NAMES

    expected = {k: (tuple(v.shape), _DTYPE_NAMES.get(v.dtype, str(v.dtype))) for k, v in ref.state_dict().items()}
    check_against_architecture(header, expected)
    from safetensors.torch import load as load_bytes

    state = load_bytes(data)
    model = build(manifest["backbone"], manifest["num_classes"], pretrained=False, arch=manifest["architecture"])
    model.load_state_dict(state, strict=True)
    return LoadedSegExport(model.eval(), manifest, state)


_EXAMPLE = '''"""Segment images with the model exported here by Transfer Studio (run __RUN__): writes one mask PNG
per image (pixel value = class index, coloured palette) next to it, named IMAGE.mask.png.

    python predict_example.py IMAGE [IMAGE ...] [--format safetensors|onnx]

Needs: pip install pillow numpy onnxruntime   (safetensors: pip install torch segmentation-models-pytorch timm)
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
__PHONE_PHOTOS__
HERE = Path(__file__).resolve().parent
MANIFEST = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
PREP = MANIFEST["preprocessing"]
CLASSES = MANIFEST["classes"]
COLOURS = MANIFEST["table"]["colours"]


def load(path):
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


def preprocess(img):
    scale = min(1.0, PREP["max_side"] / max(img.size))
    if scale < 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    x = (np.asarray(img, dtype=np.float32) - np.float32(255) * np.asarray(PREP["mean"], np.float32)) / (
        np.float32(255) * np.asarray(PREP["std"], np.float32))
    x = x.transpose(2, 0, 1)[None]
    h, w = x.shape[2:]
    d = PREP["divisor"]
    x = np.pad(x, ((0, 0), (0, 0), (0, (-h) % d), (0, (-w) % d)))
    return np.ascontiguousarray(x), (h, w)


def onnx_runner():
    import onnxruntime as ort

    sess = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {sess.get_inputs()[0].name: x})[0]


def torch_runner():
    import segmentation_models_pytorch as smp
    import torch
    from safetensors.torch import load_file

    enc = "mobilenet_v2" if MANIFEST["backbone"] == "mobilenetv2_100" else "tu-" + MANIFEST["backbone"]
    cls = {"unet": smp.Unet, "fpn": smp.FPN, "deeplabv3plus": smp.DeepLabV3Plus}[MANIFEST["architecture"]]
    net = cls(encoder_name=enc, encoder_weights=None, classes=len(CLASSES))
    state = {k.removeprefix("net."): v for k, v in load_file(str(HERE / "model.safetensors")).items()}
    net.load_state_dict(state)
    net.eval()

    def run(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()
    return run


def segment(run, path):
    img = load(path)
    x, (h, w) = preprocess(img)
    logits = run(x)[0][:, :h, :w]
    mask = logits.argmax(0).astype(np.uint8)
    out = Image.fromarray(mask, "L").resize(img.size, Image.Resampling.NEAREST).convert("P")
    flat = [v for c in COLOURS for v in c]
    out.putpalette(flat + [0] * (768 - len(flat)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description="Segment images with this exported model.")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--format", choices=["onnx", "safetensors"], default="onnx")
    args = parser.parse_args(argv)
    run = onnx_runner() if args.format == "onnx" else torch_runner()
    unread = 0
    for path in args.images:
        try:
            mask = segment(run, path)
        except (OSError, ValueError, Image.DecompressionBombError) as err:  # not an image, unreadable, too big
            unread += 1
            print(f"{path}: cannot read this file ({err}){phone_hint(path)}", file=sys.stderr)
            continue
        target = Path(path).with_suffix(".mask.png")
        mask.save(target)
        counts = np.bincount(np.asarray(mask).ravel(), minlength=len(CLASSES))
        shares = ", ".join(f"{c} {n / counts.sum():.1%}" for c, n in zip(CLASSES, counts) if n)
        print(f"{path} -> {target}: {shares}")
    return 1 if unread else 0


if __name__ == "__main__":
    sys.exit(main())
'''


def example_script(manifest: dict) -> str:
    return _EXAMPLE.replace("__PHONE_PHOTOS__", PHONE_PHOTOS).replace(
        "__RUN__", str(manifest.get("source", {}).get("run_id", "")))
