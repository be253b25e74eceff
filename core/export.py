"""Take a trained model away: safetensors + JSON manifest, ONNX or TorchScript, each checked after writing.

An export folder holds, for the formats exported into it:

    model.safetensors      the weights (bit-exact copy of the run's best weights)
    model.onnx             one ONNX file with a dynamic batch dimension
    model.torchscript.pt   a traced TorchScript module (fixed image size, any batch)
    manifest.json          architecture, task, classes, preprocessing, metrics, threshold, versions, file hashes
    export.json            the parity check of every format (max |difference| to PyTorch, images used, ok)
    predict_example.py     a short script that classifies images with these files and the right preprocessing

Loading a user-supplied model (`load_export`) accepts ONLY model.safetensors + our manifest.json (a folder or a
zip). The manifest fields, the safetensors header, and every tensor name, shape and dtype are checked against the
architecture before a single tensor is read; pickles (.pt .pth .ckpt .bin, whatever their name) are refused and
never unpickled; ONNX and TorchScript files are never loaded from users.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import json
import math
import os
import shlex
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from core import runs
from core.config import FreezeConfig
from core.pipeline import _INTERP, FITS, Prep, eval_batch, load_square, prep_for
from core.storage import read_json, write_bytes_atomic, write_json_atomic

EXPORT_FORMAT = "transfer-studio-export"
EXPORT_VERSION = 1
FORMATS = ("safetensors", "onnx", "torchscript")
FILES = {"safetensors": "model.safetensors", "onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
MANIFEST_FILE = "manifest.json"
EXPORT_FILE = "export.json"
EXAMPLE_FILE = "predict_example.py"
TOLERANCE = 1e-4
MAX_MANIFEST_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 2 << 30
MAX_HEADER_BYTES = 100_000_000
MAX_ZIP_ENTRIES = 1000
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar", ".joblib", ".npy", ".npz")

_ST_DTYPES = {"F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
              "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4), "I16": (torch.int16, 2),
              "I8": (torch.int8, 1), "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1)}
_DTYPE_NAMES = {dt: name for name, (dt, _) in _ST_DTYPES.items()}


class ExportError(Exception):
    """An export cannot be written or a model file cannot be accepted; the message says why."""


@dataclass
class ExportResult:
    """What `export_run` wrote and how its check went."""

    format: str
    folder: Path
    files: list[str]
    check: dict
    ok: bool
    seconds: float

    def to_dict(self) -> dict:
        return {"format": self.format, "folder": str(self.folder), "files": self.files, "check": self.check,
                "ok": self.ok, "seconds": round(self.seconds, 2)}


@dataclass
class LoadedExport:
    """A validated export: the model (eval mode, CPU, float32 weights as stored), its manifest and preprocessing."""

    model: torch.nn.Module
    manifest: dict
    prep: Prep
    source: str
    state_dict: dict = field(default_factory=dict, repr=False)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


# --- building the model of a run ---------------------------------------------------------------------------------

def _build(task: str, architecture: str, num_classes: int) -> torch.nn.Module:
    from core.tasks import get_task

    return get_task(task).build_model(architecture, num_classes, pretrained=False)


def _run_model(run_dir: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The run's best weights in a float32, contiguous, eval-mode CPU model (the parity reference)."""
    from core import zoo

    cfg = runs.load_config(run_dir)
    classes = runs.load_dataset(run_dir)["classes"]
    state = runs.load_weights(run_dir)
    model = _build(cfg.task, zoo.get_spec(cfg.backbone).arch, len(classes))
    model.load_state_dict(state, strict=True)
    return model.eval().float(), state


