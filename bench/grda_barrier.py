"""Directional pruning's claim, measured: do gRDA and sDprun land in the flat valley of the SGD
minimum, where magnitude pruning of that minimum to the same sparsity jumps out of it?

    python bench/grda_barrier.py [--models mlp[,lenet5]] [--seeds 0,1,2] [--c 0.001,0.0025]
        [--epochs 200] [--lr 0.1] [--mu 0.51] [--lr-schedule half-then-decay] [--dataset mnist-5k]
        [--out bench/grda_barrier.csv] [--workers N | --backend ray [--address ADDR]]

The claim (Chao et al., NeurIPS 2020; Li et al., 2021): the sparse point gRDA (or sDprun, its
structured version) reaches lies in the flat valley of the SGD minimum, so the TRAIN loss along the
straight line from the SGD solution to it stays flat, whereas magnitude pruning of the SGD solution
to the same sparsity leaves the valley. Per model and seed:

- SGD: the experiment's initialisation trained by plain SGD (no momentum, no weight decay) with the
  gRDA runs' lr, lr schedule, epochs, batch size and data order: gRDA with c = 0. Its train loss
  (the full train split, eval mode) after every epoch is printed with its relative change over the
  last tenth of the epochs and over the tenth before the lr decays (the decay flattens the last
  tenth by itself); the per-epoch curve goes to ``<out>_sgd.csv``.
- gRDA (unstructured) and sDprun (structured) for each c, mu 0.51 (the method's default, the
  paper's), the authors' half-then-decay schedule, the same epochs: registry runs, run as cells
  (``--workers`` / ``--backend ray``) and read back from the run cache for their weights.
- magnitude pruning of the SGD solution, no fine-tuning, at exactly the sparsity each run reached:
  for gRDA, unstructured |w| over the same weights (output layer included), once with one global
  threshold and once with gRDA's own per-layer sparsities; for sDprun, whole neurons/filters by
  L2 norm, as many per layer as sDprun removed (the output layer whole, as sDprun leaves it).

Each pruned point: the train loss at 21 points a = 0, 0.05, ..., 1 of (1 - a) w_SGD + a w_pruned
on the full train split in eval mode; barrier = the line's maximum minus its larger endpoint;
jump = the pruned end's loss minus the SGD end's; the pruned point's test accuracy. The table shows
mean +- std over seeds; the CSV one row per point (its 21 losses in ``line``).

Which SGD solution the lines start from (our reading): gRDA is SGD plus a soft threshold on the
accumulated steps, and the paper's directional-pruning solution is defined around the minimum that
SGD reaches from the same start with the same steps. So every line starts at the plain-SGD run
above (same init, data order, lr schedule, epochs), not at the experiment's dense model (momentum,
weight decay, cosine decay: a different minimum); the magnitude baselines prune that same SGD point.

c: what sets the sparsity is the threshold Lambda, which grows with the step count. The authors'
c = 0.0005-0.001 ran 78,000-235,000 steps and reached Lambda = 0.025 (WRN28x10, c = 0.001, 200 CIFAR
epochs) and 0.022 (VGG16, c = 0.0005, 600 epochs). Our runs are capped at 200 epochs (the method's
limit), 12,600 steps on mnist-5k, where c = 0.0005 reaches Lambda = 0.005 and c = 0.001 reaches 0.010:
gRDA leaves the mlp about 25% sparse at c = 0.001 (about half that at 0.0005), and sDprun removes no
neuron at either. So the default list is the
largest c of their range, 0.001, and c = 0.0025, which reaches their final Lambda (0.025) in our
steps (the mlp about 60% sparse, sDprun about 16%). The table shows each run's final Lambda.

Convergence with the defaults (mlp, seed 0): the SGD run ends at 100% train accuracy and a train loss
of 2.6e-4, 0.2% lower than a tenth of the run before; at the constant lr the cross-entropy still fell
26% over the tenth before the decay (on separable data it only tends to zero as the margins grow).

Run time: one mlp seed (SGD + gRDA + sDprun at 200 epochs, c = 0.001 and 0.0025: five runs, one
thread) took 113 s on the shared 2-core machine, so the default (mlp, 3 seeds) takes about 6 minutes
in this process, about 4 with ``--workers 2`` (the SGD runs and the lines stay in this process). An
epoch of lenet5 costs about 14 times the mlp's (1.2 s against 0.09 s): about 25 minutes per lenet5
seed, so ``--models mlp,lenet5`` takes about 1.3 hours (about 50 minutes with ``--workers 2``). With a
remote Ray cluster each run is redone here for its weights (the workers' caches are theirs).

A reduced check (under a minute): python bench/grda_barrier.py --epochs 2 --seeds 0 --out /tmp/grda_barrier.csv
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning.analysis.landscape import axis, changed, evaluate_points, full_tensors  # noqa: E402
from pruning.cells import Cell, CellFailure  # noqa: E402
from pruning.errors import BadInputError  # noqa: E402
from pruning.experiment import DenseModel, Experiment, train_cached, variant_path  # noqa: E402
from pruning.masks import Mask  # noqa: E402
from pruning.methods.base import PruneOutcome  # noqa: E402
from pruning.methods.grda import LR_SCHEDULES, lr_scheduler  # noqa: E402
from pruning.pipeline import PruneResult, measure, prune_model, run_prune  # noqa: E402
from pruning.registry import get_method  # noqa: E402
from pruning.runner import add_backend_arguments, check_backend, run_cells  # noqa: E402
from pruning.schedules import OneShot  # noqa: E402
from pruning.selection import layer_group_counts, mask_from_scores  # noqa: E402
from pruning.train import TrainingHooks, evaluate, steps_per_epoch, train_epochs  # noqa: E402

LINE = axis((0.0, 1.0), 21)  # a = 0, 0.05, ..., 1
SGD_FORMAT = 1  # bump when the SGD baseline's training changes: its cached models are then retrained
FAMILIES = {"grda": "gRDA", "sdprun": "sDprun"}


def sgd_solution(experiment: Experiment, args) -> DenseModel:
    """Plain SGD from the experiment's initialisation, exactly as a gRDA run trains with c = 0
    (``TrainingRun(from_init=True)``: the same model, batches, seed and lr schedule), cached.
    Its history rows carry ``full_train_loss``: the whole train split in eval mode."""
    choices = {"format": SGD_FORMAT, "optimizer": "sgd, no momentum, no weight decay", "lr": args.lr,
               "lr_schedule": args.lr_schedule, "epochs": args.epochs}

    def train(model, data):
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.0, weight_decay=0.0)
        batch_size = experiment.train.batch_size
        scheduler = lr_scheduler(optimizer, args.lr_schedule, args.epochs, steps_per_epoch(data, batch_size))

        def full_train_loss(row):
            row["full_train_loss"] = evaluate(model, data.x_train, data.y_train, data.num_classes).loss

        return train_epochs(model, data, args.epochs, batch_size, optimizer, seed=experiment.seed, scheduler=scheduler,
                            hooks=TrainingHooks(on_epoch_end=full_train_loss))

    return train_cached(experiment, variant_path(experiment, "bench-sgd", choices), train)


def layer_matched_magnitude(model: torch.nn.Module, reference: Mask, granularity: str) -> Mask:
    """Per layer of ``reference``, as many of ``model``'s weights (unstructured: smallest |w|) or
    neurons/filters (structured: smallest L2 norm) pruned as ``reference`` prunes there."""
    weights = dict(model.named_parameters())
    kept = {}
    for name, (pruned, total) in layer_group_counts(reference, granularity).items():
        score = weights[name].detach().abs()
        if pruned == total:  # a layer the run emptied: empty here too (a sparsity of 1 is no selection)
            kept[name] = torch.zeros_like(score, dtype=torch.bool)
            continue
        kept.update(mask_from_scores({name: score}, pruned / total, scope="layerwise", granularity=granularity,
                                     aggregate="l2", allow_empty_layers=True))
    return Mask(kept)


def train_line(model: torch.nn.Module, start: dict, end: dict, data) -> list[float]:
    """Mean cross-entropy on the full train split (eval mode) at each a of LINE between two points."""
    alpha = torch.tensor(LINE, dtype=torch.float32, device=data.x_train.device)
    losses, _ = evaluate_points(model, start, data.x_train, data.y_train, positions=[changed(start, end)],
                                position_weights=torch.stack([1 - alpha, alpha], dim=1))
    return losses.tolist()


def point_row(model: torch.nn.Module, sgd_tensors: dict, data, result: PruneResult, point: str) -> dict:
    """A pruned point's row: its sparsity, test accuracy and the train loss along the line from SGD."""
    line = train_line(model, sgd_tensors, result.pruned_tensors, data)
    counts = layer_group_counts(result.mask, "structured")
    return {"point": point, "sparsity": result.mask.sparsity(), "test_accuracy": result.pruned.accuracy,
            "sgd_train_loss": line[0], "train_loss": line[-1], "line_max": max(line),
            "barrier": max(line) - max(line[0], line[-1]), "jump": line[-1] - line[0],
            "groups_pruned": sum(pruned for pruned, _ in counts.values()) / sum(total for _, total in counts.values()),
            "layer_sparsity": " ".join(f"{name}={value:.4f}" for name, value in result.mask.layer_sparsity().items()),
            "line": " ".join(f"{loss:.6g}" for loss in line)}


