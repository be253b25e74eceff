"""`transfer-studio runs ...`: list the runs (the Runs page's table), and stop or cancel one that trains, whether
the app, a script or another shell started it.

Hooked into the main parser by ``core.cli.build_parser`` with ``register(sub)``. Exit codes: 0 done; 2 the command
could not run (no such run, nothing to stop), with the reason on stderr. With ``--json`` the last line of stdout is
one JSON object.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli_common import fail, print_json, too_small

LIST_COLUMNS = ["run", "name", "task", "date", "backbone", "dataset", "freeze", "epochs", "status",
                "best_val_accuracy", "seconds"]
#: Headings of the text table where the JSON key would mislead: the best score is accuracy, mAP@0.5, mIoU or
#: identification by the run's task (the Runs page heads it "best score" too).
LIST_HEADINGS = {"best_val_accuracy": "best score"}


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `runs` command (list, stop, cancel) to the main parser's subparsers."""
    p = subparsers.add_parser("runs", help="list the runs; stop or cancel one that trains",
                              description="List the runs in the app's data root (newest first), or stop or cancel "
                                          "one that is training.")
    rsub = p.add_subparsers(dest="runs_command", required=True)

    ls = rsub.add_parser("list", help="the runs, newest first, with their state and best score")
    ls.add_argument("--task", default=None, help="only this task's runs: classification, detection, segmentation "
                    "or faces")
    ls.add_argument("--limit", type=int, default=None, metavar="N", help="only the newest N")
    ls.add_argument("--json", action="store_true", help="one JSON object: {'runs': [...]}")
    ls.set_defaults(func=cmd_runs_list, computes=False)

    for name, what in (("stop", "finish the current batch, save and stop (resume later with train --resume)"),
                       ("cancel", "end the training process now; the last saved checkpoint stays")):
        s = rsub.add_parser(name, help=what)
        s.add_argument("--run", required=True, metavar="RUN", help="run id (as `runs list` shows) or run folder")
        s.add_argument("--json", action="store_true", help="last line: {'run', 'action', 'status'}")
        s.set_defaults(func=cmd_runs_control, action=name, computes=False)
    return p


def _run_dir(run: str) -> Path:
    """The run folder `run` names (a folder, or a run id in the data root); ValueError saying why not."""
    from core import runs
    from core.settings import runs_root

    for candidate in (Path(run).expanduser(), runs_root() / run):
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    raise ValueError(f"'{run}' is not a run: no such run id in {runs_root()} and no run folder there"
                     + ("" if runs.is_run_id(run) or Path(run).exists() else " (see `transfer-studio runs list`)"))


def cmd_runs_list(args: argparse.Namespace) -> int:
    from core import runs
    from core.run_table import run_row
    from core.tasks import task_names

    problem = too_small((("--limit", args.limit, 1),))
    if problem:
        return fail(problem)
    if args.task is not None:
        if args.task not in task_names():
            return fail(f"unknown task '{args.task}' (the tasks: {', '.join(task_names())})")
    folders = runs.list_runs(task=args.task)[: args.limit] if args.limit else runs.list_runs(task=args.task)
    rows = [run_row(p) for p in folders]
    if args.json:
        print_json({"runs": rows})
        return 0
    if not rows:
        print("(no runs)")
        return 0
    import pandas as pd

    table = pd.DataFrame(rows)[LIST_COLUMNS]
    table["epochs"] = table["epochs"].astype("Int64")  # whole numbers, blank for a quick model
    table = table.astype(object).where(table.notna(), "").rename(columns=LIST_HEADINGS)
    print(table.to_string(index=False))
    return 0


def cmd_runs_control(args: argparse.Namespace) -> int:
    from core import jobs, runs

    try:
        run_dir = _run_dir(args.run)
    except ValueError as err:
        return fail(str(err))
    state = jobs.state(run_dir).get("state")
    if state not in runs.ACTIVE_STATES:
        return fail(f"run '{runs.display_name(run_dir)}' is not training (it is {state or 'not started'}): "
                    f"nothing to {args.action}")
    (jobs.stop if args.action == "stop" else jobs.cancel)(run_dir)
    status = runs.read_status(run_dir)
    if args.json:
        print_json({"run": run_dir.name, "action": args.action, "status": status.get("state")})
    else:
        print(f"{runs.display_name(run_dir)}: {status.get('message') or status.get('state')}")
    return 0
