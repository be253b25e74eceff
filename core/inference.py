"""Prediction: a model rebuilt from a run folder or from an exported safetensors + manifest folder.

The `Predictor` holds the model (eval mode, on the device plan's device, channels_last), the class names, the
preprocessing (`core.pipeline.Prep`) and an optional "unknown" threshold chosen on the validation images by
`core.evaluate`. Every image goes through `core.pipeline.load_square` + `eval_batch`, exactly the path validation
takes during training, so a file gets the same tensor at train time and at predict time.

Predictions run in float32 by default (bf16 autocast is opt-in via `precision`), so the answers match the exported
ONNX / TorchScript models and do not depend on the processor.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core import runs, zoo
from core.data.images import ImageError
from core.device import DevicePlan, plan_device
from core.pipeline import Prep, eval_batch, load_square, prep_for
from core.storage import read_json
from core.tasks import get_task

NOT_SURE = "not sure"
SAFETENSORS_EXPORT = "“safetensors” on Runs & export → Export and share"  # the exports the app can load back
Source = str | os.PathLike | bytes


class PredictError(Exception):
    """A model cannot be loaded or used for prediction; the message says why."""


@dataclass(frozen=True)
class Prediction:
    """The answer for one image.

    label: the answer shown to people: a class name, `NOT_SURE` when the top probability is below the threshold,
    or "" when the image could not be read (then `error` says why). `top_k` always holds the raw (class,
    probability) pairs, best first, even when the answer is "not sure"."""

    name: str
    label: str
    top_k: tuple[tuple[str, float], ...] = ()
    confidence: float = 0.0
    class_index: int = -1
    unsure: bool = False
    seconds: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def predicted(self) -> str:
        """The most probable class, whatever the threshold says ("" for an unreadable image)."""
        return self.top_k[0][0] if self.top_k else ""

    def to_dict(self) -> dict:
        out = {"image": self.name, "label": self.label, "predicted": self.predicted,
               "confidence": round(self.confidence, 6), "unsure": self.unsure,
               "top_k": [{"label": c, "probability": round(p, 6)} for c, p in self.top_k],
               "seconds": round(self.seconds, 5)}
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class Predictor:
    """A ready-to-use classifier. Build it with `Predictor.from_run`, `Predictor.from_export` or `load_predictor`."""

    model: torch.nn.Module
    classes: list[str]
    prep: Prep
    plan: DevicePlan
    threshold: float | None = None
    task: str = "classification"
    backbone: str = ""
    architecture: str = ""
    origin: str = "run"  # "run" | "export"
    path: Path | None = None
    meta: dict = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _fast: torch.nn.Module | None = field(default=None, init=False, repr=False)
    _warm: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        model = self.model.eval().to(self.plan.torch_device())
        if self.plan.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    def _forward_model(self) -> torch.nn.Module:
        """What predictions run through: `model` with BatchNorm folded in (same answers, 1.3–1.5× faster on a CPU),
        made on first use. `model` itself stays as it is for Grad-CAM and the export checks."""
        if self._fast is None:
            self._fast = zoo.inference_copy(self.model, self.prep.size, self.plan.channels_last)
        return self._fast

    def warm_up(self) -> None:
        """Make the fast model and run it once on a blank image: the first call costs 0.3–1.5 s on a CPU (folding
        BatchNorm, the math library's setup), which would otherwise be counted as the first photos' time."""
        if self._warm:
            return
        blank = np.zeros((1, self.prep.scale_size, self.prep.scale_size, 3), dtype=np.uint8)
        self.logits(eval_batch(blank, self.prep, self.plan.channels_last))
        self._warm = True

    # --- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, weights: str = "best", device: str = "auto",
                 precision: str = "fp32", threshold: float | None | str = "stored") -> Predictor:
        """The run's saved weights in a fresh model. threshold: "stored" = the one chosen by the last evaluation
        (if it was made for these weights), None = never answer "not sure", or a number in [0, 1]."""
        run_dir = Path(run_dir)
        cfg = runs.load_config(run_dir)
        manifest = runs.load_dataset(run_dir)
        classes = list(manifest["classes"])
        state = runs.load_weights(run_dir, weights)
        spec = zoo.get_spec(cfg.backbone)
        model = get_task(cfg.task).build_model(cfg.backbone, len(classes), pretrained=False)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise PredictError(f"The saved weights of {run_dir.name} do not fit {cfg.backbone} with "
                               f"{len(classes)} classes: {str(err).splitlines()[0]}") from None
        if threshold == "stored":
            threshold = stored_threshold(run_dir, weights)
        meta = read_json(run_dir / "checkpoints" / f"{weights}.json")
        return cls(model, classes, prep_for(spec, cfg.train.image_fit), plan_device(device, precision),
                   _check_threshold(threshold), cfg.task, cfg.backbone, spec.arch, "run", run_dir, dict(meta or {}))

    @classmethod
    def from_export(cls, path: str | os.PathLike, *, device: str = "auto", precision: str = "fp32",
                    threshold: float | None | str = "stored", shown_name: str | None = None) -> Predictor:
        """An exported model (folder or zip with model.safetensors + manifest.json), validated before loading.

        `shown_name` is the name the user knows the file by (an upload's own name, when `path` is the app's stored
        copy): refusals name it instead of the stored file. It is only ever shown, never used as a path."""
        from core.export import ExportError, load_export

        try:
            loaded = load_export(path)
        except ExportError as err:
            raise ExportError(export_refusal(Path(path), str(err), shown_name)) from None
        m = loaded.manifest
        if threshold == "stored":
            threshold = m.get("threshold")
        return cls(loaded.model, list(m["classes"]), loaded.prep, plan_device(device, precision),
                   _check_threshold(threshold), m["task"], m.get("backbone", ""), m["architecture"], "export",
                   Path(path), {"manifest": m})

    # --- inference ----------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.path.name if self.path else self.backbone

    def inputs(self, sources: Sequence[Source]) -> torch.Tensor:
        """The model input for these images (N,3,H,W float), exactly as validation sees them. Raises ImageError."""
        squares = np.stack([load_square(s, self.prep) for s in sources])
        return eval_batch(squares, self.prep, self.plan.channels_last)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw model outputs (float32, on the CPU) for a prepared batch."""
        step = self.plan.predict_batch
        with self.lock, torch.inference_mode(), self.plan.autocast():
            net = self._forward_model()
            outs = [net(x[i:i + step].to(self.plan.torch_device())).float().cpu() for i in range(0, len(x), step)]
        return torch.cat(outs) if outs else torch.zeros(0, len(self.classes))

    def logits_from_squares(self, squares: np.ndarray, batch_size: int = 32) -> torch.Tensor:
        """Logits for cached squares (N,S,S,3 uint8, e.g. `ImageCache.squares[idx]`), in batches."""
        outs = [self.logits(eval_batch(squares[i:i + batch_size], self.prep, self.plan.channels_last))
                for i in range(0, len(squares), batch_size)]
        return torch.cat(outs) if outs else torch.zeros(0, len(self.classes))

    def logits_for_cache(self, cache, idx: Sequence[int], batch_size: int = 32, on_progress=None) -> torch.Tensor:
        """Logits for the images at `idx` of an `ImageCache`, reading the (memory-mapped) squares a batch at a
        time so big sets never sit in memory at once."""
        idx = list(idx)
        outs = []
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            outs.append(self.logits(eval_batch(cache.squares[chunk], self.prep, self.plan.channels_last)))
            if on_progress:
                on_progress(start + len(chunk), len(idx))
        return torch.cat(outs) if outs else torch.zeros(0, len(self.classes))

    def answer(self, probs: torch.Tensor) -> tuple[str, bool]:
        """(label, unsure) for one probability vector under this predictor's threshold."""
        conf, k = probs.max(0)
        if self.threshold is not None and float(conf) < self.threshold:
            return NOT_SURE, True
        return self.classes[int(k)], False

    def predict(self, sources: Sequence[Source], top_k: int = 5, names: Sequence[str] | None = None,
                batch_size: int = 16) -> list[Prediction]:
        """Classify files or uploaded bytes, in batches. An unreadable image gives a Prediction with `error` set
        (the others are still answered). `seconds` = decoding time of that image + its share of its batch, once
        the model is warm (its one-time start-up is not counted)."""
        if top_k < 1:
            raise PredictError("top-k must be at least 1.")
        self.warm_up()
        k = min(top_k, len(self.classes))
        names = list(names) if names is not None else [_name_of(s, i) for i, s in enumerate(sources)]
        results: list[Prediction | None] = [None] * len(sources)
        pending: list[tuple[int, np.ndarray, float]] = []

        def flush() -> None:
            if not pending:
                return
            t0 = time.perf_counter()
            x = eval_batch(np.stack([sq for _, sq, _ in pending]), self.prep, self.plan.channels_last)
            probs = torch.softmax(self.logits(x), dim=1)
            share = (time.perf_counter() - t0) / len(pending)
            for (i, _, decode_s), p in zip(pending, probs, strict=True):
                values, index = p.topk(k)
                label, unsure = self.answer(p)
                results[i] = Prediction(names[i], label, tuple((self.classes[int(j)], float(v))
                                                               for v, j in zip(values, index, strict=True)),
                                        float(values[0]), int(index[0]), unsure, decode_s + share)
            pending.clear()

        for i, source in enumerate(sources):
            t0 = time.perf_counter()
            try:
                square = load_square(source, self.prep)
            except ImageError as err:
                results[i] = Prediction(names[i], "", error=err.reason, seconds=time.perf_counter() - t0)
                continue
            except OSError as err:
                results[i] = Prediction(names[i], "", error=f"cannot read file ({err.strerror or err})",
                                        seconds=time.perf_counter() - t0)
                continue
            pending.append((i, square, time.perf_counter() - t0))
            if len(pending) >= batch_size:
                flush()
        flush()
        return [r for r in results if r is not None]

    def describe(self) -> dict:
        """What this predictor is, for pages and CLI output."""
        return {"origin": self.origin, "path": str(self.path) if self.path else "", "task": self.task,
                "backbone": self.backbone, "architecture": self.architecture, "classes": list(self.classes),
                "threshold": self.threshold, "device": self.plan.device, "precision": self.plan.precision,
                "input_size": self.prep.size}


def export_refusal(path: Path, message: str, shown_name: str | None = None) -> str:
    """Why an export cannot be loaded, in the user's words: the file is named as the user knows it (`shown_name`,
    never a path) and an ONNX or TorchScript export, made for use outside the app, is said to be one."""
    from core.data.names import clean_label

    shown_name = clean_label(shown_name or "", 255) or None
    shown = shown_name or path.name
    other = _other_export_format(path)
    if other:
        article = "an" if other == "ONNX" else "a"
        return (f"{shown} is {article} {other} export: it is for running the model outside this app. To test the "
                f"model here, upload the zip exported as {SAFETENSORS_EXPORT}.")
    if shown_name:
        message = message.replace(str(path), shown_name).replace(path.name, shown_name)
    return message


def _other_export_format(path: Path) -> str | None:
    """'ONNX' or 'TorchScript' when `path` (a folder or a zip) holds that export of ours and no model.safetensors.
    Reads only file names (a zip's directory), never a file's contents."""
    import zipfile

    from core.export import FILES, MAX_ZIP_ENTRIES

    try:
        if path.is_dir():
            names = {p.name for p in path.iterdir()}
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
                if len(infos) > MAX_ZIP_ENTRIES:
                    return None
                names = {i.filename.replace("\\", "/").rsplit("/", 1)[-1] for i in infos}
        else:
            return None
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    if FILES["safetensors"] in names:
        return None
    return next((label for label, key in (("ONNX", "onnx"), ("TorchScript", "torchscript"))
                 if FILES[key] in names), None)


def _name_of(source: Source, i: int) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        return f"image {i + 1}"
    return str(source)


def _check_threshold(value: float | None | str) -> float | None:
    if value is None:
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise PredictError(f"The threshold must be a number between 0 and 1, not {value!r}.") from None
    if not 0.0 <= t <= 1.0:
        raise PredictError(f"The threshold must be between 0 and 1, not {t}.")
    return t


def stored_threshold(run_dir: Path, weights: str = "best") -> float | None:
    """The "not sure" threshold of the run's last evaluation, if it was made for the current weights."""
    from core.evaluate import load_evaluation

    ev = load_evaluation(run_dir)
    if not ev or ev.get("stale") or ev.get("weights", {}).get("name", "best") != weights:
        return None
    value = (ev.get("unknown_threshold") or {}).get("threshold")
    return float(value) if value is not None else None


def is_run_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and (p / "dataset.json").is_file()


def is_export(path: str | os.PathLike) -> bool:
    p = Path(path)
    if p.is_dir():
        return (p / "manifest.json").is_file()
    return p.is_file() and p.suffix.lower() == ".zip"


def load_predictor(path: str | os.PathLike, *, device: str = "auto", precision: str = "fp32",
                   threshold: float | None | str = "stored") -> Predictor:
    """A predictor from a run folder or an export (folder or zip), whichever `path` is."""
    p = Path(path).expanduser()
    if not p.exists():
        raise PredictError(f"{path} does not exist.")
    if is_run_dir(p):
        return Predictor.from_run(p, device=device, precision=precision, threshold=threshold)
    if p.is_dir() and not (p / "manifest.json").is_file():
        if (p / "checkpoints").is_dir():
            raise PredictError(f"{path} looks like a damaged run folder (no config.json or dataset.json).")
        if not any(f.is_file() and f.suffix.lower() in (".safetensors", ".onnx", ".pt", ".pth", ".ckpt", ".bin")
                   for f in p.iterdir()):
            raise PredictError(f"{path} is neither a run folder (config.json, dataset.json) nor an exported model "
                               "(model.safetensors with manifest.json).")
    # everything else goes through the export loader, which explains what it refuses and why
    return Predictor.from_export(p, device=device, precision=precision, threshold=threshold)