def magnitude_points(model: torch.nn.Module, data, run: PruneResult, family: str, seed: int) -> list[tuple[str, PruneResult]]:
    """The SGD solution magnitude-pruned to the run's sparsity, no fine-tuning (see the docstring)."""
    label = FAMILIES[family]
    if family == "sdprun":
        mask = layer_matched_magnitude(model, run.mask, "structured")
        return [(f"L2 neurons/filters, {label}'s per-layer counts",
                 measure(model, data, "magnitude", {"granularity": "structured", "scope": f"{label}'s per-layer counts"},
                         mask.sparsity(), PruneOutcome(mask), time.perf_counter()))]
    overrides = {"scope": "global", "granularity": "unstructured", "prune_output_layer": True, "allow_empty_layers": True}
    matched = layer_matched_magnitude(model, run.mask, "unstructured")
    return [
        ("magnitude, global", prune_model(model, data, "magnitude", run.mask.sparsity(), overrides, seed=seed)),
        (f"magnitude, {label}'s layer sparsities",
         measure(model, data, "magnitude", {"granularity": "unstructured", "scope": f"{label}'s layer sparsities"},
                 matched.sparsity(), PruneOutcome(matched), time.perf_counter())),
    ]


def relative_change(losses: list[float], end: int, span: int) -> float:
    """(L[end] - L[end - span]) / L[end - span], epochs 1-based; NaN where the start is before epoch 1."""
    start = end - span
    return (losses[end - 1] - losses[start - 1]) / losses[start - 1] if start >= 1 else math.nan


