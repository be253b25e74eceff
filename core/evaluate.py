"""How good is a trained model, where does it fail, and can its confidence be trusted?

Metrics come from torchmetrics (accuracy, per-class precision/recall/F1, confusion matrix, calibration error) and are
always labelled with the split they were measured on. `evaluate_run` measures a run on its own validation (and test)
images and stores everything in the run folder, so pages show it without recomputing:

    <run>/evaluation.json          metrics per split, calibration, "not sure" threshold, learning curve

The "not sure" threshold chosen on the validation photos is stored as `unknown_threshold.suggested`; it changes
answers and exports (`unknown_threshold.threshold`) only once the user chooses it (`set_threshold`).
    <run>/predictions_<split>.json every image of the split with its label, prediction and probabilities

`evaluate_folder` measures a run or an export on a separate labelled folder (one sub-folder per class).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from core import runs
from core.data.images import ImageError
from core.inference import Predictor, load_predictor
from core.pipeline import build_cache, eval_batch, load_square
from core.storage import read_json, write_json_atomic

EVALUATION_FILE = "evaluation.json"
EVALUATION_VERSION = 2  # 2: the chosen "not sure" threshold is only a suggestion until the user picks one
SUGGESTION_NOTE = "Suggested only: not in use until you choose it (in the app: 6 · Runs & export, Results tab)."
DEFAULT_TARGET_ACCURACY = 0.95
DEFAULT_MIN_COVERAGE = 0.5
LEARNING_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
Progress = Callable[[str, int, int], None]


def _tm() -> ModuleType:
    """torchmetrics' classification functions, imported when first used: the import takes ~1.5–3 s (it pulls in
    torch._dynamo and scipy), which every process importing this module for a summary (an export) paid."""
    import torchmetrics.functional.classification as tm

    return tm


class EvaluationError(Exception):
    """An evaluation cannot be made as asked; the message says why."""


def _r(x: float | torch.Tensor | None, nd: int = 6) -> float | None:
    if x is None:
        return None
    v = float(x)
    return None if math.isnan(v) else round(v, nd)


# --- metrics --------------------------------------------------------------------------------------------------

def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str],
                           split: str) -> dict:
    """Accuracy (micro), balanced accuracy (mean recall over the classes that have images), macro F1, loss,
    per-class precision/recall/F1/support and the confusion matrix (rows = true class, columns = predicted).

    `unchecked_classes` names the classes without a single image in the split: nothing says how well they are
    recognised, and balanced accuracy leaves them out."""
    c = len(classes)
    n = int(len(targets))
    base = {"split": split, "n_images": n}
    if n == 0:
        return {**base, "unchecked_classes": list(classes), "accuracy": None, "balanced_accuracy": None,
                "macro_f1": None, "loss": None,
                "per_class": [{"class": k, "precision": None, "recall": None, "f1": None, "support": 0}
                              for k in classes], "confusion_matrix": [[0] * c for _ in range(c)]}
    targets = targets.long()
    preds = probs.argmax(1)
    support = torch.bincount(targets, minlength=c)
    precision = _tm().multiclass_precision(preds, targets, num_classes=c, average=None)
    recall = _tm().multiclass_recall(preds, targets, num_classes=c, average=None)
    f1 = _tm().multiclass_f1_score(preds, targets, num_classes=c, average=None)
    predicted_count = torch.bincount(preds, minlength=c)
    per_class = []
    for k, name in enumerate(classes):
        per_class.append({"class": name,
                          "precision": _r(precision[k]) if predicted_count[k] > 0 else None,
                          "recall": _r(recall[k]) if support[k] > 0 else None,
                          "f1": _r(f1[k]) if support[k] + predicted_count[k] > 0 else None,
                          "support": int(support[k])})
    nll = -torch.log(probs[torch.arange(n), targets].clamp(min=1e-12))
    return {**base,
            "unchecked_classes": [name for k, name in enumerate(classes) if support[k] == 0],
            "accuracy": _r(_tm().multiclass_accuracy(preds, targets, num_classes=c, average="micro")),
            "balanced_accuracy": _r(recall[support > 0].mean()),
            "macro_f1": _r(_tm().multiclass_f1_score(preds, targets, num_classes=c, average="macro")),
            "loss": _r(nll.mean()),
            "per_class": per_class,
            "confusion_matrix": _tm().multiclass_confusion_matrix(preds, targets, num_classes=c).tolist()}


def misclassified(probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str], names: Sequence[str],
                  paths: Sequence[str] | None = None, limit: int | None = 200) -> list[dict]:
    """The wrongly classified images, most confident mistakes first."""
    conf, preds = probs.max(1)
    wrong = (preds != targets).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: (-float(conf[i]), names[i]))
    out = [{"index": i, "name": names[i], "path": paths[i] if paths else "", "label": classes[int(targets[i])],
            "predicted": classes[int(preds[i])], "confidence": _r(conf[i]),
            "p_label": _r(probs[i, int(targets[i])])} for i in wrong]
    return out[:limit] if limit else out


def most_confused(confusion: Sequence[Sequence[int]], classes: Sequence[str], limit: int = 10) -> list[dict]:
    """(true class, predicted class) pairs with the most mistakes; `share` = fraction of the true class's images."""
    pairs = []
    for i, row in enumerate(confusion):
        total = sum(row)
        for j, count in enumerate(row):
            if i != j and count > 0:
                pairs.append({"true": classes[i], "predicted": classes[j], "count": int(count),
                              "share": _r(count / total if total else 0.0, 4)})
    pairs.sort(key=lambda p: (-p["count"], -p["share"], p["true"], p["predicted"]))
    return pairs[:limit]


