"""Predicted vs actual fundamental limit of pruning (Zhang et al.) on mnist-5k:

    python bench/limit.py [--models mlp,lenet5] [--seeds 0] [--preset quick|paper] [--set KEY=VALUE ...]
                          [--out bench/limit.csv] [--curve-out bench/limit_l1_curve.csv]

For each model and seed: LOMP (CE + lambda ||w||_1, no weight decay, then global one-shot
magnitude pruning, no fine-tuning); the actual limit is the largest pruned fraction of the grid
whose accuracy on the whole test split is at least the unpruned L1-trained model's minus the
tolerance; the prediction is the crossing G(R(p)) = p from the Hessian spectrum (SLQ on the
whole training split, products streamed in chunks of 128) and the pruned distance R(p). The paper
reports close agreement; our goal is within 5 percentage points.

``--preset paper`` is the reference's recipe: the L1 objective trained at a constant lr 0.01,
momentum 0.9, batch 128 for 200 epochs (``--set l1_epochs=N`` to change), 1,000 pruned fractions,
128 Lanczos steps. The L1 objective (training cross-entropy + lambda ||w||_1) is printed along the
epochs and written per epoch to the curve CSV, with its relative change over the last tenth of the
run: near zero means the L1 training has converged. Prints markdown tables and the run time.

A quick check of the script (about a minute): --models mlp --preset paper --set l1_epochs=3
--set grid_step=0.05 --set lanczos_steps=20
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

CURVE_POINTS = 10  # epochs shown per model in the printed curve (the CSV has every epoch)


def convergence(history: list[dict]) -> float | None:
    """Relative change of the L1 objective over the last tenth of the epochs (None without one)."""
    values = [row["l1_objective"] for row in history if "l1_objective" in row]
    if len(values) < 2:
        return None
    back = max(1, len(values) // 10)
    return (values[-1] - values[-1 - back]) / abs(values[-1 - back])


def print_curves(curves: pd.DataFrame) -> None:
    print("\nL1 objective (training CE + lambda * L1 norm) along the L1 training:\n")
    print("| model | seed | epoch | CE (train) | L1 norm | objective | test acc (%) |")
    print("|---|---|---|---|---|---|---|")
    for (model, seed), rows in curves.groupby(["model", "seed"], sort=False):
        stride = max(1, len(rows) // CURVE_POINTS)
        shown = pd.concat([rows.iloc[::stride], rows.iloc[[-1]]]).drop_duplicates("epoch")
        for row in shown.itertuples():
            print(f"| {model} | {seed} | {row.epoch} | {row.cross_entropy:.4f} | {row.l1_norm:.1f} | "
                  f"{row.l1_objective:.4f} | {100 * row.test_accuracy:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,lenet5")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--preset", choices=("quick", "paper"), help="the L1 recipe (same as --set preset=...)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="a limit setting (repeatable)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "limit.csv")
    parser.add_argument("--curve-out", type=Path, default=Path(__file__).resolve().parent / "limit_l1_curve.csv")
    args = parser.parse_args()
    pairs = parse_set(args.set or [])
    if args.preset:
        pairs["preset"] = args.preset
    settings = LimitSettings.from_pairs(pairs)
    rows, curves = [], []
    begun = time.perf_counter()
    for model in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            started = time.perf_counter()
            result = fundamental_limit(Experiment(dataset=args.dataset, model=model, seed=seed), settings)
            history = result.details["l1_history"]
            curves += [{"model": model, "seed": seed, **{key: row.get(key) for key in (
                "epoch", "train_loss", "cross_entropy", "l1_norm", "l1_objective", "test_accuracy")}} for row in history]
            change = convergence(history)
            rows.append({"model": model, "seed": seed, "preset": settings.preset, "l1_epochs": len(history),
                         "predicted": 100 * result.predicted, "actual": 100 * result.actual,
                         "gap": 100 * (result.predicted - result.actual), "dense_accuracy": 100 * result.dense_accuracy,
                         "eps": result.eps, "zero_mass": 100 * result.zero_mass,
                         "top_eigenvalue": result.details["top_eigenvalue"], "total_norm": result.details["total_norm"],
                         "hessian_samples": result.details.get("hessian_samples"),
                         "objective_change_last_tenth": change, "seconds": time.perf_counter() - started})
            print(f"{model} seed {seed}: predicted {rows[-1]['predicted']:.1f}%, actual {rows[-1]['actual']:.1f}% "
                  f"({rows[-1]['seconds']:.0f} s)", file=sys.stderr, flush=True)
            pd.DataFrame(rows).to_csv(args.out, index=False)
            pd.DataFrame(curves).to_csv(args.curve_out, index=False)
    table = pd.DataFrame(rows)
    print(f"settings: {settings.to_dict()}\n")
    print("| model | seed | L1 epochs | objective change, last tenth | predicted (%) | actual (%) | "
          "predicted - actual (pts) | unpruned acc (%) | eps | zero eig. (%) | top eig. | Hessian samples | time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in table.itertuples():
        change = "n/a" if pd.isna(row.objective_change_last_tenth) else f"{100 * row.objective_change_last_tenth:+.2f}%"
        print(f"| {row.model} | {row.seed} | {row.l1_epochs} | {change} | {row.predicted:.1f} | {row.actual:.1f} | "
              f"{row.gap:+.1f} | {row.dense_accuracy:.2f} | {row.eps:.3f} | {row.zero_mass:.1f} | "
              f"{row.top_eigenvalue:.1f} | {row.hessian_samples} | {row.seconds:.0f} |")
    curve_rows = pd.DataFrame(curves)
    if "l1_objective" in curve_rows and curve_rows["l1_objective"].notna().any():
        print_curves(curve_rows.dropna(subset=["l1_objective"]))
    else:
        print("\n(no L1 objective recorded: the L1 models were read from a cache written before it was recorded)")
    print(f"\ntotal time {time.perf_counter() - begun:.0f} s; rows in {args.out}, the L1 curve in {args.curve_out}")


if __name__ == "__main__":
    main()
