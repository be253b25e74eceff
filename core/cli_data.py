"""`transfer-studio data ...`: check a folder, import a folder or zip into the app's store, list stored datasets.

Hooked into the main parser by ``core.cli.build_parser`` with ``register(sub)``. Exit codes: 0 done; 1 ``check``
found errors that block training; 2 the command could not run (missing folder, refused zip, ...), with the reason on
stderr. With ``--json`` the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEVERITY_LABEL = {"error": "ERROR", "warning": "warning", "info": "note"}


def _split_and_output_options(p: argparse.ArgumentParser, json_help: str) -> None:
    """Options shared by `data check` and `data import`."""
    p.add_argument("--val-fraction", type=float, default=0.2, help="used when there is no val/ folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `data` command (check, import, list) to the main parser's subparsers."""
    p = subparsers.add_parser("data", help="check, import and list image datasets",
                              description="Check a folder of class folders, import a folder or zip into the app's "
                                          "store, or list stored datasets.")
    dsub = p.add_subparsers(dest="data_command", required=True)

    c = dsub.add_parser("check", help="validate a folder (the same report as the Data page); exit 1 if training "
                                      "would be blocked")
    c.add_argument("folder", metavar="DIR", help="one sub-folder per class, optionally inside train/ val/ test/")
    _split_and_output_options(c, "last line: the report as one JSON object")
    c.set_defaults(func=cmd_data_check)

    i = dsub.add_parser("import", help="copy a folder or .zip into the app's store as a named dataset; prints its id")
    i.add_argument("source", metavar="DIR|ZIP")
    i.add_argument("--name", default="", help="dataset name (default: the folder or zip name)")
    _split_and_output_options(i, "last line: {id, name, images, classes, counts, ...}")
    i.set_defaults(func=cmd_data_import)

    ls = dsub.add_parser("list", help="the datasets in the app's store, newest first")
    ls.add_argument("--json", action="store_true", help="one JSON object: {'datasets': [...]}")
    ls.set_defaults(func=cmd_data_list, computes=False)
    return p


# ------------------------------------------------------------------------------------------------ helpers

def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _progress(what: str, quiet: bool) -> Callable[[int, int], None] | None:
    """A progress line on stderr (rewritten in place on a terminal, else about every 10 %)."""
    if quiet:
        return None
    tty = sys.stderr.isatty()
    state = {"last": -1.0, "shown": -1}

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        step = max(1, total // 10)
        final = done >= total
        if tty:
            if not final and now - state["last"] < 0.1:
                return
            state["last"] = now
            print(f"\r{what} {done}/{total}", end="\n" if final else "", file=sys.stderr, flush=True)
        elif final or done // step != state["shown"]:
            state["shown"] = done // step
            print(f"{what} {done}/{total}", file=sys.stderr, flush=True)

    return show


def _split_config(args: argparse.Namespace):
    from core.data.splits import SplitConfig

    if not 0.0 < args.val_fraction < 1.0:
        raise ValueError("--val-fraction must be between 0 and 1")
    return SplitConfig(val_fraction=args.val_fraction, seed=args.seed)


def counts_table(classes: list[str] | tuple[str, ...], counts: dict[str, dict[str, int]]) -> str:
    """Images per class and split as a small text table."""
    splits = [s for s in ("train", "val", "test") if s in counts]
    width = max([len(c) for c in classes] + [5])
    head = f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in splits) + f"  {'total':>6}"
    lines = [head]
    for c in classes:
        row = [counts[s].get(c, 0) for s in splits]
        lines.append(f"{c:<{width}}  " + "  ".join(f"{n:>6}" for n in row) + f"  {sum(row):>6}")
    return "\n".join(lines)


def report_lines(report: Any, names: dict[str, str] | None = None, limit_files: int = 8,
                 limit_kind: int = 3) -> list[str]:
    """Problems as indented text lines (most severe first), naming files. Past `limit_kind` problems of one kind
    (e.g. one note per photo outside a class folder) the rest are one line naming how many more and their files."""
    lines = []
    seen: dict[str, int] = {}
    rest: dict[str, list] = {}
    for p in report.problems:
        seen[p.kind] = seen.get(p.kind, 0) + 1
        if seen[p.kind] > limit_kind:
            rest.setdefault(p.kind, []).append(p)
            continue
        lines.append(f"  {SEVERITY_LABEL.get(p.severity, p.severity):7}  {p.kind}: {p.message}")
        files = [names.get(f, f) if names else f for f in p.files]
        if len(files) > 1 or (files and files[0] not in p.message):
            shown = ", ".join(files[:limit_files]) + (f" (+{len(files) - limit_files} more)"
                                                      if len(files) > limit_files else "")
            lines.append(f"           files: {shown}")
    for kind, more in rest.items():
        files = [names.get(f, f) if names else f for p in more for f in p.files]
        shown = ", ".join(files[:limit_files]) + (f" (+{len(files) - limit_files} more)"
                                                  if len(files) > limit_files else "")
        label = SEVERITY_LABEL.get(more[0].severity, more[0].severity)
        lines.append(f"  {label:7}  {kind}: {len(more)} more like the above" + (f": {shown}" if shown else ""))
    return lines


