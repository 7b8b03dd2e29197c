"""Predicted vs actual fundamental limit of pruning (Zhang et al.) on mnist-5k:

    python bench/limit.py [--models mlp,lenet5] [--seeds 0] [--set KEY=VALUE ...] [--out bench/limit.csv]

For each model and seed: LOMP (CE + lambda ||w||_1, no weight decay, then global one-shot
magnitude pruning, no fine-tuning); the actual limit is the largest pruned fraction (grid step
0.01) whose test accuracy is at least the unpruned L1-trained model's; the prediction is the
crossing G(R(p)) = p from the Hessian spectrum (SLQ) and the pruned distance R(p). The paper
reports close agreement; our goal is within 5 percentage points. Prints a markdown table and
writes one CSV row per run.
"""

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.analysis.limit import LimitSettings, fundamental_limit  # noqa: E402
from pruning.cli import parse_set  # noqa: E402
from pruning.experiment import Experiment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,lenet5")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="a limit setting (repeatable)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "limit.csv")
    args = parser.parse_args()
    settings = LimitSettings.from_pairs(parse_set(args.set or []))
    rows = []
    for model in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            started = time.perf_counter()
            result = fundamental_limit(Experiment(dataset=args.dataset, model=model, seed=seed), settings)
            rows.append({"model": model, "seed": seed, "predicted": 100 * result.predicted, "actual": 100 * result.actual,
                         "gap": 100 * (result.predicted - result.actual), "dense_accuracy": 100 * result.dense_accuracy,
                         "eps": result.eps, "zero_mass": 100 * result.zero_mass,
                         "top_eigenvalue": result.details["top_eigenvalue"], "total_norm": result.details["total_norm"],
                         "seconds": time.perf_counter() - started})
            print(f"{model} seed {seed}: predicted {rows[-1]['predicted']:.1f}%, actual {rows[-1]['actual']:.0f}% "
                  f"({rows[-1]['seconds']:.0f} s)", file=sys.stderr, flush=True)
            pd.DataFrame(rows).to_csv(args.out, index=False)
    table = pd.DataFrame(rows)
    print(f"settings: {settings.to_dict()}\n")
    print("| model | seed | predicted (%) | actual (%) | predicted - actual (pts) | unpruned acc (%) | eps | zero eig. (%) "
          "| top eig. | time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in table.itertuples():
        print(f"| {row.model} | {row.seed} | {row.predicted:.1f} | {row.actual:.0f} | {row.gap:+.1f} | "
              f"{row.dense_accuracy:.2f} | {row.eps:.3f} | {row.zero_mass:.1f} | {row.top_eigenvalue:.1f} | {row.seconds:.0f} |")


if __name__ == "__main__":
    main()
