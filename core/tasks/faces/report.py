"""The HTML report of a faces run, for people: what was enrolled, the threshold and its trade-off, evaluations.
Self-contained (inline SVG and images); it contains biometric data (face crops, names) and says so first."""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

from core import runs
from core.report import _CSS, line_chart
from core.storage import read_json, write_bytes_atomic
from core.tasks.faces import gallery as gal
from core.tasks.faces.data import cache_folder
from core.tasks.faces.embed import is_face_model
from core.tasks.faces.enrol import FaceCache
from core.tasks.faces.evaluate import load_evaluations
from core.tasks.faces.train import read_photos

BIOMETRIC_WARNING = ("This report contains biometric data: face crops and names of the enrolled people. Share it "
                     "only with people allowed to see them, and delete it when a person asks to be removed.")
MAX_CROPS_PER_PERSON = 4
MAX_MISTAKES = 24


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: object) -> str:
    return "—" if not isinstance(x, int | float) else f"{100 * x:.1f} %"


def _img_uri(img, size: int = 96) -> str:
    im = img.copy()
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cards(rows: list[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>'
                                           for k, v in rows) + "</div>"


def _enrolled(run_dir: Path, manifest: dict) -> str:
    photos = read_photos(run_dir)
    cache = FaceCache(cache_folder(manifest, run_dir))
    by_person: dict[str, list[dict]] = {}
    for p in photos:
        by_person.setdefault(p["label"], []).append(p)
    out = ["<h2>Enrolled people</h2>"]
    rows = []
    for person in sorted(by_person):
        ps = by_person[person]
        ok = [p for p in ps if p["status"] == "ok"]
        imgs = []
        for p in ok[:MAX_CROPS_PER_PERSON]:
            crop = cache.crop(p["key"])
            if crop is not None:
                imgs.append(f'<img src="{_img_uri(crop, 64)}" width="64" height="64" alt="">')
        rows.append(f"<tr><td>{_e(person)}</td><td class='n'>{len(ok)}</td><td class='n'>{len(ps) - len(ok)}</td>"
                    f"<td>{''.join(imgs)}</td></tr>")
    out.append("<table><tr><th>person</th><th class='n'>photos with a face</th><th class='n'>without</th>"
               "<th>aligned crops</th></tr>" + "".join(rows) + "</table>")
    problems = [p for p in photos if p["status"] != "ok" or p.get("n_faces", 0) > 1]
    if problems:
        out.append("<h3>Photos that needed attention</h3><ul>" + "".join(
            f"<li>{_e(p['label'])}/{_e(p['name'])}: {_e(p['note'])}</li>" for p in problems[:60]) + "</ul>")
    return "".join(out)


def _threshold(meta: dict) -> str:
    cal = meta.get("calibration") or {}
    roc = meta.get("roc") or []
    chart = line_chart([{"name": "named correctly", "colour": "#2563eb",
                         "points": [(r["far"], r["identification"]) for r in roc]}],
                       x_label="strangers accepted (FAR)", y_label="known photos named correctly", percent=True,
                       y_range=(0.0, 1.0), vlines=[(float(cal.get("achieved_far") or 0.0), "chosen")])
    return ("<h2>The 'unknown' threshold</h2>"
            f"<p>Chosen on the enrolment photos alone ({_e(cal.get('method', ''))}) for a false-accept rate of "
            f"{_e(cal.get('target_far'))}: a face is named when its similarity to a person reaches "
            f"<b>{_e(cal.get('threshold'))}</b>, else it is answered 'unknown'.</p>"
            + _cards([("held-back photos named correctly", _pct(cal.get("identification"))),
                      ("simulated strangers accepted", _pct(cal.get("achieved_far"))),
                      ("closed-set rank-1", _pct(cal.get("rank1"))),
                      ("verification threshold (pairs)", str(cal.get("verify_threshold")))])
            + (f'<p class="warn">{_e(cal["note"])}</p>' if cal.get("note") else "")
            + f"<figure>{chart}<figcaption>Open-set trade-off on the held-back photos: a higher threshold accepts "
              "fewer strangers and names fewer known photos.</figcaption></figure>")


def _evaluations(run_dir: Path) -> str:
    evals = load_evaluations(run_dir)
    if not evals:
        return ("<h2>Evaluation</h2><p class='mute'>Not evaluated on a labelled folder yet: "
                f"<code>transfer-studio evaluate --run {_e(run_dir)} --data FOLDER</code>.</p>")
    out = ["<h2>Evaluation on labelled folders</h2>"]
    for folder, res in evals.items():
        out.append(f"<h3>{_e(folder)}</h3>")
        out.append(_cards([("enrolled people named correctly", _pct(res.get("accuracy"))),
                           ("strangers answered 'unknown'", _pct(res.get("unknown_rejection"))),
                           ("TAR at FAR 1e-2", _pct(res.get("tar_at_far_1e-2"))),
                           ("TAR at FAR 1e-3", _pct(res.get("tar_at_far_1e-3"))),
                           ("photos", str(res.get("n_images"))),
                           ("strangers' photos", str(res.get("n_unknown_images")))]))
        if res.get("most_confused"):
            out.append("<table><tr><th>true</th><th>answered</th><th class='n'>times</th></tr>" + "".join(
                f"<tr><td>{_e(c['true'])}</td><td>{_e(c['predicted'])}</td><td class='n'>{c['count']}</td></tr>"
                for c in res["most_confused"]) + "</table>")
        mistakes = res.get("mistakes", [])[:MAX_MISTAKES]
        if mistakes:
            from core.report import thumbnail_data_uri

            cells = []
            for m in mistakes:
                uri = thumbnail_data_uri(m["path"])
                img = f'<img src="{uri}" alt="">' if uri else "<div class='mute'>(file gone)</div>"
                cells.append(f'<div class="ex">{img}<div class="nm">{_e(m["name"])}</div><div>true: {_e(m["truth"])}'
                             f'</div><div class="no">answered: {_e(m["predicted"])}</div><div>score '
                             f'{_e(m.get("score"))}</div></div>')
            out.append('<div class="gallery">' + "".join(cells) + "</div>")
    return "".join(out)


def build_report(run_dir: Path) -> str:
    cfg = runs.read_json_config(run_dir)
    manifest = runs.load_dataset(run_dir)
    status = runs.read_status(run_dir)
    g, meta = gal.load(run_dir)
    model = cfg.get("backbone", "")
    title = f"Face recognition — {runs.display_name(run_dir)}"
    how = ("a pretrained face model used frozen" if is_face_model(model)
           else "an ImageNet backbone fine-tuned with ArcFace")
    seconds = round(float(status.get("seconds") or 0), 1)
    body = [f"<h1>{_e(title)}</h1>", f'<p class="warn"><b>Biometric data.</b> {_e(BIOMETRIC_WARNING)}</p>',
            f'<p class="lead">{len(g.people)} people enrolled with <b>{_e(model)}</b> '
            f"({how}); gallery: {_e(gal.KINDS.get(g.kind, g.kind))}. Trained in {_e(seconds)} s "
            f"on {_e(status.get('device', '?'))}.</p>",
            _threshold(meta), _evaluations(run_dir), _enrolled(run_dir, manifest),
            "<h2>Privacy</h2><p>Everything stays on this computer. Deleting a person on the Data page removes their "
            "photos, crops and embeddings from the dataset and every gallery, and deletes this report.</p>",
            f"<footer>Transfer Studio · run {_e(run_dir.name)} · written {_e(time.strftime('%Y-%m-%d %H:%M'))}"
            "</footer>"]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='biometric-data' content='true'><style>{_CSS}</style></head><body><main>"
            + "".join(body) + "</main></body></html>")


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    run_dir = Path(run_dir)
    if read_json(run_dir / gal.META) is None:
        raise runs.RunError("This run has no face gallery yet: train it first.")
    path = Path(out) if out else run_dir / "report.html"
    write_bytes_atomic(path, build_report(run_dir).encode("utf-8"))
    return path
