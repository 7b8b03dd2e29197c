"""SequentialAttention++ against its ACDC control and one-shot block magnitude + fine-tuning, with
the same blocks, sparsity and epochs:

    python bench/seqattn_acdc.py [--models mlp,lenet5] [--seeds 0,1,2] [--cycles 2] [--phase-epochs 1]
        [--finetune-epochs 1] [--sparsity 0.9] [--block-size 4] [--out bench/seqattn_acdc.csv]
        [--workers N | --backend ray [--address ADDR]]

- seqattn: SequentialAttention++ (selection=attention): the blocks of lowest learned attention go.
- acdc control: the same method with selection=acdc: attention fixed at 1, the blocks of lowest L2
  norm go; the same phases ([dense, sparsification, sparse] x cycles, then a fine-tune).
- block magnitude: one-shot layerwise block-magnitude pruning of the trained dense model (granularity
  block, the same block size), fine-tuned for as many epochs as the other two train (3 x cycles x
  phase epochs + fine-tune epochs), at the project's fine-tuning lr (a tenth of the training lr).

Every arm prunes every layer (min_blocks 1) to the same block ratio per layer, rounded the same way,
starting from the same trained dense model of the experiment (mnist-5k by default). The question:
does the differentiable attention choose better blocks than their norm under the same alternation
(seqattn vs acdc control), and does the alternation beat a single cut (acdc control vs magnitude)?
Prints a table of means and spreads over seeds and the run time; writes one CSV row per run.
"""

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.cells import Cell, CellFailure  # noqa: E402
from pruning.errors import BadInputError  # noqa: E402
from pruning.experiment import Experiment  # noqa: E402
from pruning.registry import get_method  # noqa: E402
from pruning.report import result_json  # noqa: E402
from pruning.runner import add_backend_arguments, check_backend, run_cells  # noqa: E402
from pruning.schedules import OneShot  # noqa: E402

ARMS = ("seqattn", "acdc control", "block magnitude")


def arm_cells(experiment: Experiment, args) -> list[tuple[str, Cell]]:
    """The three arms on one experiment: the same blocks, sparsity and epochs."""
    trained = {"block_size": args.block_size, "cycles": args.cycles, "phase_epochs": args.phase_epochs,
               "finetune_epochs": args.finetune_epochs, "min_blocks": 1}
    method = get_method("seqattn")
    epochs = 3 * args.cycles * args.phase_epochs + args.finetune_epochs
    block = {"granularity": "block", "block_size": args.block_size, "scope": "layerwise", "prune_output_layer": True}
    return [
        ("seqattn", Cell(experiment, "seqattn", args.sparsity, method.settings({**trained, "selection": "attention"}), OneShot())),
        ("acdc control", Cell(experiment, "seqattn", args.sparsity, method.settings({**trained, "selection": "acdc"}), OneShot())),
        ("block magnitude", Cell(experiment, "magnitude", args.sparsity, get_method("magnitude").settings(block),
                                 OneShot(finetune_epochs=epochs))),
    ]


def row(arm: str, cell: Cell, outcome, epochs: int) -> dict:
    """A run's row; a run that failed twice keeps its model, seed and arm, and says why."""
    base = {"model": cell.experiment.model, "seed": cell.experiment.seed, "arm": arm, "epochs": epochs}
    if isinstance(outcome, CellFailure):
        return {**base, "error": outcome.error}
    report = result_json(outcome)
    return {**base, "dataset": report["dataset"], "block_size": cell.settings["block_size"],
            "target_sparsity": report["target_sparsity"], "sparsity": report["sparsity"],
            "compression": report["compression"], "dense_accuracy": report["dense"]["accuracy"],
            "accuracy_before_finetune": report["accuracy_before_finetune"], "accuracy": report["pruned"]["accuracy"],
            "seconds": report["seconds"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,lenet5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--cycles", type=int, default=2, help="dense/sparse cycles (2 or more alternate)")
    parser.add_argument("--phase-epochs", type=int, default=1)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--sparsity", type=float, default=0.9, help="block ratio removed in every layer")
    parser.add_argument("--block-size", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "seqattn_acdc.csv")
    add_backend_arguments(parser)
    args = parser.parse_args()
    if args.cycles < 2:
        parser.error("--cycles must be at least 2: with one cycle dense and sparse phases never alternate")
    try:
        backend = check_backend(args.backend, args.workers, args.address)
        runs = [run for model in args.models.split(",") for seed in args.seeds.split(",")
                for run in arm_cells(Experiment(dataset=args.dataset, model=model, seed=int(seed)), args)]
    except (BadInputError, ValueError) as error:
        parser.error(str(error))

    started = time.perf_counter()

    def show(fraction: float, message: str) -> None:
        print(f"\r{100 * fraction:5.1f}% {message[:90]:<90}", end="", file=sys.stderr)

    outcomes = run_cells([cell for _, cell in runs], backend, progress=show).outcomes
    print(file=sys.stderr)
    epochs = 3 * args.cycles * args.phase_epochs + args.finetune_epochs
    table = pd.DataFrame([row(arm, cell, outcome, epochs) for (arm, cell), outcome in zip(runs, outcomes)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    seconds = time.perf_counter() - started
    if "error" in table:
        print(f"{table['error'].notna().sum()} runs failed:", *table["error"].dropna().unique(), sep="\n  ")
        table = table[table["error"].isna()]
    print(f"\n== {args.dataset}, block {args.block_size}x{args.block_size}, block sparsity {args.sparsity:g}, "
          f"{args.cycles} cycles of {args.phase_epochs}-epoch phases + {args.finetune_epochs} fine-tuning "
          f"({epochs} epochs per arm), seeds {args.seeds}")
    if not table.empty:
        columns = ["sparsity", "dense_accuracy", "accuracy_before_finetune", "accuracy"]
        grouped = table.groupby(["model", "arm"], sort=False)
        summary = grouped[columns].mean() * 100
        summary["accuracy_std"] = grouped["accuracy"].std(ddof=0) * 100
        summary["runs"] = grouped.size()
        print(summary.round(2).to_string())
    print(f"run time {seconds:.0f} s; rows in {args.out}")


if __name__ == "__main__":
    main()
