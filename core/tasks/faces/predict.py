"""Identify and verify with a run (or an export): every face in a photo boxed and named, or "unknown"."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.tasks.faces import gallery as gal
from core.tasks.faces.detect import CROP_SIZE, Face, MTCNNDetector, align
from core.tasks.faces.embed import DlibEmbedder, NetEmbedder, build_embedding_net, is_face_model


@dataclass(frozen=True)
class FaceAnswer:
    face: Face
    match: gal.Match

    def to_dict(self) -> dict:
        return {"box": [round(v, 1) for v in self.face.box], "label": self.match.label,
                "score": round(self.match.score, 4), "closest": self.match.closest,
                "detector_score": round(self.face.score, 4)}


class Recognizer:
    """Detector + embedder + gallery + threshold, from a run folder or an export folder."""

    def __init__(self, gallery: gal.Gallery, meta: dict, embedder, detector=None, source: str = "") -> None:
        self.gallery, self.meta, self.embedder = gallery, meta, embedder
        self.detector = detector or MTCNNDetector()
        self.threshold = float(meta.get("threshold", 0.5))
        self.verify_threshold = float(meta.get("verify_threshold", self.threshold))
        self.source = source

    @property
    def people(self) -> tuple[str, ...]:
        return self.gallery.people

    def with_threshold(self, threshold: float) -> Recognizer:
        other = Recognizer(self.gallery, {**self.meta, "threshold": threshold}, self.embedder, self.detector,
                           self.source)
        return other

    def embed_faces(self, img: Image.Image, faces: list[Face]) -> np.ndarray:
        crops = [align(img, f, CROP_SIZE) for f in faces]
        return self.embedder.embed(img, faces, crops)

    def answer(self, img: Image.Image) -> list[FaceAnswer]:
        """Every face in the photo, largest first, named or 'unknown'."""
        img = img.convert("RGB")
        faces = self.detector.detect(img)
        if not faces:
            return []
        matches = self.gallery.identify(self.embed_faces(img, faces), self.threshold)
        return [FaceAnswer(f, m) for f, m in zip(faces, matches, strict=True)]

    def predict_file(self, source: str | Path | bytes, name: str = "") -> dict:
        """{name, faces: [...], seconds} or {name, error} for one file or upload."""
        from core.data.images import load_rgb

        t0 = time.perf_counter()
        name = name or (Path(source).name if not isinstance(source, bytes) else "upload")
        try:
            img = load_rgb(source)
        except Exception as err:  # ImageError etc.: the user sees the reason, by file name
            return {"name": name, "error": str(err) or type(err).__name__, "faces": []}
        answers = self.answer(img)
        return {"name": name, "faces": [a.to_dict() for a in answers], "n_faces": len(answers),
                "seconds": round(time.perf_counter() - t0, 4), "size": list(img.size)}

    def verify(self, a: Image.Image, b: Image.Image) -> dict:
        """Are the largest faces of two photos the same person? Cosine similarity and the verdict at the run's
        one-to-one threshold (same false-accept rate as identification), with the box of the face compared in each
        photo and how many faces each holds."""
        vecs, boxes, found = [], [], []
        for which, img in (("first", a.convert("RGB")), ("second", b.convert("RGB"))):
            faces = self.detector.detect(img)
            if not faces:
                return {"score": None, "same": None, "threshold": self.verify_threshold,
                        "reason": f"No face found in the {which} photo."}
            vecs.append(self.embed_faces(img, faces[:1])[0])
            boxes.append([round(v, 1) for v in faces[0].box])  # the face compared: the page boxes it
            found.append(len(faces))
        score = float(np.dot(vecs[0], vecs[1]))
        return {"score": round(score, 4), "same": score >= self.verify_threshold,
                "threshold": self.verify_threshold, "boxes": boxes, "n_faces": found}

    def describe(self) -> dict:
        return {"source": self.source, "model": self.gallery.model, "people": list(self.people),
                "threshold": self.threshold, "target_far": self.meta.get("target_far"),
                "gallery": self.gallery.kind, "biometric": True}


def net_embedder(backbone: str, state: dict, meta: dict) -> NetEmbedder:
    """The fine-tuned embedding network with its weights (strict: every tensor must fit the architecture)."""
    from core import zoo

    spec = zoo.get_spec(backbone)
    model = build_embedding_net(backbone, 128, pretrained=False)
    model.load_state_dict(state, strict=True)
    return NetEmbedder(model, backbone, int(meta.get("input_size", CROP_SIZE)), meta.get("mean", spec.mean),
                       meta.get("std", spec.std))


def load_recognizer(path: str | Path, detector=None) -> Recognizer:
    """A Recognizer from a faces run folder or a faces export folder."""
    path = Path(path)
    if (path / "config.json").is_file():
        from core import runs

        g, meta = gal.load(path)
        cfg = runs.load_config(path)
        if is_face_model(cfg.backbone):
            embedder = DlibEmbedder()
        else:
            embedder = net_embedder(cfg.backbone, runs.load_weights(path), meta)
        return Recognizer(g, meta, embedder, detector, f"run {path.name}")
    from core.tasks.faces.export import load_export

    g, meta, state = load_export(path)
    embedder = DlibEmbedder() if is_face_model(meta["model"]) else net_embedder(meta["model"], state, meta)
    return Recognizer(g, meta, embedder, detector, f"export {path.name}")