def sgd_rows(experiment: Experiment, sgd: DenseModel, data, args) -> tuple[dict, list[dict]]:
    """The SGD point's row and its per-epoch curve."""
    losses = [row["full_train_loss"] for row in sgd.history]
    tenth = max(1, round(args.epochs / 10))
    train = evaluate(sgd.model, data.x_train, data.y_train, data.num_classes)
    row = {"point": "SGD", "sparsity": 0.0, "test_accuracy": evaluate(sgd.model, data.x_test, data.y_test, data.num_classes).accuracy,
           "sgd_train_loss": train.loss, "train_loss": train.loss, "train_accuracy": train.accuracy,
           "last_tenth_change": relative_change(losses, args.epochs, tenth),
           "pre_decay_tenth_change": relative_change(losses, args.epochs // 2, tenth)
           if args.lr_schedule == "half-then-decay" else math.nan}
    curve = [{"model": experiment.model, "seed": experiment.seed, "epoch": entry["epoch"],
              "full_train_loss": entry["full_train_loss"], "test_accuracy": entry["test_accuracy"]} for entry in sgd.history]
    return row, curve


def run_settings(family: str, c: float, args) -> dict:
    return get_method(family).settings({"c": c, "mu": args.mu, "lr": args.lr, "lr_schedule": args.lr_schedule,
                                        "epochs": args.epochs})


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--c", default="0.001,0.0025", help="gRDA/sDprun threshold scales, comma-separated")
    parser.add_argument("--mu", type=float, default=0.51)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="half-then-decay")
    parser.add_argument("--epochs", type=int, default=200, help="every run's epochs (SGD, gRDA, sDprun); at most 200")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "grda_barrier.csv")
    add_backend_arguments(parser, " for the gRDA/sDprun runs")
    args = parser.parse_args()
    try:
        args.backend = check_backend(args.backend, args.workers, args.address)
        args.models = [model for model in args.models.split(",") if model]
        args.seeds = [int(seed) for seed in args.seeds.split(",")]
        args.c = [float(c) for c in args.c.split(",")]
        args.experiments = [Experiment(dataset=args.dataset, model=model, seed=seed)
                            for model in args.models for seed in args.seeds]
        args.runs = [(family, c, run_settings(family, c, args)) for family in FAMILIES for c in args.c]
    except (BadInputError, ValueError) as error:
        parser.error(str(error))
    return args


def spread(values: pd.Series, digits: str) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    return f"{values.mean():{digits}} ± {values.std(ddof=0):.2g}" if len(values) > 1 else f"{values.mean():{digits}}"


