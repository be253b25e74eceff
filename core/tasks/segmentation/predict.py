"""Predict masks with a run's best weights or an export (safetensors + manifest only).

Large images are downscaled so the longer side is at most `max_side` for the model; the logits are resized back
(bilinear) to the image's own size before the argmax, so every mask has the size of its image."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core import runs, zoo
from core.data.images import load_rgb
from core.device import DevicePlan, plan_device
from core.storage import read_json
from core.tasks.segmentation.data import ClassTable, write_mask_png
from core.tasks.segmentation.model import DEFAULT_ARCH, build
from core.tasks.segmentation.train import predict_logits

PREDICT_MAX_SIDE = 1024


@dataclass
class SegPrediction:
    name: str
    mask: np.ndarray | None  # class index per pixel (H, W uint8), at the image's size
    shares: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "shares": self.shares, "seconds": round(self.seconds, 4),
                "note": self.note, "error": self.error,
                "size": [int(self.mask.shape[1]), int(self.mask.shape[0])] if self.mask is not None else None}


class SegPredictor:
    """A segmentation model ready to predict: weights, classes, colours, normalisation."""

    def __init__(self, model: torch.nn.Module, table: ClassTable, mean: tuple, std: tuple, arch: str, backbone: str,
                 source: str, max_side: int = PREDICT_MAX_SIDE, plan: DevicePlan | None = None) -> None:
        self.plan = plan or plan_device()
        self.model = model.to(self.plan.torch_device()).eval()
        if self.plan.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.table, self.classes = table, list(table.names)
        self.mean, self.std, self.arch, self.backbone = tuple(mean), tuple(std), arch, backbone
        self.source, self.max_side = source, max_side

    @classmethod
    def from_run(cls, run_dir: str | Path, plan: DevicePlan | None = None) -> SegPredictor:
        run_dir = Path(run_dir)
        cfg = runs.load_config(run_dir)
        manifest = runs.load_dataset(run_dir)
        table = ClassTable.from_dict(manifest["table"])
        arch = (manifest.get("model") or {}).get("arch", DEFAULT_ARCH)
        model = build(cfg.backbone, len(table.names), pretrained=False, arch=arch)
        model.load_state_dict(runs.load_weights(run_dir), strict=True)
        spec = zoo.get_spec(cfg.backbone)
        return cls(model, table, spec.mean, spec.std, arch, cfg.backbone, str(run_dir), plan=plan)

    @classmethod
    def from_export(cls, path: str | Path, plan: DevicePlan | None = None) -> SegPredictor:
        from core.tasks.segmentation.export import load_export

        loaded = load_export(path)
        m = loaded.manifest
        prep = m["preprocessing"]
        return cls(loaded.model, ClassTable.from_dict(m["table"]), tuple(prep["mean"]), tuple(prep["std"]),
                   m["architecture"], m["backbone"], str(path), int(prep.get("max_side", PREDICT_MAX_SIDE)), plan)

    @classmethod
    def load(cls, path: str | Path) -> SegPredictor:
        """A run folder or an export (folder or zip)."""
        p = Path(path)
        if p.is_dir() and (p / "config.json").is_file():
            return cls.from_run(p)
        return cls.from_export(p)

    def logits(self, img: Image.Image) -> tuple[torch.Tensor, str]:
        """Logits (K, H, W) at the image's size, and a note when the image was downscaled for the model."""
        note = ""
        work = img
        scale = min(1.0, self.max_side / max(img.size))
        if scale < 1.0:
            work = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                              Image.Resampling.BILINEAR)
            note = (f"downscaled from {img.width}×{img.height} to {work.width}×{work.height} for the model; the mask "
                    "is brought back to full size")
        x = torch.from_numpy(np.asarray(work, dtype=np.uint8).copy()).permute(2, 0, 1)[None]
        out = predict_logits(self.model, x, self.mean, self.std, self.plan)[0]
        if scale < 1.0:
            out = F.interpolate(out[None], size=(img.height, img.width), mode="bilinear", align_corners=False)[0]
        return out, note

    def predict(self, source: str | Path | bytes, name: str = "") -> SegPrediction:
        t0 = time.perf_counter()
        label = name or (Path(source).name if not isinstance(source, bytes) else "image")
        try:
            img = load_rgb(source)
        except Exception as err:  # noqa: BLE001 - ImageError, OSError: reported per image
            return SegPrediction(label, None, error=getattr(err, "reason", None) or str(err))
        logits, note = self.logits(img)
        mask = logits.argmax(0).to(torch.uint8).numpy()
        counts = np.bincount(mask.ravel(), minlength=len(self.classes))
        shares = {c: float(n) / mask.size for c, n in zip(self.classes, counts, strict=True)}
        return SegPrediction(label, mask, shares, time.perf_counter() - t0, note)

    def mask_png(self, mask: np.ndarray) -> bytes:
        """The predicted mask as a PNG in the dataset's own format: class values (with the class colours as palette)
        for id masks, the class colours for colour masks."""
        if self.table.kind == "colour":
            rgb = np.array(self.table.colours, dtype=np.uint8)[mask]
            buf = io.BytesIO()
            Image.fromarray(rgb, "RGB").save(buf, format="PNG")
            return buf.getvalue()
        codes = np.array(self.table.codes, dtype=np.int64)[mask]
        palette = [(0, 0, 0)] * (max(self.table.codes) + 1)
        for code, colour in zip(self.table.codes, self.table.colours, strict=True):
            palette[code] = colour
        return write_mask_png(codes.astype(np.uint8), None, palette)

    def describe(self) -> dict:
        return {"source": self.source, "architecture": self.arch, "backbone": self.backbone, "classes": self.classes,
                "device": self.plan.device}


def colour_overlay(img: Image.Image, mask: np.ndarray, colours: list, opacity: float = 0.5,
                   ignore: np.ndarray | None = None) -> Image.Image:
    """The photo with each class painted in its colour at `opacity` (pixels in `ignore` left as they are)."""
    base = np.asarray(img.convert("RGB"), dtype=np.float32)
    pal = np.zeros((256, 3), dtype=np.float32)
    pal[:len(colours)] = np.asarray(colours, dtype=np.float32)
    painted = pal[np.clip(mask, 0, 255)]
    alpha = np.full(mask.shape, opacity, dtype=np.float32)
    alpha[mask >= len(colours)] = 0.0
    if ignore is not None:
        alpha[ignore] = 0.0
    out = base * (1 - alpha[..., None]) + painted * alpha[..., None]
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def last_export_manifest(folder: Path) -> dict | None:
    return read_json(Path(folder) / "manifest.json")
