"""The detection run's self-contained HTML report: summary, data, model and frozen layers, training curves (loss
terms, mAP), results (mAP overall and per class, PR curve) and example detections next to the ground truth, worst
first. Same rules as `core.report`: nothing loads from outside the file; every user string is escaped; charts are
inline SVG and pictures inline base64 JPEG."""

from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path

from core import runs
from core.report import _CSS, _cards, _date, _e, _figure, _table, _warn, format_duration, line_chart
from core.storage import read_json, write_bytes_atomic
from core.tasks.detection.draw import comparison_image
from core.tasks.detection.metrics import match_image

REPORT_FILE = "report.html"
MAX_EXAMPLES = 8
THUMB = 320
_COLOURS = ("#2563eb", "#d97706", "#16a34a", "#9333ea", "#db2777", "#0d9488", "#64748b")


def _f(x: object, nd: int = 3) -> str:
    return "–" if not isinstance(x, int | float) else f"{x:.{nd}f}"


def _jpeg_uri(img, size: int = THUMB) -> str:
    img = img.copy()
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=78)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _history(run_dir: Path) -> list[dict]:
    return [e for e in runs.read_events(run_dir, ("epoch_ended",))]


def _training(run_dir: Path) -> str:
    hist = _history(run_dir)
    if not hist:
        return "<p>No finished epoch yet.</p>"
    epochs = [h["epoch"] for h in hist]
    terms = sorted({k for h in hist for k in (h.get("metrics") or {}) if k.startswith("loss")})
    loss_series = [{"name": "total loss", "colour": _COLOURS[0], "points": list(zip(epochs,
                                                                                      [h["train_loss"] for h in hist],
                                                                                      strict=True))}]
    for i, k in enumerate(terms, start=1):
        loss_series.append({"name": k.replace("_", " "), "colour": _COLOURS[i % len(_COLOURS)], "dash": True,
                            "points": [(h["epoch"], (h.get("metrics") or {}).get(k)) for h in hist]})
    map_series = [{"name": "val mAP@0.5", "colour": _COLOURS[0], "points": [(h["epoch"], h["val_accuracy"])
                                                                            for h in hist]},
                  {"name": "val mAP@0.5:0.95", "colour": _COLOURS[1],
                   "points": [(h["epoch"], (h.get("metrics") or {}).get("val_map")) for h in hist]}]
    return (_figure(line_chart(loss_series, x_label="epoch", y_label="loss", integer_x=True),
                    "Training loss and each of its terms per epoch.")
            + _figure(line_chart(map_series, x_label="epoch", y_label="mAP", y_range=(0, 1), integer_x=True),
                      "Validation mAP per epoch (the best epoch's weights are kept)."))


def _results(ev: dict | None) -> str:
    if not ev:
        return "<p>Not evaluated yet.</p>"
    cards = _cards([("mAP@0.5", _f(ev.get("map50"))), ("mAP@0.5:0.95", _f(ev.get("map"))),
                    ("validation images", str(ev.get("n_images", "–"))), ("boxes", str(ev.get("n_boxes", "–")))])
    rows = [[_e(r["class"]), _f(r.get("ap50")), _f(r.get("ap")), str(r.get("n_boxes", 0))]
            for r in ev.get("per_class", [])]
    table = _table(["class", "AP@0.5", "AP@0.5:0.95", "boxes"], rows, numeric=(1, 2, 3))
    curves = [{"name": c["class"][:40], "colour": _COLOURS[i % len(_COLOURS)],
               "points": list(zip(c["recall"], c["precision"], strict=True))}
              for i, c in enumerate(ev.get("pr_curve") or [])]
    pr = _figure(line_chart(curves, x_label="recall", y_label="precision", y_range=(0, 1)),
                 "Precision-recall curve at IoU 0.5 (how many found vs how many right, as the threshold drops).") \
        if curves else ""
    return cards + table + pr


def _examples(ev: dict | None, threshold: float = 0.5) -> str:
    if not ev or not ev.get("images"):
        return "<p>No examples.</p>"
    classes = ev.get("classes", [])
    rows = []
    for img in ev["images"]:
        m = match_image(img["pred"], img["gt"], threshold)
        rows.append((len(m["misses"]) + len(m["false_positives"]), img, m))
    rows.sort(key=lambda r: -r[0])
    cells = []
    for _errors, img, m in rows[:MAX_EXAMPLES]:
        try:
            pic = comparison_image(img["path"], img["gt"], img["pred"], m, classes, threshold)
        except Exception:  # noqa: BLE001 - a photo gone since training: skip it
            continue
        cells.append(f'<figure class="ex"><img src="{_jpeg_uri(pic)}" alt=""><figcaption>{_e(img["name"])}: '
                     f'{len(m["hits"])} found, {len(m["misses"])} missed, {len(m["false_positives"])} false'
                     "</figcaption></figure>")
    legend = ("<p class=\"small mute\">Blue: found (with the score); red dashed: missed object; orange: a box where "
              f"there is none. Score threshold {threshold:.2f}; the images with the most mistakes come first.</p>")
    return legend + '<div class="gallery">' + "".join(cells) + "</div>"


