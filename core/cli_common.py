"""Small pieces every `transfer-studio` command shares: JSON output, one-line errors, percentages, and the
dispatch of a task's commands (`TASK.cli(command, args)`) with errors as one clear line and exit status 2."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path


def print_json(obj: object) -> None:
    """One JSON object on one line of stdout (the contract: the last line is the summary); NaN and infinities
    become null, so every line is strict JSON."""
    print(json.dumps(strict(obj), default=str))


def strict(obj: object) -> object:
    """`obj` with non-finite floats replaced by None (JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict(v) for v in obj]
    return obj


def fail(message: str, code: int = 2) -> int:
    """An error as one line on stderr; returns the exit status."""
    print(f"error: {message}", file=sys.stderr)
    return code


def too_small(counts: tuple[tuple[str, int | None, int], ...]) -> str | None:
    """The error for the first (flag, value, least) whose value was given and is below its least, else None."""
    for flag, value, least in counts:
        if value is not None and value < least:
            return f"{flag} must be at least {least}, not {value}."
    return None


def pct(v: float | None) -> str:
    """A share as a percentage for people ('-' when missing or NaN)."""
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"


def error_text(err: BaseException) -> str:
    """A user-facing message for an exception (KeyError's message without its quotes)."""
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err) or type(err).__name__


def naming_run(message: str, args: argparse.Namespace) -> str:
    """`message` naming the run of `--run` when it speaks of "this run" without saying which (scripts loop over
    many runs: "This run has no saved best weights yet." alone does not say which one)."""
    run = getattr(args, "run", None)
    if not run or not re.search(r"\b(this|the) run\b", message, re.IGNORECASE):
        return message
    name = Path(str(run)).name or str(run)
    return message if name in message else f"{message} (run {name})"


def run_command(handlers: Mapping[str, Callable[[argparse.Namespace], int]], command: str,
                args: argparse.Namespace, what: str) -> int:
    """Run `handlers[command]`; unknown commands, Ctrl-C and errors become one line and a non-zero status."""
    if command not in handlers:
        return fail(f"'{command}' is not available for {what} runs.")
    try:
        return handlers[command](args)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as err:  # noqa: BLE001 - the user gets a message, never a traceback
        return fail(naming_run(error_text(err), args))