def label_issues(probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str], names: Sequence[str],
                 paths: Sequence[str] | None = None, confident: float = 0.9, limit: int | None = 100) -> list[dict]:
    """Images whose label may be wrong, most suspicious first (lowest probability of the given label).

    Two signals: confident learning (the probability of another class j reaches class j's own average
    self-confidence, the per-class threshold of Northcutt et al.) and plain confident mistakes (the model gives
    another class at least `confident`), plus high-loss mistakes (the label gets at most 1/classes²). Use
    out-of-sample probabilities (validation images, or cross-validated
    ones for training images)."""
    n, c = probs.shape if probs.ndim == 2 else (0, len(classes))
    if n == 0:
        return []
    targets = targets.long()
    self_conf = probs[torch.arange(n), targets]
    thresholds = torch.full((c,), float("inf"))
    for j in range(c):
        mask = targets == j
        if mask.any():
            thresholds[j] = probs[mask, j].mean()
    out = []
    for i in range(n):
        y = int(targets[i])
        above = [(float(probs[i, j]), j) for j in range(c) if j != y and float(probs[i, j]) >= float(thresholds[j])]
        pred_p, pred = (float(v) for v in probs[i].max(0))
        pred = int(pred)
        reasons = []
        if above:
            p_j, j = max(above)
            reasons.append(f"looks like {classes[j]} as much as typical {classes[j]} images do")
            suggested, p_s = j, p_j
        if pred != y and pred_p >= confident:
            reasons.append(f"the model is sure ({pred_p:.0%}) it is {classes[pred]}")
            suggested, p_s = pred, pred_p
        if pred != y and not reasons and float(self_conf[i]) <= 1 / c**2:  # high loss: its label is very unlikely
            reasons.append(f"the model gives its label only {float(self_conf[i]):.0%}")
            suggested, p_s = pred, pred_p
        if reasons:
            loss = -math.log(max(float(self_conf[i]), 1e-12))
            out.append({"index": i, "name": names[i], "path": paths[i] if paths else "", "label": classes[y],
                        "suggested": classes[suggested], "p_label": _r(self_conf[i]), "p_suggested": _r(p_s),
                        "loss": _r(loss, 4), "reason": "; ".join(reasons)})
    out.sort(key=lambda r: (r["p_label"], r["name"]))
    return out[:limit] if limit else out


def calibration(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 10) -> dict:
    """Expected (and maximum) calibration error from torchmetrics, and the reliability-diagram bins: for each
    confidence range, how many images fall in it, their mean confidence and how many of them are right."""
    n = int(len(targets))
    if n == 0:
        return {"ece": None, "mce": None, "n_bins": n_bins, "bins": [], "mean_confidence": None}
    c = probs.shape[1]
    probs = probs.float()
    ece = _tm().multiclass_calibration_error(probs, targets.long(), num_classes=c, n_bins=n_bins, norm="l1")
    mce = _tm().multiclass_calibration_error(probs, targets.long(), num_classes=c, n_bins=n_bins, norm="max")
    conf, preds = probs.max(1)
    correct = (preds == targets).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    index = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)  # the same bins as torchmetrics
    bins = []
    for b in range(n_bins):
        mask = index == b
        count = int(mask.sum())
        bins.append({"lo": _r(edges[b], 4), "hi": _r(edges[b + 1], 4), "count": count,
                     "confidence": _r(conf[mask].mean()) if count else None,
                     "accuracy": _r(correct[mask].mean()) if count else None})
    return {"ece": _r(ece), "mce": _r(mce), "n_bins": n_bins, "bins": bins, "mean_confidence": _r(conf.mean()),
            "accuracy": _r(correct.mean())}


