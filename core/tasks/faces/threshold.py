"""Choosing the "unknown" threshold from the enrolment photos alone, for a false-accept rate the user sets.

Each enrolment photo is held back in turn and plays two roles:
- a *genuine* probe: its score against its own person (built without that photo);
- a *stranger*: its best score against everybody else. A stranger is falsely accepted when that score reaches the
  threshold, so the threshold is the score that only `target_far` of these simulated strangers reach.
With a fine-tuned embedder the held-back photos are the validation photos the network never trained on.
The trade-off (open-set ROC): share of strangers accepted (FAR) against share of known photos named correctly.

A few enrolled people are too few strangers: real strangers' faces resemble *some* enrolled person more often
than these few people resemble each other. On LFW, 5 people enrolled this way let 9–13 % of strangers in for a 1 %
target (BENCHMARKS.md, face recognition). So for a face model with a reference set (`reference_strangers.json`,
made by `bench/faces_reference.py`: how photos of many other people score against a person), the threshold is at
least the score that `target_far` of strangers reach against that many people: with 5 people 0.4–0.7 % measured.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.tasks.faces.gallery import Gallery

DEFAULT_FAR = 0.01
TARGET_FARS = (0.1, 0.05, 0.02, 0.01, 0.005, 0.001)
REFERENCE_FILE = Path(__file__).with_name("reference_strangers.json")


@functools.cache
def _references() -> dict:
    try:
        data = json.loads(REFERENCE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def reference(model: str) -> dict | None:
    """The reference strangers of a face model (source, people, score table per gallery kind), if it has them."""
    ref = _references().get(model)
    return ref if isinstance(ref, dict) else None


def reference_threshold(model: str, kind: str, people: int, target_far: float) -> float | None:
    """The score that only `target_far` of strangers reach against `people` enrolled people, from the model's
    reference strangers: a stranger is accepted when any of the people accepts them, so each person may accept
    only 1 − (1 − far)^(1/people) of them. None without a reference for this model and gallery kind."""
    table = (reference(model) or {}).get(kind)
    if not table or people < 1 or not 0 < target_far < 1:
        return None
    return table_threshold(table, people, target_far)


def table_far(table: dict, people: int, threshold: float) -> float:
    """The share of a stranger table's strangers that `threshold` lets in against `people` people (the inverse of
    `table_threshold`)."""
    tail = np.asarray(table["tail"], np.float64)
    score = np.asarray(table["score"], np.float64)
    order = np.argsort(score)
    per_person = 10 ** float(np.interp(threshold, score[order], np.log10(tail[order])))
    return float(1.0 - (1.0 - per_person) ** people)


def table_threshold(table: dict, people: int, target_far: float) -> float:
    """The score of a stranger table ({tail: shares of strangers, score: the score each share reaches}) that
    `target_far` of strangers reach against `people` people (interpolated in log share; past the table, its end)."""
    tail = np.asarray(table["tail"], np.float64)
    score = np.asarray(table["score"], np.float64)
    per_person = 1.0 - (1.0 - target_far) ** (1.0 / people)
    order = np.argsort(tail)  # np.interp wants increasing x: the rarest share (highest score) first
    x = np.log10(np.clip(per_person, tail.min(), tail.max()))
    return float(np.interp(x, np.log10(tail[order]), score[order]))


@dataclass(frozen=True)
class Scores:
    """Per held-back photo: score to its own person (nan when it was that person's only photo) and best score to
    anybody else."""

    genuine: np.ndarray
    impostor: np.ndarray

    @property
    def n(self) -> int:
        return len(self.impostor)


def loo_scores(gallery: Gallery) -> Scores:
    """Leave-one-out scores of every gallery photo (for a frozen embedder: nothing was trained on them)."""
    emb, lab, P = gallery.embeddings, gallery.labels, len(gallery.people)
    n = len(lab)
    genuine = np.full(n, np.nan, np.float32)
    impostor = np.full(n, np.nan, np.float32)
    if n == 0 or P < 2:
        return Scores(genuine, impostor)
    sims = emb @ emb.T
    np.fill_diagonal(sims, np.nan)
    if gallery.kind == "prototype":
        sums = np.zeros((P, emb.shape[1]), np.float64)
        np.add.at(sums, lab, emb)
        per = np.zeros((n, P), np.float32)
        for i in range(n):
            s = sums.copy()
            s[lab[i]] -= emb[i]
            norms = np.linalg.norm(s, axis=1)
            valid = norms > 1e-9
            protos = np.where(valid[:, None], s / np.maximum(norms, 1e-12)[:, None], 0.0)
            row = protos @ emb[i]
            row[~valid] = np.nan
            per[i] = row
    else:
        per = np.full((n, P), np.nan, np.float32)
        finite = np.where(np.isnan(sims), -np.inf, sims)
        for p in range(P):
            cols = finite[:, lab == p]
            if cols.shape[1]:
                best = cols.max(1)
                per[:, p] = np.where(np.isfinite(best), best, np.nan)
    for i in range(n):
        genuine[i] = per[i, lab[i]]
        others = np.delete(per[i], lab[i])
        impostor[i] = np.nanmax(others) if np.any(~np.isnan(others)) else np.nan
    return Scores(genuine, impostor)


def probe_scores(gallery: Gallery, probes: np.ndarray, probe_people: list[str]) -> Scores:
    """Scores of held-back photos (not in the gallery) against the gallery."""
    s = gallery.scores(probes) if len(probes) else np.zeros((0, len(gallery.people)), np.float32)
    index = {p: i for i, p in enumerate(gallery.people)}
    genuine = np.full(len(probes), np.nan, np.float32)
    impostor = np.full(len(probes), np.nan, np.float32)
    for i, person in enumerate(probe_people):
        row = s[i].copy()
        if person in index:
            genuine[i] = row[index[person]]
            row[index[person]] = -np.inf
        impostor[i] = row.max() if len(row) and np.isfinite(row.max()) else np.nan
    return Scores(genuine, impostor)


def threshold_for_far(impostor: np.ndarray, target_far: float) -> tuple[float, float, str]:
    """(threshold, achieved FAR, note): the lowest threshold at which at most `target_far` of the strangers'
    scores reach it (score >= threshold means accepted)."""
    s = np.sort(np.asarray(impostor, np.float64)[~np.isnan(impostor)])[::-1]
    n = len(s)
    if n == 0:
        return 0.5, float("nan"), "No simulated strangers (enrol at least 2 people): a default threshold is used."
    k = int(math.floor(target_far * n + 1e-9))
    note = ""
    if k == 0:
        t = float(np.nextafter(s[0], np.inf))
        if target_far * n < 1:
            note = (f"Only {n} simulated strangers: a false-accept rate of {target_far:g} cannot be measured "
                    f"(the smallest step is 1/{n}), so the threshold is set just above all of them.")
    elif k >= n:
        t = float(s[-1])
    else:
        t = float(np.nextafter(s[k], np.inf))
    achieved = float((s >= t).mean())
    return t, achieved, note


def identification_rate(scores: Scores, threshold: float) -> float:
    """Share of held-back known photos named correctly: own person ranks first and reaches the threshold."""
    g, imp = scores.genuine, scores.impostor
    ok = ~np.isnan(g)
    if not ok.any():
        return float("nan")
    imp = np.where(np.isnan(imp), -np.inf, imp)
    return float(((g[ok] > imp[ok]) & (g[ok] >= threshold)).mean())


def rank1(scores: Scores) -> float:
    """Closed-set share named correctly (no threshold)."""
    g, imp = scores.genuine, np.where(np.isnan(scores.impostor), -np.inf, scores.impostor)
    ok = ~np.isnan(g)
    return float((g[ok] > imp[ok]).mean()) if ok.any() else float("nan")


def roc(scores: Scores, points: int = 200) -> list[dict]:
    """Open-set ROC: for thresholds over the observed scores, FAR (strangers accepted) and the identification
    rate (known photos named correctly)."""
    vals = np.concatenate([scores.genuine[~np.isnan(scores.genuine)], scores.impostor[~np.isnan(scores.impostor)]])
    if not len(vals):
        return []
    grid = np.unique(np.quantile(vals, np.linspace(0, 1, points)))
    imp = scores.impostor[~np.isnan(scores.impostor)]
    out = []
    for t in grid:
        out.append({"threshold": round(float(t), 5), "far": float((imp >= t).mean()) if len(imp) else float("nan"),
                    "identification": identification_rate(scores, float(t))})
    return out


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float | None:
    """Share of genuine scores at or above the threshold that accepts `far` of the impostor scores; None when
    there are too few impostor scores to measure that rate (fewer than 1/far)."""
    g = np.asarray(genuine, np.float64)
    g = g[~np.isnan(g)]
    imp = np.asarray(impostor, np.float64)
    imp = imp[~np.isnan(imp)]
    if len(imp) < math.ceil(1 / far) or not len(g):
        return None
    t, _, _ = threshold_for_far(imp, far)
    return float((g >= t).mean())


@dataclass(frozen=True)
class Calibration:
    threshold: float
    target_far: float
    achieved_far: float
    identification: float  # held-back known photos named correctly at the threshold
    rank1: float  # ... closed set, no threshold
    n_genuine: int
    n_strangers: int
    note: str
    verify_threshold: float  # for one-to-one verification (pairs of photos) at the same FAR
    method: str
    measured_threshold: float | None = None  # from the held-back photos alone, when a reference raised it
    reference_far: float | None = None  # strangers let in, estimated from the reference (when it set the threshold)

    def to_dict(self) -> dict:
        return asdict(self)


def pair_scores(gallery: Gallery) -> tuple[np.ndarray, np.ndarray]:
    """Similarities of every pair of gallery photos: same person, different people."""
    emb, lab = gallery.embeddings, gallery.labels
    if len(lab) < 2:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    sims = emb @ emb.T
    iu = np.triu_indices(len(lab), 1)
    same = lab[iu[0]] == lab[iu[1]]
    return sims[iu][same], sims[iu][~same]


def calibrate(scores: Scores, target_far: float, pair_impostor: np.ndarray, method: str,
              gallery: Gallery | None = None) -> Calibration:
    """The threshold for `target_far` and what it gives on the held-back photos; with a `gallery` whose face model
    has reference strangers, never below the threshold they give for that many people."""
    if not 0 < target_far < 1:
        raise ValueError("the false-accept rate must be between 0 and 1 (e.g. 0.01)")
    t, achieved, note = threshold_for_far(scores.impostor, target_far)
    measured = reference_far = None
    floor = reference_threshold(gallery.model, gallery.kind, len(gallery.people), target_far) if gallery else None
    if floor is not None and floor > t:
        measured, t = t, floor
        reference_far = table_far(reference(gallery.model)[gallery.kind], len(gallery.people), t)
        imp = scores.impostor[~np.isnan(scores.impostor)]
        achieved = float((imp >= t).mean()) if len(imp) else float("nan")
        ref = reference(gallery.model) or {}
        note = (f"With {len(gallery.people)} people enrolled, their photos alone cannot show how strangers score, "
                f"so the threshold also follows {ref.get('people', 'many')} other people's faces scored by this "
                f"face model: {t:.3f} instead of {measured:.3f} from your photos alone.")
    vt, _, _ = threshold_for_far(pair_impostor, target_far) if len(pair_impostor) else (t, 0.0, "")
    pairs = (reference(gallery.model) or {}).get("pairs") if gallery else None
    if pairs:  # a few people's photo pairs are too few stranger pairs too: never below the reference pairs' rate
        vt = max(vt, table_threshold(pairs, 1, target_far))
    return Calibration(round(t, 6), target_far, achieved, identification_rate(scores, t), rank1(scores),
                       int((~np.isnan(scores.genuine)).sum()), int((~np.isnan(scores.impostor)).sum()), note,
                       round(vt, 6), method, None if measured is None else round(measured, 6),
                       None if reference_far is None else round(reference_far, 6))


def calibrate_gallery(gallery: Gallery, target_far: float = DEFAULT_FAR) -> tuple[Calibration, Scores]:
    """Leave-one-out calibration on the gallery itself (frozen embedders)."""
    scores = loo_scores(gallery)
    _, pair_imp = pair_scores(gallery)
    return calibrate(scores, target_far, pair_imp, "each enrolment photo held back in turn", gallery), scores


def retarget(run_dir, target_far: float) -> dict:
    """Choose a run's threshold again for another false-accept rate from its stored held-back scores (no
    training); writes gallery.json and returns the new calibration."""
    from pathlib import Path

    from core.storage import read_json, write_json_atomic
    from core.tasks.faces.gallery import META, load

    path = Path(run_dir) / META
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise FileNotFoundError(f"{run_dir} has no face gallery.")
    stored = meta.get("scores") or {}
    genuine = np.array([np.nan if v is None else v for v in stored.get("genuine", [])], np.float32)
    impostor = np.array([np.nan if v is None else v for v in stored.get("impostor", [])], np.float32)
    if not len(impostor):  # scores were dropped (e.g. after deleting a person): compute them on the gallery
        g, _ = load(Path(run_dir))
        scores = loo_scores(g)
    else:
        scores = Scores(genuine, impostor)
    g, _ = load(Path(run_dir))
    _, pair_imp = pair_scores(g)
    old = meta.get("calibration") or {}
    cal = calibrate(scores, target_far, pair_imp, old.get("method", "held-back photos"), g)
    meta.update(threshold=cal.threshold, target_far=target_far, verify_threshold=cal.verify_threshold,
                calibration=cal.to_dict())
    write_json_atomic(path, meta)
    return cal.to_dict()


def all_unknown_hint(best: float | None, rank1: float | None, state: str) -> str | None:
    """What to do when no held-back photo was named although the closest person was often right: the 'unknown'
    threshold sits above every genuine score (a short fine-tune of the head alone), which looks like a broken model."""
    if best != 0 or not rank1 or state in ("queued", "running", "stopping"):
        return None
    return (f"No held-back photo was named, yet the closest enrolled person was the right one for {rank1:.0%} of "
            "them: the faces are not yet far enough apart for the 'unknown' threshold. Train more epochs or more "
            "layers (3 · Layers), or start with the frozen face model, which is ready in seconds.")
