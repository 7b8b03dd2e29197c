"""Dynamic Network Surgery's c_rate searched for the highest compression within 1 point of dense:

    python bench/dns_crate.py [--models mlp,lenet5] [--seeds 0] [--recipe paper|quick]
        [--c-rates 2,2.5,...] [--factors 0.35:0.7:0.65,1:1:1] [--refine 3] [--tolerance 1.0]
        [--epochs N] [--dataset mnist-5k] [--out bench/dns_crate.csv] [--workers N | --backend ray]

The issue's targets on mnist-5k: >= 40x on mlp and >= 60x on lenet5 within 1 point of dense (the
paper: 56x and 108x on full MNIST). Every (c_rate, factors) pair of the grid runs on every model and
seed; the recipe is the paper preset's (``pruning.methods.dns.PAPER_RECIPE``) with c_rate and the
per-layer factors (first conv : other convs : output layer) varied, or today's quick defaults. ``--refine N`` then bisects c_rate N times
between the largest c_rate within the tolerance and the next one above it (per model and factor
pair). A setting qualifies when its mean drop over seeds is within the tolerance; the table shows
the grid and, per model, the qualifying setting of highest mean compression and whether the target
is met. Writes one row per run to ``--out`` and prints the run time.

A reduced check (under 2 minutes on 2 cores):

    python bench/dns_crate.py --models mlp --recipe quick --epochs 1 --c-rates 2,4 --refine 1 --out /tmp/dns_crate.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning.cells import Cell, CellFailure  # noqa: E402
from pruning.errors import BadInputError  # noqa: E402
from pruning.experiment import Experiment  # noqa: E402
from pruning.methods.dns import PAPER_RECIPE  # noqa: E402
from pruning.report import result_json  # noqa: E402
from pruning.runner import add_backend_arguments, check_backend, run_cells  # noqa: E402
from pruning.schedules import OneShot  # noqa: E402

TARGETS = {"mlp": 40.0, "lenet5": 60.0}  # compression within the tolerance, mnist-5k (issue 16)
DEFAULT_C_RATES = "2,2.5,3,3.5,4,4.5,5,5.5,6"


def recipe(name: str, epochs: int | None) -> dict:
    """The settings every run shares: the paper preset's values (spelled out, so that c_rate and the
    factors can vary) or today's defaults; ``epochs`` shortens either (a reduced check)."""
    shared = {"preset": "quick", **(PAPER_RECIPE if name == "paper" else {})}
    return {**shared, **({"epochs": epochs} if epochs else {})}


FACTORS = ("first_conv_c_factor", "other_conv_c_factor", "output_c_factor")


def run_settings(args, pairs: list[tuple[float, ...]]) -> list[dict]:
    """One row per (model, seed, c_rate, factors) run of ``pairs`` (c_rate, then the three FACTORS)."""
    cells, keys = [], []
    for model in args.models:
        for seed in args.seeds:
            for c_rate, *factors in pairs:
                chosen = {"c_rate": c_rate, **dict(zip(FACTORS, factors))}
                cells.append(Cell(Experiment(dataset=args.dataset, model=model, seed=seed), "dns", None,
                                  {**args.shared, **chosen}, OneShot()))
                keys.append({"model": model, "seed": seed, **chosen})

    def show(fraction: float, message: str) -> None:
        print(f"\r{100 * fraction:5.1f}% {message[:90]:<90}", end="", file=sys.stderr)

    outcomes = run_cells(cells, args.backend, progress=show).outcomes
    print(file=sys.stderr)
    rows = []
    for key, outcome in zip(keys, outcomes):
        if isinstance(outcome, CellFailure):
            rows.append({**key, "error": outcome.error})
            continue
        report = result_json(outcome)
        dense, pruned = report["dense"]["accuracy"], report["pruned"]["accuracy"]
        rows.append({**key, "compression": report["compression"], "sparsity": report["sparsity"],
                     "dense_accuracy": dense, "accuracy": pruned, "drop_points": 100 * (dense - pruned),
                     "layer_kept": " ".join(f"{layer['name']}={1 - layer['sparsity']:.3f}" for layer in report["layers"]),
                     "biases_masked": report["details"].get("biases_masked"), "seconds": report["seconds"]})
    return rows


