"""``python -m pruning``: the headless engine.

    python -m pruning list [--json]
    python -m pruning prune --dataset D --model M --method magnitude --sparsity S [--json] [--out DIR]
    python -m pruning prune --dataset D --model M --method dns --set c_rate=3 [--json]
    python -m pruning sweep --dataset D --model M --methods a,b --sparsities 0.5,0.9 --out FILE.csv [--workers N | --backend ray]
    python -m pruning landscape --dataset D --model M --method X --sparsity S [--grid N] [--batch-size-eval B] [--levels N] [--json]
    python -m pruning sensitivity --dataset D --model M --method C [--sparsities 0.5,0.9] [--split test] [--json]
    python -m pruning limit --dataset D --model M [--set l1=5e-5 --set lanczos_steps=100 ...] [--json]

Bad input (unknown names, values out of range, unknown ``--set`` keys) prints one line on
stderr and exits with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from pruning.analysis.limit import LimitSettings, fundamental_limit
from pruning.analysis.sensitivity import DEFAULT_SPARSITIES, SPLITS, sensitivity_scan
from pruning.analysis.valley import level_barrier_rows, loss_valley
from pruning.data import DATASETS, DataUnavailableError
from pruning.device import DEVICE_CHOICES, cuda_available, resolve_device
from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.export import write_exports
from pruning.masks import atomic_torch_save
from pruning.models import MODELS
from pruning.params import Param
from pruning.physical.costs import RealCosts, real_costs
from pruning.pipeline import PruneResult, run_prune
from pruning.progress_bars import close_bars, stage_bar
from pruning.registry import METHODS, get_method
from pruning.report import result_json
from pruning.runner import BACKENDS, check_backend
from pruning.schedules import SCHEDULES, Schedule, make_schedule, schedule_params
from pruning.selection import GRANULARITIES, SCOPES
from pruning.sweep import failure_lines, run_sweep, sweep_rows
from pruning.tensor_files import save_safetensors
from pruning.train import TRAIN_PARAMS, TrainConfig
from pruning.weights import read_bytes, use_weights

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
    prune.add_argument("--sparsity", type=float,
                       help="fraction of prunable weights to remove, in [0, 1); left out for dns, grda and sdprun, "
                       "whose sparsity emerges from their settings")
    add_pruning_options(prune)
    prune.add_argument("--out", type=out_path, help="write dense.pt, model.pt and model.safetensors (the pruned state_dict), "
                       "mask.pt and result.json here; with a structured mask also the smaller model (physical.onnx, "
                       "physical.pt2) and layers.csv")
    prune.add_argument("--json", action="store_true", help="print one JSON object")

    sweep = commands.add_parser("sweep", help="compare methods over sparsities and seeds (random and magnitude always included)")
    add_experiment_options(sweep)
    sweep.add_argument("--methods", default="magnitude", help="comma-separated method names")
    sweep.add_argument("--sparsities", required=True, help="comma-separated sparsities in [0, 1)")
    sweep.add_argument("--seeds", default="0", help="comma-separated seeds")
    sweep.add_argument("--backend", choices=BACKENDS, default="local", help="local (this machine) or ray: one task per cell")
    sweep.add_argument("--workers", type=int, metavar="N", help="local: N processes, cpus // N threads each (default 1: this one)")
    sweep.add_argument("--address", metavar="ADDR", help="ray: auto, HOST:PORT or ray://HOST:PORT (default RAY_ADDRESS, else local)")
    add_pruning_options(sweep)
    sweep.add_argument("--out", type=out_path, required=True, help="the CSV file to write")
    sweep.add_argument("--json", action="store_true", help="print one JSON object {rows: [...]}")

    valley = commands.add_parser("landscape", help="loss along the line from dense to pruned and over a plane around it")
    add_experiment_options(valley)
    valley.add_argument("--method", default="magnitude", help="pruning method (see `list`)")
    valley.add_argument("--sparsity", type=float, help="as for prune; left out for methods whose sparsity emerges")
    valley.add_argument("--set", action="append", metavar="KEY=VALUE", help="a method setting (repeatable)")
    valley.add_argument("--scope", choices=SCOPES, help="shortcut for --set scope=...")
    valley.add_argument("--granularity", choices=GRANULARITIES, help="shortcut for --set granularity=...")
    valley.add_argument("--grid", type=int, default=21, help="grid points per axis (a in [-0.5, 1.5], b in [-1, 1])")
    valley.add_argument("--batch-size-eval", type=int, default=256, help="size of the fixed train and test batches")
    valley.add_argument("--restrict", action="store_true", help="random direction among the surviving weights only")
    valley.add_argument("--levels", type=int, default=0, metavar="N",
                        help="also the error barrier between consecutive levels of N rounds of iterative pruning")
    valley.add_argument("--json", action="store_true", help="print one JSON object {line, plane[, level_barriers]}")

    scan = commands.add_parser("sensitivity", help="prune one layer at a time (the others dense) at several sparsities: "
                               "accuracy, loss and per-class recall per (layer, sparsity), no retraining")
    add_experiment_options(scan)
    scan.add_argument("--method", default="magnitude", help="a one-shot criterion (see `list`)")
    scan.add_argument("--sparsities", default=",".join(map(str, DEFAULT_SPARSITIES)), help="comma-separated sparsities in [0, 1)")
    scan.add_argument("--granularity", choices=GRANULARITIES, help="shortcut for --set granularity=...")
    scan.add_argument("--set", action="append", metavar="KEY=VALUE", help="a method setting (repeatable)")
    scan.add_argument("--split", choices=SPLITS, default="test", help="the split the pruned models are measured on")
    scan.add_argument("--json", action="store_true", help="print one JSON object {layers, sparsities, accuracy, loss, recall, ...}")

    limit = commands.add_parser("limit", help="predicted (Hessian spectrum) vs actual limit of L1-trained one-shot pruning")
    add_experiment_options(limit, weights=False)  # LOMP trains its own L1 model from initialisation
    limit.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="a limit setting (repeatable): l1, batch_size, lanczos_steps, probes, row_probes, "
                       "zero_tolerance, sigma, bins, grid_step, seed")
    limit.add_argument("--json", action="store_true", help="print one JSON object {predicted, actual, curves...}")
    return parser


def add_pruning_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scope", choices=SCOPES, help="shortcut for --set scope=...")
    parser.add_argument("--granularity", choices=GRANULARITIES, help="shortcut for --set granularity=...")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="a method setting (repeatable)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="oneshot", help="when sparsity grows")
    for param in schedule_params().values():
        kinds = [kind for kind, schedule in SCHEDULES.items() if param.name in {own.name for own in schedule.all_params()}]
        add_param_flag(parser, param, f" ({'every schedule' if len(kinds) == len(SCHEDULES) else ', '.join(kinds)})")


def add_param_flag(parser: argparse.ArgumentParser, param: Param, where: str = "") -> None:
    """A flag generated from a declared setting; its value is parsed and checked by the Param,
    and left out (None) when not given, so the declared default applies."""
    choices = f" {{{','.join(param.choices)}}}" if param.choices else ""
    parser.add_argument(param.flag, dest=param.name, metavar=param.name.upper(), default=None,
                        help=f"{param.help}{choices} Default {param.default}{where}.")


def given(args, params) -> dict[str, str]:
    """The generated flags the user gave (name -> raw value)."""
    return {param.name: getattr(args, param.name) for param in params if getattr(args, param.name, None) is not None}


def method_overrides(args) -> dict[str, str]:
    overrides = parse_set(args.set)
    for key in ("scope", "granularity"):
        if getattr(args, key, None):
            overrides[key] = getattr(args, key)
    return overrides


def schedule_from_args(args) -> Schedule:
    """The chosen schedule with the flags given; a flag of another schedule is an error."""
    return make_schedule(args.schedule, given(args, schedule_params().values()))


def parse_list(text: str, kind, what: str) -> list:
    try:
        return [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise BadInputError(f"--{what} expects a comma-separated list, got {text!r}") from None


def add_experiment_options(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    if weights:
        parser.add_argument("--weights", type=Path, metavar="FILE",
                            help="a trained state_dict of the model (.pt or .safetensors) to use instead of training "
                            "(checked, never run as code)")
        parser.add_argument("--mask", type=Path, metavar="FILE",
                            help="with --weights: a mask {name: 0/1 tensor} (.pt or .safetensors); the masked weights are set "
                            "to zero on load")
    parser.add_argument("--dataset", default="mnist-5k", help=f"one of: {', '.join(DATASETS)}")
    parser.add_argument("--model", default="lenet5", help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("--imbalance", type=float, default=1.0, help="most/least frequent class ratio of the training split (1 = balanced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="where to compute: auto = cuda when torch sees a CUDA GPU, else cpu (default auto); "
                        "models trained on a GPU are cached apart from CPU ones")
    for param in TRAIN_PARAMS:
        add_param_flag(parser, param, " (dense training)")


def experiment_from_args(args) -> Experiment:
    for name, registry in (("dataset", DATASETS), ("model", MODELS)):
        if getattr(args, name) not in registry:
            raise BadInputError(f"unknown {name} {getattr(args, name)!r}; choose one of: {', '.join(registry)}")
    train = TrainConfig.from_settings(given(args, TRAIN_PARAMS))
    experiment = Experiment(dataset=args.dataset, model=args.model, imbalance=args.imbalance, seed=args.seed, train=train,
                            device=resolve_device(args.device))
    if getattr(args, "mask", None) is not None and args.weights is None:
        raise BadInputError("--mask applies to --weights: give the weights it masks too")
    if getattr(args, "weights", None) is not None:
        mask = read_bytes(args.mask, "mask") if args.mask is not None else None
        experiment = use_weights(experiment, read_bytes(args.weights, "weights"), mask, store=False)  # cache untouched on exit 2
    return experiment


def command_list(args) -> int:
    listing = {
        "datasets": [{"name": info.name, "description": info.description} for info in DATASETS.values()],
        "models": [{"name": info.name, "description": info.description} for info in MODELS.values()],
        "methods": [method.describe() for method in METHODS.values()],
        "devices": {"choices": list(DEVICE_CHOICES), "cuda_available": cuda_available(), "auto": resolve_device("auto")},
    }
    if args.json:
        print(json.dumps(listing))
        return 0
    devices = listing.pop("devices")
    for section, entries in listing.items():
        print(f"{section}:")
        for entry in entries:
            print(f"  {entry['name']:<14} {entry['description']}")
    print(f"devices: --device {'|'.join(devices['choices'])}; auto = {devices['auto']} here")
    return 0


def out_path(text: str) -> Path:
    """``--out``'s value; an empty one would silently mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("needs a path")
    return Path(text)