def print_curves(curves: pd.DataFrame, table: pd.DataFrame) -> None:
    """The SGD train loss per epoch (mean over seeds) and how much it still moved at the end."""
    for model, curve in curves.groupby("model", sort=False):
        mean = curve.groupby("epoch")["full_train_loss"].mean()
        print(f"\n== SGD baseline, {model}: train loss (full train split, eval mode) per epoch, mean over seeds")
        for start in range(0, len(mean), 10):
            print(f"  {start + 1:>4}-{min(start + 10, len(mean)):<4}", " ".join(f"{loss:.3g}" for loss in mean.iloc[start:start + 10]))
        sgd = table[(table["model"] == model) & (table["point"] == "SGD")]
        print(f"  relative change over the last tenth of the epochs: {spread(100 * sgd['last_tenth_change'], '+.2f')} %; "
              f"over the tenth before the lr decays: {spread(100 * sgd['pre_decay_tenth_change'], '+.2f')} %; "
              f"train accuracy at the end {spread(100 * sgd['train_accuracy'], '.2f')} %")


def print_table(table: pd.DataFrame) -> None:
    for model, group in table.groupby("model", sort=False):
        rows = []
        for (c, point), runs in group.groupby(["c", "point"], sort=False, dropna=False):
            rows.append({"point": point, "c": "-" if pd.isna(c) else f"{c:g}",
                         "Lambda": spread(runs["final_threshold"], ".4f") if point in FAMILIES.values() else "-",
                         "sparsity %": spread(100 * runs["sparsity"], ".2f"),
                         "test acc %": spread(100 * runs["test_accuracy"], ".2f"),
                         "train loss": spread(runs["train_loss"], ".4g"),
                         "barrier": spread(runs["barrier"], ".3g") if point != "SGD" else "-",
                         "pruned - SGD": spread(runs["jump"], ".3g") if point != "SGD" else "-",
                         "seeds": len(runs)})
        print(f"\n== {model}: train loss along SGD -> pruned point (full train split, eval mode), mean ± std over seeds")
        print(pd.DataFrame(rows).to_string(index=False))


def main():
    args = parse_args()
    started = time.perf_counter()
    cells = [Cell(experiment, family, None, settings, OneShot())
             for experiment in args.experiments for family, _, settings in args.runs]

    def show(fraction: float, message: str) -> None:
        print(f"\r{100 * fraction:5.1f}% {message[:90]:<90}", end="", file=sys.stderr)

    outcomes = iter(run_cells(cells, args.backend, progress=show).outcomes)
    print(file=sys.stderr)
    rows, curves = [], []
    for experiment in args.experiments:
        print(f"SGD baseline and lines: {experiment.model}, seed {experiment.seed}", file=sys.stderr)
        data = experiment.load_data()
        sgd = sgd_solution(experiment, args)
        sgd_tensors = full_tensors(sgd.model)
        base = {"model": experiment.model, "seed": experiment.seed, "epochs": args.epochs, "lr": args.lr,
                "lr_schedule": args.lr_schedule, "mu": args.mu}
        row, curve = sgd_rows(experiment, sgd, data, args)
        rows.append({**base, "family": "sgd", "c": math.nan, **row})
        curves += curve
        for family, c, settings in args.runs:
            keys = {**base, "family": family, "c": c}
            outcome = next(outcomes)
            if isinstance(outcome, CellFailure):
                rows.append({**keys, "point": FAMILIES[family], "error": outcome.error})
                continue
            run = run_prune(experiment, family, None, settings)  # the cells' run, read back with its weights
            threshold = {"final_threshold": run.details.final_threshold}
            rows.append({**keys, **threshold, **point_row(sgd.model, sgd_tensors, data, run, FAMILIES[family])})
            for point, result in magnitude_points(sgd.model, data, run, family, experiment.seed):
                rows.append({**keys, **threshold, **point_row(sgd.model, sgd_tensors, data, result, point)})
    seconds = time.perf_counter() - started
    table, curves = pd.DataFrame(rows), pd.DataFrame(curves)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    curve_path = args.out.with_name(f"{args.out.stem}_sgd.csv")
    curves.to_csv(curve_path, index=False)
    if "error" in table and table["error"].notna().any():
        print(f"{table['error'].notna().sum()} runs failed:", *table["error"].dropna().unique(), sep="\n  ")
        table = table[table["error"].isna()]
    print(f"== {args.dataset}: {args.epochs} epochs, lr {args.lr:g} ({args.lr_schedule}), batch "
          f"{args.experiments[0].train.batch_size}, mu {args.mu:g}, seeds {','.join(map(str, args.seeds))}; "
          "every line starts at the plain-SGD solution from the same init")
    print_curves(curves, table)
    print_table(table)
    print(f"\nrun time {seconds:.0f} s; rows in {args.out}, the SGD curves in {curve_path}")


if __name__ == "__main__":
    main()
