"""Recall distortion on mnist-5k: the intensification ratio alpha (our reconstruction of Good et
al.'s statistic, see pruning/analysis/recall.py) of magnitude against undecayed pruning, balanced
and long-tailed training data, mlp and lenet5, several seeds.

    python bench/recall_distortion.py [--models mlp,lenet5] [--imbalances 1,10] [--seeds 0,1,2]
        [--max-sparsity 0.99] [--level-fraction 0.6] [--gradient-samples 0] [--threads 1]
        [--out bench/recall_distortion.csv] [--summary-only]

Both methods run the same iterative pruning with rewinding to initialisation: one run per seed to
the highest sparsity, removing the same fraction of the remaining weights at each level and
retraining the experiment's 6 epochs after each, so both see the same sparsities and the same
retraining; only the score differs (|w| against |-w g + lambda w^2|). Every level's per-class
recall is written to the CSV as the run ends (a run already there is not redone), and alpha per
level is pooled over seeds with a bootstrap over classes (each drawn class brings its points of
every seed).

Undecayed pruning's g is averaged over the whole training split by default (``--gradient-samples
0``, the method's default; n > 0: a class-balanced batch of n). Each undecayed run is stored with
the gradient_samples it used (rows written before the setting existed were one batch of 128, read
as 128; magnitude rows carry -1, "not used"), so a run with other samples is run again, not reused.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.analysis.recall_runs import RecallRun, alpha_by_level, recall_run  # noqa: E402
from pruning.experiment import Experiment  # noqa: E402

METHODS = ("magnitude", "undecayed")
KEY = ["model", "imbalance", "method", "seed", "gradient_samples"]
LEGACY_GRADIENT_SAMPLES = 128  # undecayed rows written before the setting: one batch of 128
NOT_USED = -1  # magnitude rows: no gradient


def run_gradient_samples(method: str, gradient_samples: int) -> int:
    return gradient_samples if method == "undecayed" else NOT_USED


def read_frame(path: Path) -> pd.DataFrame:
    """The CSV, with the gradient_samples column filled in where an older file lacks it."""
    frame = pd.read_csv(path)
    if "gradient_samples" not in frame:
        frame["gradient_samples"] = [run_gradient_samples(method, LEGACY_GRADIENT_SAMPLES) for method in frame["method"]]
    return frame


def done_runs(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    frame = read_frame(path)
    return set(frame[KEY].itertuples(index=False, name=None))


def write_run(path: Path, model: str, imbalance: float, run: RecallRun, seconds: float, gradient_samples: int) -> None:
    if path.exists() and "gradient_samples" not in pd.read_csv(path, nrows=0):  # an older file: add the column once
        read_frame(path).to_csv(path, index=False)
    rows = [{"model": model, "imbalance": imbalance, "method": run.method, "seed": run.seed, "level": index + 1,
             "sparsity": level["sparsity"], "accuracy": level["accuracy"], "dense_accuracy": run.dense_accuracy,
             "per_class_recall": json.dumps(level["per_class_recall"]), "dense_recall": json.dumps(run.dense_recall),
             "run_seconds": seconds, "gradient_samples": run_gradient_samples(run.method, gradient_samples)}
            for index, level in enumerate(run.levels)]
    frame = pd.DataFrame(rows)
    if path.exists():  # the file's column order
        frame = frame[list(pd.read_csv(path, nrows=0).columns)]
    frame.to_csv(path, mode="a", header=not path.exists(), index=False)


def read_runs(path: Path, gradient_samples: int) -> dict[tuple, list[RecallRun]]:
    """Runs grouped by (model, imbalance, method), one per seed; undecayed runs with ``gradient_samples`` only."""
    frame = read_frame(path)
    frame = frame[frame["gradient_samples"] == [run_gradient_samples(m, gradient_samples) for m in frame["method"]]]
    groups: dict[tuple, list[RecallRun]] = {}
    for (model, imbalance, method, seed, _), rows in frame.groupby(KEY, sort=True):
        rows = rows.sort_values("level")
        levels = [{"sparsity": row.sparsity, "accuracy": row.accuracy, "per_class_recall": json.loads(row.per_class_recall)}
                  for row in rows.itertuples()]
        first = rows.iloc[0]
        run = RecallRun(method, int(seed), json.loads(first["dense_recall"]), float(first["dense_accuracy"]), levels)
        groups.setdefault((model, float(imbalance), method), []).append(run)
    return groups


def summary(path: Path, gradient_samples: int) -> pd.DataFrame:
    table = []
    for (model, imbalance, method), runs in read_runs(path, gradient_samples).items():
        for row in alpha_by_level(runs):
            table.append({"model": model, "imbalance": imbalance, "method": method, **row,
                          "dense_accuracy": sum(run.dense_accuracy for run in runs) / len(runs)})
    return pd.DataFrame(table)


def markdown(frame: pd.DataFrame) -> str:
    """One line per (model, imbalance, level): alpha [95% interval] and accuracy of each method."""
    lines = ["| model | imbalance | sparsity | magnitude α [95% CI] | undecayed α [95% CI] | accuracy magnitude / undecayed (%) |",
             "|---|---|---|---|---|---|"]
    for (model, imbalance, level), group in frame.groupby(["model", "imbalance", "level"], sort=False):
        by = group.set_index("method")
        cells = []
        for method in METHODS:
            row = by.loc[method] if method in by.index else None
            cells.append("—" if row is None else f"{row.alpha:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}]")
        accuracy = " / ".join(f"{100 * by.loc[m, 'accuracy']:.1f}" if m in by.index else "—" for m in METHODS)
        lines.append(f"| {model} | {imbalance:g} | {100 * group['sparsity'].mean():.1f}% | {cells[0]} | {cells[1]} | {accuracy} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="mlp,lenet5")
    parser.add_argument("--imbalances", default="1,10")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lenet5-seeds", default=None, help="seeds for lenet5 if fewer than --seeds (time budget)")
    parser.add_argument("--max-sparsity", type=float, default=0.99)
    parser.add_argument("--level-fraction", type=float, default=0.6)
    parser.add_argument("--gradient-samples", type=int, default=0,
                        help="undecayed pruning's g: 0 = the whole training split; n = a class-balanced batch of n")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("recall_distortion.csv"))
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads: one trains these small models faster on a busy 2-core machine")
    parser.add_argument("--summary-only", action="store_true", help="summarise the CSV, run nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if not args.summary_only:
        done = done_runs(args.out)
        for model in args.models.split(","):
            seeds = args.lenet5_seeds if model == "lenet5" and args.lenet5_seeds else args.seeds
            for imbalance in (float(value) for value in args.imbalances.split(",")):
                for seed in (int(value) for value in seeds.split(",")):
                    for method in METHODS:
                        samples = run_gradient_samples(method, args.gradient_samples)
                        if (model, imbalance, method, seed, samples) in done:
                            continue
                        experiment = Experiment(dataset="mnist-5k", model=model, imbalance=imbalance, seed=seed)
                        begun = time.perf_counter()
                        settings = {"gradient_samples": args.gradient_samples} if method == "undecayed" else None
                        run = recall_run(experiment, method, args.max_sparsity, args.level_fraction, settings)
                        seconds = time.perf_counter() - begun
                        write_run(args.out, model, imbalance, run, seconds, args.gradient_samples)
                        print(f"{model} imbalance {imbalance:g} seed {seed} {method}: {seconds:.0f} s "
                              f"(total {time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    frame = summary(args.out, args.gradient_samples)
    print(markdown(frame))
    print(f"\n{time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
