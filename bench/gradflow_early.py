"""The gradient-flow paper's early-pruning claims (Lubana & Dick, ICLR 2021) at our scale, on the
``gradflow`` schedule (from initialisation: n rounds of one training epoch then a pruning, the
cumulative fraction k p / (k p + n (1 - p)), then training to the end):

    python bench/gradflow_early.py [--models mlp,lenet5] [--seeds 0,1,2] [--sparsities 0.7,0.9]
        [--criteria magnitude,snip,biased-loss,grasp,grad-norm,random] [--granularity structured|unstructured]
        [--rounds 3] [--epochs 8] [--early-epochs 2] [--dataset mnist-5k] [--out bench/gradflow_early.csv]
        [--workers N | --backend ray [--address ADDR]]

Claims, each judged per model and sparsity from the numbers:
1. magnitude-pruned models converge faster early on: their training loss right after the last
   pruning round, and over the first ``--early-epochs`` epochs after it, is lower than that of
   loss preservation (snip), GraSP and gradient-norm preservation;
2. loss preservation (snip) keeps the best final test accuracy when pruning this early;
3. GraSP (removing the largest -w Hg) can hurt: its final accuracy falls below the others'.

Design. Every criterion of a seed starts from the same initialisation (the experiment's seed) and
runs the same schedule; so does a *dense control*: the same schedule at sparsity 0 (the engine's
magnitude cut at 0 removes nothing), which trains on exactly the learning-rate restarts the pruned
runs see. Structured by default, as the paper: whole neurons/filters, the sparsity being the fraction
of them removed (the output layer stays whole), one global ranking; the random control is then cut
layerwise (each layer loses the same fraction at random), since a global ranking of summed uniform
scores ranks neurons by fan-in, not at random. Data criteria score on 256 samples per class (the
paper's 2,560), GraSP at T = 200 (the engine's defaults).

What is recorded. The engine's gradflow schedule keeps test accuracy only; ``RecordedGradFlow`` is
the same schedule step for step (tests/test_gradflow_early.py checks they give the same mask and
weights) that also keeps every epoch's mean training loss and the training split's loss right after
each pruning. Per run: ``loss_after_pruning`` (training-split cross-entropy right after the last
round), ``early_loss`` (mean epoch training loss over the first ``--early-epochs`` epochs after the
last round), ``train_loss_<e>`` for every epoch e, ``epochs_to_threshold`` (epochs after the last
round until the epoch training loss is at most the threshold; empty if never) and the final test
accuracy. Threshold: the dense control's (same seed) epoch training loss in epoch ``rounds``, i.e.
where the unpruned network stood when the pruning ended; a pruned run's count is how long it takes
to get back there. (The dense loss at the *same* epoch is out of reach for most pruned runs, so it
would only say "never".)

Verdict rule. Spread = sample standard deviation over seeds; A is *separated* from B when their
intervals mean +- spread do not overlap. Claim 1: reproduced when magnitude is separated below each
of snip, grasp and grad-norm on both losses; not when any of them is separated below magnitude, or
magnitude's mean is lower in fewer than half of the comparisons; partly otherwise. Claim 2:
reproduced when snip's accuracy is separated above every other criterion (dense control aside);
not when any is separated above snip; partly otherwise (tied with the best within spreads). Claim 3:
reproduced when GraSP is separated below both magnitude and snip; partly when separated below at
least one other criterion (random aside); not otherwise. With one seed nothing is separated, so
verdicts are at most "partly".

Sparsities (structured): 0.7 and 0.9 of the neurons/filters, the most that keeps every criterion
trainable. Every layer keeps at least one neuron/filter (the engine never empties a structured
layer), but a global ranking spreads the cut unevenly: on lenet5 (seed 0, 1 round + 1 epoch) global
magnitude already keeps a single conv1 filter at 0.9 and still reaches 90% (snip, GraSP 93%); at
0.95 it also leaves fc1 6 of 500 neurons and sits at chance (10%, loss ln 10), snip at 50%, so the
comparison there measures a collapse rather than early convergence.

Run time, extrapolated from the reduced runs (2 cores shared with other work, one process): a cell
of 2 epochs and 1 pruning round took 1.6 s on mlp and 5.7 s on lenet5 (GraSP and grad-norm, with
their Hessian-vector products on 2,560 samples, the slowest); the default cell trains 8 epochs and
scores 3 times, about 4x that. The default run is 2 models x 3 seeds x (1 dense control + 2
sparsities x 6 criteria) = 78 cells plus 6 dense models: about 4 minutes for mlp and 16 for lenet5,
about 20 minutes in all (``--workers 2`` helps only where both cores are free). The reduced check
(about 40 s):

    python bench/gradflow_early.py --models mlp --seeds 0 --rounds 1 --epochs 2 --early-epochs 1 \
        --out /tmp/gradflow_early.csv
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.cells import Cell, CellFailure  # noqa: E402
from pruning.errors import BadInputError  # noqa: E402
from pruning.experiment import Experiment  # noqa: E402
from pruning.registry import get_method  # noqa: E402
from pruning.report import result_json  # noqa: E402
from pruning.runner import add_backend_arguments, check_backend, run_cells  # noqa: E402
from pruning.schedules import GradFlow, gradflow_fraction  # noqa: E402
from pruning.train import TrainConfig, TrainingDivergedError, evaluate, fit  # noqa: E402

DENSE = "dense control"
CRITERIA = ("magnitude", "snip", "biased-loss", "grasp", "grad-norm", "random")
SLOWER_THAN_MAGNITUDE = ("snip", "grasp", "grad-norm")  # claim 1's contrast
LOSSES = ("loss_after_pruning", "early_loss")


def training_loss(model, data) -> float:
    """Cross-entropy on the whole training split, in eval mode (the model is masked in place)."""
    return evaluate(model, data.x_train, data.y_train, data.num_classes).loss


class RecordedGradFlow(GradFlow):
    """The engine's gradflow schedule, step for step, keeping what it discards: each epoch's
    ``fit`` row (its mean training loss) and the training split's loss before and after each
    pruning, appended to the run's history as rows of phase ``epoch`` and ``pruning``."""

    def run(self, experiment, prune, sparsity, progress=None, dense=None, on_round=None):
        self._curve = []  # filled by prune_and_train; a fresh list per run
        try:
            outcome = super().run(experiment, prune, sparsity, progress=progress, dense=dense, on_round=on_round)
        except TrainingDivergedError as error:  # a result of this cell, not a bad input: its row says so
            raise RuntimeError(f"diverged: {error}") from error
        return replace(outcome, history=outcome.history + self._curve)

    def prune_and_train(self, experiment, data, model, prune, sparsity, record, report, on_round):
        config, mask, curve = experiment.train, None, self._curve
        for round_index in range(1, self.rounds + 1):
            rows = fit(model, data, config, seed=experiment.seed + round_index, mask=mask, stop_after_epochs=1,
                       progress=report(f"round {round_index}/{self.rounds}", (round_index - 1) / (self.rounds + 1),
                                       round_index / (self.rounds + 1)))
            curve += [{**row, "phase": "epoch", "epoch": round_index} for row in rows]
            before = training_loss(model, data)
            mask = prune(model, gradflow_fraction(round_index, self.rounds, sparsity), previous=mask)
            mask.apply_(model)
            curve.append({"phase": "pruning", "epoch": round_index, "loss_before": before,
                          "loss_after": training_loss(model, data), "sparsity": mask.sparsity()})
            record(mask, round_index)
        remaining = max(1, config.epochs - self.rounds)
        rows = fit(model, data, replace(config, epochs=remaining), seed=experiment.seed, mask=mask,
                   progress=report("training to the end", self.rounds / (self.rounds + 1)))
        curve += [{**row, "phase": "epoch", "epoch": self.rounds + row["epoch"]} for row in rows]
        record(mask, self.rounds + remaining)
        return mask


