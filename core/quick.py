"""The quick model: a linear head on cached embeddings of the frozen pretrained backbone, trained in seconds.

Embeddings are cached per (backbone, preprocessing, files), so a second quick model on the same data is near
instant. The fitted head is folded into the backbone's own classifier, so the result is an ordinary run with
ordinary weights: evaluate, predict and export treat it like any other."""

from __future__ import annotations

import hashlib
import io
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from core import runs, zoo
from core.config import AUTO_FIT, RunConfig
from core.device import DevicePlan, plan_device
from core.events import EpochEnded, Event, FitEnded, FitStarted, Notice, PhaseChanged, Preparing, broadcaster
from core.pipeline import (
    ImageCache,
    Prep,
    _cache_key,
    centre_u8,
    eval_batch,
    norm_constants,
    prep_for,
    prepare_run_data,
)
from core.settings import cache_root
from core.storage import write_bytes_atomic
from core.tasks import get_task

EMBED_BATCH = 32  # on 2 cores: 32 is ~15 % faster than 16 or 64 in ONNX Runtime, on a par in torch
# Exporting costs 1.3–2.8 s once per backbone (the graph is kept on disk, `_exported_graph`); ONNX Runtime then runs
# 150–190 images/s on 2 cores against 85–140 in torch (AVX2 float32 / AVX-512 bf16). A first export pays off from
# ~400–700 images; with the graph on disk already, from the first batch.
ONNX_MIN_IMAGES = 300
ONNX_CACHED_MIN_IMAGES = EMBED_BATCH


class _FromU8(torch.nn.Module):
    """uint8 NHWC crops in, the model's output out: the normalisation runs inside the exported graph."""

    def __init__(self, model: torch.nn.Module, prep: Prep) -> None:
        super().__init__()
        self.model = model
        mean, std = norm_constants(prep)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x.permute(0, 3, 1, 2).float() - self.mean) / self.std)


def _graph_path(model: torch.nn.Module, prep: Prep, batch_size: int) -> Path:
    """Where the exported graph of `model` (its weights, names and shapes), `prep`'s crop and normalisation and
    `batch_size` is kept: the same for every fit and dataset, so a backbone is exported once per machine."""
    h = hashlib.sha256(f"{torch.__version__}|{type(model).__name__}|{prep.size}|{prep.mean}|{prep.std}|"
                       f"{batch_size}".encode())
    for name, t in model.state_dict().items():
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return cache_root() / "onnx" / f"{h.hexdigest()[:24]}.onnx"


