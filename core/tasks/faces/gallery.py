"""The gallery: the enrolled people's face embeddings, and open-set identification against it.

Scores are cosine similarities (embeddings are unit length): 1 = identical, about 0 = unrelated. A person's score is
the similarity to the mean of their photos ("prototype") or to their closest photo ("nearest"). The answer is the
best-scoring person when their score reaches the threshold, else "unknown".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from core.storage import read_json, write_json_atomic
from core.tasks.faces.embed import normalise_rows

KINDS = {"prototype": "the mean of each person's photos", "nearest": "each person's closest photo"}
UNKNOWN = "unknown"
TENSORS = "gallery.safetensors"
META = "gallery.json"


@dataclass(frozen=True)
class Match:
    """One face's answer: label (a person or 'unknown'), its score, and the closest person whatever the score."""

    label: str
    score: float
    closest: str

    def to_dict(self) -> dict:
        return {"label": self.label, "score": round(self.score, 4), "closest": self.closest}


@dataclass(frozen=True)
class Gallery:
    people: tuple[str, ...]
    embeddings: np.ndarray = field(repr=False)  # (n, d) unit rows
    labels: np.ndarray = field(repr=False)  # (n,) index into people
    kind: str = "prototype"
    keys: tuple[str, ...] = ()  # the photo of each row (content key), for audits and deletion
    model: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Unknown gallery kind '{self.kind}'; use {', '.join(KINDS)}.")
        if len(self.embeddings) != len(self.labels):
            raise ValueError("gallery embeddings and labels differ in length")

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0

    def counts(self) -> dict[str, int]:
        return {p: int((self.labels == i).sum()) for i, p in enumerate(self.people)}

    def prototypes(self) -> np.ndarray:
        protos = np.zeros((len(self.people), self.dim), np.float32)
        for i in range(len(self.people)):
            rows = self.embeddings[self.labels == i]
            if len(rows):
                protos[i] = rows.mean(0)
        return normalise_rows(protos)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(m, people) similarities of unit-length query rows to every person."""
        q = np.asarray(queries, np.float32).reshape(-1, self.dim)
        if self.kind == "prototype":
            return q @ self.prototypes().T
        sims = q @ self.embeddings.T
        out = np.full((len(q), len(self.people)), -1.0, np.float32)
        for i in range(len(self.people)):
            cols = sims[:, self.labels == i]
            if cols.shape[1]:
                out[:, i] = cols.max(1)
        return out

    def identify(self, queries: np.ndarray, threshold: float) -> list[Match]:
        """Open-set answers for each query row."""
        if not len(self.people):
            return [Match(UNKNOWN, -1.0, "") for _ in range(len(np.atleast_2d(queries)))]
        s = self.scores(queries)
        best = s.argmax(1)
        out = []
        for row, b in zip(s, best, strict=True):
            score = float(row[b])
            out.append(Match(self.people[b] if score >= threshold else UNKNOWN, score, self.people[b]))
        return out

    def without(self, people: Iterable[str]) -> Gallery:
        """The gallery with these people removed (their rows gone, labels renumbered)."""
        drop = set(people)
        keep_people = tuple(p for p in self.people if p not in drop)
        remap = {self.people.index(p): i for i, p in enumerate(keep_people)}
        rows = np.array([int(lab) in remap for lab in self.labels], dtype=bool)
        labels = np.array([remap[int(lab)] for lab in self.labels[rows]], dtype=np.int64)
        keys = tuple(k for k, r in zip(self.keys, rows, strict=False) if r) if self.keys else ()
        return replace(self, people=keep_people, embeddings=self.embeddings[rows], labels=labels, keys=keys)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"gallery.embeddings": torch.from_numpy(np.ascontiguousarray(self.embeddings, np.float32)),
                "gallery.labels": torch.from_numpy(np.ascontiguousarray(self.labels, np.int64))}

    def meta(self) -> dict:
        return {"people": list(self.people), "kind": self.kind, "keys": list(self.keys), "model": self.model,
                "dim": self.dim, "counts": self.counts()}


def build(people: Sequence[str], embeddings: np.ndarray, labels: Sequence[str], kind: str = "prototype",
          keys: Sequence[str] = (), model: str = "") -> Gallery:
    """A gallery from embeddings labelled by person name; people without a photo are left out."""
    present = [p for p in people if p in set(labels)]
    index = {p: i for i, p in enumerate(present)}
    emb = normalise_rows(np.asarray(embeddings, np.float32).reshape(len(labels), -1)) if len(labels) else \
        np.zeros((0, 0), np.float32)
    return Gallery(tuple(present), emb, np.array([index[lab] for lab in labels], dtype=np.int64), kind,
                   tuple(keys), model)


def save(gallery: Gallery, folder: Path, extra: dict | None = None) -> None:
    """gallery.safetensors (the vectors) + gallery.json (people, kind, threshold and calibration in `extra`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{TENSORS}.tmp"
    save_file(gallery.tensors(), str(tmp))
    tmp.replace(folder / TENSORS)
    old = read_json(folder / META, {}) or {}
    write_json_atomic(folder / META, {**old, **(extra or {}), **gallery.meta()})


def load(folder: Path) -> tuple[Gallery, dict]:
    """The gallery saved in `folder` and its JSON (threshold, calibration...)."""
    folder = Path(folder)
    meta = read_json(folder / META)
    if not isinstance(meta, dict) or not (folder / TENSORS).is_file():
        raise FileNotFoundError(f"{folder} has no face gallery (gallery.safetensors + gallery.json).")
    t = load_file(str(folder / TENSORS))
    return from_tensors(t, meta), meta


def from_tensors(t: dict[str, torch.Tensor], meta: dict) -> Gallery:
    emb = t["gallery.embeddings"].float().numpy()
    labels = t["gallery.labels"].long().numpy()
    people = tuple(str(p) for p in meta.get("people", []))
    if len(labels) and (labels.min() < 0 or labels.max() >= len(people)):
        raise ValueError("the gallery's labels do not match its people")
    return Gallery(people, emb, labels, str(meta.get("kind", "prototype")), tuple(meta.get("keys", ())),
                   str(meta.get("model", "")))


def describe(meta: dict) -> str:
    return json.dumps({k: meta.get(k) for k in ("model", "kind", "threshold", "target_far")})
