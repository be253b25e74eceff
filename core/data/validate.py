"""Dataset validation: one report of everything that is wrong or suspicious, in plain English.

``check_folder`` scans a folder, decodes every image in worker processes, applies the split rules and returns the
records plus a ``ValidationReport``. ``analyze`` builds the report from records alone (the store re-runs it on its
manifest without decoding anything again).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.data.images import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S, CheckOptions, ImageInfo, Rejected, check_images
from core.data.names import IMAGE_EXTENSIONS
from core.data.scan import Layout, ScanItem, ScanProblem, class_names, detect_layout, iter_scan
from core.data.splits import SplitConfig, SplitItem, assign_splits, split_mode

ERROR, WARNING, INFO = "error", "warning", "info"
_SEVERITY_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}
ProgressFn = Callable[[int, int], None]

#: Every problem kind a report can contain.
KINDS = (
    "no_images", "too_few_classes", "too_few_images", "few_images", "imbalance", "missing_split",
    "unreadable", "unsupported_format", "too_small", "too_large", "low_detail", "not_image_file",
    "outside_class_folder", "link", "too_deep",
    "exact_duplicate", "near_duplicate", "leakage", "conflicting_label",
    # refused zip entries (see core.data.archive.RejectedEntry.kind)
    "unsafe_path", "special_file", "duplicate_name", "nested_archive", "encrypted", "corrupt",
)


@dataclass(frozen=True)
class ValidationConfig:
    min_side: int = 32
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_images: int = 2  # fewer usable images in a class blocks training
    few_images: int = 10  # fewer is a warning
    imbalance_ratio: float = 5.0
    near_duplicate_distance: int = 4  # phash Hamming distance; 0 disables near-duplicate search
    near_duplicate_dhash: int | None = 8  # ...confirmed by dhash distance (None: phash only)
    low_detail_colors: int = 64  # at most this many colours on a 96×96 sample looks like a graphic/placeholder
    timeout_s: float = DEFAULT_TIMEOUT_S
    workers: int | None = None  # None: one per core (max 8); 0: in this process

    def check_options(self) -> CheckOptions:
        return CheckOptions(max_pixels=self.max_pixels, min_side=self.min_side, timeout_s=self.timeout_s)


@dataclass(frozen=True)
class Record:
    """One file as the validator sees it. ``rel`` identifies it in ``Problem.files``; ``display`` names it."""

    rel: str
    label: str
    split: str | None
    info: ImageInfo | None = None
    rejected: Rejected | None = None
    display: str | None = None

    @property
    def name(self) -> str:
        return self.display or self.rel


@dataclass(frozen=True)
class Problem:
    kind: str
    severity: str
    message: str
    files: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    fix_files: tuple[str, ...] = ()  # what a one-click "drop" fix would remove (empty: no automatic fix)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "message": self.message, "files": list(self.files),
                "classes": list(self.classes), "fix_files": list(self.fix_files)}


@dataclass(frozen=True)
class ValidationReport:
    classes: tuple[str, ...]
    counts: dict[str, dict[str, int]]  # split -> class -> usable images
    total_files: int
    usable_files: int
    problems: tuple[Problem, ...]
    layout: str = ""
    split_mode: str = ""

    @property
    def blocking(self) -> bool:
        """True when training must not start (any error)."""
        return any(p.severity == ERROR for p in self.problems)

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def files_with(self, kind: str) -> set[str]:
        return {f for p in self.of_kind(kind) for f in p.files}

    def summary(self) -> dict[str, Any]:
        """Small JSON-able digest (stored in the dataset manifest)."""
        sev = Counter(p.severity for p in self.problems)
        return {"blocking": self.blocking, "errors": sev[ERROR], "warnings": sev[WARNING], "infos": sev[INFO],
                "by_kind": dict(sorted(Counter(p.kind for p in self.problems).items())), "counts": self.counts,
                "total_files": self.total_files, "usable_files": self.usable_files}

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "counts": self.counts, "total_files": self.total_files,
                "usable_files": self.usable_files, "layout": self.layout, "split_mode": self.split_mode,
                "blocking": self.blocking, "problems": [p.to_dict() for p in self.problems]}


@dataclass(frozen=True)
class FolderCheck:
    layout: Layout
    records: tuple[Record, ...]
    items: dict[str, Path] = field(repr=False)  # rel -> absolute path of each record's file
    report: ValidationReport


# ------------------------------------------------------------------------------------------------ messages

def _names(records: Sequence[Record], limit: int = 6) -> str:
    shown = ", ".join(r.name for r in records[:limit])
    return shown + (f" and {len(records) - limit} more" if len(records) > limit else "")


def _labels(labels: Iterable[str], limit: int = 8) -> str:
    items = list(labels)
    shown = ", ".join(f"'{x}'" for x in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def problem_from_scan(sp: ScanProblem) -> Problem:
    return Problem(sp.kind, WARNING if sp.in_class else INFO, sp.reason, files=(sp.rel,))


def _file_problems(records: Sequence[Record], config: ValidationConfig) -> list[Problem]:
    out: list[Problem] = []
    for r in records:
        where = (r.label,) if r.label else ()
        if r.rejected is not None:
            out.append(Problem(r.rejected.kind, WARNING, f"{r.name}: {r.rejected.reason}. It is skipped.",
                               (r.rel,), where, (r.rel,)))
        elif r.info is not None and r.info.colors <= config.low_detail_colors:
            what = ("is a single flat colour (blank image)" if r.info.colors <= 1 else
                    f"has only {r.info.colors} colours: it looks like a graphic or placeholder, not a photo")
            out.append(Problem("low_detail", WARNING, f"{r.name} {what}. Check that it belongs in '{r.label}'.",
                               (r.rel,), where, (r.rel,)))
    return out


# ------------------------------------------------------------------------------------------------ counts

def count_usable(records: Iterable[Record]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for r in records:
        if r.info is not None:
            split = r.split or "train"
            counts.setdefault(split, {}).setdefault(r.label, 0)
            counts[split][r.label] += 1
    return {s: dict(sorted(counts[s].items())) for s in ("train", "val", "test") if s in counts}


def _stray_photos(problems: Iterable[Problem]) -> int:
    """How many photos lie outside any class folder (so were ignored)."""
    return sum(1 for p in problems if p.kind == "outside_class_folder" and p.files and not p.files[0].endswith("/")
               and Path(p.files[0]).suffix.lower() in IMAGE_EXTENSIONS)


def _class_problems(classes: Sequence[str], counts: dict[str, dict[str, int]],
                    config: ValidationConfig, stray: int = 0) -> list[Problem]:
    totals = {c: sum(counts.get(s, {}).get(c, 0) for s in counts) for c in classes}
    out: list[Problem] = []
    if not any(totals.values()):
        where = (f" {stray} photo{'s' * (stray != 1)} {'lie' if stray != 1 else 'lies'} outside any class folder."
                 if stray else "")
        return [Problem("no_images", ERROR, f"No usable images were found.{where} Put the photos in one folder per "
                        "class (e.g. ants/, bees/), optionally inside train/ and val/.")]
    nonempty = [c for c in classes if totals[c] > 0]
    if len(nonempty) < 2:
        out.append(Problem("too_few_classes", ERROR, f"Training needs at least 2 classes with images; found "
                           f"{len(nonempty)} ({_labels(nonempty)}).", classes=tuple(nonempty)))
    for c in classes:
        n = totals[c]
        if n < config.min_images:
            out.append(Problem("too_few_images", ERROR, f"Class '{c}' has {n} usable image{'s' * (n != 1)}; "
                               f"at least {config.min_images} are needed to train.", classes=(c,)))
        elif n < config.few_images:
            out.append(Problem("few_images", WARNING, f"Class '{c}' has only {n} images; {config.few_images} or "
                               "more give much better results.", classes=(c,)))
    if len(nonempty) >= 2:
        hi = max(nonempty, key=lambda c: totals[c])
        lo = min(nonempty, key=lambda c: totals[c])
        if totals[hi] > config.imbalance_ratio * totals[lo]:
            out.append(Problem("imbalance", WARNING, f"Classes are unbalanced: '{hi}' has {totals[hi]} images but "
                               f"'{lo}' only {totals[lo]} (more than {config.imbalance_ratio:g}× fewer). Add images "
                               "to the small classes; training will weight classes to compensate.", classes=(hi, lo)))
    out.extend(_split_problems(classes, counts, totals))
    return out


def _split_problems(classes: Sequence[str], counts: dict[str, dict[str, int]],
                    totals: dict[str, int]) -> list[Problem]:
    out: list[Problem] = []
    no_train = [c for c in classes if totals[c] > 0 and not counts.get("train", {}).get(c)]
    if no_train:
        out.append(Problem("missing_split", ERROR, f"No training images for {_labels(no_train)}: every image of "
                           "these classes is in val/test.", classes=tuple(no_train)))
    if "val" in counts:
        no_val = [c for c in classes if totals[c] >= 2 and not counts["val"].get(c)]
        if no_val:
            out.append(Problem("missing_split", WARNING, f"No validation images for {_labels(no_val)}: their "
                               "accuracy cannot be measured.", classes=tuple(no_val)))
    return out


# ------------------------------------------------------------------------------------------------ duplicates

class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _chunks(distance: int) -> list[tuple[int, int]]:
    """Split 64 bits into distance+1 ranges: two hashes within ``distance`` agree exactly on at least one."""
    n = distance + 1
    bounds = [round(64 * i / n) for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1] - bounds[i]) for i in range(n)]


def near_pairs(hashes: Sequence[int], distance: int) -> Iterable[tuple[int, int]]:
    """Index pairs of 64-bit hashes within Hamming ``distance`` (multi-index hashing, not all pairs)."""
    if distance <= 0 or len(hashes) < 2:
        return
    distance = min(distance, 63)
    seen: set[tuple[int, int]] = set()
    for shift, width in _chunks(distance):
        mask = (1 << width) - 1
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, h in enumerate(hashes):
            buckets[(h >> shift) & mask].append(i)
        for members in buckets.values():
            for a_pos, a in enumerate(members):
                ha = hashes[a]
                for b in members[a_pos + 1:]:
                    if (ha ^ hashes[b]).bit_count() <= distance and (a, b) not in seen:
                        seen.add((a, b))
                        yield a, b


def duplicate_groups(records: Sequence[Record], distance: int,
                     dhash_distance: int | None = None) -> list[list[int]]:
    """Groups (indices into ``records``, size ≥ 2) of identical files or perceptually near-identical images.

    Candidates come from phash (Hamming ≤ ``distance``, found by multi-index hashing); when both records have a
    dhash, it must also be within ``dhash_distance``. Same-scene photos of different objects often share a phash
    within 4 bits but not a dhash (measured on clothing10: 11-18 bits apart; re-encoded copies: ≤ 6).
    """
    usable = [i for i, r in enumerate(records) if r.info is not None]
    uf = _UnionFind(len(records))
    first_sha: dict[str, int] = {}
    first_key: dict[tuple[int, int | None], int] = {}
    for i in usable:
        info = records[i].info
        assert info is not None
        uf.union(i, first_sha.setdefault(info.sha256, i))
        uf.union(i, first_key.setdefault(_hash_key(info), i))
    keys = list(first_key)
    for a, b in near_pairs([k[0] for k in keys], distance):
        da, db = keys[a][1], keys[b][1]
        if dhash_distance is None or da is None or db is None or (da ^ db).bit_count() <= dhash_distance:
            uf.union(first_key[keys[a]], first_key[keys[b]])
    groups: dict[int, list[int]] = defaultdict(list)
    for i in usable:
        groups[uf.find(i)].append(i)
    return [g for g in groups.values() if len(g) >= 2]


def _hash_key(info: ImageInfo) -> tuple[int, int | None]:
    return int(info.phash, 16), (int(info.dhash, 16) if info.dhash else None)


def _group_problem(group: Sequence[Record]) -> Problem:
    members = sorted(group, key=lambda r: (r.split != "train", r.split or "", r.name))
    files = tuple(r.rel for r in members)
    labels = tuple(sorted({r.label for r in members}))
    splits = {r.split or "train" for r in members}
    exact = len({r.info.sha256 for r in members if r.info}) == 1
    same = "identical files" if exact else "the same picture (nearly identical)"
    if len(labels) > 1:
        where = ", ".join(f"{r.name} ('{r.label}')" for r in members[:6])
        return Problem("conflicting_label", WARNING, f"Conflicting labels: {where} are {same} but filed under "
                       f"different classes. Keep the one with the right class and drop the others.", files, labels)
    if "train" in splits and splits & {"val", "test"}:
        train = tuple(r.rel for r in members if (r.split or "train") == "train")
        return Problem("leakage", WARNING, f"Leakage: {_names(members)} are {same} in both training and "
                       f"{'/'.join(sorted(splits - {'train'}))}; validation scores would be too optimistic. "
                       "Drop the training copies.", files, labels, train)
    kind, severity = ("exact_duplicate", WARNING) if exact else ("near_duplicate", INFO)
    return Problem(kind, severity, f"Duplicates in '{labels[0]}': {_names(members)} are {same}. Keep one.",
                   files, labels, files[1:])


# ------------------------------------------------------------------------------------------------ analysis

def analyze(records: Sequence[Record], *, classes: Iterable[str] = (), config: ValidationConfig = ValidationConfig(),
            extra: Iterable[Problem] = (), layout: str = "", split_mode: str = "",
            groups: list[list[int]] | None = None) -> ValidationReport:
    """Build the report from checked records (pure: no file access)."""
    all_classes = tuple(sorted(set(classes) | {r.label for r in records if r.label}))
    counts = count_usable(records)
    problems = list(extra)
    problems += _file_problems(records, config)
    problems += _class_problems(all_classes, counts, config, _stray_photos(problems))
    if groups is None:
        groups = duplicate_groups(records, config.near_duplicate_distance, config.near_duplicate_dhash)
    problems += [_group_problem([records[i] for i in g]) for g in groups]
    problems.sort(key=lambda p: (_SEVERITY_ORDER[p.severity], p.kind, p.files, p.classes))
    usable = sum(1 for r in records if r.info is not None)
    return ValidationReport(all_classes, counts, len(records), usable, tuple(problems), layout, split_mode)


def apply_splits(records: Sequence[Record], split_config: SplitConfig,
                 groups: list[list[int]]) -> tuple[list[Record], str]:
    """Give every usable record its split (folders or stratified); duplicates stay in one split together."""
    usable = [i for i, r in enumerate(records) if r.info is not None]
    group_key: dict[int, str] = {}
    for g in groups:
        key = min(records[i].info.sha256 for i in g)  # type: ignore[union-attr]
        for i in g:
            group_key[i] = key
    items = [SplitItem(records[i].info.sha256, records[i].label, records[i].split,  # type: ignore[union-attr]
                       group_key.get(i)) for i in usable]
    mode = split_mode(items, split_config)
    out = list(records)
    for i, split in zip(usable, assign_splits(items, split_config), strict=True):
        out[i] = replace(records[i], split=split)
    return out, mode


def check_folder(folder: str | os.PathLike[str], *, config: ValidationConfig = ValidationConfig(),
                 split_config: SplitConfig | None = None, on_progress: ProgressFn | None = None) -> FolderCheck:
    """Scan, decode (in worker processes) and validate a folder of class folders."""
    split_config = split_config or SplitConfig()
    layout = detect_layout(folder)
    items: list[ScanItem] = []
    problems: list[Problem] = []
    for entry in iter_scan(folder, layout):
        if isinstance(entry, ScanItem):
            items.append(entry)
        else:
            problems.append(problem_from_scan(entry))
    by_path = {str(it.path): it for it in items}
    total = len(items)
    if on_progress:
        on_progress(0, total)
    records: list[Record] = []
    results = check_images((it.path for it in items), options=config.check_options(), workers=config.workers)
    with contextlib.closing(results) as stream:  # stops the worker processes even if on_progress raises
        for done, (path, result) in enumerate(stream, 1):
            it = by_path[str(path)]
            ok = isinstance(result, ImageInfo)
            records.append(Record(it.rel, it.label, it.split, result if ok else None,
                                  None if ok else result))  # type: ignore[arg-type]
            if on_progress:
                on_progress(done, total)
    records.sort(key=lambda r: r.rel)
    groups = duplicate_groups(records, config.near_duplicate_distance, config.near_duplicate_dhash)
    records, mode = apply_splits(records, split_config, groups)
    report = analyze(records, classes=class_names(layout), config=config, extra=problems, layout=layout.kind,
                     split_mode=mode, groups=groups)
    return FolderCheck(layout, tuple(records), {it.rel: it.path for it in items}, report)
