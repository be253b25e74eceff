"""One rank of a distributed run: `torchrun ... -m core.ddp_worker RUN_DIR` (started by core.distributed.launch).

Rank 0 records events and status in the run folder and watches its STOP file; the other ranks write nothing
there (on another node RUN_DIR may be "-": rank 0 sends them the config, data list and checkpoint). Each rank ends
with its torchrun agent, so no process outlives the job.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from core import runs
from core.device import configure_threads, keep_freed_memory
from core.distributed import die_with_parent, init_from_env, shutdown


@record
def main(argv: list[str]) -> int:
    """Train this rank's share of the run; exit code 0 when it completed or stopped."""
    die_with_parent()
    configure_threads()
    keep_freed_memory()
    ctx = init_from_env()
    run_dir = Path(argv[0]).resolve() if argv and argv[0] != "-" else Path("-")
    subscribers = []
    if ctx.is_main:
        from core.recorder import RunRecorder, TextProgress

        subscribers.append(RunRecorder(run_dir))
        if os.environ.get("TS_DDP_PROGRESS") == "1":
            subscribers.append(TextProgress())
    from core.engine import fit

    # An exception propagates without a collective teardown (it could hang on a peer that is gone): torchrun
    # records it and stops the other ranks.
    result = fit(run_dir, subscribers, should_stop=lambda: runs.stop_requested(run_dir), dist=ctx)
    ctx.barrier()  # rank 0's last writes are done before any rank tears its connections down
    shutdown(ctx)
    return 0 if result.state in ("completed", "stopped") else 1


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalisation: gloo's threads may still hold tensors whose release then needs the GIL of a
    # dying interpreter, which aborts (SIGABRT) a rank that finished its work. Everything is already on disk.
    os._exit(code)
