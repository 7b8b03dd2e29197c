"""Method comparison over a sparsity sweep, the way ShrinkBench reports it: one row per
(method, sparsity, seed), with the ``random`` and ``magnitude`` baselines always included."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.pipeline import PruneResult, run_prune
from pruning.registry import get_method
from pruning.schedules import OneShot, Schedule
from pruning.selection import check_sparsity
from pruning.train import Progress

BASELINES = ("random", "magnitude")


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
) -> list[PruneResult]:
    """Every (seed, method, sparsity) pruned on the same schedule (methods that train keep their
    own, and those whose sparsity emerges run once per seed); all input is checked before any
    training starts. The results keep their numbers, not their weights (``without_tensors``)."""
    overrides = overrides or {}
    schedule = schedule or OneShot()
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
                result = run_prune(experiment, name, sparsity, settings_for(name, overrides),
                                   schedule=OneShot() if own else schedule)
                rows.append(result.without_tensors())
                done += 1
    if progress:
        progress(1.0, "done")
    return rows