def _share(x: float) -> str:
    """A share as a percentage, with decimals where rounding would say 100 % or 0 % for something that is not."""
    if 0.995 <= x < 1 or 0 < x <= 0.005:
        return f"{100 * x:.2f}%"
    return f"{x:.0%}"


def threshold_curve(probs: torch.Tensor, targets: torch.Tensor, points: int = 101) -> list[dict]:
    """Coverage (share of images answered) and accuracy on the answered images, for thresholds 0, 0.01, …, 1."""
    conf, preds = probs.max(1)
    correct = preds == targets
    n = max(1, len(targets))
    out = []
    for t in torch.linspace(0, 1, points).tolist():
        kept = conf >= t
        k = int(kept.sum())
        out.append({"threshold": round(t, 4), "coverage": round(k / n, 6),
                    "accuracy": _r(correct[kept].float().mean()) if k else None, "answered": k})
    return out


def choose_threshold(probs: torch.Tensor, targets: torch.Tensor, target_accuracy: float = DEFAULT_TARGET_ACCURACY,
                     min_coverage: float = DEFAULT_MIN_COVERAGE) -> dict:
    """The "not sure" threshold: answer only when the top probability is at least this.

    The smallest threshold at which accuracy on the answered images reaches `target_accuracy` (so as many images as
    possible are still answered). If that leaves fewer than `min_coverage` of the images answered, or the target is
    never reached, the sensible default is the threshold with the best accuracy among those still answering at
    least `min_coverage` of the images. Threshold 0 means the model is already accurate enough to answer always."""
    n = int(len(targets))
    base = {"target_accuracy": target_accuracy, "min_coverage": min_coverage, "n_images": n}
    if n == 0:
        return {**base, "threshold": None, "coverage": None, "accuracy": None, "reached": False,
                "reason": "No images to choose a threshold on.", "curve": []}
    conf, preds = probs.float().max(1)
    correct = (preds == targets).float()
    order = torch.argsort(conf, descending=True, stable=True)
    conf_sorted, correct_sorted = conf[order], correct[order]
    cum_acc = torch.cumsum(correct_sorted, 0) / torch.arange(1, n + 1)
    # candidate answer-set sizes k: only at the end of a group of equal confidences (a threshold keeps all ties)
    ends = [k for k in range(1, n + 1) if k == n or conf_sorted[k] < conf_sorted[k - 1]]

    def pick(k: int) -> tuple[float, float, float]:
        t = 0.0 if k == n else float(conf_sorted[k - 1])
        return t, k / n, float(cum_acc[k - 1])

    reaching = [k for k in ends if float(cum_acc[k - 1]) >= target_accuracy - 1e-12]
    goal = f"{target_accuracy:.0%}"
    if reaching and max(reaching) / n >= min_coverage:
        t, cov, acc = pick(max(reaching))
        if t == 0.0:
            reason = (f"The model is right on {_share(acc)} of the {n} validation images, above the {goal} a \"not "
                      "sure\" threshold aims for, so it can answer every image.")
        else:
            reason = (f"Answering only when the top probability is at least {_share(t)} gives {_share(acc)} accuracy "
                      f"(the aim is {goal}) on the {_share(cov)} of validation images that are answered; the rest get "
                      "\"not sure\".")
        reached = True
    else:
        allowed = [k for k in ends if k / n >= min_coverage] or [n]
        best = max(allowed, key=lambda k: (round(float(cum_acc[k - 1]), 9), k))
        t, cov, acc = pick(best)
        why = (f"is reached only when fewer than {min_coverage:.0%} of the images are answered" if reaching
               else "is not reached at any threshold")
        reason = (f"The {goal} accuracy a \"not sure\" threshold aims for {why}; the default answers when the top "
                  "probability is at least "
                  f"{_share(t)}, which gives the best accuracy ({_share(acc)}) while still answering {_share(cov)} "
                  "of the validation images.")
        reached = False
    if n < 30:
        reason += f" Only {n} validation images: treat this threshold as a rough guide."
    return {**base, "threshold": round(t, 6), "coverage": round(cov, 6), "accuracy": round(acc, 6),
            "reached": reached, "reason": reason, "curve": threshold_curve(probs, targets)}


def evaluate_probs(probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str], names: Sequence[str],
                   split: str, paths: Sequence[str] | None = None) -> dict:
    """Everything about one labelled set of predictions: metrics, calibration, mistakes, suspicious labels."""
    out = classification_metrics(probs, targets, classes, split)
    out["calibration"] = calibration(probs, targets)
    out["misclassified"] = misclassified(probs, targets, classes, names, paths)
    out["most_confused"] = most_confused(out["confusion_matrix"], classes)
    out["label_issues"] = label_issues(probs, targets, classes, names, paths)
    return out


