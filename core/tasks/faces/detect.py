"""Face detection and alignment: MTCNN (weights ship inside the facenet-pytorch wheel) finds every face with five
landmarks (eyes, nose, mouth corners); a similarity transform maps the landmarks onto a fixed template, so every
crop shows the face at the same place and scale, whatever the photo."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CROP_SIZE = 128
MAX_SIDE = 1600  # photos are searched at most this large (boxes are mapped back to the photo's own pixels)
# The five-point template of ArcFace/InsightFace for a 112 px crop (left eye, right eye, nose, mouth left/right).
_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                          [70.7299, 92.2041]], dtype=np.float64)


@dataclass(frozen=True)
class Face:
    """One detected face: box (x1, y1, x2, y2) in the photo's pixels, detector confidence, five landmarks."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def to_dict(self) -> dict:
        return {"box": [round(v, 1) for v in self.box], "score": round(self.score, 4),
                "landmarks": [[round(x, 1), round(y, 1)] for x, y in self.landmarks]}

    @classmethod
    def from_dict(cls, d: dict) -> Face:
        return cls(tuple(float(v) for v in d["box"]), float(d["score"]),  # type: ignore[arg-type]
                   tuple((float(x), float(y)) for x, y in d["landmarks"]))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """MTCNN runs many tiny convolutions: one torch thread is several times faster than two on a busy machine."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


def mtcnn_weights_dir() -> Path:
    """Where facenet-pytorch keeps its MTCNN weights (pnet.pt, rnet.pt, onet.pt): inside the installed wheel."""
    import facenet_pytorch

    return Path(facenet_pytorch.__file__).resolve().parent / "data"


class MTCNNDetector:
    """MTCNN from facenet-pytorch on the CPU; faces below `min_score` confidence are ignored."""

    name = "mtcnn"

    def __init__(self, min_face_size: int = 20, min_score: float = 0.9) -> None:
        missing = [f for f in ("pnet.pt", "rnet.pt", "onet.pt") if not (mtcnn_weights_dir() / f).is_file()]
        if missing:
            raise RuntimeError(f"The face detector's weights are missing ({', '.join(missing)}): reinstall "
                               "facenet-pytorch (pip install --no-deps facenet-pytorch).")
        from facenet_pytorch import MTCNN

        self.min_score = min_score
        self._mtcnn = MTCNN(keep_all=True, device="cpu", min_face_size=min_face_size, post_process=False)
        self._lock = threading.Lock()  # one MTCNN object is not safe to share between threads

    def detect(self, img: Image.Image) -> list[Face]:
        """Every face in `img` (RGB), largest first."""
        img = img.convert("RGB")
        scale = min(1.0, MAX_SIDE / max(img.size))
        small = img if scale == 1.0 else img.resize((round(img.width * scale), round(img.height * scale)),
                                                    Image.Resampling.BILINEAR)
        with self._lock, one_thread():
            boxes, probs, points = self._mtcnn.detect(small, landmarks=True)
        if boxes is None:
            return []
        faces = []
        for box, prob, pts in zip(boxes, probs, points, strict=True):
            if prob is None or float(prob) < self.min_score:
                continue
            b = tuple(float(v) / scale for v in box)
            x1, y1, x2, y2 = max(0.0, b[0]), max(0.0, b[1]), min(float(img.width), b[2]), min(float(img.height), b[3])
            marks = tuple((float(x) / scale, float(y) / scale) for x, y in pts)
            faces.append(Face((x1, y1, x2, y2), float(prob), marks))
        return sorted(faces, key=lambda f: f.area, reverse=True)


def template(size: int = CROP_SIZE) -> np.ndarray:
    """The landmark template scaled to a `size` px crop."""
    return _TEMPLATE_112 * (size / 112.0)


def align(img: Image.Image, face: Face, size: int = CROP_SIZE) -> Image.Image:
    """The face cut out of `img` and turned upright: its landmarks land on the template (similarity transform)."""
    from skimage.transform import SimilarityTransform

    src = np.asarray(face.landmarks, dtype=np.float64)
    tform = SimilarityTransform.from_estimate(src, template(size))
    if not tform:  # degenerate landmarks: fall back to the box, squared
        return box_crop(img, face.box, size)
    inverse = np.linalg.inv(tform.params)  # output pixel -> photo pixel, as PIL wants
    coeffs = tuple(inverse[:2].reshape(-1))
    return img.convert("RGB").transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)


def box_crop(img: Image.Image, box: tuple[float, float, float, float], size: int = CROP_SIZE) -> Image.Image:
    """A square crop around a box (for display when no landmarks are usable)."""
    x1, y1, x2, y2 = box
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 0.6
    return img.convert("RGB").crop((round(cx - half), round(cy - half), round(cx + half),
                                    round(cy + half))).resize((size, size), Image.Resampling.BILINEAR)


@dataclass(frozen=True)
class WholeImageDetector:
    """Treats the whole photo as one face (for photos that are already face crops, and for tests)."""

    name: str = "whole-image"

    def detect(self, img: Image.Image) -> list[Face]:
        w, h = img.size
        pts = tuple((float(x) * w / 112, float(y) * h / 112) for x, y in _TEMPLATE_112)
        return [Face((0.0, 0.0, float(w), float(h)), 1.0, pts)]