def check_out_file(path: Path) -> None:
    """Fail before any work if the output file cannot be written there."""
    if path.is_dir():
        raise BadInputError(f"cannot write --out {path}: it is a folder (give a file name, e.g. {path / 'sweep.csv'})")
    check_out_folder(path.parent)


def check_out_folder(folder: Path | None) -> None:
    """Fail before any training if the output folder cannot be made."""
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInputError(f"cannot use --out {folder}: {error.strerror}") from None


def command_prune(args) -> int:
    if args.sparsity is None and get_method(args.method).target_sparsity:
        raise BadInputError(f"--sparsity is required for {args.method}")
    check_out_folder(args.out)
    progress = None if args.json else _progress_printer("training")
    result = run_prune(
        experiment_from_args(args), args.method, args.sparsity, method_overrides(args),
        progress=progress, schedule=schedule_from_args(args),
    )
    report = result_json(result)
    costs = prune_costs(result, progress=None if args.json else _progress_printer("costs"))
    report.update(costs.to_json())
    if args.out:
        write_outputs(args.out, result, report, costs)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"\n{report['method']} at sparsity {report['sparsity']:.4f}: accuracy {report['dense']['accuracy']:.4f} -> "
            f"{report['pruned']['accuracy']:.4f}, compression {report['compression']:.2f}x, "
            f"theoretical speedup {report['theoretical_speedup']:.2f}x ({report['seconds']:.1f} s)"
            + "".join(f", {key.replace('_', ' ')} {value:g}" for key, value in report["details"].items()
                      if isinstance(value, (int, float)) and not isinstance(value, bool))
        )
        latency = ", ".join(f"{kind} {ms['64']:.1f} ms" for kind, ms in report["latency_ms"].items() if ms)
        print(f"measured latency at batch 64 on {costs.device_name}: {latency}. {report['physical_note']}")
    return 0