# --- evaluating a run on its own splits ---------------------------------------------------------------------------

def _weights_fingerprint(run_dir: Path, name: str = "best") -> dict:
    path = Path(run_dir) / "checkpoints" / f"{name}.safetensors"
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    meta = read_json(path.with_suffix(".json"), {}) or {}
    return {"name": name, "file": f"checkpoints/{path.name}", "sha256": h.hexdigest(), "bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns, "epoch": meta.get("epoch"), "val_accuracy": meta.get("val_accuracy")}


def load_evaluation(run_dir: str | os.PathLike) -> dict | None:
    """The stored evaluation, with `stale` = True when the run's weights changed since it was made."""
    run_dir = Path(run_dir)
    ev = read_json(run_dir / EVALUATION_FILE)
    if not isinstance(ev, dict):
        return None
    if isinstance(ev.get("unknown_threshold"), dict):
        ev["unknown_threshold"] = as_suggestion(ev["unknown_threshold"])
    w = ev.get("weights") or {}
    path = run_dir / "checkpoints" / f"{w.get('name', 'best')}.safetensors"
    try:
        st = path.stat()
    except OSError:
        ev["stale"] = True
        return ev
    if st.st_size == w.get("bytes") and st.st_mtime_ns == w.get("mtime_ns"):
        ev["stale"] = False
    else:
        ev["stale"] = _weights_fingerprint(run_dir, w.get("name", "best"))["sha256"] != w.get("sha256")
    return ev


def load_predictions(run_dir: str | os.PathLike, split: str = "val") -> dict | None:
    """The stored per-image predictions of one split (`predictions_<split>.json`)."""
    return read_json(Path(run_dir) / f"predictions_{split}.json")


def as_suggestion(th: dict) -> dict:
    """A stored threshold the user did not choose, as a suggestion only: `suggested` holds it and `threshold` (the one
    in use) is None. Evaluations of earlier versions stored the suggestion as the threshold in use."""
    if th.get("chosen_by") == "user" or "suggested" in th:
        return th
    out = {**th, "suggested": th.get("threshold"), "threshold": None, "chosen_by": None}
    if out["suggested"] is not None and SUGGESTION_NOTE not in str(out.get("reason", "")):
        out["reason"] = f"{out.get('reason', '')} {SUGGESTION_NOTE}".strip()
    return out


def _users_choice(run_dir: Path, sha256: str) -> dict:
    """The threshold the user chose for these same weights in the stored evaluation ({} when none): computing the
    results again keeps it."""
    ev = read_json(run_dir / EVALUATION_FILE)
    if not isinstance(ev, dict) or (ev.get("weights") or {}).get("sha256") != sha256:
        return {}
    th = ev.get("unknown_threshold") or {}
    if th.get("chosen_by") != "user":
        return {}
    return {k: th.get(k) for k in ("threshold", "chosen_by", "reason")}


def set_threshold(run_dir: str | os.PathLike, value: float | None) -> dict:
    """Replace the stored "not sure" threshold by the user's choice (None = always answer)."""
    if value is not None and not 0.0 <= float(value) <= 1.0:
        raise EvaluationError("The threshold must be between 0 and 1.")
    run_dir = Path(run_dir)
    ev = read_json(run_dir / EVALUATION_FILE)
    if not isinstance(ev, dict):
        raise EvaluationError("Evaluate the run first; there is no evaluation.json yet.")
    th = as_suggestion(dict(ev.get("unknown_threshold") or {}))
    th.update(threshold=None if value is None else float(value), chosen_by="user",
              reason="Set by you." if value is not None else "Set by you: always answer.")
    ev["unknown_threshold"] = th
    ev.pop("stale", None)
    write_json_atomic(run_dir / EVALUATION_FILE, ev)
    return th


def _split_names(items: Sequence[dict]) -> list[str]:
    present = {it["split"] for it in items}
    return [s for s in ("val", "test", "train") if s in present] + sorted(present - {"val", "test", "train"})


def dataset_words(manifest: dict) -> str:
    """How the user knows the photos a run was trained on: "dataset 'ants'", "the folder /data/ants"."""
    source = manifest.get("source") or {}
    if source.get("kind") == "store":
        return f"dataset '{source.get('name') or source.get('id', '')}'"
    if source.get("path"):
        return f"the folder {source['path']}"
    return "its dataset"


def _check_photos_exist(manifest: dict, items: Sequence[dict]) -> None:
    """Refuse to evaluate when none of the photos to measure on are on this machine any more (e.g. their dataset
    was deleted): an evaluation of no photos says nothing and must not replace a stored one."""
    if not items or any(os.path.exists(it["path"]) for it in items):
        return
    raise EvaluationError(f"The photos this run was trained on ({dataset_words(manifest)}) are no longer on this "
                          "machine, so its results cannot be computed. The model can still be tested and exported.")


def _check_photos_readable(items: Sequence[dict], splits: Sequence[str], failed: dict[int, str]) -> None:
    """Refuse to evaluate when not one photo of the chosen splits can be read; the message names one of them."""
    wanted = [i for i, it in enumerate(items) if it["split"] in splits]
    if not wanted or any(i not in failed for i in wanted):
        return
    first = items[wanted[0]]
    name = first.get("name") or Path(first["path"]).name
    raise EvaluationError(f"None of the {len(wanted)} {' and '.join(splits)} photos of this run can be read (e.g. "
                          f"{name}: {failed[wanted[0]]}), so its results cannot be computed.")


def evaluate_run(run_dir: str | os.PathLike, splits: Sequence[str] | None = None,
                 target_accuracy: float = DEFAULT_TARGET_ACCURACY, with_learning_curve: bool = True,
                 on_progress: Progress | None = None, device: str = "auto") -> dict:
    """Measure the run's best weights on its own splits (default: val, and test when there is one), choose the
    "not sure" threshold on the validation split, add the learning curve, and store it all in the run folder."""
    t0 = time.time()
    run_dir = Path(run_dir)
    fingerprint = _weights_fingerprint(run_dir) if (run_dir / "checkpoints" / "best.safetensors").exists() else None
    predictor = Predictor.from_run(run_dir, device=device, threshold=None)  # says so when there are no weights
    manifest = runs.load_dataset(run_dir)
    classes, items = list(manifest["classes"]), manifest["items"]
    label_of = {c: k for k, c in enumerate(classes)}
    present = _split_names(items)
    chosen = list(splits) if splits else [s for s in present if s != "train"]
    unknown = [s for s in chosen if s not in present]
    if unknown:
        raise EvaluationError(f"This run has no {', '.join(unknown)} images (it has {', '.join(present)}).")
    _check_photos_exist(manifest, [it for it in items if it["split"] in chosen])
    # the same file list as training, so the decoded-image cache written by training is reused
    cache = build_cache([it["path"] for it in items], predictor.prep,
                        (lambda d, t: on_progress("reading images", d, t)) if on_progress else None)
    _check_photos_readable(items, chosen, cache.failed)
    if _weights_fingerprint(run_dir)["sha256"] != fingerprint["sha256"]:
        raise EvaluationError("The run's weights changed while they were being loaded (is it still training?); "
                              "evaluate again when it has finished.")
    result: dict = {"version": EVALUATION_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "run_id": run_dir.name, "task": predictor.task, "backbone": predictor.backbone,
                    "classes": classes, "weights": fingerprint, "precision": predictor.plan.precision,
                    "splits": {}}
    for split in chosen:
        pos = [i for i, it in enumerate(items) if it["split"] == split and i not in cache.failed]
        skipped = [{"name": items[i].get("name", items[i]["path"]), "reason": cache.failed[i]}
                   for i in sorted(cache.failed) if items[i]["split"] == split]
        prog = (lambda d, t, s=split: on_progress(f"predicting {s}", d, t)) if on_progress else None
        logits = predictor.logits_for_cache(cache, pos, on_progress=prog)
        probs = torch.softmax(logits, 1)
        targets = torch.tensor([label_of[items[i]["label"]] for i in pos], dtype=torch.long)
        names = [items[i].get("name") or Path(items[i]["path"]).name for i in pos]
        paths = [items[i]["path"] for i in pos]
        block = evaluate_probs(probs, targets, classes, names, split, paths)
        block["skipped"] = skipped
        result["splits"][split] = block
        write_json_atomic(run_dir / f"predictions_{split}.json", {
            "split": split, "classes": classes, "run_id": run_dir.name, "weights_sha256": fingerprint["sha256"],
            "items": [{"name": names[k], "path": paths[k], "label": classes[int(targets[k])],
                       "predicted": classes[int(probs[k].argmax())], "confidence": _r(probs[k].max()),
                       "probs": [_r(v) for v in probs[k].tolist()]} for k in range(len(pos))]})
        if split == ("val" if "val" in chosen else chosen[0]):
            suggestion = as_suggestion({**choose_threshold(probs, targets, target_accuracy), "split": split})
            result["unknown_threshold"] = {**suggestion, **_users_choice(run_dir, fingerprint["sha256"])}
    result["primary_split"] = "val" if "val" in chosen else chosen[0]
    result["learning_curve"] = None
    if with_learning_curve:
        try:
            result["learning_curve"] = learning_curve(run_dir, on_progress=on_progress)
        except Exception as err:  # the curve is an extra: the metrics above still count
            result["learning_curve"] = {"available": False, "reason": f"could not be computed: {err}"}
    result["seconds"] = round(time.time() - t0, 2)
    write_json_atomic(run_dir / EVALUATION_FILE, result)
    return result


def summary(result: dict, split: str | None = None) -> dict:
    """The headline numbers of an evaluation (of `evaluate_run` or `evaluate_folder`) in one flat dict."""
    block = result
    if "splits" in result:
        block = result["splits"][split or result.get("primary_split", "val")]
    keys = ("split", "n_images", "accuracy", "balanced_accuracy", "macro_f1", "loss", "per_class",
            "unchecked_classes")
    out = {k: block.get(k) for k in keys}
    out["ece"] = (block.get("calibration") or {}).get("ece")
    return out


# --- evaluating on a separate labelled folder ------------------------------------------------------------------

def evaluate_folder(run_or_export: str | os.PathLike | Predictor, folder: str | os.PathLike,
                    on_progress: Progress | None = None, batch_size: int = 32) -> dict:
    """Metrics of a run or an export on a labelled folder (one sub-folder per class, optionally inside
    train/ val/ test/). Class folders the model does not know are reported by name (not silently dropped), as are
    files that are not images and images that cannot be decoded (with the reason); everything else is evaluated."""
    from core.data.scan import ScanItem, class_names, detect_layout, iter_scan
    from core.settings import cpu_threads

    predictor = run_or_export if isinstance(run_or_export, Predictor) else load_predictor(run_or_export)
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise EvaluationError(f"{folder} is not a folder.")
    layout = detect_layout(root)
    if layout.kind == "empty":
        raise EvaluationError(f"No images found in {folder}: expected one folder per class "
                              f"({', '.join(predictor.classes[:4])}…).")
    known = set(predictor.classes)
    scanned, problems = [], []
    for entry in iter_scan(root, layout):
        (scanned if isinstance(entry, ScanItem) else problems).append(entry)
    counts: dict[str, int] = {}
    for it in scanned:
        counts[it.label] = counts.get(it.label, 0) + 1
    folder_classes = class_names(layout)
    unknown = [{"folder": c, "n_images": counts.get(c, 0)} for c in folder_classes if c not in known]
    missing = [c for c in predictor.classes if counts.get(c, 0) == 0]
    todo = [it for it in scanned if it.label in known]
    if not todo:
        raise EvaluationError(f"None of the class folders in {folder} ({', '.join(folder_classes) or 'none'}) "
                              f"match the model's classes ({', '.join(predictor.classes)}).")

    def decode(it: ScanItem):
        try:
            return load_square(it.path, predictor.prep), ""
        except ImageError as err:
            return None, err.reason
        except OSError as err:
            return None, f"cannot read file ({err.strerror or err})"

    label_of = {c: k for k, c in enumerate(predictor.classes)}
    logits, targets, names, paths, bad = [], [], [], [], []
    with ThreadPoolExecutor(max(1, min(4, cpu_threads()))) as pool:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            good = []
            for it, (square, reason) in zip(chunk, pool.map(decode, chunk), strict=True):
                if square is None:
                    bad.append({"name": it.rel, "reason": reason})
                else:
                    good.append((it, square))
            if good:
                x = eval_batch(np.stack([sq for _, sq in good]), predictor.prep, predictor.plan.channels_last)
                logits.append(predictor.logits(x))
                targets += [label_of[it.label] for it, _ in good]
                names += [it.rel for it, _ in good]
                paths += [str(it.path) for it, _ in good]
            if on_progress:
                on_progress("evaluating", min(start + batch_size, len(todo)), len(todo))
    if not targets:
        raise EvaluationError(f"None of the {len(todo)} images in {folder} could be read (e.g. {bad[0]['name']}: "
                              f"{bad[0]['reason']}).")
    probs = torch.softmax(torch.cat(logits), 1)
    y = torch.tensor(targets, dtype=torch.long)
    result = evaluate_probs(probs, y, predictor.classes, names, "folder", paths)
    conf = probs.max(1).values
    thr = predictor.threshold
    answered = conf >= thr if thr is not None else torch.ones_like(conf, dtype=torch.bool)
    result.update({
        "source": str(root), "model": predictor.describe(), "classes": list(predictor.classes),
        "n_files_found": len(scanned), "n_unknown_class_images": sum(u["n_images"] for u in unknown),
        "unknown_classes": unknown, "missing_classes": missing, "bad_images": bad,
        "skipped_files": [{"name": p.rel, "reason": p.reason} for p in problems],
        "threshold": {"threshold": thr, "coverage": _r(answered.float().mean()),
                      "accuracy_answered": _r((probs.argmax(1) == y)[answered].float().mean())
                      if answered.any() else None},
        "notes": _folder_notes(unknown, missing, bad, problems),
    })
    return result


def _folder_notes(unknown: list[dict], missing: list[str], bad: list[dict], problems: list) -> list[str]:
    notes = []
    if unknown:
        notes.append("Not evaluated, the model does not know these classes: "
                     + ", ".join(f"{u['folder']} ({u['n_images']} images)" for u in unknown) + ".")
    if missing:
        notes.append("No images for: " + ", ".join(missing) + ".")
    if bad:
        notes.append(f"{len(bad)} images could not be read and were left out.")
    if problems:
        notes.append(f"{len(problems)} other files were ignored (not images, or outside class folders).")
    return notes


# --- learning curve from cached embeddings ----------------------------------------------------------------------

def learning_curve(run_dir: str | os.PathLike, fractions: Sequence[float] = LEARNING_FRACTIONS, repeats: int = 3,
                   seed: int = 0, on_progress: Progress | None = None) -> dict:
    """Validation accuracy of the quick linear head (on frozen pretrained embeddings, `core.quick`) trained on 10,
    25, 50 and 100 % of the training images of every class, with a plain-English reading that names the weakest
    classes. Also lists possible label errors among the training images, from cross-validated probabilities."""
    from core import zoo
    from core.device import plan_device
    from core.pipeline import _cache_key, prep_for
    from core.quick import FINAL_ITERS, cross_validate, embed, fit_linear

    run_dir = Path(run_dir)
    cfg = runs.load_config(run_dir)
    manifest = runs.load_dataset(run_dir)
    classes, items = list(manifest["classes"]), manifest["items"]
    spec = zoo.get_spec(cfg.backbone)
    if not zoo.has_weights(spec):
        return {"available": False, "reason": f"{cfg.backbone} has no pretrained weights on this machine, so "
                "there are no pretrained embeddings to measure the learning curve with."}
    prep = prep_for(spec, cfg.train.image_fit)
    paths = [it["path"] for it in items]
    cache = build_cache(paths, prep, (lambda d, t: on_progress("reading images", d, t)) if on_progress else None)
    plan = plan_device(cfg.train.device, cfg.train.precision)
    feats = embed(cfg.backbone, cache, range(len(cache)), plan, _cache_key(paths, prep),
                  (lambda d, t: on_progress("embedding", d, t)) if on_progress else None).float()
    label_of = {c: k for k, c in enumerate(classes)}
    y = torch.tensor([label_of[it["label"]] for it in items], dtype=torch.long)
    train_idx = [i for i, it in enumerate(items) if it["split"] == "train" and i not in cache.failed]
    val_idx = [i for i, it in enumerate(items) if it["split"] == "val" and i not in cache.failed]
    if not train_idx or not val_idx:
        return {"available": False, "reason": "The run needs readable training and validation images."}
    c = len(classes)
    xt, yt = feats[train_idx], y[train_idx]
    xv, yv = feats[val_idx], y[val_idx]
    torch.manual_seed(seed)
    l2, init = cross_validate(xt, yt, c, seed=seed)  # the subset fits start from its average solution
    fit = partial(fit_linear, init=init)
    by_class = {k: [p for p in range(len(train_idx)) if int(yt[p]) == k] for k in range(c)}
    points = []
    steps = sum(1 if f >= 1 else repeats for f in fractions)
    done = 0
    for f in sorted(fractions):
        accs, recalls, sizes = [], [], []
        for r in range(1 if f >= 1 else repeats):
            gen = torch.Generator().manual_seed(seed * 1000 + r)
            chosen: list[int] = []
            for members in by_class.values():
                if not members:
                    continue
                take = max(1, math.ceil(f * len(members)))
                perm = torch.randperm(len(members), generator=gen)[:take].tolist()
                chosen += [members[p] for p in perm]
            w, b = fit(xt[chosen], yt[chosen], c, l2=l2, iters=2 * FINAL_ITERS)
            pred = (xv @ w.T + b).argmax(1)
            accs.append(float((pred == yv).float().mean()))
            recalls.append(_tm().multiclass_recall(pred, yv, num_classes=c, average=None))
            sizes.append(len(chosen))
            done += 1
            if on_progress:
                on_progress("learning curve", done, steps)
        rec = torch.stack(recalls).mean(0)
        support = torch.bincount(yv, minlength=c)
        points.append({"fraction": f, "n_train": round(sum(sizes) / len(sizes)),
                       "images_per_class": {classes[k]: max(1, math.ceil(f * len(m))) if m else 0
                                            for k, m in by_class.items()},
                       "val_accuracy": _r(sum(accs) / len(accs)), "val_accuracy_min": _r(min(accs)),
                       "val_accuracy_max": _r(max(accs)),
                       "per_class_recall": {classes[k]: _r(rec[k]) if support[k] > 0 else None for k in range(c)}})
    oof = _cross_val_probs(xt, yt, c, l2, fit_linear, seed=seed)  # cold: `init` has seen every training image
    train_names = [items[i].get("name") or Path(items[i]["path"]).name for i in train_idx]
    issues = label_issues(oof, yt, classes, train_names, [items[i]["path"] for i in train_idx], limit=50)
    reading, weakest = read_learning_curve(points, len(val_idx))
    return {"available": True, "backbone": cfg.backbone, "l2": l2, "n_val": len(val_idx), "points": points,
            "reading": reading, "weakest_classes": weakest, "train_label_issues": issues,
            "method": "linear head on frozen pretrained embeddings (the quick model), fitted on a per-class "
                      "fraction of the training images; mean of "
                      f"{repeats} random subsets below 100 %"}


def _cross_val_probs(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, fit, folds: int = 5,
                     seed: int = 0) -> torch.Tensor:
    """Out-of-fold probabilities for every training image (each predicted by a head that never saw it)."""
    n = len(y)
    folds = max(2, min(folds, n))
    gen = torch.Generator().manual_seed(seed)
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[torch.randperm(n, generator=gen)] = torch.arange(n) % folds
    probs = torch.zeros(n, num_classes)
    for k in range(folds):
        tr, te = fold_of != k, fold_of == k
        if not te.any() or not tr.any():
            continue
        w, b = fit(x[tr], y[tr], num_classes, l2=l2, iters=100)
        probs[te] = torch.softmax(x[te] @ w.T + b, 1)
    return probs


def unchecked_sentence(classes: Sequence[str], split_word: str = "validation") -> str:
    """One sentence naming the classes that have no photos in a split, so nothing says how well they are
    recognised."""
    names = ", ".join(f"'{c}'" for c in classes)
    if len(classes) == 1:
        return f"Class {names} has no {split_word} photos, so it was not checked."
    return f"Classes {names} have no {split_word} photos, so they were not checked."


def read_learning_curve(points: Sequence[dict], n_val: int) -> tuple[str, list[dict]]:
    """A few plain sentences about a learning curve, and the weakest classes (lowest recall with all images)."""
    pts = sorted(points, key=lambda p: p["fraction"])
    full = pts[-1]
    acc = full["val_accuracy"] or 0.0
    per_class = {k: v for k, v in full["per_class_recall"].items() if v is not None}
    n_per_class = full["images_per_class"]
    sentences = [f"This curve comes from the quick model (a simpler classifier on the pretrained features, "
                 f"trained again on each share of the photos), so its scores differ from this run's. With all "
                 f"{full['n_train']} training images it gets {acc:.0%} of the {n_val} validation images right."]
    half = next((p for p in pts if abs(p["fraction"] - 0.5) < 1e-9), pts[-2] if len(pts) > 1 else None)
    if half is not None and half is not full:
        gain = acc - (half["val_accuracy"] or 0.0)
        if gain >= 0.03:
            sentences.append(f"Going from half to all of them added {gain * 100:.0f} points and the curve is still "
                             "rising, so more photos are likely to help.")
        elif gain > 0.01:
            sentences.append(f"Going from half to all of them added {gain * 100:.0f} points; more photos may help a "
                             "little.")
        else:
            sentences.append("Going from half to all of them changed little, so more photos of the same kind will "
                             "probably not help much; more varied photos or training more layers may.")
    weakest = sorted(({"class": k, "recall": v, "train_images": n_per_class.get(k, 0)} for k, v in per_class.items()),
                     key=lambda r: (r["recall"], r["class"]))
    weak = [w for w in weakest if w["recall"] < max(acc, 0.999)][:3]
    if weak:
        sentences.append("Its weakest classes: " + ", ".join(f"{w['class']} ({w['recall']:.0%} found, "
                                                          f"{w['train_images']} training images)" for w in weak)
                         + "; more and clearer photos of these would help most.")
    unchecked = [k for k, v in full["per_class_recall"].items() if v is None]
    if not weak and per_class:
        sentences.append("Every class with validation images is recognised on all of them." if unchecked
                         else "Every class is recognised on all its validation images.")
    if unchecked:
        sentences.append(unchecked_sentence(unchecked, "validation"))
    if n_val < 50:
        sentences.append(f"With only {n_val} validation images, differences of a few points are noise.")
    return " ".join(sentences), weak
