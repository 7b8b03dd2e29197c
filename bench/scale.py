"""The same sweep on each backend: in this process (1 worker), on 2 local worker processes, and as
Ray tasks on a local instance with 2 CPUs. Wall time of each, the speed-up from 1 to 2 workers,
and whether the rows are identical to the 1-worker run's (the ``seconds`` column aside).

    python bench/scale.py [--finetune-epochs 1] [--seeds 0,1] [--skip-ray] [--out bench/scale.csv]

The sweep: mnist-5k, lenet5, snip + the random and magnitude baselines at sparsities 0.5, 0.9,
0.98, two seeds (18 cells), pruned one-shot then fine-tuned, so a cell is heavy enough that the
processes' start-up does not dominate. The dense models are trained (or read from the cache)
before any timing: the times are pruning, fine-tuning and evaluation, plus each backend's own
start (spawning the processes; Ray's start is timed apart). Every worker computes with one thread
(the in-process run is set to one, as each of 2 processes on 2 cores and each Ray task has), so
the rows can be compared digit for digit; on 2 cores, 2 workers are at most 2x faster than one.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.experiment import Experiment, train_dense  # noqa: E402
from pruning.runner import Backend, run_cells  # noqa: E402
from pruning.schedules import OneShot  # noqa: E402
from pruning.sweep import sweep_cells, sweep_rows  # noqa: E402

METHODS = ["snip"]  # with the baselines random and magnitude: 3 methods
SPARSITIES = [0.5, 0.9, 0.98]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def timed(cells, backend: Backend) -> tuple[float, list[dict], int]:
    started = time.perf_counter()
    run = run_cells(cells, backend, progress=lambda fraction, message: print(
        f"\r{backend.describe()}: {100 * fraction:5.1f}% {message[:70]:<70}", end="", file=sys.stderr))
    print(file=sys.stderr)
    return time.perf_counter() - started, sweep_rows(run.outcomes), len(run.failures)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--skip-ray", action="store_true", help="local backends only")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("scale.csv"))
    args = parser.parse_args()
    began = time.perf_counter()
    print(f"load average before: {load()} ({os.cpu_count()} CPUs; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
    torch.set_num_threads(1)
    base = Experiment(dataset="mnist-5k", model="lenet5")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for seed in seeds:  # before any timing
        train_dense(Experiment(dataset="mnist-5k", model="lenet5", seed=seed))
    cells = sweep_cells(base, METHODS, SPARSITIES, seeds, schedule=OneShot(finetune_epochs=args.finetune_epochs))
    backends = {"local, 1 worker (in-process)": Backend(), "local, 2 workers": Backend("local", 2)}
    ray_start = None
    if not args.skip_ray:
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        ray_start = time.perf_counter() - started
        backends["ray, local instance, 2 CPUs"] = Backend("ray")
    results, reference = [], None
    for name, backend in backends.items():
        seconds, rows, failed = timed(cells, backend)
        reference = reference or without_seconds(rows)
        results.append({"backend": name, "workers": 2 if backend.kind == "ray" else backend.workers, "cells": len(cells),
                        "failed_cells": failed, "seconds": round(seconds, 1), "identical_rows": without_seconds(rows) == reference})
    if ray_start is not None:
        import ray

        ray.shutdown()
    table = pd.DataFrame(results)
    table["speedup_vs_1_worker"] = (table["seconds"].iloc[0] / table["seconds"]).round(2)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))
    if ray_start is not None:
        print(f"Ray instance start (not in its time): {ray_start:.1f} s")
    print(f"1 -> 2 workers: {table['speedup_vs_1_worker'].iloc[1]:.2f}x (at most about 2x on 2 cores)")
    print(f"load average after: {load()}")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
