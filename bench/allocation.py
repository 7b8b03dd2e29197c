"""Which layer-wise allocation wins where: magnitude pruning of mlp, lenet5 and vgg-small on
mnist-5k with each allocation policy (global, layerwise, erk, owl, sensitivity) at 90%, 95% and
98% sparsity, without and with fine-tuning (2 epochs by default), over seeds.

    python bench/allocation.py [--models mlp,lenet5,vgg-small] [--seeds 0,1,2] [--sparsities 0.9,0.95,0.98]
        [--finetune-epochs 2] [--threads 2] [--out bench/allocation.csv]

Each (model, seed) trains its dense model once (the experiment's recipe, cached); each cell
prunes it one-shot and measures the test split, then fine-tunes the pruned model (the mask held,
cosine lr as the oneshot schedule does) and measures again. Rows are appended to the CSV as they
finish (a cell already there is not redone); the summary (mean and spread over seeds, the winner
per column) is printed from the whole CSV.
"""

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.errors import BadInputError  # noqa: E402
from pruning.experiment import Experiment, train_dense  # noqa: E402
from pruning.pipeline import prune_model, run_prune  # noqa: E402
from pruning.schedules import make_schedule  # noqa: E402

POLICIES = ("global", "layerwise", "erk", "owl", "sensitivity")
KEY = ["model", "seed", "allocation", "sparsity"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,lenet5,vgg-small")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sparsities", default="0.9,0.95,0.98")
    parser.add_argument("--allocations", default=",".join(POLICIES))
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/allocation.csv"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    done = set(pd.read_csv(args.out)[KEY].itertuples(index=False, name=None)) if args.out.exists() else set()
    started = time.perf_counter()
    finetune = make_schedule("oneshot", {"finetune_epochs": args.finetune_epochs})
    for model in args.models.split(","):
        for seed in map(int, args.seeds.split(",")):
            experiment = Experiment(model=model, seed=seed)
            dense = train_dense(experiment).model
            data = experiment.load_data()
            for allocation in args.allocations.split(","):
                for sparsity in map(float, args.sparsities.split(",")):
                    if (model, seed, allocation, sparsity) in done:
                        continue
                    cell = time.perf_counter()
                    row = {"model": model, "seed": seed, "allocation": allocation, "sparsity": sparsity}
                    try:
                        pruned = prune_model(dense, data, "magnitude", sparsity, {"scope": allocation}, seed=seed)
                        tuned = run_prune(experiment, "magnitude", sparsity, {"scope": allocation}, schedule=finetune)
                    except BadInputError as error:  # e.g. a cap the allocation cannot meet: reported, not hidden
                        row.update(error=str(error))
                    else:
                        row.update(achieved=pruned.stats.sparsity, accuracy=pruned.pruned.accuracy,
                                   finetuned=tuned.pruned.accuracy, dense=tuned.dense.accuracy,
                                   layers=";".join(f"{name}={value:.3f}" for name, value in pruned.details.layer_targets.items()))
                    row["seconds"] = time.perf_counter() - cell
                    pd.DataFrame([row]).to_csv(args.out, mode="a", header=not args.out.exists(), index=False)
                    print(row, flush=True)
    print(f"\nran {time.perf_counter() - started:.0f} s\n")
    summary(pd.read_csv(args.out))


def summary(frame: pd.DataFrame) -> None:
    """Mean ± spread (std over seeds) of accuracy per allocation, without and with fine-tuning; * marks the best."""
    for column, title in (("accuracy", "no fine-tuning"), ("finetuned", "fine-tuned")):
        table = frame.groupby(["model", "sparsity", "allocation"])[column].agg(["mean", "std", "count"]).reset_index()
        print(f"## test accuracy, {title} (mean ± std over seeds, n)")
        for (model, sparsity), group in table.groupby(["model", "sparsity"]):
            best = group["mean"].max()
            cells = [f"{row.allocation} {100 * row['mean']:.1f}±{100 * (row['std'] if row['count'] > 1 else 0):.1f}"
                     f"{'*' if row['mean'] == best else ''} (n={row['count']})" for _, row in group.iterrows()]
            print(f"{model} @ {sparsity:g}: " + ", ".join(cells))
        print()


if __name__ == "__main__":
    main()
