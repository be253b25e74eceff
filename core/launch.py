"""Start a training worker detached from the caller: `python -m core.launch RUN_DIR` prints the worker's pid and
exits at once, so the worker is not the app's child (no zombie in the app, and it outlives an app restart)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    run_dir = Path(argv[0]).resolve()
    with open(run_dir / "worker.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "core.worker", str(run_dir)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    print(proc.pid, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
