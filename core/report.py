"""One self-contained HTML report per run, for people who do not program.

    <run>/report.html   summary, dataset (and its problems), model and frozen layers, training curves, metrics with
                        the split named, confusion matrix, correct and wrong example photos, calibration and the
                        "not sure" threshold, and how to use the exported model

The file opens offline in any browser and references nothing outside itself: no scripts, no web fonts, no links
that load anything. Charts are small inline SVG drawn here: plotly figures would need plotly.js (~4.6 MB) inlined
in every report, and static plotly images need kaleido, which is not a dependency. Example photos are inline
base64 JPEG thumbnails. Every user string (class, file, run and dataset names, paths, notes) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import io
import math
import os
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from core import runs
from core.storage import read_json, write_bytes_atomic

REPORT_FILE = "report.html"
THUMB_SIZE = 128
MAX_EXAMPLES = 8
MAX_MATRIX_CLASSES = 40
MAX_LISTED = 12
SPLIT_WORDS = {"val": "validation", "test": "test", "train": "training", "folder": "separate"}
# Where things are in the app, as its navigation and tabs name them (views/runs.py)
IN_APP_RESULTS = "in the app: <b>6 · Runs &amp; export</b>, <b>Results</b> tab"
IN_APP_EXPORT = "in the app: <b>6 · Runs &amp; export</b>, <b>Export and share</b> tab"
IN_APP_REPORT = f"{IN_APP_EXPORT}, <b>Make the HTML report</b>"

_BLUE, _GREY, _GREEN, _RED, _AMBER = "#2563eb", "#94a3b8", "#16a34a", "#dc2626", "#d97706"

_CSS = """
:root{--fg:#1e293b;--mute:#64748b;--line:#e2e8f0;--card:#f8fafc;--blue:#2563eb;--good:#16a34a;--bad:#dc2626}
*{box-sizing:border-box}
body{margin:0;background:#fff;color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main{max-width:1040px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 10px;padding-bottom:6px;
border-bottom:2px solid var(--line)}h3{font-size:16px;margin:20px 0 8px}
p{margin:6px 0 10px}.mute{color:var(--mute)}.small{font-size:13px}
.lead{font-size:18px;background:#eff6ff;border-left:4px solid var(--blue);padding:12px 16px;border-radius:4px}
.warn{background:#fffbeb;border-left:4px solid #d97706;padding:8px 12px;border-radius:4px;margin:8px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:140px}
.card b{display:block;font-size:22px}.card span{color:var(--mute);font-size:13px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:14px}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:var(--card);font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:600;border-top:2px solid var(--line)}
table.cm td{text-align:center;min-width:44px;border:1px solid #fff}
table.cm th.rot{writing-mode:vertical-rl;transform:rotate(180deg);max-height:160px;white-space:nowrap;
overflow:hidden;text-overflow:ellipsis}
.bar{height:10px;border-radius:2px;min-width:1px}
.tag{display:inline-block;font-size:12px;border-radius:10px;padding:0 8px;margin-right:6px;color:#fff}
.t-error{background:var(--bad)}.t-warning{background:#d97706}.t-info{background:var(--mute)}
.t-trains{background:var(--blue)}.t-frozen{background:#cbd5e1;color:#334155}
.figs{display:flex;flex-wrap:wrap;gap:18px}figure{margin:6px 0}
figcaption{font-size:13px;color:var(--mute);max-width:480px}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
.gallery{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0 16px}
.ex{width:146px;border:1px solid var(--line);border-radius:6px;padding:8px;font-size:12px;line-height:1.35}
.ex img{display:block;width:128px;height:128px;object-fit:cover;border-radius:3px;background:var(--card)}
.ex .nm{color:var(--mute);overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.ok{color:var(--good);font-weight:600}.no{color:var(--bad);font-weight:600}
pre{background:#0f172a;color:#e2e8f0;padding:12px 14px;border-radius:6px;overflow-x:auto;font-size:13px;
white-space:pre-wrap;word-break:break-all}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
ul{margin:4px 0 10px;padding-left:22px}li{margin:2px 0}
footer{margin-top:40px;color:var(--mute);font-size:12px;border-top:1px solid var(--line);padding-top:10px}
@media print{main{max-width:none}h2{break-after:avoid}.ex,figure,table{break-inside:avoid}}
"""


# --- small formatting helpers --------------------------------------------------------------------------------------

def _e(value: object) -> str:
    """HTML-escape anything (quotes too, so it is safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(x: object) -> float | None:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _pct(x: object, nd: int = 1) -> str:
    v = _num(x)
    return "–" if v is None else f"{v * 100:.{nd}f} %"


def _f(x: object, nd: int = 3) -> str:
    v = _num(x)
    return "–" if v is None else f"{v:.{nd}f}"


def _int(x: object) -> str:
    v = _num(x)
    return "–" if v is None else f"{int(v):,}"


def format_duration(seconds: object) -> str:
    """42 s · 3 min 5 s · 1 h 2 min ('–' when not a number)."""
    s = _num(seconds)
    if s is None:
        return "–"
    s = round(s)  # 119.6 s is "2 min 0 s", not "1 min 60 s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s // 60:.0f} min {s % 60:.0f} s"
    return f"{s // 3600:.0f} h {(s % 3600) // 60:.0f} min"


def _date(t: object) -> str:
    v = _num(t)
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(v)) if v is not None else "–"


def _split_word(split: str) -> str:
    return SPLIT_WORDS.get(split, split)


def _names(values: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(_e(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _cards(rows: Sequence[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(f"<div class=\"card\"><b>{v}</b><span>{k}</span></div>"
                                           for k, v in rows) + "</div>"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = (),
           total: Sequence[str] | None = None) -> str:
    """A table from already-escaped cells; `numeric` column indexes are right-aligned."""
    def cell(tag: str, i: int, v: str) -> str:
        return f'<{tag} class="n">{v}</{tag}>' if i in numeric else f"<{tag}>{v}</{tag}>"

    out = ["<table><thead><tr>", *(cell("th", i, h) for i, h in enumerate(head)), "</tr></thead><tbody>"]
    for row in rows:
        out += ["<tr>", *(cell("td", i, v) for i, v in enumerate(row)), "</tr>"]
    if total is not None:
        out += ['<tr class="total">', *(cell("td", i, v) for i, v in enumerate(total)), "</tr>"]
    out.append("</tbody></table>")
    return "".join(out)


def _warn(text: str) -> str:
    return f'<p class="warn">{text}</p>'


# --- inline SVG charts ---------------------------------------------------------------------------------------------

def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out, v = [], first
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def _tick_label(v: float, percent: bool) -> str:
    if percent:
        return f"{v * 100:.0f}%"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:g}"


def line_chart(series: Sequence[dict], *, x_label: str, y_label: str, y_range: tuple[float, float] | None = None,
               percent: bool = False, integer_x: bool = False, vlines: Sequence[tuple[float, str]] = (),
               width: int = 480, height: int = 270) -> str:
    """An inline SVG line chart. series: [{"name", "colour", "points": [(x, y)], "dash": bool}]; points with a
    missing or non-finite y are left out. vlines: (x, label) dashed markers (e.g. phase changes)."""
    clean = [{**s, "points": [(float(x), float(y)) for x, y in s["points"] if _num(y) is not None and _num(x)
                              is not None]} for s in series]
    xs = [x for s in clean for x, _ in s["points"]] + [x for x, _ in vlines]
    ys = [y for s in clean for _, y in s["points"]]
    if not xs or not ys:
        return '<p class="mute small">No data to draw.</p>'
    x0, x1 = min(xs), max(xs)
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y_range:
        y0, y1 = y_range
    else:
        y0, y1 = min(ys), max(ys)
        pad = (y1 - y0) * 0.08 or abs(y1) * 0.1 or 1.0
        y0, y1 = (max(0.0, y0 - pad) if y0 >= 0 else y0 - pad), y1 + pad
    left, right, top, bottom = 52, 14, 34, 40
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [f'<svg width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(y_label)} by {_e(x_label)}">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#cbd5e1"/>']
    for v in _ticks(y0, y1):
        if y0 - 1e-9 <= v <= y1 + 1e-9:
            parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#eef2f7"/>'
                         f'<text x="{left - 6}" y="{sy(v) + 4:.1f}" font-size="11" text-anchor="end" '
                         f'fill="#64748b">{_e(_tick_label(v, percent))}</text>')
    xt = _ticks(x0, x1, 6)
    if integer_x:
        xt = sorted({float(round(v)) for v in xt if abs(v - round(v)) < 1e-9 and x0 - 1e-9 <= v <= x1 + 1e-9}) or \
            [float(round((x0 + x1) / 2))]
    for v in xt:
        if x0 - 1e-9 <= v <= x1 + 1e-9:
            parts.append(f'<text x="{sx(v):.1f}" y="{top + ph + 15}" font-size="11" text-anchor="middle" '
                         f'fill="#64748b">{_e(_tick_label(v, False))}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 6}" font-size="12" text-anchor="middle" '
                 f'fill="#334155">{_e(x_label)}</text>'
                 f'<text x="13" y="{top + ph / 2:.1f}" font-size="12" text-anchor="middle" fill="#334155" '
                 f'transform="rotate(-90 13 {top + ph / 2:.1f})">{_e(y_label)}</text>')
    for x, label in vlines:
        parts.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{top + ph}" stroke="#64748b" '
                     f'stroke-dasharray="4 3"/><text x="{sx(x) + 4:.1f}" y="{top + 12}" font-size="10" '
                     f'fill="#475569">{_e(label)}</text>')
    for s in clean:
        pts = s["points"]
        dash = ' stroke-dasharray="6 4"' if s.get("dash") else ""
        if len(pts) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{s["colour"]}" stroke-width="2"{dash}/>')
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{s["colour"]}"/>' for x, y in pts]
    lx = left
    for s in clean:  # legend above the plot
        parts.append(f'<line x1="{lx}" x2="{lx + 18}" y1="14" y2="14" stroke="{s["colour"]}" stroke-width="3"/>'
                     f'<text x="{lx + 23}" y="18" font-size="12" fill="#334155">{_e(s["name"])}</text>')
        lx += 30 + 7 * len(str(s["name"]))
    parts.append("</svg>")
    return "".join(parts)


def reliability_chart(bins: Sequence[dict], size: int = 280) -> str:
    """Inline SVG reliability diagram: per confidence range, the share of right answers (bars) against the
    diagonal a perfectly calibrated model would follow; the number of photos is written on each bar."""
    left, right, top, bottom = 46, 20, 12, 40
    pw, ph = size - left - right, size - top - bottom

    def sx(x: float) -> float:
        return left + x * pw

    def sy(y: float) -> float:
        return top + (1 - y) * ph

    parts = [f'<svg width="{size}" height="{size}" viewBox="0 0 {size} {size}" '
             'role="img" aria-label="reliability diagram">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#cbd5e1"/>']
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#eef2f7"/>'
                     f'<text x="{left - 5}" y="{sy(v) + 4:.1f}" font-size="11" text-anchor="end" fill="#64748b">'
                     f'{v * 100:.0f}%</text><text x="{sx(v):.1f}" y="{top + ph + 14}" font-size="11" '
                     f'text-anchor="middle" fill="#64748b">{v * 100:.0f}%</text>')
    for b in bins:
        acc, lo, hi, count = _num(b.get("accuracy")), _num(b.get("lo")), _num(b.get("hi")), int(b.get("count") or 0)
        if acc is None or lo is None or hi is None or count == 0:
            continue
        x, w = sx(lo) + 1, max(1.0, (hi - lo) * pw - 2)
        parts.append(f'<rect x="{x:.1f}" y="{sy(acc):.1f}" width="{w:.1f}" height="{sy(0) - sy(acc):.1f}" '
                     f'fill="{_BLUE}" fill-opacity="0.75"/><text x="{x + w / 2:.1f}" '
                     f'y="{max(top + 10, sy(acc) - 3):.1f}" font-size="10" text-anchor="middle" fill="#1e293b">'
                     f'{count}</text>')
    parts.append(f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(1)}" y2="{sy(1)}" stroke="{_AMBER}" stroke-width="2" '
                 'stroke-dasharray="5 4"/>'
                 f'<text x="{left + pw / 2:.1f}" y="{size - 6}" font-size="12" text-anchor="middle" fill="#334155">'
                 'how sure the model was</text>'
                 f'<text x="12" y="{top + ph / 2:.1f}" font-size="12" text-anchor="middle" fill="#334155" '
                 f'transform="rotate(-90 12 {top + ph / 2:.1f})">share right</text></svg>')
    return "".join(parts)


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


# --- thumbnails ------------------------------------------------------------------------------------------------------

def thumbnail_data_uri(path: str | os.PathLike, size: int = THUMB_SIZE, quality: int = 75) -> str | None:
    """A small JPEG of an image file as a data: URI, or None when the file cannot be read as an image."""
    from PIL import Image

    from core.data.images import ImageError, load_rgb

    try:
        im = load_rgb(path)
        im.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality, optimize=True)
    except (ImageError, OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --- what the report is made from --------------------------------------------------------------------------------

def photos_gone(dataset: dict) -> bool:
    """True when none of the photos an evaluation of the run would measure (its validation and test photos, else
    all) are on this machine any more, e.g. its stored dataset was deleted: no evaluation can be made then."""
    items = list(dataset.get("items") or [])
    wanted = [it for it in items if it.get("split") != "train"] or items
    return bool(wanted) and not any(os.path.exists(str(it.get("path", ""))) for it in wanted)


def _photos_gone_note(dataset: dict) -> str:
    """The plain sentence (not yet escaped) for a run whose photos are gone."""
    from core.evaluate import dataset_words

    return (f"The photos this run was trained on ({dataset_words(dataset)}) are no longer on this machine, so this "
            "report has no evaluation: no results per class, confusion matrix, example photos or calibration. The "
            "trained model can still be tested and exported.")


def _failure_words(err: Exception) -> str:
    """Why an evaluation failed, for people: the message of the app's own errors (plain English already), the kind
    of error only for an unexpected one."""
    from core.evaluate import EvaluationError

    if isinstance(err, EvaluationError | runs.RunError) and str(err):
        return str(err)
    return f"an unexpected error ({type(err).__name__}: {err})"


class _Run:
    """Everything read from the run folder once (each part may be missing)."""

    def __init__(self, run_dir: Path) -> None:
        from core.evaluate import load_evaluation
        from core.progress import read_run

        self.dir = run_dir
        self.config = runs.read_json_config(run_dir)
        if not self.config:
            raise runs.RunError(f"{run_dir} is not a run folder (no readable config.json).")
        self.dataset = runs.load_dataset(run_dir)
        self.classes: list[str] = [str(c) for c in self.dataset.get("classes", [])]
        self.items: list[dict] = list(self.dataset.get("items", []))
        self.view = read_run(run_dir)
        self.status = self.view.status
        self.best = read_json(run_dir / "checkpoints" / "best.json", {}) or {}
        self.has_weights = (run_dir / "checkpoints" / "best.safetensors").exists()
        self.evaluation = load_evaluation(run_dir) if self.has_weights else None
        self.photos_gone = photos_gone(self.dataset)
        source = self.dataset.get("source") or {}
        data_name = source.get("name") or Path(str(source.get("path") or self.config.get("dataset") or "")).name
        self.name = runs.display_name(run_dir, fallback="") or " on ".join(
            str(v) for v in (self.config.get("backbone"), data_name) if v) or run_dir.name
        self.train_cfg: dict = dict(self.config.get("train") or {})
        self.freeze_cfg: dict = dict(self.config.get("freeze") or {})
        self.ended = next((e for e in reversed(runs.read_events(run_dir, ("fit_ended",)))), None)

    @property
    def training_seconds(self) -> float | None:
        """Time spent training over all the run's sessions (a stopped and resumed run counts both; the status holds
        the last session's only)."""
        return self.view.seconds or self.status.get("seconds") or (self.ended or {}).get("seconds")

    @property
    def primary(self) -> dict | None:
        ev = self.evaluation
        if not ev or not ev.get("splits"):
            return None
        return ev["splits"].get(ev.get("primary_split", "val")) or next(iter(ev["splits"].values()))

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> class -> number of images in the run's manifest."""
        out: dict[str, dict[str, int]] = {}
        for it in self.items:
            split = out.setdefault(str(it.get("split")), {})
            split[str(it.get("label"))] = split.get(str(it.get("label")), 0) + 1
        return out


# --- sections --------------------------------------------------------------------------------------------------------

def _header(r: _Run) -> str:
    created = _date(r.status.get("created"))
    state = str(r.status.get("state") or "created")
    badge = "" if state == "completed" else f' · training <b>{_e(state)}</b>'
    return (f"<header><h1>Model report: {_e(r.name)}</h1>"
            f'<p class="mute">Run {_e(r.dir.name)} · trained {created}{badge} · report made '
            f"{time.strftime('%Y-%m-%d %H:%M')}</p></header>")


def _summary(r: _Run) -> str:
    n = len(r.classes)
    block = r.primary
    ev = r.evaluation
    out = ["<section><h2>Summary</h2>"]
    if block and block.get("accuracy") is not None:
        split = str(block.get("split", "val"))
        out.append(f'<p class="lead">This model recognises <b>{n} classes</b> ({_names(r.classes)}) with '
                   f"<b>{_pct(block['accuracy'])}</b> accuracy on <b>{_int(block.get('n_images'))} "
                   f"{_e(_split_word(split))} photos</b> it did not train on.</p>")
        sentences = []
        bal = _num(block.get("balanced_accuracy"))
        if bal is not None:
            sentences.append(f"Counting every class equally (balanced accuracy) it is right on {_pct(bal)}.")
        confused = block.get("most_confused") or []
        if confused:
            c = confused[0]
            sentences.append(f"Its most common mistake is taking <b>{_e(c['true'])}</b> for <b>{_e(c['predicted'])}"
                             f"</b> ({c['count']} of the {_e(_split_word(split))} photos).")
        else:
            sentences.append(f"It made no mistakes on the {_e(_split_word(split))} photos.")
        th = (ev or {}).get("unknown_threshold") or {}
        if _num(th.get("threshold")):
            sentences.append(f"When it is less than {_pct(th['threshold'], 0)} sure it answers \"not sure\"; "
                             f"that leaves {_pct(th.get('coverage'), 0)} of the photos answered, "
                             f"{_pct(th.get('accuracy'))} of them correctly.")
        out.append("<p>" + " ".join(sentences) + "</p>")
        if ev and ev.get("stale") and r.photos_gone:
            out.append(_warn("The model's weights changed after these numbers were measured, and its photos are no "
                             "longer on this machine, so they cannot be measured again."))
        elif ev and ev.get("stale"):
            out.append(_warn("The model's weights changed after these numbers were measured; make the report again "
                             f"({IN_APP_REPORT}) to update them."))
    elif _num(r.best.get("val_accuracy")) is not None:
        n_val = sum(1 for it in r.items if it.get("split") == "val")
        out.append(f'<p class="lead">This model recognises <b>{n} classes</b> ({_names(r.classes)}) with '
                   f"<b>{_pct(r.best['val_accuracy'])}</b> accuracy on <b>{n_val} validation photos</b> "
                   "(measured during training).</p>")
        if not r.photos_gone:  # when they are gone, the note at the top says why there is no evaluation
            out.append(_warn("The detailed evaluation (per-class results, confusion matrix, calibration) is not in "
                             f"this report; making the report again ({IN_APP_REPORT}) computes it first."))
    else:
        out.append(f'<p class="lead">This run has {n} classes ({_names(r.classes)}) but no trained model yet '
                   f"(training is {_e(r.status.get('state', 'not started'))}).</p>")
    s = r.status
    started = r.view.started or {}
    out.append(_cards([
        ("accuracy" + (f" ({_e(_split_word(str(block.get('split'))))})" if block else ""),
         _pct(block.get("accuracy")) if block else _pct(r.best.get("val_accuracy"))),
        ("balanced accuracy", _pct(block.get("balanced_accuracy")) if block else "–"),
        ("macro F1", _f(block.get("macro_f1")) if block else "–"),
        ("backbone", _e(r.config.get("backbone", "?"))),
        ("training time", format_duration(r.training_seconds)
         + f" on {_e(started.get('device') or s.get('device') or '?')}"),
    ]))
    message = s.get("message")
    if s.get("state") in ("failed", "crashed", "stopped") and message:
        out.append(_warn(f"Training {_e(s['state'])}: {_e(message)}"))
    out.append("</section>")
    return "".join(out)


def _store_problems(dataset_id: str) -> tuple[str, list[tuple[str, str]]]:
    """(dataset name, [(severity, message)]) from the stored dataset's validation report, as it is now."""
    from core.data.store import dataset_report, load_dataset

    ds = load_dataset(dataset_id)
    try:
        problems = [(p.severity, p.message) for p in dataset_report(ds).problems]
    except Exception:  # noqa: BLE001 - fall back to the stored digest
        rep = ds.report or {}
        problems = [("warning", f"{n} × {kind.replace('_', ' ')}") for kind, n in (rep.get("by_kind") or {}).items()]
    problems += [(p.severity, p.message) for p in ds.notes if (p.severity, p.message) not in problems]
    return ds.name, problems


def _dataset(r: _Run) -> str:
    out = ["<section><h2>Dataset</h2>"]
    source = r.dataset.get("source") or {}
    problems: list[tuple[str, str]] = []
    if source.get("kind") == "store":
        try:
            name, problems = _store_problems(str(source.get("id")))
            out.append(f"<p>Stored dataset <b>{_e(name)}</b>. The problems below are from its validation report as "
                       "the dataset is now.</p>")
        except Exception as err:  # noqa: BLE001 - a deleted dataset: the run's own manifest still tells a lot
            reason = str(getattr(err, "reason", err))
            state = ("deleted since this run was trained" if reason == "no such dataset"
                     else f"cannot be read now: {_e(reason)}")
            out.append(f"<p>Stored dataset <b>{_e(source.get('name') or source.get('id'))}</b> ({state}). The "
                       "counts below are from the run's own record of its photos.</p>")
    elif source.get("kind") == "folder":
        out.append(f"<p>Photos read from the folder <code>{_e(source.get('path'))}</code>.</p>")
        problems = [("info", str(n)) for n in r.dataset.get("notes") or []]
    counts = r.counts()
    splits = [s for s in ("train", "val", "test") if s in counts] + sorted(set(counts) - {"train", "val", "test"})
    rows, totals = [], [0] * len(splits)
    for c in r.classes:
        row = [_e(c)]
        for k, sp in enumerate(splits):
            row.append(_int(counts[sp].get(c, 0)))
            totals[k] += counts[sp].get(c, 0)
        row.append(_int(sum(counts[sp].get(c, 0) for sp in splits)))
        rows.append(row)
    head = ["class", *(f"{_e(_split_word(s))} photos" for s in splits), "total"]
    out.append(f"<p>{len(r.classes)} classes, {len(r.items):,} photos. Training photos teach the model; validation "
               "photos are kept apart to measure it fairly.</p>")
    out.append(_table(head, rows, numeric=range(1, len(splits) + 2),
                      total=["total", *(_int(t) for t in totals), _int(sum(totals))]))
    train = counts.get("train", {})
    found = [(sev, _e(msg)) for sev, msg in problems]
    if train:
        most, least = max(train.values()), min(train.get(c, 0) for c in r.classes)
        if least and most / least >= 3:
            small = [c for c in r.classes if train.get(c, 0) * 3 <= most]
            found.append(("warning", f"Unbalanced classes: {_names(small)} "
                          f"{'has' if len(small) == 1 else 'have'} at most a third as many training photos as the "
                          "largest class; the model may favour the large classes."))
        few = [c for c in r.classes if train.get(c, 0) < 10]
        if few:
            found.append(("warning", f"Fewer than 10 training photos: {_names(few)}."))
    n_val = sum(counts.get("val", {}).values())
    if 0 < n_val < 50:
        found.append(("info", f"Only {n_val} validation photos: differences of a few percent are noise."))
    for split, block in ((r.evaluation or {}).get("splits") or {}).items():
        skipped = block.get("skipped") or []
        if skipped:
            found.append(("warning", f"{len(skipped)} {_e(_split_word(split))} photos could not be read and were "
                          f"left out of the evaluation (e.g. {_e(skipped[0].get('name'))}: "
                          f"{_e(skipped[0].get('reason'))})."))
    out.append("<h3>Problems found</h3>")
    if found:
        order = {"error": 0, "warning": 1, "info": 2}
        found.sort(key=lambda p: order.get(p[0], 3))
        items = [f'<li><span class="tag t-{_e(sev if sev in order else "info")}">{_e(sev)}</span>{msg}</li>'
                 for sev, msg in found[:MAX_LISTED]]
        more = f"<li class=\"mute\">and {len(found) - MAX_LISTED} more</li>" if len(found) > MAX_LISTED else ""
        out.append("<ul>" + "".join(items) + more + "</ul>")
    else:
        out.append("<p>No problems were found.</p>")
    out.append("</section>")
    return "".join(out)


def _model(r: _Run) -> str:
    from core import zoo
    from core.config import PRESET_HELP, FreezeConfig
    from core.freeze import layer_groups, plan_phases, trainable_counts
    from core.tasks import get_task

    backbone = str(r.config.get("backbone", ""))
    out = ["<section><h2>Model and frozen layers</h2>"]
    try:
        spec = zoo.get_spec(backbone)
        facts = [f"<b>{_e(spec.title)}</b> (<code>{_e(backbone)}</code>, architecture {_e(spec.arch)})",
                 f"input {spec.input_size}×{spec.input_size} px"]
        if spec.top1:
            facts.append(f"ImageNet top-1 {_e(spec.top1)} %")
        if spec.licence:
            facts.append(f"licence {_e(spec.licence)}")
        out.append("<p>" + ", ".join(facts) + ".</p>")
    except Exception:  # noqa: BLE001 - e.g. user weights removed since: still describe what we know
        out.append(f"<p><code>{_e(backbone)}</code></p>")
    if r.config.get("quick"):
        out.append("<p>Quick model: a linear head fitted on the frozen backbone's features.</p>")
    start = ("started from weights pretrained on ImageNet (transfer learning)" if r.config.get("pretrained", True)
             else "started from random weights (trained from scratch, no transfer)")
    preset = str(r.freeze_cfg.get("preset", "head"))
    help_text = PRESET_HELP.get("last-N" if preset.startswith("last-") else preset, "")
    out.append(f"<p>The model {start}. Freeze choice: <b>{_e(preset)}</b>: {_e(help_text)}</p>")
    fc = FreezeConfig.from_dict(r.freeze_cfg).for_weights(bool(r.config.get("pretrained", True)))
    epochs = int(r.train_cfg.get("epochs") or 1)
    model = get_task(str(r.config.get("task", "classification"))).build_model(backbone, len(r.classes),
                                                                            pretrained=False)
    groups = layer_groups(model)
    phases = plan_phases(groups, fc, epochs)
    del model
    biggest = max((g.n_params for g in groups), default=1) or 1
    head = ["layer group (input → output)", "parameters", ""]
    head += [f"phase {k + 1}: {_e(ph.label)} (from epoch {ph.start_epoch + 1})" if len(phases) > 1 else "training"
             for k, ph in enumerate(phases)]
    rows = []
    for g in groups:
        trains_last = phases[-1].trainable[g.index]
        bar = (f'<div class="bar" style="width:{max(1, round(120 * g.n_params / biggest))}px;'
               f'background:{_BLUE if trains_last else "#cbd5e1"}"></div>')
        cells = [_e(g.name), _int(g.n_params), bar]
        for ph in phases:
            if ph.trainable[g.index]:
                mult = ph.lr_mult[g.index]
                extra = f" lr ×{mult:.3g}" if abs(mult - 1) > 1e-9 else ""
                cells.append(f'<span class="tag t-trains">trains</span><span class="small">{extra}</span>')
            else:
                cells.append('<span class="tag t-frozen">frozen</span>')
        rows.append(cells)
    total = ["total", _int(sum(g.n_params for g in groups)), ""]
    for ph in phases:
        tr, fr = trainable_counts(groups, ph)
        total.append(f"{tr:,} train, {fr:,} frozen")
    out.append(_table(head, rows, numeric=(1,), total=total))
    if not fc.train_bn:
        out.append('<p class="small mute">BatchNorm statistics of frozen groups stay as pretrained.</p>')
    out.append("</section>")
    return "".join(out)


def _training(r: _Run) -> str:
    from core.config import AUGMENTATIONS

    v = r.view
    tc = r.train_cfg
    started = v.started or {}
    out = ["<section><h2>Training</h2>"]
    augment = tc.get("augment") or []
    settings = [
        ("epochs", f"{len(v.history)} done of {_int(tc.get('epochs'))} planned"),
        ("batch size", _int(started.get("batch_size") or tc.get("batch_size"))),
        ("learning rate", _e(f"{started['lr']:.3g}" if _num(started.get("lr")) else (tc.get("lr") or "default"))),
        ("optimizer", _e(tc.get("optimizer") or "sgd")),
        ("augmentation", _e(", ".join(str(a) for a in augment) or "none")
         + (f' <span class="mute small">({_e(" ".join(AUGMENTATIONS.get(a, "") for a in augment))})</span>'
            if augment else "")),
        ("label smoothing", _e(tc.get("label_smoothing", "–"))),
        ("weight decay", _e(tc.get("weight_decay", "–"))),
        ("class weights", "yes" if tc.get("class_weights") else "no"),
        ("seed", _e(tc.get("seed", "–"))),
        ("device", _e(f"{started.get('device', '–')} ({started.get('precision', '–')})")),
        ("time", format_duration(r.training_seconds)),
    ]
    if r.config.get("quick"):  # one fit of a linear head on cached features: no epochs, batches, LR or augmentation
        settings = [("training", "a linear head fitted on the frozen backbone's features of the training photos "
                                 "(the quick model: no epochs, batches or augmentation)"), *settings[-3:]]
    if r.config.get("task", "classification") == "classification":
        fit = tc.get("image_fit", "crop")
        settings.insert(6, ("photos made square by", _e({"crop": "cropping the centre",
                                                          "squash": "stretching the whole photo",
                                                          "pad": "adding borders to the whole photo",
                                                          "auto": "chosen from the photos when training starts"}
                                                         .get(fit, fit))))
        if "crop" in augment and not r.config.get("quick"):
            share = tc.get("crop_min_area", 0.25)
            kept = f"{share * 100:g}–100 % of the photo" if _num(share) else share
            settings.insert(6, ("random crops keep", _e(kept)))
    if started.get("n_train") is not None:
        settings.insert(0, ("photos", f"{_int(started.get('n_train'))} training, {_int(started.get('n_val'))} "
                                      "validation"))
    out.append(_table(["setting", "value"], [[k, val] for k, val in settings]))
    hist = sorted(v.history, key=lambda h: h.get("epoch", 0))
    if not hist:
        out.append("<p>No epoch has finished yet, so there are no training curves.</p></section>")
        return "".join(out)
    marks = [(p["epoch"] + 0.5, str(p.get("label", ""))) for p in v.phases[1:]]

    def series(metric: str) -> list[dict]:
        return [{"name": f"training {metric}", "colour": _GREY,
                 "points": [(h["epoch"], h.get(f"train_{metric}")) for h in hist]},
                {"name": f"validation {metric}", "colour": _BLUE,
                 "points": [(h["epoch"], h.get(f"val_{metric}")) for h in hist]}]

    loss_svg = line_chart(series("loss"), x_label="epoch", y_label="loss", integer_x=True, vlines=marks)
    acc_svg = line_chart(series("accuracy"), x_label="epoch", y_label="accuracy", y_range=(0, 1.0), percent=True,
                         integer_x=True, vlines=marks)
    out.append('<div class="figs">'
               + _figure(loss_svg, "Loss per epoch (lower is better). Training loss is measured on augmented photos "
                                   "while the model changes, so it can sit above validation loss.")
               + _figure(acc_svg, "Accuracy per epoch. A validation curve that falls while training keeps rising "
                                  "means the model starts memorising its training photos.")
               + "</div>")
    if v.phases:
        items = [f"<li>From epoch {p['epoch'] + 1}: <b>{_e(p.get('label'))}</b> ({_int(p.get('trainable_params'))} "
                 f"parameters train, {_int(p.get('frozen_params'))} frozen)</li>" for p in v.phases]
        out.append("<h3>Phases</h3><ul>" + "".join(items) + "</ul>")
    best_epoch = r.best.get("epoch")
    rows = [[str(h["epoch"]) + (" ★" if h["epoch"] == best_epoch else ""), _f(h.get("train_loss")),
             _pct(h.get("train_accuracy")), _f(h.get("val_loss")), _pct(h.get("val_accuracy")),
             _e(f"{h['lr']:.3g}" if _num(h.get("lr")) is not None else "–"), format_duration(h.get("seconds"))]
            for h in hist]
    out.append(_table(["epoch", "training loss", "training accuracy", "validation loss", "validation accuracy",
                       "learning rate", "time"], rows, numeric=range(1, 7)))
    if best_epoch is not None:
        out.append(f"<p>The saved model is the one from epoch {_e(best_epoch)} ★, the epoch with the best "
                   f"validation accuracy ({_pct(r.best.get('val_accuracy'))}).</p>")
    notices = [n for n in v.notices if n.get("message") or n.get("reason")]
    if notices:
        out.append("<h3>Notes from training</h3><ul>" + "".join(
            f"<li>{_e(n.get('message') or n.get('reason'))}</li>" for n in notices[:MAX_LISTED]) + "</ul>")
    out.append("</section>")
    return "".join(out)


def _confusion(block: dict, classes: list[str]) -> str:
    cm = block.get("confusion_matrix") or []
    if not cm or len(classes) > MAX_MATRIX_CLASSES:
        return ""
    head = "".join(f'<th class="rot" title="{_e(c)}">{_e(c)}</th>' for c in classes)
    rows = []
    for i, row in enumerate(cm):
        total = sum(row) or 1
        cells = []
        for j, count in enumerate(row):
            share = count / total
            if count == 0:
                style = "color:#cbd5e1"
            elif i == j:
                style = f"background:rgba(22,163,74,{0.12 + 0.6 * share:.2f})"
            else:
                style = f"background:rgba(220,38,38,{0.12 + 0.6 * share:.2f})"
            cells.append(f'<td style="{style}" title="{count} of {sum(row)}">{count}</td>')
        rows.append(f'<tr><th title="{_e(classes[i])}">{_e(classes[i])}</th>{"".join(cells)}</tr>')
    return ("<h3>Confusion matrix</h3><p class=\"small mute\">Rows: the true class. Columns: what the model said. "
            "The diagonal (green) counts correct answers; every other number is a mistake.</p>"
            f'<table class="cm"><thead><tr><th>true ↓ / said →</th>{head}</tr></thead><tbody>{"".join(rows)}'
            "</tbody></table>")


def _metrics(r: _Run) -> str:
    ev = r.evaluation
    out = ["<section><h2>Results</h2>"]
    if not ev or not ev.get("splits"):
        gone = r.has_weights and r.photos_gone
        out.append("<p>This report has no evaluation: the photos this run was trained on are no longer on this "
                   "machine.</p>" if gone else "<p>The model has not been evaluated yet.</p>")
        return "".join(out) + "</section>"
    primary = ev.get("primary_split", "val")
    order = [primary] + [s for s in ev["splits"] if s != primary]
    out.append('<p class="small mute">Accuracy: the share of photos classified correctly. Balanced accuracy: the '
               "average over classes of the share of each class found, so small classes count as much as large ones. "
               "Macro F1: the average over classes of F1, which is low when a class is often missed or often "
               "wrongly given.</p>")
    for split in order:
        block = ev["splits"][split]
        word = _split_word(split)
        out.append(f"<h3>On the {_e(word)} photos ({_int(block.get('n_images'))} photos)</h3>")
        out.append(_cards([(f"accuracy ({_e(word)})", _pct(block.get("accuracy"))),
                           (f"balanced accuracy ({_e(word)})", _pct(block.get("balanced_accuracy"))),
                           (f"macro F1 ({_e(word)})", _f(block.get("macro_f1"))),
                           (f"average loss ({_e(word)})", _f(block.get("loss")))]))
        rows = [[_e(pc.get("class")), _int(pc.get("support")), _pct(pc.get("recall")), _pct(pc.get("precision")),
                 _f(pc.get("f1"))] for pc in block.get("per_class") or []]
        out.append(_table(["class", "photos", "found (recall)", "right when it says so (precision)", "F1"], rows,
                          numeric=(1, 2, 3, 4)))
        if split == primary:
            out.append(_confusion(block, r.classes))
            confused = block.get("most_confused") or []
            if confused:
                out.append("<h3>Most common mistakes</h3><ul>" + "".join(
                    f"<li><b>{_e(c['true'])}</b> taken for <b>{_e(c['predicted'])}</b>: {c['count']} photos "
                    f"({_pct(c.get('share'), 0)} of {_e(c['true'])})</li>" for c in confused[:5]) + "</ul>")
            issues = block.get("label_issues") or []
            if issues:
                out.append("<h3>Photos whose label may be wrong</h3><ul>" + "".join(
                    f"<li><code>{_e(i.get('name'))}</code>: labelled <b>{_e(i.get('label'))}</b>, looks like "
                    f"<b>{_e(i.get('suggested'))}</b> ({_e(i.get('reason'))})</li>" for i in issues[:5]) + "</ul>")
    lc = ev.get("learning_curve") or {}
    if lc.get("available"):
        pts = lc.get("points") or []
        svg = line_chart([{"name": "validation accuracy (quick model)", "colour": _BLUE,
                           "points": [(p["n_train"], p.get("val_accuracy")) for p in pts]}],
                         x_label="training photos used", y_label="accuracy", y_range=(0, 1.0), percent=True)
        out.append("<h3>Would more photos help?</h3><p>" + _e(lc.get("reading")) + "</p>"
                   + _figure(svg, "Accuracy of a quick linear model on the frozen backbone, trained on 10 %, 25 %, "
                                  "50 % and all of the training photos."))
    out.append("</section>")
    return "".join(out)


def _examples(r: _Run, max_examples: int, thumb_size: int) -> str:
    from core.evaluate import load_predictions

    ev = r.evaluation
    if not ev or not ev.get("splits"):
        return ""
    split = ev.get("primary_split", "val")
    preds = load_predictions(r.dir, split) or {}
    listed = {str(it.get("path")) for it in r.items}  # only files of the run's own dataset are ever read
    items = [it for it in preds.get("items") or [] if str(it.get("path")) in listed]
    wrong = sorted((it for it in items if it.get("label") != it.get("predicted")),
                   key=lambda it: -(_num(it.get("confidence")) or 0))
    right_by_class: dict[str, list[dict]] = {}
    for it in sorted((it for it in items if it.get("label") == it.get("predicted")),
                     key=lambda it: -(_num(it.get("confidence")) or 0)):
        right_by_class.setdefault(str(it.get("label")), []).append(it)
    right: list[dict] = []
    while any(right_by_class.values()):  # round robin over classes, most confident first
        for c in r.classes:
            if right_by_class.get(c):
                right.append(right_by_class[c].pop(0))
    word = _split_word(split)

    def gallery(candidates: list[dict], correct: bool) -> tuple[str, int]:
        cards = []
        for it in candidates:
            if len(cards) >= max_examples:
                break
            uri = thumbnail_data_uri(it["path"], thumb_size)
            if uri is None:
                continue
            said = (f'<span class="ok">✓ {_e(it.get("predicted"))}</span>' if correct
                    else f'<span class="no">✗ said {_e(it.get("predicted"))}</span>')
            cards.append(f'<div class="ex"><img src="{uri}" alt="{_e(it.get("name"))}" width="{thumb_size}" '
                         f'height="{thumb_size}">{said} ({_pct(it.get("confidence"), 0)} sure)<br>'
                         f'true: <b>{_e(it.get("label"))}</b><div class="nm" title="{_e(it.get("name"))}">'
                         f'{_e(it.get("name"))}</div></div>')
        return '<div class="gallery">' + "".join(cards) + "</div>", len(cards)

    out = ["<section><h2>Examples</h2>"]
    if wrong:
        g, shown = gallery(wrong, False)
        out.append(f"<h3>Wrong answers ({len(wrong)} of {len(items)} {_e(word)} photos; the most confident mistakes "
                   "first)</h3>" + (g if shown else '<p class="mute">None of these photos could be read.</p>'))
    else:
        out.append(f"<p>No wrong answers on the {len(items)} {_e(word)} photos.</p>")
    if right:
        g, shown = gallery(right, True)
        out.append("<h3>Correct answers (a few per class)</h3>"
                   + (g if shown else '<p class="mute">None of these photos could be read.</p>'))
    out.append("</section>")
    return "".join(out)


def _calibration(r: _Run) -> str:
    ev = r.evaluation
    block = r.primary
    if not ev or not block:
        return ""
    cal = block.get("calibration") or {}
    word = _split_word(str(block.get("split", "val")))
    out = ["<section><h2>Can its confidence be trusted?</h2>"]
    ece = _num(cal.get("ece"))
    if ece is not None:
        conf, acc = _num(cal.get("mean_confidence")), _num(cal.get("accuracy"))
        if ece <= 0.05:
            verdict = "well calibrated: its confidence can be taken roughly at face value"
        elif conf is not None and acc is not None and conf > acc:
            verdict = "over-confident: it is right less often than it claims"
        else:
            verdict = "under-confident: it is right more often than it claims"
        out.append(f"<p>On the {_e(word)} photos the model is on average {_pct(conf)} sure and right on {_pct(acc)} of "
                   f"them. Expected calibration error (ECE): <b>{_f(ece)}</b> (0 = perfect; below about 0.05 is good), "
                   f"so it is {verdict}. Largest gap in one confidence range (MCE): {_f(cal.get('mce'))}.</p>")
        bins = [b for b in cal.get("bins") or [] if b.get("count")]
        rows = [[f"{_pct(b['lo'], 0)}–{_pct(b['hi'], 0)}", _int(b["count"]), _pct(b.get("confidence")),
                 _pct(b.get("accuracy"))] for b in bins]
        out.append('<div class="figs">' + _figure(reliability_chart(cal.get("bins") or []),
                                                  "Bars: the share of right answers in each confidence range "
                                                  "(number of photos on top). Dashed line: a perfectly calibrated "
                                                  "model. Bars below the line mean over-confidence.")
                   + "<div>" + _table(["model was this sure", "photos", "average confidence", "share right"], rows,
                                      numeric=(1, 2, 3)) + "</div></div>")
    th = ev.get("unknown_threshold") or {}
    out.append('<h3>The "not sure" threshold</h3>')
    if not th:
        out.append("<p>No threshold has been chosen.</p>")
    elif th.get("threshold") is None:
        out.append(f"<p>Not in use: the model always answers. {_reason(th)}</p>")
    else:
        who = "chosen by you" if th.get("chosen_by") == "user" else f"chosen on the {_e(word)} photos"
        out.append(f"<p>The model answers \"not sure\" when its top probability is below <b>{_pct(th['threshold'])}"
                   f"</b> ({who}). {_reason(th)}</p>")
        if th.get("chosen_by") != "user":
            out.append(_cards([("threshold", _pct(th["threshold"])), ("photos answered", _pct(th.get("coverage"))),
                               ("right among answered", _pct(th.get("accuracy")))]))
    out.append("</section>")
    return "".join(out)


def _reason(th: dict) -> str:
    """The threshold's reason as HTML; the place in the app it names is named as the app's navigation shows it."""
    return _e(th.get("reason")).replace("(Runs page → Results)", f"({IN_APP_RESULTS})")  # evaluations before s39


def _exports(run_dir: Path) -> list[tuple[str, list[tuple[str, bool]]]]:
    """Export folders inside the run: (folder, [(format, check ok)])."""
    found = []
    root = run_dir / "exports"
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        record = read_json(folder / "export.json", {}) or {}
        formats = [(str(fmt), bool((info.get("check") or {}).get("ok"))) for fmt, info in
                   (record.get("formats") or {}).items()]
        if formats:
            found.append((str(folder), formats))
    return found


_SNIPPET = """# pip install torch timm safetensors pillow numpy
import sys
sys.path.insert(0, {folder})          # the export folder (it holds predict_example.py)
from predict_example import LOADERS, classify

run = LOADERS["safetensors"]()          # or "onnx" / "torchscript" if you exported those
label, top = classify(run, "photo.jpg")  # label is "not sure" below the threshold
print(label, top)                        # e.g. {example}
"""


def _usage(r: _Run) -> str:
    from core.export import reproduce_command

    out = ["<section><h2>How to use the model</h2>"]
    exported = _exports(r.dir)
    folder = exported[0][0] if exported else "my_model"
    if exported:
        items = [f"<li><code>{_e(f)}</code>: " + ", ".join(
            f"{_e(fmt)} " + ('<span class="ok">checked ✓</span>' if ok else '<span class="no">check failed</span>')
            for fmt, ok in formats) + "</li>" for f, formats in exported]
        out.append("<p>Exported so far:</p><ul>" + "".join(items) + "</ul>")
    run_arg = shlex.quote(str(r.dir))
    out.append(f"<p>1. Export the model ({IN_APP_EXPORT}; or on the command line). The folder gets the "
               "weights, a <code>manifest.json</code> with the classes and preprocessing, and "
               "<code>predict_example.py</code>:</p>"
               f"<pre><code>transfer-studio export --run {_e(run_arg)} --format safetensors --out "
               f"{_e(shlex.quote(folder))}</code></pre>"
               "<p>(<code>--format onnx</code> or <code>--format torchscript</code> for other tools; each file is "
               "checked against the original after writing.)</p>")
    out.append("<p>2. Classify photos with <code>transfer-studio predict</code>, which accepts the export folder or "
               "this run's folder:</p>"
               f"<pre><code>transfer-studio predict --run {_e(shlex.quote(folder))} photo1.jpg photo2.jpg"
               "</code></pre>")
    example = f"{r.classes[0] if r.classes else 'cat'} [({r.classes[0] if r.classes else 'cat'!r}, 0.97), ...]"
    snippet = _SNIPPET.format(folder=repr(folder), example=example)
    out.append("<p>3. Or from Python, with the same preprocessing as in training:</p>"
               f"<pre><code>{_e(snippet)}</code></pre>")
    try:
        command = reproduce_command(r.dir)
        out.append(f"<p>4. To train this model again with the same settings:</p><pre><code>{_e(command)}</code></pre>")
    except Exception as err:  # noqa: BLE001 - e.g. a config written by an older version
        out.append(f'<p class="mute">The command that reproduces this run could not be made: {_e(err)}</p>')
    out.append("</section>")
    return "".join(out)


# --- public API -------------------------------------------------------------------------------------------------------

def _section(name: str, make: Callable[[], str]) -> str:
    """One section; if it cannot be made, say so in its place instead of failing the whole report."""
    try:
        return make()
    except Exception as err:  # noqa: BLE001 - one damaged part of a run must not hide the rest
        return (f"<section><h2>{_e(name)}</h2>" + _warn(f"This part could not be made: {_e(type(err).__name__)}: "
                                                         f"{_e(err)}") + "</section>")


def build_report(run_dir: str | os.PathLike, *, max_examples: int = MAX_EXAMPLES, thumb_size: int = THUMB_SIZE,
                 notes: Sequence[str] = ()) -> str:
    """The run's report as one self-contained HTML document (from what is stored in the run folder; nothing is
    computed except thumbnails and the layer-group table). `notes` are shown at the top (plain text)."""
    r = _Run(Path(run_dir))
    body = [_header(r)]
    if r.has_weights and r.photos_gone and not (r.evaluation or {}).get("splits"):
        notes = [_photos_gone_note(r.dataset), *notes]
    body += [_warn(_e(n)) for n in notes]
    body += [_section("Summary", lambda: _summary(r)),
             _section("Dataset", lambda: _dataset(r)),
             _section("Model and frozen layers", lambda: _model(r)),
             _section("Training", lambda: _training(r)),
             _section("Results", lambda: _metrics(r)),
             _section("Examples", lambda: _examples(r, max_examples, thumb_size)),
             _section("Can its confidence be trusted?", lambda: _calibration(r)),
             _section("How to use the model", lambda: _usage(r))]
    version = _version("transfer-studio")
    body.append(f"<footer>Made by Transfer Studio{' ' + _e(version) if version else ''} on "
                f"{time.strftime('%Y-%m-%d %H:%M')}. This file is self-contained: it loads nothing from the internet "
                "and can be e-mailed or archived as it is.</footer>")
    title = f"Model report: {r.name}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


def needs_evaluation(run_dir: str | os.PathLike) -> bool:
    """True when the run has finished weights but no evaluation of them (missing or stale)."""
    from core import jobs
    from core.evaluate import load_evaluation

    run_dir = Path(run_dir)
    if not (run_dir / "checkpoints" / "best.safetensors").exists():
        return False
    if jobs.state(run_dir).get("state") in runs.ACTIVE_STATES:
        return False  # still training: the weights are about to change
    ev = load_evaluation(run_dir)
    return ev is None or bool(ev.get("stale"))


def write_report(run_dir: str | os.PathLike, *, evaluate: bool = True, learning_curve: bool = True,
                 out: str | os.PathLike | None = None, on_progress: Callable[[str, int, int], None] | None = None,
                 **build) -> Path:
    """Write the report to `out` (default `<run>/report.html`) atomically and return its path. With `evaluate`,
    the run is evaluated first (`core.evaluate.evaluate_run`, with the learning curve unless `learning_curve` is
    False) when its evaluation is missing or stale; if that fails, the report is still written and says why.
    `build` goes to `build_report` (max_examples, thumb_size)."""
    from core.evaluate import evaluate_run

    run_dir = Path(run_dir)
    runs.load_config(run_dir)  # a clear error for a folder that is not a run
    notes: list[str] = []
    # a run whose photos are gone is not evaluated: the report says so itself (build_report)
    if evaluate and needs_evaluation(run_dir) and not photos_gone(runs.load_dataset(run_dir)):
        try:
            evaluate_run(run_dir, with_learning_curve=learning_curve, on_progress=on_progress)
        except Exception as err:  # noqa: BLE001 - the report can still show training and the dataset
            notes.append(f"The model could not be evaluated, so the results below may be missing or out of date: "
                         f"{_failure_words(err)}")
    text = build_report(run_dir, notes=notes, **build)
    path = Path(out) if out else run_dir / REPORT_FILE
    write_bytes_atomic(path, text.encode("utf-8"))
    return path