def criterion_settings(criterion: str, granularity: str) -> dict:
    """One global ranking (the paper's), the output layer whole; random layerwise when structured."""
    scope = "layerwise" if criterion == "random" and granularity == "structured" else "global"
    return get_method(criterion).settings({"granularity": granularity, "scope": scope, "prune_output_layer": False})


def build_runs(args) -> list[tuple[dict, Cell]]:
    """Per model and seed: the dense control, then every criterion at every sparsity, all on the
    same schedule from the same initialisation."""
    runs = []
    for model in args.models:
        for seed in args.seeds:
            experiment = Experiment(dataset=args.dataset, model=model, seed=seed, train=TrainConfig(epochs=args.epochs))
            arms = [(DENSE, "magnitude", 0.0)] + [(criterion, criterion, sparsity)
                                                  for sparsity in args.sparsities for criterion in args.criteria]
            for arm, method, sparsity in arms:
                cell = Cell(experiment, method, sparsity, criterion_settings(method, args.granularity),
                            RecordedGradFlow(rounds=args.rounds))
                runs.append(({"model": model, "seed": seed, "criterion": arm, "target_sparsity": sparsity}, cell))
    return runs


def run_row(key: dict, outcome, args) -> dict:
    """A run's row: its losses, its curve (``train_loss_<epoch>``) and its accuracy; a run that
    failed twice keeps its key and says why."""
    base = {**key, "granularity": args.granularity, "rounds": args.rounds, "epochs": args.epochs}
    if isinstance(outcome, CellFailure):
        return {**base, "error": outcome.error}
    report = result_json(outcome)
    epochs = [row for row in report["history"] if row.get("phase") == "epoch"]
    last_pruning = [row for row in report["history"] if row.get("phase") == "pruning"][-1]
    after = [row["train_loss"] for row in epochs if row["epoch"] > args.rounds][:args.early_epochs]
    return {**base, "dataset": report["dataset"], "sparsity": report["sparsity"],
            "layer_kept": " ".join(f"{layer['name']}={1 - layer['sparsity']:.3f}" for layer in report["layers"]),
            "loss_before_last_pruning": last_pruning["loss_before"], "loss_after_pruning": last_pruning["loss_after"],
            "early_loss": sum(after) / len(after),
            **{f"train_loss_{row['epoch']}": row["train_loss"] for row in epochs},
            "dense_accuracy": report["dense"]["accuracy"], "accuracy": report["pruned"]["accuracy"],
            "seconds": report["seconds"]}