def prune_costs(result: PruneResult, progress=None) -> RealCosts:
    """Physical removal and measured latency beside the mask's theoretical numbers."""
    return real_costs(result.dense_model, result.mask, result.experiment.load_data().input_shape,
                      result.pruned_state_dict(), progress=progress)


def command_sweep(args) -> int:
    check_out_file(args.out)
    results = run_sweep(
        experiment_from_args(args),
        methods=parse_list(args.methods, str, "methods"),
        sparsities=parse_list(args.sparsities, float, "sparsities"),
        seeds=parse_list(args.seeds, int, "seeds"),
        overrides=method_overrides(args),
        schedule=schedule_from_args(args),
        progress=None if args.json else _progress_printer("sweep"),
        backend=check_backend(args.backend, args.workers, args.address),  # checked before any work, like the rest
    )
    rows, failures = sweep_rows(results), failure_lines(results)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    for line in failures:  # every row is written; a failed cell's carries its error, and the exit code is 1
        print(line, file=sys.stderr)
    print(json.dumps({"rows": rows}) if args.json else f"{len(rows)} rows written to {args.out}")
    return 1 if failures else 0


def command_landscape(args) -> int:
    if args.sparsity is None and get_method(args.method).target_sparsity:
        raise BadInputError(f"--sparsity is required for {args.method}")
    if args.grid < 2:
        raise BadInputError(f"--grid must be at least 2, got {args.grid}")
    if args.batch_size_eval < 1:
        raise BadInputError(f"--batch-size-eval must be at least 1, got {args.batch_size_eval}")
    if args.levels < 0 or args.levels and get_method(args.method).trains:
        raise BadInputError("--levels takes a number of rounds >= 0, and a method that does not train")
    experiment = experiment_from_args(args)
    result = run_prune(experiment, args.method, args.sparsity, method_overrides(args),
                       progress=None if args.json else _progress_printer("training"))
    valley = loss_valley(result.dense_model, result, experiment.load_data(), experiment.seed, grid=args.grid, batch_size=args.batch_size_eval,
                         restrict=args.restrict, progress=None if args.json else _progress_printer("landscape"))
    report = {"method": args.method, "sparsity": result.stats.sparsity, **valley.to_json()}
    if args.levels:
        report["level_barriers"] = level_barrier_rows(
            experiment, args.method, args.sparsity, method_overrides(args), args.levels, batch_size=args.batch_size_eval,
            dense=result.dense_model, progress=None if args.json else _progress_printer("iterative pruning"))
    if args.json:
        print(json.dumps(report))
    else:
        line = valley.line
        ends = line.a.index(0.0), line.a.index(1.0)
        print(f"\n{args.method} at sparsity {report['sparsity']:.4f}: train loss {line.train_loss[ends[0]]:.4f} (dense) -> "
              f"{line.train_loss[ends[1]]:.4f} (pruned), max on the line {max(line.train_loss[ends[0]:ends[1] + 1]):.4f}; "
              f"error barrier test {line.barrier('test'):.4f}, train {line.barrier('train'):.4f}")
        for row in report.get("level_barriers", []):
            print(f"iterative level {row['from_round']} -> {row['to_round']} (sparsity {row['from_sparsity']:.3f} -> "
                  f"{row['to_sparsity']:.3f}): test error barrier {row['barrier']:.4f}")
    return 0


