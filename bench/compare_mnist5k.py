"""Criteria compared over a sparsity sweep on mnist-5k, ShrinkBench style: for mlp and lenet5,
compressions 2x-64x, 3 seeds, one-shot pruning of the trained model then fine-tuning.

    python bench/compare_mnist5k.py [--seeds 0,1,2] [--finetune-epochs 2] [--out bench/compare_mnist5k.csv]

Prints, per model and compression, the mean accuracy after fine-tuning of each method, and
checks the goal: at every compression >= 8x the best criterion matches or beats global
magnitude (same fine-tuning budget), and random sits clearly below both.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.experiment import Experiment  # noqa: E402
from pruning.report import sweep_row  # noqa: E402
from pruning.schedules import OneShot  # noqa: E402
from pruning.sweep import run_sweep  # noqa: E402

METHODS = ["magnitude", "random", "snip", "taylor", "grad-norm", "synflow"]
COMPRESSIONS = [2, 4, 8, 16, 32, 64]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="mlp,lenet5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("compare_mnist5k.csv"))
    args = parser.parse_args()
    sparsities = [1 - 1 / c for c in COMPRESSIONS]
    seeds = [int(s) for s in args.seeds.split(",")]
    frames = []
    for model in args.models.split(","):
        rows = run_sweep(Experiment(dataset="mnist-5k", model=model), METHODS, sparsities, seeds,
                         schedule=OneShot(finetune_epochs=args.finetune_epochs),
                         progress=lambda f, m: print(f"\r{model}: {100 * f:5.1f}% {m:<50}", end="", file=sys.stderr))
        print(file=sys.stderr)
        frames.append(pd.DataFrame([sweep_row(result) for result in rows]))
    table = pd.concat(frames)
    table.to_csv(args.out, index=False)
    table["compression_target"] = (1 / (1 - table["target_sparsity"])).round().astype(int)
    summary = table.pivot_table(index=["model", "compression_target"], columns="method",
                                values="accuracy_after_finetune", aggfunc="mean")
    print(summary.map(lambda v: f"{100 * v:.2f}").to_string())
    dense = table.groupby("model")["dense_accuracy"].mean()
    print("\ndense accuracy:", {k: round(100 * v, 2) for k, v in dense.items()})
    criteria = [m for m in METHODS if m not in ("random", "magnitude")]
    for (model, compression), row in summary.iterrows():
        if compression < 8:
            continue
        best = max(criteria + ["magnitude"], key=lambda m: row[m])
        ok = row[best] >= row["magnitude"] and row["random"] < min(row["magnitude"], row[best]) - 0.01
        print(f"{model} {compression}x: best {best} {100 * row[best]:.2f}, magnitude {100 * row['magnitude']:.2f}, "
              f"random {100 * row['random']:.2f} -> {'goal met' if ok else 'goal NOT met'}")


if __name__ == "__main__":
    main()