def by_setting(table: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds per (model, c_rate, factors)."""
    ok = table[table["error"].isna()] if "error" in table else table
    keys = ["model", *FACTORS, "c_rate"]
    return ok.groupby(keys, sort=True)[["compression", "sparsity", "dense_accuracy", "accuracy", "drop_points"]].mean().reset_index()


def refinements(means: pd.DataFrame, tolerance: float) -> list[tuple[float, ...]]:
    """Per model and factors, the midpoint between the largest qualifying c_rate and the next one up."""
    pairs = set()
    for (_, *factors), group in means.groupby(["model", *FACTORS]):
        group = group.sort_values("c_rate")
        passing = group[group["drop_points"] <= tolerance]
        if passing.empty:
            continue
        above = group[group["c_rate"] > passing["c_rate"].max()]
        if not above.empty:
            pairs.add((round((passing["c_rate"].max() + above["c_rate"].min()) / 2, 4), *factors))
    return sorted(pairs)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,lenet5")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--recipe", choices=("paper", "quick"), default="paper")
    parser.add_argument("--c-rates", default=DEFAULT_C_RATES, help="the global c_rate grid")
    parser.add_argument("--factors", default=":".join(str(PAPER_RECIPE[name]) for name in FACTORS),
                        help="first-conv:other-convs:output c_rate factors, comma-separated (1:1:1 = one c_rate for all)")
    parser.add_argument("--refine", type=int, default=2, help="bisection steps on c_rate after the grid")
    parser.add_argument("--tolerance", type=float, default=1.0, help="accuracy points below dense allowed")
    parser.add_argument("--epochs", type=int, help="shorten the recipe (a reduced check)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "dns_crate.csv")
    add_backend_arguments(parser)
    args = parser.parse_args()
    try:
        args.backend = check_backend(args.backend, args.workers, args.address)
        args.models = [model for model in args.models.split(",") if model]
        args.seeds = [int(seed) for seed in args.seeds.split(",")]
        args.c_rates = [float(rate) for rate in args.c_rates.split(",")]
        args.factors = [tuple(float(part) for part in triple.split(":")) for triple in args.factors.split(",")]
        if any(len(triple) != len(FACTORS) for triple in args.factors):
            raise ValueError("--factors takes first-conv:other-convs:output triples")
    except (BadInputError, ValueError) as error:
        parser.error(str(error))
    args.shared = recipe(args.recipe, args.epochs)
    return args


def main():
    args = parse_args()
    started = time.perf_counter()
    rows = run_settings(args, [(rate, *factors) for factors in args.factors for rate in args.c_rates])
    for _ in range(args.refine):
        extra = refinements(by_setting(pd.DataFrame(rows)), args.tolerance)
        done = {(row["c_rate"], *(row[name] for name in FACTORS)) for row in rows}
        extra = [pair for pair in extra if pair not in done]
        if not extra:
            break
        rows += run_settings(args, extra)
    seconds = time.perf_counter() - started
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    if "error" in table and table["error"].notna().any():
        print(f"{table['error'].notna().sum()} runs failed:", *table["error"].dropna().unique(), sep="\n  ")
    means = by_setting(table)
    print(f"\n== DNS c_rate search ({args.recipe} recipe{f', {args.epochs} epochs' if args.epochs else ''}, "
          f"{args.dataset}, seeds {','.join(map(str, args.seeds))}, {seconds:.0f} s)")
    shown = means.assign(**{column: 100 * means[column] for column in ("sparsity", "dense_accuracy", "accuracy")})
    print(shown.round(2).to_string(index=False))
    print(f"\nhighest compression within {args.tolerance:g} point(s) of dense:")
    for model, group in means.groupby("model"):
        passing = group[group["drop_points"] <= args.tolerance]
        target = TARGETS.get(model)
        if passing.empty:
            print(f"  {model}: no setting within the tolerance")
            continue
        best = passing.loc[passing["compression"].idxmax()]
        verdict = "" if target is None else f" -> target {target:g}x {'met' if best['compression'] >= target else 'not met'}"
        factors = ":".join(f"{best[name]:g}" for name in FACTORS)
        print(f"  {model}: {best['compression']:.1f}x at c_rate {best['c_rate']:g} (factors {factors}), "
              f"{best['drop_points']:+.2f} points below dense{verdict}")
    print(f"wrote {args.out} ({len(table)} runs) in {seconds:.0f} s")


if __name__ == "__main__":
    main()
