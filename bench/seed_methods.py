"""The seed papers' methods against the baselines they claim to beat, on mnist-5k, side by side:

    python bench/seed_methods.py --parts dns,grda,undecayed,seqattn [--seeds 0,1,2] [--out-dir bench]
        [--workers N | --backend ray [--address ADDR]]

- dns: Dynamic Network Surgery (c_rate 2.5, 30 epochs) on mlp and lenet5, beside one-shot global
  magnitude pruning to the same sparsity + the same number of fine-tuning epochs. Goal: >= 20x
  compression within 1 point of dense accuracy on mlp.
- grda: gRDA and sDprun (their defaults) against the same optimizer with c = 0 (plain SGD without
  momentum, same learning rate and epochs): sparsity and accuracy.
- undecayed: undecayed pruning against global magnitude, both inside the same iterative pruning
  with rewinding (levels of at most 20%), mlp at sparsity 0.9.
- seqattn: SequentialAttention++ against layerwise block-magnitude pruning at the same block size
  and sparsity, fine-tuned for as many epochs as SequentialAttention++ trains.

Each part writes ``seed_<part>.csv`` and prints a table of means over seeds. The runs are sweep
cells on the chosen backend (``pruning.runner``: this process by default, local processes, or Ray
tasks); a run that fails twice is a row with its error, the others kept.
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
from pruning.methods.undecayed import levels_for  # noqa: E402
from pruning.registry import get_method  # noqa: E402
from pruning.report import result_json  # noqa: E402
from pruning.runner import Backend, add_backend_arguments, check_backend, run_cells  # noqa: E402
from pruning.schedules import Iterative, OneShot  # noqa: E402

DNS_SETTINGS = {"c_rate": 2.5, "epochs": 30}
UNDECAYED_SPARSITY = 0.9
SEQATTN_SPARSITY = 0.9
SEQATTN_BLOCK = 4


def row(label: str, cell: Cell, outcome) -> dict:
    """A run's row; a run that failed twice keeps its model, seed and label, and says why."""
    if isinstance(outcome, CellFailure):
        return {"model": cell.experiment.model, "seed": cell.experiment.seed, "method": label, "error": outcome.error}
    report = result_json(outcome)
    return {"model": report["model"], "seed": cell.experiment.seed, "method": label, "sparsity": report["sparsity"],
            "compression": report["compression"], "dense_accuracy": report["dense"]["accuracy"],
            "accuracy": report["pruned"]["accuracy"], "seconds": report["seconds"],
            "spliced_total": report["details"].get("spliced_total")}


def run_labelled(runs: list[tuple[str, Cell]], backend: Backend) -> list[tuple[dict, object]]:
    """Each (label, cell) run on ``backend``: (its row, its outcome), in the order given."""
    def show(fraction: float, message: str) -> None:
        print(f"\r{100 * fraction:5.1f}% {message[:90]:<90}", end="", file=sys.stderr)

    outcomes = run_cells([cell for _, cell in runs], backend, progress=show).outcomes
    print(file=sys.stderr)
    return [(row(label, cell, outcome), outcome) for (label, cell), outcome in zip(runs, outcomes)]


def cell(model: str, seed: int, method: str, sparsity=None, settings=None, schedule=None) -> Cell:
    return Cell(Experiment(dataset="mnist-5k", model=model, seed=seed), method, sparsity, settings or {},
                schedule or OneShot())


def dns_part(seeds, backend):
    """DNS first; then magnitude at the sparsity each DNS run reached (it depends on it)."""
    pairs = [(model, seed) for model in ("mlp", "lenet5") for seed in seeds]
    dns = run_labelled([("dns", cell(model, seed, "dns", settings=DNS_SETTINGS)) for model, seed in pairs], backend)
    epochs = DNS_SETTINGS["epochs"]
    followers = [(f"magnitude + {epochs} epochs fine-tuning",
                  cell(model, seed, "magnitude", outcome.stats.sparsity, schedule=OneShot(finetune_epochs=epochs)))
                 for (model, seed), (_, outcome) in zip(pairs, dns) if not isinstance(outcome, CellFailure)]
    magnitude = iter(run_labelled(followers, backend))
    rows = []
    for dns_row, outcome in dns:
        rows.append(dns_row)
        if not isinstance(outcome, CellFailure):
            rows.append(next(magnitude)[0])
    return rows


def grda_part(seeds, backend):
    plain = get_method("grda").settings({"c": 0.0})
    runs = []
    for model in ("mlp", "lenet5"):
        for seed in seeds:
            runs += [(name, cell(model, seed, name)) for name in ("grda", "sdprun")]
            runs.append(("plain SGD (grda, c = 0)", cell(model, seed, "grda", settings=plain)))
    return [row for row, _ in run_labelled(runs, backend)]


def undecayed_part(seeds, backend):
    levels = levels_for(UNDECAYED_SPARSITY, 0.2)
    runs = []
    for seed in seeds:
        runs.append(("undecayed", cell("mlp", seed, "undecayed", UNDECAYED_SPARSITY)))
        runs.append((f"magnitude, iterative ({levels} levels)",
                     cell("mlp", seed, "magnitude", UNDECAYED_SPARSITY, schedule=Iterative(rounds=levels))))
    return [row for row, _ in run_labelled(runs, backend)]


def seqattn_part(seeds, backend):
    settings = get_method("seqattn").settings({"block_size": SEQATTN_BLOCK})
    epochs = 3 * settings["cycles"] * settings["phase_epochs"] + settings["finetune_epochs"]
    block = {"granularity": "block", "block_size": SEQATTN_BLOCK, "scope": "layerwise"}
    runs = []
    for model in ("mlp", "lenet5"):
        for seed in seeds:
            runs.append(("seqattn", cell(model, seed, "seqattn", SEQATTN_SPARSITY, settings)))
            runs.append((f"block magnitude + {epochs} epochs fine-tuning",
                         cell(model, seed, "magnitude", SEQATTN_SPARSITY, block, OneShot(finetune_epochs=epochs))))
    return [row for row, _ in run_labelled(runs, backend)]


PARTS = {"dns": dns_part, "grda": grda_part, "undecayed": undecayed_part, "seqattn": seqattn_part}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    add_backend_arguments(parser)
    args = parser.parse_args()
    try:
        backend = check_backend(args.backend, args.workers, args.address)
    except BadInputError as error:
        parser.error(str(error))
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for part in args.parts.split(","):
        started = time.perf_counter()
        table = pd.DataFrame(PARTS[part](seeds, backend))
        table.to_csv(args.out_dir / f"seed_{part}.csv", index=False)
        if "error" in table:
            print(f"{table['error'].notna().sum()} runs failed:", *table["error"].dropna().unique(), sep="\n  ")
            table = table[table["error"].isna()]
        summary = table.groupby(["model", "method"], sort=False)[["sparsity", "compression", "dense_accuracy", "accuracy"]].mean()
        summary[["sparsity", "dense_accuracy", "accuracy"]] *= 100
        print(f"\n== {part} ({len(seeds)} seeds, {time.perf_counter() - started:.0f} s)")
        print(summary.round(2).to_string())
        if part == "dns":
            for model, group in table[table["method"] == "dns"].groupby("model"):
                gap = 100 * (group["dense_accuracy"] - group["accuracy"]).mean()
                print(f"{model}: dns {group['compression'].mean():.1f}x, {gap:+.2f} points below dense "
                      f"-> {'goal met' if group['compression'].mean() >= 20 and gap <= 1 else 'goal not met'} (goal on mlp)")


if __name__ == "__main__":
    main()
