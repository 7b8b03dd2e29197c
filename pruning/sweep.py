"""Method comparison over a sparsity sweep, the way ShrinkBench reports it: one row per
(method, sparsity, seed), with the ``random`` and ``magnitude`` baselines always included."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.methods import get_method
from pruning.pipeline import run_prune
from pruning.schedules import Schedule
from pruning.selection import check_sparsity
from pruning.train import Progress

BASELINES = ("random", "magnitude")
SCALAR_FIELDS = (
    "dataset", "model", "imbalance", "method", "seed", "epochs", "granularity", "schedule", "finetune_epochs",
    "target_sparsity", "sparsity", "compression", "params_total", "params_nonzero", "flops_dense",
    "flops_pruned", "theoretical_speedup", "accuracy_before_finetune", "accuracy_after_finetune", "seconds",
)


def settings_for(method_name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The shared overrides a method declares (``samples_per_class`` means nothing to magnitude)."""
    declared = {param.name for param in get_method(method_name).params}
    return {key: value for key, value in overrides.items() if key in declared}


def run_sweep(
    base: Experiment,
    methods: list[str],
    sparsities: list[float],
    seeds: list[int],
    overrides: dict[str, Any] | None = None,
    schedule: Schedule | None = None,
    progress: Progress | None = None,
) -> list[dict]:
    """Every (seed, method, sparsity) pruned on the same schedule (methods that train keep their
    own, and those whose sparsity emerges run once per seed); all input is checked before any
    training starts."""
    overrides = overrides or {}
    schedule = schedule or Schedule()
    methods = list(dict.fromkeys([*methods, *BASELINES]))
    sparsities = [check_sparsity(value) for value in sparsities]
    if not sparsities or not seeds:
        raise BadInputError("a sweep needs at least one sparsity and one seed")
    declared, targets = set(), {}
    for name in methods:
        method = get_method(name)
        method.settings(settings_for(name, overrides))
        declared |= {param.name for param in method.params}
        # methods whose sparsity emerges from their settings run once per seed
        targets[name] = sparsities if method.target_sparsity else [None]
    unknown = sorted(set(overrides) - declared)
    if unknown:
        raise BadInputError(f"unknown setting {unknown[0]!r}: no method in this sweep declares it")
    rows, total, done = [], sum(map(len, targets.values())) * len(seeds), 0
    for seed in seeds:
        experiment = replace(base, seed=seed)
        for name in methods:
            for sparsity in targets[name]:
                if progress:
                    progress(done / total, f"seed {seed}, {name}" + ("" if sparsity is None else f" at sparsity {sparsity:g}"))
                own = get_method(name).trains  # methods that train keep their own schedule
                report = run_prune(experiment, name, sparsity, settings_for(name, overrides),
                                   schedule=Schedule() if own else schedule).to_json()
                row = {field: report[field] for field in SCALAR_FIELDS}
                row["dense_accuracy"] = report["dense"]["accuracy"]
                row["alpha"] = report["intensification"]["alpha"]
                rows.append(row)
                done += 1
    if progress:
        progress(1.0, "done")
    return rows