def epochs_to_threshold(table: pd.DataFrame, args) -> pd.DataFrame:
    """Each run's threshold (its seed's dense control, epoch training loss in epoch ``rounds``) and the
    epochs after the last round until its own epoch training loss is at most that (NaN: never)."""
    after = [f"train_loss_{epoch}" for epoch in range(args.rounds + 1, args.epochs + 1) if f"train_loss_{epoch}" in table]
    dense = table[table["criterion"] == DENSE].set_index(["model", "seed"])[f"train_loss_{args.rounds}"]
    thresholds = [dense.get((model, seed), math.nan) for model, seed in zip(table["model"], table["seed"])]
    counts = []
    for threshold, (_, run) in zip(thresholds, table.iterrows()):
        reached = [index for index, column in enumerate(after, start=1) if run[column] <= threshold]
        counts.append(reached[0] if reached else math.nan)
    return table.assign(threshold=thresholds, epochs_to_threshold=counts)


def stats(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean and sample spread over seeds, per criterion (NaN spread for one seed)."""
    return table.groupby("criterion", sort=False)[column].agg(["mean", "std", "count"])


def separated_below(a: pd.Series, b: pd.Series) -> bool:
    """a's interval mean +- spread lies wholly below b's (False where a spread is unknown)."""
    return bool(a["mean"] + a["std"] < b["mean"] - b["std"])


def claim_converges_faster(group: pd.DataFrame) -> str:
    needed = ["magnitude", *[name for name in SLOWER_THAN_MAGNITUDE if name in set(group["criterion"])]]
    if "magnitude" not in set(group["criterion"]) or len(needed) < 2:
        return "n/a (needs magnitude and one of snip, grasp, grad-norm)"
    wins = lower = losses = 0
    for column in LOSSES:
        values = stats(group, column)
        for other in needed[1:]:
            wins += separated_below(values.loc["magnitude"], values.loc[other])
            losses += separated_below(values.loc[other], values.loc["magnitude"])
            lower += values.loc["magnitude", "mean"] < values.loc[other, "mean"]
    total = len(LOSSES) * (len(needed) - 1)
    verdict = "reproduced" if wins == total else "not" if losses or lower < total / 2 else "partly"
    return f"{verdict} (magnitude lower in {lower}/{total} comparisons, separated in {wins}, separated above in {losses})"


def claim_snip_best(group: pd.DataFrame) -> str:
    values = stats(group[group["criterion"] != DENSE], "accuracy")
    if "snip" not in values.index or len(values) < 2:
        return "n/a (needs snip and another criterion)"
    others = values.drop(index="snip")
    above = [name for name in others.index if separated_below(values.loc["snip"], others.loc[name])]
    if above:
        return f"not ({', '.join(above)} separated above snip)"
    if all(separated_below(others.loc[name], values.loc["snip"]) for name in others.index):
        return "reproduced (snip separated above every other criterion)"
    return f"partly (snip ranks {1 + int((others['mean'] > values.loc['snip', 'mean']).sum())} of {len(values)} by mean; none separated above it)"


def claim_grasp_hurts(group: pd.DataFrame) -> str:
    values = stats(group[group["criterion"] != DENSE], "accuracy")
    if "grasp" not in values.index:
        return "n/a (needs grasp)"
    below = [name for name in values.index if name not in ("grasp", "random")
             and separated_below(values.loc["grasp"], values.loc[name])]
    versus_random = ""
    if "random" in values.index:
        relation = "below" if values.loc["grasp", "mean"] < values.loc["random", "mean"] else "above"
        versus_random = f"; mean {relation} the random control"
    if {"magnitude", "snip"} <= set(below):
        return f"reproduced (grasp separated below {', '.join(below)}{versus_random})"
    if below:
        return f"partly (grasp separated below {', '.join(below)} only{versus_random})"
    return f"not (grasp separated below no other criterion{versus_random})"


def mean_spread(mean: float, spread: float, scale: float = 1.0, digits: int = 3) -> str:
    if math.isnan(mean):
        return "-"
    return f"{scale * mean:.{digits}f}" + ("" if math.isnan(spread) else f" ± {scale * spread:.{digits}f}")


def summary(group: pd.DataFrame, args) -> pd.DataFrame:
    """Per criterion, mean ± spread over seeds of the losses, the epochs to the threshold and the accuracy."""
    grouped = group.groupby("criterion", sort=False)
    means, spreads = grouped.mean(numeric_only=True), grouped.std(numeric_only=True)
    table = pd.DataFrame(index=means.index)
    table["sparsity %"] = [mean_spread(means.loc[name, "sparsity"], math.nan, 100, 1) for name in means.index]
    for column, label in (("loss_after_pruning", "loss after pruning"), ("early_loss", f"loss first {args.early_epochs} ep.")):
        table[label] = [mean_spread(means.loc[name, column], spreads.loc[name, column]) for name in means.index]
    reached = grouped["epochs_to_threshold"].count()
    table["epochs to thr."] = [f"{mean_spread(means.loc[name, 'epochs_to_threshold'], spreads.loc[name, 'epochs_to_threshold'], digits=1)}"
                               f" ({reached[name]}/{grouped.size()[name]})" for name in means.index]
    table["accuracy %"] = [mean_spread(means.loc[name, "accuracy"], spreads.loc[name, "accuracy"], 100, 2) for name in means.index]
    return table


def curve_table(group: pd.DataFrame, args) -> pd.DataFrame:
    """Per criterion, mean ± spread of the epoch training loss in each epoch after the last round."""
    columns = [f"train_loss_{epoch}" for epoch in range(args.rounds + 1, args.epochs + 1) if f"train_loss_{epoch}" in group]
    grouped = group.groupby("criterion", sort=False)
    means, spreads = grouped[columns].mean(), grouped[columns].std()
    return pd.DataFrame({f"epoch {column.rsplit('_', 1)[1]}": [mean_spread(means.loc[name, column], spreads.loc[name, column])
                                                            for name in means.index] for column in columns},
                        index=means.index)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,lenet5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--sparsities", default="0.7,0.9", help="structured: fraction of neurons/filters removed")
    parser.add_argument("--criteria", default=",".join(CRITERIA))
    parser.add_argument("--granularity", choices=("structured", "unstructured"), default="structured")
    parser.add_argument("--rounds", type=int, default=3, help="pruning rounds, one training epoch before each")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs in all (rounds included)")
    parser.add_argument("--early-epochs", type=int, default=2, help="epochs after the last round that claim 1 averages")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "gradflow_early.csv")
    add_backend_arguments(parser)
    args = parser.parse_args()
    try:
        args.backend = check_backend(args.backend, args.workers, args.address)
        args.models = [model for model in args.models.split(",") if model]
        args.seeds = [int(seed) for seed in args.seeds.split(",")]
        args.sparsities = [float(sparsity) for sparsity in args.sparsities.split(",")]
        args.criteria = [name for name in args.criteria.split(",") if name]
        for name in args.criteria:
            get_method(name)
        if args.rounds < 1 or args.epochs <= args.rounds:
            raise ValueError("--epochs must exceed --rounds (at least one epoch after the last pruning), --rounds >= 1")
        if not 1 <= args.early_epochs <= args.epochs - args.rounds:
            raise ValueError(f"--early-epochs must be between 1 and the {args.epochs - args.rounds} epochs after pruning")
        runs = build_runs(args)
    except (BadInputError, ValueError) as error:
        parser.error(str(error))
    return args, runs


def main():
    args, runs = parse_args()
    started = time.perf_counter()

    def show(fraction: float, message: str) -> None:
        print(f"\r{100 * fraction:5.1f}% {message[:90]:<90}", end="", file=sys.stderr)

    outcomes = run_cells([cell for _, cell in runs], args.backend, progress=show).outcomes
    print(file=sys.stderr)
    table = pd.DataFrame([run_row(key, outcome, args) for (key, _), outcome in zip(runs, outcomes)])
    seconds = time.perf_counter() - started
    if "error" in table and table["error"].notna().any():
        print(f"{table['error'].notna().sum()} runs failed:", *table["error"].dropna().unique(), sep="\n  ")
        table = table[table["error"].isna()]
    table = epochs_to_threshold(table, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"\n== gradflow schedule, {args.granularity}, {args.rounds} rounds then {args.epochs - args.rounds} epochs "
          f"({args.epochs} in all), {args.dataset}, seeds {','.join(map(str, args.seeds))}; mean ± sample spread over seeds")
    print(f"threshold: the dense control's epoch training loss in epoch {args.rounds}; separated = intervals "
          f"mean ± spread do not overlap")
    for model in args.models:
        dense = table[(table["model"] == model) & (table["criterion"] == DENSE)]
        for sparsity in args.sparsities:
            group = pd.concat([dense, table[(table["model"] == model) & (table["criterion"] != DENSE)
                                            & (table["target_sparsity"] == sparsity)]])
            if group.empty:
                continue
            print(f"\n-- {model}, target sparsity {sparsity:g} ({'of neurons/filters' if args.granularity == 'structured' else 'of weights'})")
            print(summary(group, args).to_string())
            print("epoch training loss after the last round:")
            print(curve_table(group, args).to_string())
            pruned = group[group["criterion"] != DENSE]
            print(f"claim 1 (magnitude converges faster early): {claim_converges_faster(pruned)}")
            print(f"claim 2 (snip keeps accuracy best):        {claim_snip_best(pruned)}")
            print(f"claim 3 (GraSP can hurt):                   {claim_grasp_hurts(pruned)}")
    print(f"\nrun time {seconds:.0f} s ({len(table)} runs); rows in {args.out}")


if __name__ == "__main__":
    main()
