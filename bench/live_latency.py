"""Time from a new sparsity value to new metrics on the Prune page's path: re-mask the cached
dense lenet5 (mnist-5k), evaluate on the 1,000 test images, recompute size and FLOPs metrics.

    python bench/live_latency.py [--model lenet5] [--method magnitude] [--repeats 30]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.experiment import Experiment, train_dense  # noqa: E402
from pruning.pipeline import prune_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--method", default="magnitude")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    experiment = Experiment(dataset=args.dataset, model=args.model)
    dense = train_dense(experiment)
    data = experiment.load_data()
    sparsities = np.linspace(0.5, 0.99, args.repeats)
    prune_model(dense.model, data, args.method, 0.5)  # warm-up
    times = []
    for sparsity in sparsities:
        started = time.perf_counter()
        prune_model(dense.model, data, args.method, float(sparsity))
        times.append(time.perf_counter() - started)
    times_ms = sorted(1000 * t for t in times)
    print(f"{args.model} on {args.dataset}, {args.method}, {len(data.y_test)} test images, {args.repeats} slider values")
    print(f"median {statistics.median(times_ms):.1f} ms, p90 {times_ms[int(0.9 * len(times_ms)) - 1]:.1f} ms, "
          f"max {times_ms[-1]:.1f} ms (goal: median <= 100 ms)")


if __name__ == "__main__":
    main()
