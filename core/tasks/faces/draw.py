"""Answers drawn on a photo: each face boxed (green when named, red when "unknown") with its number in the list
beside the photo, the name and the score on a filled label large enough to read at the size the page shows it."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

NAMED, UNKNOWN_COLOUR = "#16a34a", "#dc2626"


def label_size(img_size: tuple[int, int]) -> int:
    """The label's font size in the photo's pixels: about 1/32 of its longer side (at least 11 px), so a label reads
    the same whether the photo is a 250 px crop or a 4000 px group shot shown in the same column."""
    return max(11, round(max(img_size) / 32))


def draw_answers(img: Image.Image, answers: Sequence[dict]) -> Image.Image:
    """A copy of `img` with every answer ({box, label, score}) drawn, numbered from 1 in the order given."""
    out = img.convert("RGB").copy()
    pen = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 250))
    font = ImageFont.load_default(size=label_size(out.size))
    for n, a in enumerate(answers, start=1):
        x1, y1, x2, y2 = (float(v) for v in a["box"])
        colour = UNKNOWN_COLOUR if a["label"] == "unknown" else NAMED
        pen.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{n} {a['label']} {float(a['score']):.2f}"
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        pad = max(2, width)
        w, h = right - left + 2 * pad, bottom - top + 2 * pad
        tx = min(max(0.0, x1), max(0.0, out.width - w))  # inside the photo, above the box when there is room
        ty = y1 - h if y1 - h >= 0 else min(y2, out.height - h)
        pen.rectangle((tx, ty, tx + w, ty + h), fill=colour)
        pen.text((tx + pad - left, ty + pad - top), text, fill="#ffffff", font=font)
    return out


def outline_face(img: Image.Image, box: Sequence[float]) -> Image.Image:
    """A copy of `img` with one face boxed (the face a comparison used)."""
    out = img.convert("RGB").copy()
    width = max(2, round(max(out.size) / 150))
    ImageDraw.Draw(out).rectangle(tuple(float(v) for v in box), outline="#2563eb", width=width)
    return out