def _verdict(report: Any) -> str:
    n_err = sum(p.severity == "error" for p in report.problems)
    n_warn = sum(p.severity == "warning" for p in report.problems)
    if report.blocking:
        return f"Training is blocked: {n_err} error(s) to fix first (and {n_warn} warning(s))."
    return f"Ready to train ({n_warn} warning(s))." if n_warn else "Ready to train: no problems found."


# ------------------------------------------------------------------------------------------------ commands

def cmd_data_check(args: argparse.Namespace) -> int:
    from core.data.validate import check_folder

    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        return _error(f"{args.folder} is not a folder")
    try:
        split = _split_config(args)
        check = check_folder(folder, split_config=split, on_progress=_progress("checking images", args.quiet))
    except (OSError, ValueError) as err:
        return _error(str(err))
    report = check.report
    if args.json:
        print(json.dumps({"folder": str(folder.resolve()), **report.to_dict()}, ensure_ascii=False))
        return 1 if report.blocking else 0
    layout = {"class_folders": "class folders", "split_folders": "train/val/test folders", "empty": "empty"}
    print(f"{folder}: {layout.get(report.layout, report.layout)}, split: {report.split_mode}; "
          f"{len(report.classes)} classes, {report.usable_files} usable of {report.total_files} files")
    if report.counts:
        print(counts_table(report.classes, report.counts))
    if report.problems:
        print(f"{len(report.problems)} problem(s):")
        print("\n".join(report_lines(report)))
    print(_verdict(report))
    return 1 if report.blocking else 0


def cmd_data_import(args: argparse.Namespace) -> int:
    from core.data.archive import ArchiveError
    from core.data.store import DatasetError, import_folder, import_zip

    src = Path(args.source).expanduser()
    name = args.name or (src.stem if src.is_file() else src.name) or "Untitled dataset"
    try:
        split = _split_config(args)
        progress = _progress("importing", args.quiet)
        if src.is_dir():
            result = import_folder(src, name, split=split, on_progress=progress)
        elif src.is_file():
            result = import_zip(src, name, split=split, on_progress=progress)
        else:
            return _error(f"{args.source} is neither a folder nor a .zip file")
    except (ArchiveError, DatasetError) as err:
        reason = err.reason
        return _error(reason if args.source in reason or src.name in reason else f"{args.source}: {reason}")
    except (OSError, ValueError) as err:
        return _error(str(err))
    ds, report = result.dataset, result.report
    names = {it.file: it.original_name for it in ds.items}
    if args.json:
        print(json.dumps({"id": ds.id, "name": ds.name, "images": len(ds.items), "classes": list(ds.classes),
                          "counts": report.counts, "split_mode": ds.split_mode, "blocking": report.blocking,
                          "skipped": [s.to_dict() for s in result.skipped],
                          "problems": [{**p.to_dict(), "files": [names.get(f, f) for f in p.files],
                                        "fix_files": [names.get(f, f) for f in p.fix_files]}
                                       for p in report.problems]}, ensure_ascii=False))
        return 0
    err = sys.stderr
    n, k = result.imported, len(ds.classes)
    print(f"imported '{ds.name}': {n} image{'s' * (n != 1)} in {k} class{'es' * (k != 1)} "
          f"({len(result.skipped)} file(s) skipped), split: {ds.split_mode}", file=err)
    if report.counts:
        print(counts_table(ds.classes, report.counts), file=err)
    if report.problems:
        print(f"{len(report.problems)} problem(s):", file=err)
        print("\n".join(report_lines(report, names)), file=err)
    print(_verdict(report), file=err)
    print(ds.id)
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from core.data.store import list_datasets

    rows = [{"id": s.id, "name": s.name, "created": s.created, "images": s.images, "classes": list(s.classes),
             "blocking": s.blocking} for s in list_datasets()]
    if args.json:
        print(json.dumps({"datasets": rows}, ensure_ascii=False))
        return 0
    if not rows:
        print("(no datasets yet: transfer-studio data import DIR|ZIP)")
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = "blocked" if r["blocking"] else "ready"
        print(f"{r['id']}  {r['name']:<{width}}  {r['images']:>6} images  {len(r['classes']):>3} classes  "
              f"{state:7}  {r['created']}")
    return 0
