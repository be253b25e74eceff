"""Pictures of boxes: ground truth, predictions, hits, misses and false positives drawn on an image (Pillow)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from PIL import Image, ImageDraw

from core.data.images import load_rgb

PALETTE = ((37, 99, 235), (234, 88, 12), (22, 163, 74), (147, 51, 234), (219, 39, 119), (13, 148, 136),
           (202, 138, 4), (71, 85, 105))
GT, HIT, MISS, FALSE_POS = (22, 163, 74), (37, 99, 235), (220, 38, 38), (234, 88, 12)


def colour(k: int) -> tuple[int, int, int]:
    """A stable colour for class index k (0-based)."""
    return PALETTE[k % len(PALETTE)]


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill: tuple[int, int, int]) -> None:
    x, y = xy
    left, top, right, bottom = draw.textbbox((x, y), text)
    y = max(0.0, y - (bottom - top) - 4)
    draw.rectangle([x, y, x + (right - left) + 6, y + (bottom - top) + 4], fill=fill)
    draw.text((x + 3, y + 1), text, fill=(255, 255, 255))


def draw_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], texts: Sequence[str],
               colours: Sequence[tuple[int, int, int]], width: int | None = None, dashed: Sequence[bool] = ()
               ) -> Image.Image:
    """A copy of `image` with each box outlined in its colour and its text on a small tag above it."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    w = width or max(2, round(min(out.size) / 160))
    for i, (box, text, col) in enumerate(zip(boxes, texts, colours, strict=True)):
        x1, y1, x2, y2 = (float(v) for v in box)
        if i < len(dashed) and dashed[i]:
            step = 8
            for x in range(int(x1), int(x2), step * 2):
                draw.line([x, y1, min(x + step, x2), y1], fill=col, width=w)
                draw.line([x, y2, min(x + step, x2), y2], fill=col, width=w)
            for y in range(int(y1), int(y2), step * 2):
                draw.line([x1, y, x1, min(y + step, y2)], fill=col, width=w)
                draw.line([x2, y, x2, min(y + step, y2)], fill=col, width=w)
        else:
            draw.rectangle([x1, y1, x2, y2], outline=col, width=w)
        if text:
            _label(draw, (x1, y1), text, col)
    return out


def detections_image(source: str | os.PathLike | bytes | Image.Image, detections: Sequence[dict]) -> Image.Image:
    """An image with predicted boxes ({label, score, box}) in per-class colours."""
    img = source if isinstance(source, Image.Image) else load_rgb(source)
    names = sorted({d["label"] for d in detections})
    return draw_boxes(img, [d["box"] for d in detections], [f"{d['label']} {d['score']:.2f}" for d in detections],
                      [colour(names.index(d["label"])) for d in detections])


def comparison_image(source: str | os.PathLike | Image.Image, gt: dict, pred: dict, matched: dict,
                     classes: Sequence[str], threshold: float) -> Image.Image:
    """Ground truth and predictions together: hits blue, false positives orange, missed objects red (dashed).
    `matched` is `metrics.match_image(pred, gt, threshold)`."""
    img = source if isinstance(source, Image.Image) else load_rgb(source)

    def name(k: int) -> str:
        return classes[k - 1] if 1 <= k <= len(classes) else str(k)

    boxes, texts, cols, dashed = [], [], [], []
    for j in matched["misses"]:
        boxes.append(gt["boxes"][j])
        texts.append(f"missed {name(gt['labels'][j])}")
        cols.append(MISS)
        dashed.append(True)
    for i in matched["hits"]:
        boxes.append(pred["boxes"][i])
        texts.append(f"{name(pred['labels'][i])} {pred['scores'][i]:.2f}")
        cols.append(HIT)
        dashed.append(False)
    for i in matched["false_positives"]:
        if pred["scores"][i] < threshold:
            continue
        boxes.append(pred["boxes"][i])
        texts.append(f"false {name(pred['labels'][i])} {pred['scores'][i]:.2f}")
        cols.append(FALSE_POS)
        dashed.append(False)
    return draw_boxes(img, boxes, texts, cols, dashed=dashed)
