"""Image-check worker process: ``python -m core.data.worker '<options json>' [module:function]``.

Reads JSON lines ``{"id": n, "path": "..."}`` on stdin, answers ``{"id": n, "ok"|"rejected": ...}`` on stdout.
Exits when stdin closes. Anything else printed to stdout by libraries is redirected to stderr.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def _limit_memory(megabytes: int) -> None:
    """Cap this process's address space so a runaway decoder gets MemoryError instead of the OOM killer."""
    if megabytes <= 0:
        return
    try:
        import resource

        limit = megabytes * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not POSIX or not permitted
        pass


def _exit_with_parent(interval_s: float = 1.0) -> None:
    """Exit as soon as the parent process is gone, even in the middle of decoding a file (no orphans)."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    from PIL import ImageFile

    from core.data.images import CheckOptions, _load_task, info_to_dict, inspect_file

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    options = CheckOptions(**json.loads(argv[1]))
    task = _load_task(argv[2]) if len(argv) > 2 else inspect_file
    _limit_memory(options.memory_limit_mb)
    import imagehash  # noqa: F401 - warm up before the first timed file
    import scipy.fftpack  # noqa: F401

    proto.write(json.dumps({"ready": True}) + "\n")
    proto.flush()
    for line in sys.stdin:
        msg = json.loads(line)
        out = info_to_dict(task(msg["path"], options))
        out["id"] = msg["id"]
        proto.write(json.dumps(out) + "\n")
        proto.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
