"""Reference strangers for the frozen face model: how photos of many people score against a person they are not.

The "unknown" threshold is chosen from the enrolment photos (core/tasks/faces/threshold.py). With a few people
enrolled, they are too few strangers to learn from, so the threshold also follows this table: for every person
of the reference set (their first `--enrol` photos, as a gallery person of each kind), the scores of every photo
of every *other* person, pooled over `--repeats` random choices of enrolment photos. The table keeps, for shares
of strangers from 1/2 down to 2e-5, the score that share reaches (`tail` → `score`); `pairs` does the same for
two photos of different people (one-to-one verification). Only these numbers are
written (`core/tasks/faces/reference_strangers.json`), never a photo or an embedding.

Run: .venv/bin/python bench/faces_reference.py [--data ../shared/datasets/lfw_faces] [--cache /tmp/faces-cache]
It also checks the table by cross-validation (reference from half of the people, galleries of the other half) and
prints how many strangers each threshold lets in (BENCHMARKS.md, face recognition).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from core.tasks.faces import gallery as gal
from core.tasks.faces import threshold as thr
from core.tasks.faces.detect import MTCNNDetector
from core.tasks.faces.embed import DLIB_MODEL, DlibEmbedder
from core.tasks.faces.enrol import FaceCache, detect_all

TAILS = 10 ** (-np.arange(3, 48) / 10)  # 0.5 … 2e-5


def embed_people(folder: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings and person names of every photo with a face (MTCNN + dlib, cached by content)."""
    items = [{"path": str(f), "label": p.name, "name": f.name} for p in sorted(folder.iterdir()) if p.is_dir()
             for f in sorted(p.iterdir()) if f.is_file()]
    photos, vectors = detect_all(items, FaceCache(cache), MTCNNDetector(), DlibEmbedder())
    ok = [p for p in photos if p.ok and p.key in vectors]
    return np.stack([vectors[p.key] for p in ok]), np.array([p.label for p in ok])


def stranger_scores(emb: np.ndarray, labels: np.ndarray, people: list[str], kind: str, enrol: int, repeats: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Scores of every other person's photos against each person enrolled with `enrol` photos."""
    out = []
    for _ in range(repeats):
        for person in people:
            mine = rng.permutation(np.flatnonzero(labels == person))[:enrol]
            g = gal.build([person], emb[mine], [person] * len(mine), kind)
            others = np.flatnonzero(np.isin(labels, people) & (labels != person))
            out.append(g.scores(emb[others])[:, 0])
    return np.concatenate(out)


def table(scores: np.ndarray) -> dict:
    return {"tail": [float(f"{t:.6g}") for t in TAILS],
            "score": [round(float(s), 5) for s in np.quantile(scores, 1 - TAILS)]}


def cross_check(emb: np.ndarray, labels: np.ndarray, kind: str, enrol: int, far: float, seed: int) -> list[dict]:
    """Reference from half of the people; galleries of P people from the other half, strangers = the rest of it."""
    rng = np.random.default_rng(seed)
    people = sorted(set(labels))
    rows = []
    for half in range(2):
        perm = list(rng.permutation(people))
        ref, test = perm[: len(perm) // 2], perm[len(perm) // 2:]
        ref_table = table(stranger_scores(emb, labels, ref, kind, enrol, 4, rng))
        for n_people in (2, 5, 10, 20):
            got = []
            for _ in range(40):
                enrolled = list(rng.choice(test, n_people, replace=False))
                idx = [i for p in enrolled for i in rng.permutation(np.flatnonzero(labels == p))[:enrol]]
                g = gal.build(enrolled, emb[idx], list(labels[idx]), kind, model="check")
                cal, _ = thr.calibrate_gallery(g, far)
                floor = thr.table_threshold(ref_table, n_people, far)
                strangers = np.flatnonzero(np.isin(labels, test) & ~np.isin(labels, enrolled))
                known = np.array([i for i in np.flatnonzero(np.isin(labels, enrolled)) if i not in set(idx)])
                best_s = g.scores(emb[strangers]).max(1)
                sk = g.scores(emb[known])
                right = np.array([g.people[j] for j in sk.argmax(1)]) == labels[known]
                got.append([(best_s >= cal.threshold).mean(), (best_s >= max(cal.threshold, floor)).mean(),
                            (right & (sk.max(1) >= cal.threshold)).mean(),
                            (right & (sk.max(1) >= max(cal.threshold, floor))).mean()])
            m = np.mean(got, 0)
            rows.append({"kind": kind, "half": half, "people": n_people, "far_photos_alone": round(float(m[0]), 3),
                         "far_with_reference": round(float(m[1]), 3),
                         "far_with_reference_worst": round(float(np.max(np.array(got)[:, 1])), 3),
                         "known_named_photos_alone": round(float(m[2]), 3),
                         "known_named_with_reference": round(float(m[3]), 3)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datasets/lfw_faces")
    ap.add_argument("--cache", default="/tmp/transfer-studio-faces-reference-cache")
    ap.add_argument("--enrol", type=int, default=8, help="enrolment photos per reference person")
    ap.add_argument("--out", default=str(thr.REFERENCE_FILE))
    ap.add_argument("--check-json", default="", help="also write the cross-check rows here")
    args = ap.parse_args()
    emb, labels = embed_people(Path(args.data), Path(args.cache))
    people = sorted(set(labels))
    rng = np.random.default_rng(0)
    entry = {"source": f"{Path(args.data).name}: {len(people)} people, {len(labels)} photos with a face "
                       f"(MTCNN + dlib), {args.enrol} enrolment photos per person, bench/faces_reference.py",
             "people": len(people)}
    for kind in gal.KINDS:
        scores = stranger_scores(emb, labels, people, kind, args.enrol, 4, rng)
        entry[kind] = {**table(scores), "n_scores": int(len(scores))}
    sims = emb @ emb.T  # one-to-one verification: every pair of photos of two different people
    upper = np.triu_indices(len(labels), 1)
    pairs = sims[upper][labels[upper[0]] != labels[upper[1]]]
    entry["pairs"] = {**table(pairs), "n_scores": int(len(pairs))}
    Path(args.out).write_text(json.dumps({DLIB_MODEL: entry}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    rows = [r for kind in gal.KINDS for r in cross_check(emb, labels, kind, args.enrol, thr.DEFAULT_FAR, 1)]
    if args.check_json:
        Path(args.check_json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