def build_manifest(run_dir: str | os.PathLike) -> dict:
    """The manifest of a run's export (without the `files` entries, which the export adds)."""
    from core import zoo
    from core.evaluate import load_evaluation, summary
    from core.inference import stored_threshold

    run_dir = Path(run_dir)
    cfg = runs.load_config(run_dir)
    classes = list(runs.load_dataset(run_dir)["classes"])
    spec = zoo.get_spec(cfg.backbone)
    prep = prep_for(spec, cfg.train.image_fit)
    best = read_json(run_dir / "checkpoints" / "best.json", {}) or {}
    metrics = {k: best.get(k) for k in ("val_accuracy", "val_loss", "epoch") if best.get(k) is not None}
    ev = load_evaluation(run_dir)
    if ev and not ev.get("stale"):
        s = summary(ev)
        metrics["evaluation"] = {k: s.get(k) for k in ("split", "n_images", "accuracy", "balanced_accuracy",
                                                        "macro_f1", "ece")}
    weights = run_dir / "checkpoints" / "best.safetensors"
    return {
        "format": EXPORT_FORMAT, "format_version": EXPORT_VERSION,
        "task": cfg.task, "backbone": cfg.backbone, "architecture": spec.arch,
        "num_classes": len(classes), "classes": classes,
        "preprocessing": {**asdict(prep), "steps": preprocessing_steps(prep)},
        "input": {"name": "input", "shape": ["batch", 3, prep.size, prep.size], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", len(classes)], "meaning": "softmax gives the probabilities"},
        "metrics": metrics,
        "threshold": stored_threshold(run_dir),
        "threshold_meaning": "answer 'not sure' when the top probability is below this (null: always answer)",
        "versions": {"torch": torch.__version__, "timm": _version("timm"), "safetensors": _version("safetensors"),
                     "transfer_studio": _version("transfer-studio")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {"run_id": run_dir.name, "run_name": runs.display_name(run_dir, fallback=""),
                   "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()},
        "files": {},
    }


def preprocessing_steps(prep: Prep) -> str:
    """The manifest's plain-words description of how an image becomes the model's input."""
    s = prep.scale_size
    square = {"squash": f"resize the whole image to {s}x{s} px ({prep.interpolation}; its proportions change)",
              "pad": f"resize the longer side to {s} px ({prep.interpolation}) and centre the image on a {s}x{s} "
                     "square of the mean colour (round(255*mean))"}.get(
        prep.fit, f"resize the shorter side to {s} px ({prep.interpolation}) and keep the centre square")
    return (f"decode, apply EXIF orientation, convert to RGB (alpha on white); {square}; centre-crop "
            f"{prep.size}x{prep.size}; x = (pixel - 255*mean) / (255*std), channels first (N,3,H,W)")


# --- check inputs and comparison ----------------------------------------------------------------------------------

def _check_inputs(run_dir: Path, prep: Prep, n: int = 8) -> tuple[torch.Tensor, str]:
    """Up to `n` of the run's validation images (then others), prepared as for prediction; synthetic if none."""
    items = runs.load_dataset(run_dir)["items"]
    ordered = [it for it in items if it["split"] == "val"] + [it for it in items if it["split"] != "val"]
    squares = []
    for it in ordered:
        if len(squares) >= n:
            break
        try:
            squares.append(load_square(it["path"], prep))
        except Exception:  # noqa: BLE001 - a missing or bad file just is not used for the check
            continue
    if len(squares) >= 2:
        return eval_batch(np.stack(squares), prep, channels_last=False), f"{len(squares)} validation images"
    rng = np.random.default_rng(0)
    fake = rng.integers(0, 256, (n, prep.scale_size, prep.scale_size, 3), dtype=np.uint8)
    return eval_batch(fake, prep, channels_last=False), f"{n} synthetic images (the run's images were not readable)"


def _compare(reference: list[torch.Tensor], outputs: list[torch.Tensor], tolerance: float) -> dict:
    """Max |difference| of logits (and probabilities) per batch, and top-1 agreement, against PyTorch."""
    diffs, pdiffs = [], []
    for ref, out in zip(reference, outputs, strict=True):
        ref, out = ref.float(), torch.as_tensor(out).float()
        if out.shape != ref.shape:
            return {"ok": False, "error": f"output shape {tuple(out.shape)} differs from PyTorch's {tuple(ref.shape)}",
                    "tolerance": tolerance}
        diffs.append(float((out - ref).abs().max()))
        pdiffs.append(float((torch.softmax(out, 1) - torch.softmax(ref, 1)).abs().max()))
    agree = float((torch.as_tensor(outputs[0]).argmax(1) == reference[0].argmax(1)).float().mean())
    worst = max(diffs)
    return {"ok": bool(math.isfinite(worst) and worst <= tolerance), "max_abs_diff": worst,
            "max_abs_diff_per_batch": diffs, "max_prob_diff": max(pdiffs), "top1_agreement": agree,
            "tolerance": tolerance, "batch_sizes": [int(r.shape[0]) for r in reference],
            "reference": "PyTorch, float32, eval mode, CPU"}


def _batches(x: torch.Tensor) -> list[torch.Tensor]:
    """The check batch, and its first image alone (so a dynamic batch dimension is exercised)."""
    return [x, x[:1]]


def _reference(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [model(b) for b in _batches(x)]


# --- the three formats ---------------------------------------------------------------------------------------------

ONNX_OPSET = 17  # read by onnxruntime ≥ 1.14 (2023) and every current ONNX tool


def _safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return save(tensors, metadata={"format": "pt", "producer": "transfer-studio"})


def _onnx_checked(model: torch.nn.Module, example: torch.Tensor, batches: list[torch.Tensor],
                  reference: list[torch.Tensor], tolerance: float) -> tuple[bytes, list[torch.Tensor]]:
    """The model as ONNX with a dynamic batch, and its outputs on `batches`. The TorchScript-based exporter takes
    ~1 s for MobileNetV2 where the dynamo one takes ~15 s; the dynamo one is used when the first cannot export the
    model (or is gone from torch) or its file does not match PyTorch (e.g. a batch size baked in)."""
    data = _onnx_bytes_traced(model, example)
    if data is not None:
        try:
            outputs = _onnx_outputs(data, batches)
        except Exception:  # noqa: BLE001 - onnxruntime refuses another batch size: a size was baked in
            outputs = []
        if outputs and _compare(reference, outputs, tolerance)["ok"]:
            return data, outputs
    data = _onnx_bytes_dynamo(model, example)
    return data, _onnx_outputs(data, batches)


def _onnx_bytes_traced(model: torch.nn.Module, example: torch.Tensor) -> bytes | None:
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # exporter deprecation notices: nothing a user can act on
            torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=ONNX_OPSET, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    except Exception:  # noqa: BLE001 - an operator the traced exporter lacks: the dynamo exporter knows more
        return None
    return buf.getvalue()


def _onnx_bytes_dynamo(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), None, dynamo=True, input_names=["input"],
                                    output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False,
                                    external_data=False)
    buf = io.BytesIO()
    program.save(buf, external_data=False)
    return buf.getvalue()


def _onnx_outputs(data: bytes, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])  # our own bytes, just exported
    name = sess.get_inputs()[0].name
    return [torch.from_numpy(sess.run(None, {name: b.numpy()})[0]) for b in batches]


def _torchscript_bytes(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return buf.getvalue()


def _torchscript_outputs(data: bytes, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")  # safe-load: our own bytes, just traced
        module.eval()
        return [module(b) for b in batches]


def export_run(run_dir: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None, n_check: int = 8,
               tolerance: float = TOLERANCE) -> ExportResult:
    """Export the run's best weights as `fmt` into the folder `out` (default `<run>/exports/model`), check the
    written model against PyTorch on up to `n_check` of the run's validation images, and record the check in
    export.json and manifest.json. Several formats can share one folder."""
    t0 = time.time()
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format '{fmt}'. Use one of: {', '.join(FORMATS)}.")
    run_dir = Path(run_dir)
    model, state = _run_model(run_dir)
    manifest = build_manifest(run_dir)
    folder = Path(out) if out else run_dir / "exports" / "model"
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder} exists and is not a folder; give a folder for the export.")
    folder.mkdir(parents=True, exist_ok=True)
    previous = previous_export(folder, manifest)
    prep = manifest_prep(manifest["preprocessing"])
    x, note = _check_inputs(run_dir, prep, n_check)
    batches = _batches(x)
    reference = _reference(model, x)
    name = FILES[fmt]
    extra: dict = {}
    if fmt == "safetensors":
        data = _safetensors_bytes(state)
        write_bytes_atomic(folder / name, data)
        manifest["files"] = {**previous, fmt: {"file": name, "sha256": _sha256(data), "bytes": len(data)}}
        write_json_atomic(folder / MANIFEST_FILE, manifest)
        loaded = load_export(folder)  # the full validation path a user's upload takes
        exact = loaded.state_dict.keys() == state.keys() and all(
            loaded.state_dict[k].dtype == v.dtype and torch.equal(loaded.state_dict[k], v) for k, v in state.items())
        with torch.inference_mode():
            outputs = [loaded.model(b) for b in batches]
        extra = {"bit_exact": bool(exact), "tensors": len(state)}
    elif fmt == "onnx":
        data, outputs = _onnx_checked(model, x[:2] if len(x) >= 2 else x, batches, reference, tolerance)
        write_bytes_atomic(folder / name, data)
    else:
        data = _torchscript_bytes(model, x[:2] if len(x) >= 2 else x)
        outputs = _torchscript_outputs(data, batches)
        write_bytes_atomic(folder / name, data)
    check = {"format": fmt, **_compare(reference, outputs, tolerance), "n_images": len(x), "inputs": note, **extra}
    return finish_export(folder, run_dir, fmt, name, data, check, manifest, previous, t0, example_script)


def finish_export(folder: Path, run_dir: Path, fmt: str, name: str, data: bytes, check: dict, manifest: dict,
                  previous: dict, t0: float, example: Callable[[dict], str], task: str | None = None
                  ) -> ExportResult:
    """The end of every export (all tasks): publish the written model file, confirm it holds the checked bytes,
    record its hash in manifest.json and the check in export.json, write the example script, say what is there."""
    _publish(folder / name)
    written = (folder / name).read_bytes()
    check["file_is_checked_bytes"] = _sha256(written) == _sha256(data)
    check["ok"] = bool(check["ok"] and check.get("bit_exact", True) and check["file_is_checked_bytes"])
    # the written file's hash (what a user will check), then manifest, export.json and the example script
    manifest["files"] = {**previous, fmt: {"file": name, "sha256": _sha256(written), "bytes": len(written),
                                           "check_ok": check["ok"]}}
    write_json_atomic(folder / MANIFEST_FILE, manifest)
    record = read_json(folder / EXPORT_FILE, {}) or {}
    formats = {k: v for k, v in (record.get("formats") or {}).items() if k in manifest["files"]}
    formats[fmt] = {"file": name, "sha256": manifest["files"][fmt]["sha256"], "bytes": len(written),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - t0, 2),
                    "check": check}
    write_json_atomic(folder / EXPORT_FILE, {"run_id": run_dir.name, **({"task": task} if task else {}),
                                             "source_weights_sha256": manifest["source"]["weights_sha256"],
                                             "formats": formats})
    write_bytes_atomic(folder / EXAMPLE_FILE, example(manifest).encode())
    for extra_file in (MANIFEST_FILE, EXPORT_FILE, EXAMPLE_FILE):
        _publish(folder / extra_file)
    files = sorted({e["file"] for e in manifest["files"].values()} | {MANIFEST_FILE, EXPORT_FILE, EXAMPLE_FILE})
    return ExportResult(fmt, folder, files, check, check["ok"], time.time() - t0)


def _publish(path: Path) -> None:
    """Exports are meant to be shared: readable by others as the umask allows (atomic writes start at 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(path, 0o644 & ~umask)
    except OSError:
        pass


def previous_export(folder: Path, manifest: dict, file_names: dict[str, str] = FILES) -> dict:
    """File entries of formats already exported here for the same weights. Another run's export is refused;
    entries for older weights of this run are dropped and their files removed (they would disagree).
    `file_names`: format → file name of the task's exports."""
    old = read_json(folder / MANIFEST_FILE)
    if not isinstance(old, dict) or old.get("format") != EXPORT_FORMAT:
        return {}
    src = old.get("source") or {}
    if src.get("run_id") != manifest["source"]["run_id"]:
        raise ExportError(f"{folder} already holds an export of another run ({src.get('run_id')}); choose an empty "
                          "folder.")
    files = {k: v for k, v in (old.get("files") or {}).items() if k in file_names}
    if src.get("weights_sha256") == manifest["source"]["weights_sha256"]:
        return files
    for fmt in files:
        (folder / file_names[fmt]).unlink(missing_ok=True)
    return {}


def read_export_record(folder: str | os.PathLike) -> dict | None:
    """export.json of an export folder (the checks of every format in it)."""
    return read_json(Path(folder) / EXPORT_FILE)


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:  # noqa: ARG001 - mtime and size: the cache key
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _threshold_words(threshold: float | None) -> str:
    return "always answer" if threshold is None else f"answer “not sure” below {threshold:.0%}"


def out_of_date(folder: str | os.PathLike, run_dir: str | os.PathLike) -> list[str]:
    """Why an export folder no longer matches its run, in plain words ([] when it does): the run's weights changed
    since (trained more or resumed), a classification run's "not sure" threshold was chosen or changed since, or a
    faces run's "unknown" threshold was chosen again (a frozen face model has no weights of its own)."""
    from core.inference import stored_threshold

    manifest = read_json(Path(folder) / MANIFEST_FILE)
    if not isinstance(manifest, dict):
        return []
    why = []
    weights = Path(run_dir) / "checkpoints" / "best.safetensors"
    if weights.is_file():
        st = weights.stat()
        if (manifest.get("source") or {}).get("weights_sha256") != _file_sha256(str(weights), st.st_mtime_ns,
                                                                               st.st_size):
            why.append("the run's weights changed since (it trained further)")
    task = manifest.get("task", "classification")
    if task == "classification" and weights.is_file():
        now, then = stored_threshold(Path(run_dir)), manifest.get("threshold")
        if now != then:
            why.append(f"its files {_threshold_words(then)}, but the run now says to {_threshold_words(now)}")
    elif task == "faces":
        now, then = (read_json(Path(run_dir) / "gallery.json", {}) or {}).get("threshold"), manifest.get("threshold")
        if isinstance(now, int | float) and isinstance(then, int | float) and abs(now - then) > 1e-9:
            why.append(f"its 'unknown' threshold is {then:.3f}, but the run now uses {now:.3f} (chosen again "
                       "since)")
    return why


def zip_export(folder: str | os.PathLike) -> bytes:
    """The export folder's files as one zip (for a download button); only our own file names are included, and
    no model file whose check against PyTorch failed (export.json says which)."""
    folder = Path(folder)
    record = read_export_record(folder) or {}
    failed = {FILES[fmt] for fmt, entry in (record.get("formats") or {}).items()
              if fmt in FILES and not (entry.get("check") or {}).get("ok")}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in (*FILES.values(), MANIFEST_FILE, EXPORT_FILE, EXAMPLE_FILE):
            path = folder / name
            if path.is_file() and name not in failed:
                zf.write(path, name)
    return buf.getvalue()


# --- loading a user's export: safetensors + manifest only --------------------------------------------------------

def describe_foreign(data: bytes) -> str:
    """What a file that is not safetensors looks like, from its first bytes ('' if unknown)."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return "a Python pickle"
    if data[:4] == b"PK\x03\x04":
        return "a zip archive (PyTorch .pt/.pth/.ckpt files are zips with a pickle inside)"
    if data[:2] == b"\x1f\x8b":
        return "a gzip archive"
    if data[:1] in (b"(", b"c", b"]", b"}") and b"\n" in data[:200]:
        return "probably a Python pickle (protocol 0/1)"
    if data[:1] == b"\x08" and b"pytorch" in data[:64].lower():
        return "an ONNX model"
    return ""


def _refuse_pickle_message(name: str, data: bytes) -> str:
    kind = describe_foreign(data)
    what = f"{name} is {kind}, not a safetensors file" if kind else f"{name} is not a safetensors file"
    return (f"{what}. Only model.safetensors with its manifest.json is accepted: pickle-based files (.pt, .pth, "
            ".ckpt, .bin) can run code when they are opened, so they are never loaded.")


def parse_safetensors_header(data: bytes, name: str = "model.safetensors") -> dict[str, dict]:
    """The tensor table of a safetensors file, checked for structure (sizes, offsets, dtypes) without reading any
    tensor. Raises ExportError, naming pickles and other formats."""
    if len(data) < 10:
        raise ExportError(f"{name} is too short to be a safetensors file.")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > MAX_HEADER_BYTES or n > len(data) - 8 or data[8:9] != b"{":
        raise ExportError(_refuse_pickle_message(name, data))
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ExportError(f"{name}: its safetensors header is not valid JSON.") from None
    if not isinstance(header, dict):
        raise ExportError(f"{name}: its safetensors header is not a table of tensors.")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise ExportError(f"{name}: its safetensors metadata is malformed.")
    body = len(data) - 8 - n
    spans = []
    for key, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ExportError(f"{name}: tensor {key!r} has a malformed entry.")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _ST_DTYPES:
            raise ExportError(f"{name}: tensor {key!r} has an unsupported dtype {dtype!r}.")
        if not (isinstance(shape, list) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                for s in shape)):
            raise ExportError(f"{name}: tensor {key!r} has a malformed shape.")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise ExportError(f"{name}: tensor {key!r} has malformed offsets.")
        begin, end = offsets
        if not 0 <= begin <= end <= body or end - begin != math.prod(shape) * _ST_DTYPES[dtype][1]:
            raise ExportError(f"{name}: tensor {key!r} points outside the file or has the wrong size.")
        spans.append((begin, end, key))
    spans.sort()
    for (_, e0, k0), (b1, _, k1) in zip(spans, spans[1:], strict=False):
        if b1 < e0:
            raise ExportError(f"{name}: tensors {k0!r} and {k1!r} overlap.")
    return header


def _str_list(value, what: str, lo: int, hi: int) -> list[str]:
    if not isinstance(value, list) or not lo <= len(value) <= hi or not all(
            isinstance(v, str) and 0 < len(v) <= 200 for v in value):
        raise ExportError(f"manifest.json: {what} must be a list of {lo} to {hi} non-empty names.")
    return value


def _number(value, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise ExportError(f"manifest.json: {what} must be a number between {lo} and {hi}.")
    return float(value)


def validate_manifest(data: object) -> dict:
    """Check every manifest field we use (types and ranges); returns the manifest. Raises ExportError."""
    import timm

    from core.tasks import get_task

    if not isinstance(data, dict):
        raise ExportError("manifest.json is not a JSON object.")
    if data.get("format") != EXPORT_FORMAT:
        raise ExportError(f"manifest.json is not a Transfer Studio export manifest (format {data.get('format')!r}).")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= EXPORT_VERSION:
        raise ExportError(f"manifest.json has format_version {version!r}; this app reads versions 1 to "
                          f"{EXPORT_VERSION}.")
    task = data.get("task")
    try:
        get_task(task if isinstance(task, str) else "")
    except KeyError:
        raise ExportError(f"manifest.json names the task {task!r}, which this app does not have.") from None
    arch = data.get("architecture")
    if not isinstance(arch, str) or len(arch) > 100 or arch not in timm.list_models():
        raise ExportError(f"manifest.json names the architecture {arch!r}, which is not a timm model.")
    if not isinstance(data.get("backbone", ""), str):
        raise ExportError("manifest.json: backbone must be a name.")
    classes = _str_list(data.get("classes"), "classes", 2, 100_000)
    if len(set(classes)) != len(classes):
        raise ExportError("manifest.json: class names must be unique.")
    if data.get("num_classes") != len(classes):
        raise ExportError("manifest.json: num_classes does not match the number of class names.")
    prep = data.get("preprocessing")
    if not isinstance(prep, dict):
        raise ExportError("manifest.json: preprocessing is missing.")
    size = int(_number(prep.get("size"), "preprocessing.size", 8, 2048))
    scale = int(_number(prep.get("scale_size"), "preprocessing.scale_size", size, 4096))
    if size != prep["size"] or scale != prep["scale_size"]:
        raise ExportError("manifest.json: preprocessing sizes must be whole numbers.")
    if prep.get("fit", "crop") not in FITS:
        raise ExportError(f"manifest.json: preprocessing.fit must be one of {', '.join(FITS)}.")
    if prep.get("interpolation") not in _INTERP:
        raise ExportError(f"manifest.json: preprocessing.interpolation must be one of {', '.join(_INTERP)}.")
    for key in ("mean", "std"):
        values = prep.get(key)
        if not isinstance(values, list) or len(values) != 3:
            raise ExportError(f"manifest.json: preprocessing.{key} must be 3 numbers.")
        for v in values:
            _number(v, f"preprocessing.{key}", 1e-6 if key == "std" else -10, 10)
    if data.get("threshold") is not None:
        _number(data["threshold"], "threshold", 0, 1)
    files = data.get("files")
    entry = files.get("safetensors") if isinstance(files, dict) else None
    if not isinstance(entry, dict) or entry.get("file") != FILES["safetensors"]:
        raise ExportError("manifest.json does not list model.safetensors; only safetensors exports can be loaded "
                          "(ONNX and TorchScript files are never loaded from users).")
    sha = entry.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
        raise ExportError("manifest.json: the sha256 of model.safetensors is missing or malformed.")
    return data


def expected_tensors(manifest: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, safetensors dtype) of every tensor the manifest's architecture has (built on the meta
    device: nothing is allocated)."""
    with torch.device("meta"):
        model = _build(manifest["task"], manifest["architecture"], manifest["num_classes"])
    return {k: (tuple(v.shape), _DTYPE_NAMES.get(v.dtype, str(v.dtype))) for k, v in model.state_dict().items()}


def check_against_architecture(header: dict[str, dict], expected: dict[str, tuple[tuple[int, ...], str]],
                               name: str = "model.safetensors") -> None:
    """Keys, shapes and dtypes of the file must be exactly the architecture's."""
    missing = [k for k in expected if k not in header]
    extra = [k for k in header if k not in expected]
    if missing:
        raise ExportError(f"{name} does not fit the architecture: {len(missing)} tensors are missing, e.g. "
                          f"{', '.join(missing[:3])}.")
    if extra:
        raise ExportError(f"{name} does not fit the architecture: {len(extra)} tensors it does not have, e.g. "
                          f"{', '.join(extra[:3])}.")
    for k, (shape, dtype) in expected.items():
        if tuple(header[k]["shape"]) != shape:
            raise ExportError(f"{name}: tensor {k} has shape {tuple(header[k]['shape'])}, the architecture {shape}.")
        if header[k]["dtype"] != dtype:
            raise ExportError(f"{name}: tensor {k} is {header[k]['dtype']}, the architecture expects {dtype}.")


def _read_capped(path: Path, cap: int, what: str) -> bytes:
    size = path.stat().st_size
    if size > cap:
        raise ExportError(f"{what} is too large ({size / 1e6:.0f} MB; the limit is {cap / 1e6:.0f} MB).")
    with open(path, "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise ExportError(f"{what} is too large.")
    return data


def _from_folder(folder: Path) -> tuple[bytes, bytes]:
    weights = folder / FILES["safetensors"]
    manifest = folder / MANIFEST_FILE
    if not weights.is_file():
        others = sorted(p.name for p in folder.iterdir() if p.is_file() and (
            p.suffix.lower() in PICKLE_SUFFIXES or p.suffix.lower() in (".onnx", ".safetensors")))
        hint = f" (found {', '.join(others[:5])})" if others else ""
        raise ExportError(f"{folder.name} has no model.safetensors{hint}. Only model.safetensors with its "
                          "manifest.json can be loaded; pickle files (.pt, .pth, .ckpt, .bin) are never loaded, "
                          "nor are ONNX or TorchScript files.")
    if weights.is_symlink() or manifest.is_symlink():
        raise ExportError("Links are not followed: copy the files themselves into the folder.")
    data = _read_capped(weights, MAX_WEIGHTS_BYTES, "model.safetensors")
    if not manifest.is_file():
        parse_safetensors_header(data)  # a disguised pickle is named as such first
        raise ExportError(f"{folder.name} has no manifest.json next to model.safetensors; the app needs it to know "
                          "the architecture, classes and preprocessing.")
    return _read_capped(manifest, MAX_MANIFEST_BYTES, "manifest.json"), data


def _from_zip(path: Path) -> tuple[bytes, bytes]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ExportError(f"{path.name} is not a readable zip file ({err}).") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise ExportError(f"{path.name} has too many entries ({len(infos)}).")
        found: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            parts = info.filename.replace("\\", "/").split("/")
            if info.filename.startswith(("/", "\\")) or ".." in parts or (len(parts[0]) == 2 and parts[0][1] == ":"):
                raise ExportError(f"{path.name} contains an unsafe path ({info.filename!r}).")
            base = parts[-1]
            if base in (MANIFEST_FILE, FILES["safetensors"]) and len([p for p in parts if p]) <= 2:
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise ExportError(f"{path.name}: {info.filename} is a link; links are not accepted.")
                if base in found:
                    raise ExportError(f"{path.name} holds more than one {base}; zip one export only.")
                found[base] = info
        names = [i.filename for i in infos]
        if FILES["safetensors"] not in found:
            hint = [n for n in names if n.lower().endswith(PICKLE_SUFFIXES + (".onnx",))][:5]
            raise ExportError(f"{path.name} has no model.safetensors" + (f" (found {', '.join(hint)})" if hint else "")
                              + ". Only model.safetensors with its manifest.json can be loaded; pickle files (.pt, "
                              ".pth, .ckpt, .bin) are never loaded, nor are ONNX or TorchScript files.")

        def read(info: zipfile.ZipInfo, cap: int) -> bytes:
            if info.file_size > cap:
                raise ExportError(f"{info.filename} is too large.")
            with zf.open(info) as fh:
                data = fh.read(cap + 1)
            if len(data) > cap:
                raise ExportError(f"{info.filename} is too large.")
            return data

        weights = read(found[FILES["safetensors"]], MAX_WEIGHTS_BYTES)
        if MANIFEST_FILE not in found:
            parse_safetensors_header(weights)
            raise ExportError(f"{path.name} has no manifest.json next to model.safetensors.")
        return read(found[MANIFEST_FILE], MAX_MANIFEST_BYTES), weights


def load_export(path: str | os.PathLike) -> LoadedExport:
    """Validate and load a user's export (a folder or a zip holding model.safetensors + manifest.json).

    Order: the safetensors header (a pickle or any other format is refused here, by name); the manifest fields;
    the sha256 from the manifest; tensor names, shapes and dtypes against the architecture built on the meta
    device; only then are tensors read (by safetensors, which never runs code) into a fresh model."""
    p = Path(path).expanduser()
    if p.is_dir():
        manifest_bytes, data = _from_folder(p)
    elif p.is_file():
        with open(p, "rb") as fh:
            sample = fh.read(4096)
        if p.suffix.lower() == ".zip" or (sample[:4] == b"PK\x03\x04" and p.suffix.lower() not in PICKLE_SUFFIXES):
            manifest_bytes, data = _from_zip(p)
        else:
            if p.suffix.lower() == ".safetensors":
                parse_safetensors_header(_read_capped(p, MAX_WEIGHTS_BYTES, p.name), p.name)
                raise ExportError(f"{p.name} needs its manifest.json: give the export folder (or a zip of it), not "
                                  "the weights file alone.")
            if p.suffix.lower() == ".onnx":
                raise ExportError(f"{p.name}: ONNX files are never loaded from users; give the export folder with "
                                  "model.safetensors and manifest.json.")
            raise ExportError(_refuse_pickle_message(p.name, sample))
    else:
        raise ExportError(f"{path} does not exist.")
    header = parse_safetensors_header(data)  # first, so a disguised pickle is always named as one
    try:
        raw = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ExportError("manifest.json is not valid JSON.") from None
    manifest = validate_manifest(raw)
    if _sha256(data) != manifest["files"]["safetensors"]["sha256"]:
        raise ExportError("model.safetensors does not match the sha256 in manifest.json: the file is damaged or was "
                          "changed after the export.")
    check_against_architecture(header, expected_tensors(manifest))
    from safetensors.torch import load as load_bytes

    state = load_bytes(data)
    model = _build(manifest["task"], manifest["architecture"], manifest["num_classes"])
    model.load_state_dict(state, strict=True)
    prep = manifest_prep(manifest["preprocessing"])
    return LoadedExport(model.eval(), manifest, prep, str(p), state)


# --- "copy as command" -------------------------------------------------------------------------------------------

def reproduce_command(run_dir: str | os.PathLike) -> str:
    """The `transfer-studio train …` command that trains this run again. Settings the command line cannot express
    (if any differ from their defaults) are named in a trailing shell comment."""
    run_dir = Path(run_dir)
    cfg = runs.load_config(run_dir)
    source = (runs.load_dataset(run_dir).get("source") or {})
    tc, fz = cfg.train, cfg.freeze
    args = ["transfer-studio", "train", "--data", cfg.dataset, "--model", cfg.backbone]
    if cfg.task != "classification":
        args += ["--task", cfg.task]
    if cfg.quick:
        args.append("--quick")
    args += ["--freeze", fz.preset if fz.preset != "custom" else "head"]
    kept = cfg.task == "classification" and fz.preset == "gradual"  # always: its default is not FreezeConfig's
    if kept:
        args += ["--keep-frozen", str(fz.keep_frozen)]
    args += ["--epochs", str(tc.epochs), "--batch-size", str(tc.batch_size)]
    if tc.lr is not None:
        args += ["--lr", repr(tc.lr)]
    args += ["--seed", str(tc.seed)]
    if cfg.task in ("classification", "segmentation") and not cfg.quick:  # always: 0 is not the default
        args += ["--train-size", str(tc.train_size)]
    if cfg.task == "classification":  # always: the default changed once (crop, then squash)
        args += ["--image-fit", tc.image_fit]
        if "crop" in tc.augment and not cfg.quick:  # always: defaults move with measurements
            args += ["--crop-min-area", f"{tc.crop_min_area:g}"]
        if not cfg.quick:  # always: the default changed once (0.1, then 0)
            args += ["--label-smoothing", f"{tc.label_smoothing:g}"]
    vf = source.get("val_fraction")
    if source.get("kind") == "folder" and vf is not None and vf != 0.2:
        args += ["--val-fraction", repr(vf)]
    from core.tasks import get_task, train_defaults

    defaults = train_defaults(get_task(cfg.task))  # what a flag left out means on the command line
    notes = []
    if not tc.augment:
        args.append("--no-augment")
    elif tuple(tc.augment) != tuple(defaults.augment):
        notes.append(f"augment={','.join(tc.augment)}")
    if tc.class_weights != defaults.class_weights:
        args.append("--class-weights" if tc.class_weights else "--no-class-weights")
    if tc.device != "auto":
        args += ["--device", tc.device]
    if tc.precision != "auto":
        args += ["--precision", tc.precision]
    name = runs.display_name(run_dir, fallback="")  # a rename on the Runs page is the name to reproduce
    if name:
        args += ["--name", name]
    defaults_f = FreezeConfig()
    settable = ("label_smoothing",) if cfg.task == "classification" and not cfg.quick else ()
    for key in ("weight_decay", "momentum", "warmup_fraction", "label_smoothing", "max_bad_steps"):
        if key in settable:
            continue
        if getattr(tc, key) != getattr(defaults, key):
            notes.append(f"{key}={getattr(tc, key)}")
    if fz.preset == "custom":
        notes.append(f"freeze=custom groups {','.join(fz.groups)}")
    for key in ("train_bn", "head_epochs", "lr_floor", "keep_frozen"):
        if getattr(fz, key) != getattr(defaults_f, key) and not (kept and key == "keep_frozen"):
            notes.append(f"freeze.{key}={getattr(fz, key)}")
    if not cfg.pretrained:
        from core import zoo

        try:
            has_weights = zoo.has_weights(zoo.get_spec(cfg.backbone))
        except zoo.ZooError:
            has_weights = True
        if has_weights:  # without local weights the command line trains from scratch anyway
            args.append("--from-scratch")
    from core.tasks import get_task

    task = get_task(cfg.task)
    if hasattr(task, "reproduce_args"):  # the task's own options (e.g. segmentation's --arch, --ignore-index)
        args += task.reproduce_args(runs.load_dataset(run_dir))
    command = shlex.join(args)
    if notes:
        command += "  # not settable from the command line: " + "; ".join(notes)
    return command


# --- predict_example.py ------------------------------------------------------------------------------------------

#: Example scripts' lines that open iPhone photos (HEIC) as the app does, when pillow-heif is installed.
PHONE_PHOTOS = '''
try:  # iPhone photos (HEIC) open as in the app when pi-heif (or pillow-heif) is installed
    from pi_heif import register_heif_opener
except ImportError:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        register_heif_opener = None
if register_heif_opener is not None:
    register_heif_opener()


def phone_hint(path):
    """What to install when a HEIC photo could not be opened for want of a HEIC decoder."""
    heic = str(path).lower().endswith((".heic", ".heif", ".hif"))
    return "; HEIC photos need: pip install pi-heif" if heic and register_heif_opener is None else ""

'''

_EXAMPLE = '''"""Classify images with the model exported here by Transfer Studio (run __RUN__).

Unzip the download, open a terminal in its folder, install what the format needs, then:

    python predict_example.py IMAGE [IMAGE ...] [--format __FORMAT_CHOICES__] [--top-k 3]

Needs: pip install pillow numpy, plus __NEEDS__ (default format: __DEFAULT__)
Preprocessing is the app's own (see manifest.json): RGB, __SQUARE__ (__INTERP__), centre crop
__SIZE__ px, normalise with the manifest's mean and std. A file that cannot be read is named and skipped.
"""
import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
__PHONE_PHOTOS__
HERE = Path(__file__).resolve().parent
MANIFEST = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
PREP = MANIFEST["preprocessing"]
CLASSES = MANIFEST["classes"]
FORMATS = __FORMATS__
DEFAULT = "__DEFAULT__"
NEEDS = __NEEDS_BY_FORMAT__
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


def to_8bit(im):
    """A 16-bit, 32-bit or float grey image as 8-bit values, scaled by its type's range (not clipped to white)."""
    a = np.asarray(im)
    if im.mode.startswith("I;16"):
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
        a = a * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        pass
    elif lo >= 0.0 and hi <= 65535.0:
        a = a / 257.0
    else:
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def preprocess(path):
    """One image file -> float32 array (1, 3, size, size), prepared as the app prepares it."""
    with Image.open(path) as im:
        im.seek(0)
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I") or im.mode == "F":  # 16-bit or float grey: scaled to 8 bits as the app does
            im = Image.fromarray(to_8bit(im), "L").convert("RGB")
        elif im.mode != "RGB" or "transparency" in im.info:
            rgba = im.convert("RGBA")
            im = Image.new("RGB", rgba.size, (255, 255, 255))
            im.paste(rgba, mask=rgba.getchannel("A"))
        else:
            im = im.copy()
    s, size = PREP["scale_size"], PREP["size"]
    off = (s - size) // 2
    fit = PREP.get("fit", "crop")
    if fit == "squash":  # the whole image, stretched to the square
        im = im.resize((s, s), RESAMPLE[PREP["interpolation"]])
    elif fit == "pad":  # the whole image on a square of the mean colour
        k = s / max(im.size)
        small = im.resize((max(1, round(im.size[0] * k)), max(1, round(im.size[1] * k))),
                          RESAMPLE[PREP["interpolation"]])
        im = Image.new("RGB", (s, s), tuple(round(255 * m) for m in PREP["mean"]))
        im.paste(small, ((s - small.size[0]) // 2, (s - small.size[1]) // 2))
    else:  # resample only the centre square of the shorter side (exactly as the app does)
        w, h = im.size
        scale = s / min(w, h)
        nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
        left, top = (nw - s) // 2, (nh - s) // 2
        fx, fy = w / nw, h / nh
        im = im.resize((s, s), RESAMPLE[PREP["interpolation"]],
                       box=(left * fx, top * fy, (left + s) * fx, (top + s) * fy))
    im = im.crop((off, off, off + size, off + size))
    x = np.asarray(im, dtype=np.float32)
    mean = np.asarray(PREP["mean"], dtype=np.float32) * 255
    std = np.asarray(PREP["std"], dtype=np.float32) * 255
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1)[None])


def load_safetensors():
    import timm
    import torch
    from safetensors.torch import load_file

    model = timm.create_model(MANIFEST["architecture"], pretrained=False, num_classes=len(CLASSES))
    model.load_state_dict(load_file(str(HERE / "model.safetensors")))
    model.eval()

    def run(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return run


def load_onnx():
    import onnxruntime as ort

    session = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def load_torchscript():
    import torch

    with warnings.catch_warnings():  # torch announces a future change on every load: not this script's concern
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(str(HERE / "model.torchscript.pt"), map_location="cpu")  # only load files you trust
    model.eval()

    def run(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return run


LOADERS = {"safetensors": load_safetensors, "onnx": load_onnx, "torchscript": load_torchscript}


def classify(run, path, top_k=3):
    logits = run(preprocess(path))[0].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p)[:top_k]
    threshold = MANIFEST.get("threshold")
    label = CLASSES[order[0]] if threshold is None or p[order[0]] >= threshold else "not sure"
    return label, [(CLASSES[i], float(p[i])) for i in order]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Classify images with this exported model.")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--format", choices=FORMATS, default=DEFAULT)
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        run = LOADERS[args.format]()
    except ImportError as err:
        parser.exit(2, f"--format {args.format} needs {NEEDS[args.format]} ({err}): pip install "
                       f"{NEEDS[args.format]}\\n")
    unread = 0
    for path in args.images:
        try:
            label, top = classify(run, path, args.top_k)
        except (OSError, ValueError, Image.DecompressionBombError) as err:  # not an image, unreadable, too big
            unread += 1
            print(f"{path}: cannot read this file ({err}){phone_hint(path)}", file=sys.stderr)
            continue
        print(f"{path}: {label}  (" + ", ".join(f"{c} {p:.1%}" for c, p in top) + ")")
    return 1 if unread else 0


if __name__ == "__main__":
    sys.exit(main())
'''


def manifest_prep(prep_d: dict) -> Prep:
    """The Prep a (validated) manifest's preprocessing describes; exports made before `fit` existed crop."""
    return Prep(int(prep_d["size"]), int(prep_d["scale_size"]), prep_d["interpolation"],
                tuple(float(v) for v in prep_d["mean"]), tuple(float(v) for v in prep_d["std"]),
                prep_d.get("fit", "crop"))


def _square_words(prep: dict) -> str:
    s = prep["scale_size"]
    return {"squash": f"whole image stretched to {s}x{s} px",
            "pad": f"longer side to {s} px, on a {s}x{s} square of the mean colour"}.get(
        prep.get("fit", "crop"), f"shorter side to {s} px and its centre square")


EXAMPLE_NEEDS = {"safetensors": "torch timm safetensors", "onnx": "onnxruntime", "torchscript": "torch"}


def example_script(manifest: dict) -> str:
    """predict_example.py for the formats listed in the manifest."""
    formats = [f for f in FORMATS if f in (manifest.get("files") or {})] or ["safetensors"]
    needs = {f: EXAMPLE_NEEDS[f] for f in formats}
    default = next(f for f in ("onnx", "torchscript", "safetensors") if f in formats)  # the fewest packages
    prep = manifest["preprocessing"]
    return (_EXAMPLE.replace("__PHONE_PHOTOS__", PHONE_PHOTOS)
            .replace("__RUN__", str(manifest.get("source", {}).get("run_id", "")))
            .replace("__FORMAT_CHOICES__", "|".join(formats)).replace("__FORMATS__", repr(formats))
            .replace("__NEEDS_BY_FORMAT__", repr(needs)).replace("__DEFAULT__", default)
            .replace("__NEEDS__", "; ".join(f"{p} for --format {f}" for f, p in needs.items()))
            .replace("__SQUARE__", _square_words(prep))
            .replace("__INTERP__", str(prep["interpolation"])).replace("__SIZE__", str(prep["size"])))