def command_sensitivity(args) -> int:
    scan = sensitivity_scan(experiment_from_args(args), args.method, method_overrides(args),
                            parse_list(args.sparsities, float, "sparsities"), args.split,
                            progress=None if args.json else _progress_printer("sensitivity"))
    if args.json:
        print(json.dumps({"method": args.method, "split": args.split, **asdict(scan)}))
        return 0
    print(f"\n{args.method}: {args.split} accuracy with one layer pruned (dense {100 * scan.dense_accuracy:.2f}%)")
    print("layer".ljust(24) + "".join(f"{100 * value:>8.0f}%" for value in scan.sparsities))
    for layer, row in zip(scan.layers, scan.accuracy):
        print(layer.ljust(24) + "".join(f"{100 * value:>8.2f}%" for value in row))
    return 0


def command_limit(args) -> int:
    settings = LimitSettings.from_pairs(parse_set(args.set or []))
    experiment = experiment_from_args(args)
    result = fundamental_limit(experiment, settings, progress=None if args.json else _progress_printer("limit"))
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(f"\npredicted limit {100 * result.predicted:.1f}%, actual {100 * result.actual:.0f}% "
              f"(unpruned L1-trained accuracy {100 * result.dense_accuracy:.2f}%; eps {result.eps:.4g}, "
              f"zero eigenvalues {100 * result.zero_mass:.1f}%)")
    return 0


def write_outputs(folder: Path, result: PruneResult, report: dict, costs: RealCosts | None = None) -> None:
    """The state_dicts, the mask and result.json; with ``costs`` of a structured mask also the
    physically smaller model (physical.onnx, physical.pt2) and layers.csv, listed in
    ``report["exports"]`` (which says why, where nothing is exported)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(result.dense_model.state_dict(), folder / "dense.pt")
    atomic_torch_save(result.pruned_state_dict(), folder / "model.pt")
    save_safetensors(result.pruned_state_dict(), folder / "model.safetensors")  # the same tensors, no pickle
    result.mask.save(folder / "mask.pt")
    if costs is not None:
        report["exports"] = write_exports(folder, costs, result.stats)
    (folder / "result.json").write_text(json.dumps(report, indent=2))


def _progress_printer(what: str):
    """A progress bar for one stage on stderr when it is a terminal (``pruning.progress_bars``),
    else None: piped output stays free of bar characters; stdout is never touched."""
    return stage_bar(what)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        commands = {"list": command_list, "prune": command_prune, "sweep": command_sweep, "landscape": command_landscape,
                    "sensitivity": command_sensitivity, "limit": command_limit}
        return commands[args.command](args)
    except (BadInputError, DataUnavailableError) as error:
        close_bars()
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return USAGE_ERROR
    finally:
        close_bars()
