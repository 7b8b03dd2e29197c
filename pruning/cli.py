"""``python -m pruning``: the headless engine.

    python -m pruning list [--json]
    python -m pruning prune --dataset D --model M --method magnitude --sparsity S [--json] [--out DIR]

Bad input (unknown names, values out of range, unknown ``--set`` keys) prints one line on
stderr and exits with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pruning.data import DATASETS, DataUnavailableError
from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.masks import atomic_torch_save
from pruning.methods import METHODS
from pruning.models import MODELS
from pruning.pipeline import ExperimentPruneResult, run_prune
from pruning.train import TrainConfig

USAGE_ERROR = 2


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse prints the whole usage on an error; we print one line and exit 2."""

    def error(self, message):
        raise BadInputError(message)


def parse_set(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInputError(f"--set expects KEY=VALUE, got {pair!r}")
        settings[key.strip()] = value.strip()
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m pruning", description="Pruning Explorer, headless.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)

    listing = commands.add_parser("list", help="datasets, models and methods with their parameters")
    listing.add_argument("--json", action="store_true", help="print one JSON object")

    prune = commands.add_parser("prune", help="train (or load) a dense model, prune it and evaluate")
    add_experiment_options(prune)
    prune.add_argument("--method", default="magnitude", help="pruning method (see `list`)")
    prune.add_argument("--sparsity", type=float, required=True, help="fraction of prunable weights to remove, in [0, 1)")
    prune.add_argument("--scope", choices=("global", "layerwise"), help="shortcut for --set scope=...")
    prune.add_argument("--set", action="append", metavar="KEY=VALUE", help="a method setting (repeatable)")
    prune.add_argument("--out", type=Path, help="write dense.pt, model.pt, mask.pt and result.json here")
    prune.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def add_experiment_options(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument("--dataset", default="mnist-5k", help=f"one of: {', '.join(DATASETS)}")
    parser.add_argument("--model", default="lenet5", help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("--imbalance", type=float, default=1.0, help="most/least frequent class ratio of the training split (1 = balanced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="dense training epochs")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="dense training learning rate")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)


def experiment_from_args(args) -> Experiment:
    for name, registry in (("dataset", DATASETS), ("model", MODELS)):
        if getattr(args, name) not in registry:
            raise BadInputError(f"unknown {name} {getattr(args, name)!r}; choose one of: {', '.join(registry)}")
    train = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    return Experiment(dataset=args.dataset, model=args.model, imbalance=args.imbalance, seed=args.seed, train=train)


def command_list(args) -> int:
    listing = {
        "datasets": [{"name": info.name, "description": info.description} for info in DATASETS.values()],
        "models": [{"name": info.name, "description": info.description} for info in MODELS.values()],
        "methods": [method.describe() for method in METHODS.values()],
    }
    if args.json:
        print(json.dumps(listing))
        return 0
    for section, entries in listing.items():
        print(f"{section}:")
        for entry in entries:
            print(f"  {entry['name']:<14} {entry['description']}")
    return 0


def command_prune(args) -> int:
    overrides = parse_set(args.set)
    if args.scope:
        overrides["scope"] = args.scope
    progress = None if args.json else _progress_printer()
    outcome = run_prune(experiment_from_args(args), args.method, args.sparsity, overrides, progress=progress)
    report = outcome.to_json()
    if args.out:
        write_outputs(args.out, outcome, report)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"\n{report['method']} at sparsity {report['sparsity']:.4f}: accuracy {report['dense']['accuracy']:.4f} -> "
            f"{report['pruned']['accuracy']:.4f}, compression {report['compression']:.2f}x, "
            f"theoretical speedup {report['theoretical_speedup']:.2f}x ({report['seconds']:.1f} s)"
        )
    return 0


def write_outputs(folder: Path, outcome: ExperimentPruneResult, report: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(outcome.dense_model.state_dict(), folder / "dense.pt")
    atomic_torch_save(outcome.result.pruned_state_dict(outcome.dense_model), folder / "model.pt")
    outcome.result.mask.save(folder / "mask.pt")
    (folder / "result.json").write_text(json.dumps(report, indent=2))


def _progress_printer():
    """Print one line per training epoch on stderr (stdout stays clean for --json)."""
    last = None

    def report(fraction: float, message: str) -> None:
        nonlocal last
        if message != last:
            last = message
            print(f"training the dense model: {message}", file=sys.stderr, flush=True)

    return report


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return {"list": command_list, "prune": command_prune}[args.command](args)
    except (BadInputError, DataUnavailableError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return USAGE_ERROR
