"""Scaling of distributed training: images/s of the same run on 1 and N processes (torchrun + DDP).

On a GPU machine each process gets a GPU; on CPU the processes share the cores (gloo), so efficiency < 1 is expected.

Run: .venv/bin/python bench/ddp_bench.py --data ../shared/datasets/hymenoptera --nproc 1 2 [--model mobilenetv2_100]
On a multi-GPU machine: .venv/bin/python bench/ddp_bench.py --data DIR --nproc 1 2 4 --device auto"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from core import runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.distributed import LaunchSpec, run_distributed
from core.engine import fit
from core.recorder import RunRecorder


def measure(data: str, model: str, nproc: int, batch: int, epochs: int, device: str, freeze: str) -> dict:
    """One run on `nproc` processes (per-process batch `batch`); images/s over the epochs after the first."""
    cfg = RunConfig(model, data, FreezeConfig(freeze),
                    TrainConfig(epochs=epochs, batch_size=batch, device=device, nproc=nproc), name=f"ddp x{nproc}")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = runs.create_run(cfg, trainset.resolve(data), Path(tmp))
        t0 = time.time()
        if nproc == 1:
            fit(run_dir, [RunRecorder(run_dir)])
        else:
            res = run_distributed(run_dir, LaunchSpec(nproc=nproc, device="cpu" if device == "cpu" else "auto"))
            if res.returncode:
                raise SystemExit(res.failure)
        wall = time.time() - t0
        epochs_ev = [e for e in runs.read_events(run_dir) if e["type"] == "epoch_ended"]
        steady = epochs_ev[1:] or epochs_ev
        return {"nproc": nproc, "global_batch": batch * nproc,
                "images_per_second": round(sum(e["images_per_second"] for e in steady) / len(steady), 2),
                "best_val_accuracy": max(e["val_accuracy"] for e in epochs_ev), "wall_seconds": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="mobilenetv2_100")
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=32, help="per process")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--freeze", default="all")
    ap.add_argument("--device", default="cpu", choices=["cpu", "auto"])
    args = ap.parse_args()
    rows = [measure(str(Path(args.data).resolve()), args.model, n, args.batch_size, args.epochs, args.device,
                    args.freeze) for n in args.nproc]
    base = rows[0]["images_per_second"] / rows[0]["nproc"]
    for row in rows:
        row["scaling_efficiency"] = round(row["images_per_second"] / (base * row["nproc"]), 2)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
