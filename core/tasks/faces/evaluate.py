"""Evaluate a faces run on a labelled folder (one sub-folder per person): people enrolled in the run must be named,
everybody else is a stranger whose right answer is "unknown"."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.storage import read_json, write_json_atomic
from core.tasks.faces import threshold as thr
from core.tasks.faces.data import scan_people
from core.tasks.faces.gallery import UNKNOWN

EVAL_FILE = "faces_evaluation.json"
Progress = Callable[[str, int, int], None]


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), nd)


def evaluate_folder(run_dir: str | Path, folder: str | Path, on_progress: Progress | None = None,
                    recognizer=None, save: bool = True) -> dict:
    """Identification of enrolled people, rejection of strangers, TAR at FAR 1e-2 / 1e-3, confusions, mistakes."""
    from core.data.images import load_rgb
    from core.tasks.faces.predict import load_recognizer

    rec = recognizer or load_recognizer(run_dir)
    people, notes = scan_people(folder)
    enrolled = set(rec.people)
    files = [(person, f) for person in sorted(people) for f in people[person]]
    rows: list[dict] = []
    genuine: list[float] = []
    impostor: list[float] = []
    t0 = time.perf_counter()
    for n, (person, f) in enumerate(files):
        truth = person if person in enrolled else UNKNOWN
        row = {"name": f"{person}/{f.name}", "path": str(f), "person": person, "truth": truth, "predicted": UNKNOWN,
               "score": None, "closest": None, "box": None, "status": "ok"}
        try:
            img = load_rgb(f)
        except Exception as err:  # unreadable: counted, answered nothing
            row.update(status="unreadable", note=str(err) or type(err).__name__)
            rows.append(row)
            continue
        faces = rec.detector.detect(img)
        if not faces:
            row.update(status="no_face", note="no face found")
        else:
            vec = rec.embed_faces(img, faces[:1])
            s = rec.gallery.scores(vec)[0]
            best = int(s.argmax())
            score = float(s[best])
            row.update(score=round(score, 4), closest=rec.people[best], box=[round(v, 1) for v in faces[0].box],
                       predicted=rec.people[best] if score >= rec.threshold else UNKNOWN, n_faces=len(faces))
            for i, p in enumerate(rec.people):
                (genuine if p == person else impostor).append(float(s[i]))
        row["correct"] = row["predicted"] == truth
        rows.append(row)
        if on_progress:
            on_progress("identifying", n + 1, len(files))
    seconds = time.perf_counter() - t0
    known = [r for r in rows if r["truth"] != UNKNOWN]
    strangers = [r for r in rows if r["truth"] == UNKNOWN]
    known_faces = [r for r in known if r["score"] is not None]
    confused = Counter((r["truth"] if r["truth"] != UNKNOWN else f"stranger ({r['person']})", r["predicted"])
                       for r in rows if not r["correct"])
    result = {
        "folder": str(Path(folder).resolve()), "source": rec.source, "model": rec.gallery.model,
        "people": list(rec.people), "threshold": rec.threshold, "target_far": rec.meta.get("target_far"),
        "n_images": len(rows), "n_known_images": len(known), "n_unknown_images": len(strangers),
        "n_no_face": sum(r["status"] == "no_face" for r in rows),
        "n_unreadable": sum(r["status"] == "unreadable" for r in rows),
        "accuracy": _r(sum(r["correct"] for r in known) / len(known)) if known else None,
        "unknown_rejection": _r(sum(r["correct"] for r in strangers) / len(strangers)) if strangers else None,
        "overall_accuracy": _r(sum(r["correct"] for r in rows) / len(rows)) if rows else None,
        "closed_set_accuracy": _r(sum(r["closest"] == r["truth"] for r in known_faces) / len(known_faces))
        if known_faces else None,
        "false_accepts": sum(r["predicted"] != UNKNOWN for r in strangers),
        "tar_at_far_1e-2": _r(thr.tar_at_far(np.array(genuine), np.array(impostor), 1e-2)),
        "tar_at_far_1e-3": _r(thr.tar_at_far(np.array(genuine), np.array(impostor), 1e-3)),
        "n_genuine_pairs": len(genuine), "n_impostor_pairs": len(impostor),
        "seconds_per_image": _r(seconds / max(1, len(rows)), 4),
        "enrolled_not_in_folder": sorted(enrolled - set(people)),
        "strangers": sorted(set(people) - enrolled),
        "most_confused": [{"true": t, "predicted": p, "count": c} for (t, p), c in confused.most_common(10)],
        "mistakes": [r for r in rows if not r["correct"]],
        "notes": notes,
        "evaluated": time.time(),
    }
    if save and (Path(run_dir) / "config.json").is_file():
        saved = read_json(Path(run_dir) / EVAL_FILE, {}) or {}
        evals = dict(saved.get("evaluations") or {})
        evals[result["folder"]] = result
        write_json_atomic(Path(run_dir) / EVAL_FILE, {"evaluations": evals})
    return result


def load_evaluations(run_dir: str | Path) -> dict[str, dict]:
    """{folder: result} of every folder this run was evaluated on."""
    return dict((read_json(Path(run_dir) / EVAL_FILE, {}) or {}).get("evaluations") or {})


def comparison(run_dirs: list[Path], folder: str) -> list[dict]:
    """One row per run evaluated on `folder`: the side-by-side table of model paths."""
    from core import runs

    rows = []
    for run_dir in run_dirs:
        res = load_evaluations(run_dir).get(folder)
        if not res:
            continue
        status = runs.read_status(run_dir)
        cfg = runs.read_json_config(run_dir)
        freeze = (cfg.get("freeze") or {}).get("preset")
        rows.append({"run": run_dir.name, "model": cfg.get("backbone"), "freeze": freeze
                     if cfg.get("backbone") != "dlib_resnet_face" else "frozen",
                     "accuracy": res["accuracy"], "unknown_rejection": res["unknown_rejection"],
                     "tar_at_far_1e-2": res["tar_at_far_1e-2"], "tar_at_far_1e-3": res["tar_at_far_1e-3"],
                     "train_seconds": _r(status.get("seconds"), 1), "ms_per_image":
                     _r(1000 * res["seconds_per_image"], 1) if res.get("seconds_per_image") else None})
    return rows