def _facts(run_dir: Path, status: dict, manifest: dict) -> str:
    """The line under the title, as the classification report has it: the run, when and on which photos it was
    trained, its state when not completed, and when the report was made (it said only "Run … · completed")."""
    from core.evaluate import dataset_words

    state = str(status.get("state") or "created")
    photos = dataset_words(manifest)
    if photos == "its dataset" and manifest.get("dataset"):  # a folder read directly: its path is kept beside
        photos = f"the folder {manifest['dataset']}"
    return (f"Run {_e(run_dir.name)} · trained {_date(status.get('created'))} on {_e(photos)}"
            + ("" if state == "completed" else f" · training <b>{_e(state)}</b>")
            + f" · report made {time.strftime('%Y-%m-%d %H:%M')}")


def build_report(run_dir: Path, notes: list[str] | None = None) -> str:
    """The report as one HTML document, from the run folder (and its evaluation.json)."""
    from core.run_table import seconds_trained
    from core.tasks.detection import MODEL_NOTE
    from core.tasks.detection.evaluate import load_evaluation

    cfg = runs.read_json_config(run_dir)
    manifest = runs.load_dataset(run_dir)
    status = runs.read_status(run_dir)
    best = read_json(run_dir / "checkpoints" / "best.json", {}) or {}
    ev = load_evaluation(run_dir)
    name = runs.display_name(run_dir)
    report = manifest.get("report") or {}
    body = [f"<h1>Object detection report: {_e(name)}</h1>",
            f"<p class=\"mute\">{_facts(run_dir, status, manifest)}</p>"]
    body += [_warn(_e(n)) for n in notes or []]
    body.append(f"<p class=\"lead\">Best validation mAP@0.5 {_f(best.get('val_map50'))} and mAP@0.5:0.95 "
                f"{_f(best.get('val_map'))} (epoch {_e(best.get('epoch', '–'))}), backbone {_e(cfg.get('backbone'))},"
                f" classes: {_e(', '.join(manifest.get('classes', [])))}.</p>")
    body.append("<h2>Data</h2>" + _cards([
        ("images", str(report.get("n_images", len(manifest.get("items", []))))),
        ("boxes", str(report.get("n_boxes", "–"))), ("images without boxes", str(report.get("n_negatives", "–"))),
        ("annotation format", _e(manifest.get("format", "–")))]))
    per_class = report.get("boxes_per_class") or {}
    if per_class:
        body.append(_table(["class", "boxes"], [[_e(k), str(v)] for k, v in per_class.items()], numeric=(1,)))
    problems = manifest.get("problems") or []
    if problems:
        shown = "".join(f"<li>{_e(p.get('message', ''))}</li>" for p in problems[:12])
        more = f"<li>… and {len(problems) - 12} more</li>" if len(problems) > 12 else ""
        body.append(f"<h3>Problems found in the data</h3><ul class=\"small\">{shown}{more}</ul>")
    tc = cfg.get("train", {})
    fz = cfg.get("freeze", {})
    body.append("<h2>Model and training</h2>"
                f"<p>{_e(MODEL_NOTE)}</p>"
                + _table(["setting", "value"], [[k, _e(v)] for k, v in (
                    ("detector", (manifest.get("detector") or {}).get("kind", "fasterrcnn")),
                    ("backbone", cfg.get("backbone")), ("frozen layers", fz.get("preset")),
                    ("epochs", tc.get("epochs")), ("batch size", tc.get("batch_size")),
                    ("optimizer", tc.get("optimizer")), ("learning rate", tc.get("lr") or "default"),
                    ("augmentations", ", ".join(tc.get("augment", [])) or "none"), ("seed", tc.get("seed")),
                    ("device", status.get("device", "?")),
                    ("time", format_duration(seconds_trained(run_dir, status))))]))  # a cancelled run's too
    body.append(_training(run_dir))
    body.append("<h2>Results on the validation images</h2>" + _results(ev))
    body.append("<h2>Example detections</h2>" + _examples(ev))
    body.append("<h2>How to use the model</h2><p>Export it in the app (6 · Runs & export, Export and share tab: "
                "safetensors + manifest, or ONNX; each "
                "is checked against PyTorch after writing), or from a terminal:</p>"
                f"<pre>transfer-studio export --run {_e(run_dir)} --format onnx --out model\n"
                f"transfer-studio predict --run {_e(run_dir)} photo.jpg --json</pre>")
    body.append(f"<footer>Made by Transfer Studio on {time.strftime('%Y-%m-%d %H:%M')}. This file is "
                "self-contained: it loads nothing from the internet.</footer>")
    css = _CSS + (".gallery{display:flex;flex-wrap:wrap;gap:10px}.ex{margin:0;max-width:330px}"
                  ".ex img{max-width:100%;border:1px solid #e2e8f0}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<title>{_e('Detection report: ' + name)}</title><style>{css}</style></head><body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Evaluate when the evaluation is missing or stale (and the run has weights), then write the report."""
    from core.tasks.detection.evaluate import evaluate_run, load_evaluation

    run_dir = Path(run_dir)
    runs.load_config(run_dir)
    notes = []
    if (run_dir / "checkpoints" / "best.safetensors").exists():
        ev = load_evaluation(run_dir)
        if ev is None or ev.get("stale"):
            try:
                evaluate_run(run_dir)
            except Exception as err:  # noqa: BLE001 - the report still shows training and data
                notes.append(f"The model could not be evaluated ({type(err).__name__}: {err}).")
    else:
        notes.append("This run has no saved weights yet.")
    path = Path(out) if out else run_dir / REPORT_FILE
    write_bytes_atomic(path, build_report(run_dir, notes).encode("utf-8"))
    return path