def _exported_graph(model: torch.nn.Module, prep: Prep, batch_size: int, path: Path) -> bytes:
    """`_FromU8(model)` as ONNX bytes, read from `path` or exported (the legacy exporter: ~1–3 s where the dynamo
    one takes ~10) and kept there."""
    if path.exists():
        return path.read_bytes()
    buf = io.BytesIO()
    example = torch.zeros(batch_size, prep.size, prep.size, 3, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation notices: nothing a user can act on
        torch.onnx.export(_FromU8(model, prep), (example,), buf, dynamo=False, input_names=["x"],
                          output_names=["features"])
    write_bytes_atomic(path, buf.getvalue())
    return buf.getvalue()


def _onnx_forward(model: torch.nn.Module, prep: Prep, batch_size: int, threads: int, path: Path | None = None
                  ) -> Callable[[np.ndarray], torch.Tensor] | None:
    """`model` (float32, eval) as an ONNX Runtime session taking fixed-size batches of uint8 NHWC centre crops, or
    None when it cannot be exported. On the CPU this is the fastest forward pass we measured: MobileNetV2 on 2 cores
    ~190 images/s in float32 against ~140 in torch with bf16 autocast (AVX-512; AVX2: ~150 against ~85), and the
    features are float32's (the quick model scores ~0.5 point higher with them). The graph is kept at `path`
    (default: `_graph_path`); a damaged one is exported again."""
    import onnxruntime as ort

    path = path or _graph_path(model, prep, batch_size)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1

    def open_session() -> ort.InferenceSession:
        return ort.InferenceSession(_exported_graph(model, prep, batch_size, path), options,
                                    providers=["CPUExecutionProvider"])

    try:
        session = open_session()
    except Exception:  # noqa: BLE001 - a damaged kept graph is exported again; a model the exporter cannot
        if not path.exists():  # take embeds in torch instead
            return None
        path.unlink(missing_ok=True)
        try:
            session = open_session()
        except Exception:  # noqa: BLE001
            return None

    def forward(crops: np.ndarray) -> torch.Tensor:
        n = len(crops)
        if n < batch_size:  # the session's batch is fixed: pad the last one
            crops = np.concatenate([crops, np.zeros((batch_size - n, *crops.shape[1:]), np.uint8)])
        return torch.from_numpy(session.run(None, {"x": np.ascontiguousarray(crops)})[0][:n])

    return forward


@torch.inference_mode()
def embed(backbone: str, cache: ImageCache, idx: Sequence[int], plan: DevicePlan, key: str,
          on_progress: Callable[[int, int], None] | None = None, batch_size: int = EMBED_BATCH) -> torch.Tensor:
    """Pooled backbone features for cached images (N, D), read from / written to the embeddings cache.
    BatchNorm is folded into the convolutions first (in float32, when that keeps the answers). Many images on the
    CPU run in ONNX Runtime; otherwise (a GPU, a small set, a model the exporter cannot take) torch runs them with
    the plan's autocast."""
    folder = cache_root() / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{backbone}-{key}.safetensors"
    if path.exists():
        feats = load_file(str(path))["features"]
        if on_progress:  # as a cached decode does: the bar shows the pass done
            on_progress(len(feats), len(feats))
        return feats[list(idx)]
    n = len(cache)
    if on_progress:  # the bar moves on to embedding now, not after the model is folded and exported (~1.5 s)
        on_progress(0, n)
    model = zoo.folded_if_same(zoo.create_model(backbone, num_classes=0, pretrained=True), cache.prep.size)
    onnx = None
    if plan.device == "cpu" and n >= ONNX_CACHED_MIN_IMAGES:
        graph = _graph_path(model, cache.prep, batch_size)
        if n >= ONNX_MIN_IMAGES or graph.exists():
            onnx = _onnx_forward(model, cache.prep, batch_size, plan.threads, graph)
    if onnx is None:
        model = model.to(plan.torch_device())
        if plan.channels_last:
            model = model.to(memory_format=torch.channels_last)
    feats = torch.zeros(n, model.num_features)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        if onnx is not None:
            feats[start:stop] = onnx(centre_u8(cache.squares[start:stop], cache.prep.size))
        else:
            x = eval_batch(cache.squares[start:stop], cache.prep, plan.channels_last).to(plan.torch_device())
            with plan.autocast():
                feats[start:stop] = model(x).float().cpu()
        if on_progress:
            on_progress(stop, n)
    tmp = path.with_suffix(".tmp")
    save_file({"features": feats.contiguous()}, str(tmp))
    tmp.replace(path)
    return feats[list(idx)]


def _fit_standardised(z: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, iters: int,
                      weights: torch.Tensor | None = None, init: tuple[torch.Tensor, torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on already standardised features (L-BFGS, full batch), from `init` or 0."""
    w = (init[0].clone() if init else torch.zeros(num_classes, z.shape[1])).requires_grad_(True)
    b = (init[1].clone() if init else torch.zeros(num_classes)).requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y, weight=weights) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mu, sigma = x.mean(0), x.std(0).clamp(min=1e-6)
    return (x - mu) / sigma, mu, sigma


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-3, iters: int = 200,
               weights: torch.Tensor | None = None, init: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on standardised features (L-BFGS, full batch), returned in the raw feature
    space: logits = x @ W.T + b. `init`: a starting solution in the raw space (e.g. `cross_validate`'s)."""
    z, mu, sigma = _standardise(x)
    start = None
    if init is not None:  # raw → this standardisation: w_std = w_raw * sigma, b_std = b_raw + w_raw @ mu
        start = (init[0] * sigma, init[1] + init[0] @ mu)
    w, b = _fit_standardised(z, y, num_classes, l2, iters, weights, start)
    w_raw = w / sigma
    return w_raw, b - w_raw @ mu


L2_GRID = (1.0, 0.3, 0.1, 0.03)  # strongest first: ties keep the stronger regularisation
CV_ITERS = 15  # per grid value, each warm-started from the stronger one's solution: ~5x faster than cold 100
FINAL_ITERS = 40  # the final fit starts from the folds' average solution: same accuracy as 200 cold steps


def cross_validate(x: torch.Tensor, y: torch.Tensor, num_classes: int, folds: int = 3, seed: int = 0,
                   grid: Sequence[float] = L2_GRID) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    """The L2 strength with the best k-fold accuracy on the training images alone (validation stays unseen;
    differences within noise go to the stronger regularisation), and
    the folds' average solution for it in the raw feature space (a warm start for the final fit).
    Along the grid (strongest first) each fit starts from the previous one's weights, so a few L-BFGS steps
    suffice (on clothing10's 2,700 embeddings: the same choice as cold fits of 100 steps, in 1.4 s instead of 7)."""
    right, raw = out_of_fold(x, y, num_classes, folds, seed, grid)
    chosen = _within_noise(right, grid)
    return chosen, (torch.stack([w for w, _ in raw[chosen]]).mean(0), torch.stack([b for _, b in raw[chosen]]).mean(0))


def out_of_fold(x: torch.Tensor, y: torch.Tensor, num_classes: int, folds: int = 3, seed: int = 0,
                grid: Sequence[float] = L2_GRID
                ) -> tuple[dict[float, torch.Tensor], dict[float, list[tuple[torch.Tensor, torch.Tensor]]]]:
    """k-fold linear probes along `grid`: per L2 strength, whether each training image was classified right by the
    probe that did not see it, and each fold's solution in the raw feature space."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=gen)
    fold_of = torch.empty(len(y), dtype=torch.long)
    fold_of[order] = torch.arange(len(y)) % folds
    right = {l2: torch.zeros(len(y), dtype=torch.bool) for l2 in grid}  # out-of-fold correctness per image
    raw: dict[float, list[tuple[torch.Tensor, torch.Tensor]]] = {l2: [] for l2 in grid}
    for k in range(folds):
        tr, te = fold_of != k, fold_of == k
        z, mu, sigma = _standardise(x[tr])
        z_te = (x[te] - mu) / sigma
        solution = None
        for l2 in grid:
            solution = _fit_standardised(z, y[tr], num_classes, l2, CV_ITERS, init=solution)
            right[l2][te] = (z_te @ solution[0].T + solution[1]).argmax(1) == y[te]
            w_raw = solution[0] / sigma
            raw[l2].append((w_raw, solution[1] - w_raw @ mu))
    return right, raw


def _within_noise(right: dict[float, torch.Tensor], grid: Sequence[float]) -> float:
    """The strongest L2 whose out-of-fold answers are not clearly worse than the best's: a paired one-standard-
    error rule (McNemar: the count difference against sqrt of the images on which the two disagree). On small sets
    the grid's accuracies differ by an image or two, which is noise (on hymenoptera's 245 training images plain
    argmax chose the weakest L2 by one image and validation accuracy fell from 0.967 to 0.948); on clothing10 the
    weakest L2 wins by 18 images with 74 disagreements (noise ~9), a real difference, and is kept."""
    best = max(grid, key=lambda l2: (int(right[l2].sum()), l2))
    for l2 in grid:  # strongest first
        if not clearly_better(right[best], right[l2]):
            return l2
    return best


def clearly_better(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Per-image correctness `a` beats `b` by more than the noise of a paired comparison (McNemar: the count
    difference against the square root of the images on which the two disagree)."""
    return int(a.sum()) - int(b.sum()) > math.sqrt(int((a != b).sum()))


AUTO_FIT_MIN_IMAGES = 30  # fewer training photos cannot tell two fits apart: the crop stays


@dataclass(frozen=True)
class FitChoice:
    """How photos become squares for a run whose fit is "auto", and the evidence: out-of-fold linear-probe hits on
    the training photos per candidate fit (validation photos are not looked at)."""

    fit: str
    correct: dict[str, int]
    images: int
    note: str = ""  # why nothing was compared

    def message(self) -> str:
        if not self.correct:
            return self.note or "Photos become squares by cropping the centre."
        crop, pad = (self.correct[f] / self.images for f in ("crop", "pad"))
        if self.fit == "pad":
            return (f"Photos keep their whole frame, with borders to make them square: on your training photos a "
                    f"quick check recognised {pad:.1%} that way against {crop:.1%} with the centre cropped.")
        return (f"Photos become squares by cropping the centre: keeping the whole frame was not clearly better in a "
                f"quick check on your training photos ({pad:.1%} against {crop:.1%}).")


def choose_fit(backbone: str, manifest: dict, plan: DevicePlan,
               on_progress: Callable[[str, int, int], None] | None = None, seed: int = 0) -> FitChoice:
    """"auto": the centre crop unless the whole photo with borders ("pad") is clearly better for a linear probe on
    the pretrained embeddings, cross-validated on the training photos. Measured (BENCHMARKS.md, session 33): a tie on
    hymenoptera (insects in the middle: crop), pad +46 of 3,068 on clothing10 (garments that fill portrait photos),
    the same winners as fine-tuning. Embeddings are cached, so the fit the run trains on costs nothing more.
    `on_progress(stage, done, total)` names each of the four passes (two decodes, two embeddings)."""
    n_train = sum(it["split"] == "train" for it in manifest["items"])
    if n_train < AUTO_FIT_MIN_IMAGES:
        return FitChoice("crop", {}, n_train, "Photos become squares by cropping the centre (too few training photos "
                                              "to compare the fits).")
    spec = zoo.get_spec(backbone)
    paths = [it["path"] for it in manifest["items"]]
    right: dict[str, torch.Tensor] = {}
    for k, (fit, label) in enumerate((("crop", "centre cropped"), ("pad", "whole"))):
        # the same files decode (or fail) either way: the same training images
        prep = prep_for(spec, fit)
        step = "Comparing crop and whole photo {}/4: {} the photos, " + label
        data = prepare_run_data(manifest, prep, _staged(on_progress, step.format(2 * k + 1, "reading")))
        feats = embed(backbone, data.cache, range(len(data.cache)), plan, _cache_key(paths, prep),
                      _staged(on_progress, step.format(2 * k + 2, "analysing")))
        oof, _ = out_of_fold(feats[data.train_idx], data.labels[data.train_idx], len(manifest["classes"]), seed=seed)
        right[fit] = oof[_within_noise(oof, L2_GRID)]
    fit = "pad" if clearly_better(right["pad"], right["crop"]) else "crop"
    return FitChoice(fit, {k: int(v.sum()) for k, v in right.items()}, len(right["crop"]))


def _staged(on_progress: Callable[[str, int, int], None] | None, stage: str
            ) -> Callable[[int, int], None] | None:
    """`on_progress` with its stage name filled in."""
    return None if on_progress is None else partial(on_progress, stage)


def cached_cross_validate(x: torch.Tensor, y: torch.Tensor, num_classes: int, key: str, seed: int = 0
                          ) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    """`cross_validate`, remembered beside the embeddings it ran on: a second quick model on the same training
    images and labels (e.g. with class weights changed) skips the search and starts from the same point (with
    unchanged settings it gives the same model). `key` names the embeddings; the features and labels are hashed in,
    so any change of split or labels searches again."""
    h = hashlib.sha256(f"{key}|{num_classes}|{seed}|{L2_GRID}|{CV_ITERS}".encode())
    h.update(x.contiguous().numpy().tobytes())
    h.update(y.contiguous().numpy().tobytes())
    path = cache_root() / "embeddings" / f"cv-{h.hexdigest()[:24]}.safetensors"
    if path.exists():
        try:
            saved = load_file(str(path))
            return float(saved["l2"]), (saved["w"], saved["b"])
        except Exception:  # noqa: BLE001 - a damaged memo is only a lost shortcut: search again
            path.unlink(missing_ok=True)
    l2, (w, b) = cross_validate(x, y, num_classes, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"l2": torch.tensor(l2, dtype=torch.float64), "w": w.contiguous(), "b": b.contiguous()}, str(tmp))
    tmp.replace(path)
    return l2, (w, b)


def resolve_auto_fit(run_dir: Path, cfg: RunConfig, manifest: dict, plan: DevicePlan,
                     emit: Callable[[Event], None]) -> RunConfig:
    """The run's config with image_fit "auto" resolved (`choose_fit`; the centre crop for a model without
    pretrained weights, whose features say nothing yet), written back to its config.json and announced."""
    if cfg.pretrained:
        emit(Notice("info", "Comparing two ways of making photos square on your training photos (a quick check)."))
        choice = choose_fit(cfg.backbone, manifest, plan, lambda stage, d, t: emit(Preparing(d, t, stage)),
                            cfg.train.seed)
    else:
        choice = FitChoice("crop", {}, 0, "Photos become squares by cropping the centre (a model trained from "
                                          "scratch has no features yet to compare the fits with).")
    cfg = replace(cfg, train=replace(cfg.train, image_fit=choice.fit))
    runs.save_config(run_dir, cfg)
    emit(Notice("info", choice.message()))
    return cfg


def train_quick(run_dir: Path, subscribers: Sequence[Callable[[Event], None]] = ()) -> dict:
    """Fit the quick model for the run in `run_dir` and save it as the run's best weights."""
    t0 = time.time()

    emit = broadcaster(subscribers)
    cfg = runs.load_config(run_dir)
    manifest = runs.load_dataset(run_dir)
    plan = plan_device(cfg.train.device, cfg.train.precision)
    if cfg.train.image_fit == AUTO_FIT:
        cfg = resolve_auto_fit(run_dir, cfg, manifest, plan, emit)
    classes, items = list(manifest["classes"]), manifest["items"]
    spec = zoo.get_spec(cfg.backbone)
    prep = prep_for(spec, cfg.train.image_fit)
    paths = [it["path"] for it in items]
    data = prepare_run_data(manifest, prep, lambda d, t: emit(Preparing(d, t)),
                            lambda msg: emit(Notice("warning", msg)))
    cache, labels, train_idx, val_idx = data.cache, data.labels, data.train_idx, data.val_idx
    emit(FitStarted(1, 1, len(train_idx), len(val_idx), classes, plan.device, plan.precision, plan.note,
                    len(train_idx), 0.0))
    key = _cache_key(paths, prep)
    feats = embed(cfg.backbone, cache, range(len(cache)), plan, key,
                  lambda d, t: emit(Preparing(d, t, "Analysing the photos")))
    weights = None
    if cfg.train.class_weights:
        counts = torch.bincount(labels[train_idx], minlength=len(classes)).float().clamp(min=1)
        weights = counts.sum() / (len(classes) * counts)
    torch.manual_seed(cfg.train.seed)
    l2, init = cached_cross_validate(feats[train_idx], labels[train_idx], len(classes), key, seed=cfg.train.seed)
    w, b = fit_linear(feats[train_idx], labels[train_idx], len(classes), l2=l2, iters=FINAL_ITERS,
                      weights=weights, init=init)
    emit(Notice("info", f"Regularisation {l2:g} chosen by 3-fold cross-validation on the training images."))

    def scores(idx: list[int]) -> tuple[float, float]:
        logits = feats[idx] @ w.T + b
        return float(F.cross_entropy(logits, labels[idx])), float((logits.argmax(1) == labels[idx]).float().mean())

    train_loss, train_acc = scores(train_idx)
    val_loss, val_acc = scores(val_idx)
    model = get_task(cfg.task).build_model(cfg.backbone, len(classes), pretrained=True)
    head = model.get_classifier()
    head.weight.data.copy_(w)
    head.bias.data.copy_(b)
    runs.save_weights(run_dir, model.state_dict(), {"epoch": 1, "val_accuracy": val_acc, "val_loss": val_loss,
                                                    "classes": classes, "quick": True})
    seconds = time.time() - t0
    emit(PhaseChanged(0, "head on cached embeddings", head.weight.numel() + head.bias.numel(), 0))
    emit(EpochEnded(1, train_loss, train_acc, val_loss, val_acc, 0.0, round(seconds, 2),
                    round(len(train_idx) / max(seconds, 1e-6), 1), val_acc, True))
    msg = f"Quick model ready in {seconds:.1f} s: validation accuracy {val_acc:.1%}."
    emit(FitEnded("completed", 1, val_acc, seconds, msg))
    return {"best_val_accuracy": val_acc, "seconds": seconds, "device": plan.device, "epochs": 1}


def keep_graph(backbone: str) -> Path | None:
    """Export `backbone`'s embedding graph ahead of time (setup does it for the default backbone), so that the first
    quick model or fit check on this machine skips the 1–3 s export; None where the graph is not used (a GPU, no
    pretrained weights) or cannot be made."""
    spec = zoo.get_spec(backbone)
    if plan_device("auto", "auto").device != "cpu" or not zoo.has_weights(spec):
        return None
    prep = prep_for(spec)
    model = zoo.folded_if_same(zoo.create_model(backbone, num_classes=0, pretrained=True), prep.size)
    path = _graph_path(model, prep, EMBED_BATCH)
    try:
        _exported_graph(model, prep, EMBED_BATCH, path)
    except Exception:  # noqa: BLE001 - the quick model then embeds in torch, or exports when it runs
        return None
    return path


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        kept = keep_graph(name)
        print(f"embedding graph for {name}: {kept or 'not needed here'}")
