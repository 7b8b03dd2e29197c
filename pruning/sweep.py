"""Method comparison over a sparsity sweep, the way ShrinkBench reports it: one row per
(method, sparsity, seed), with the ``random`` and ``magnitude`` baselines always included. The
cells run on a backend (``pruning.runner``: this process, local processes or Ray) with the same
rows on each; a cell that failed twice is a row carrying its error."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pruning.cells import Cell, CellFailure, CellOutcome
from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.registry import get_method
from pruning.report import SWEEP_FIELDS, sweep_row
from pruning.runner import Backend, CellCallback, run_cells
from pruning.schedules import OneShot, Schedule
from pruning.selection import check_sparsity
from pruning.train import Progress

BASELINES = ("random", "magnitude")


def settings_for(method_name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The shared overrides a method declares (``samples_per_class`` means nothing to magnitude)."""
    declared = {param.name for param in get_method(method_name).params}
    return {key: value for key, value in overrides.items() if key in declared}


def sweep_cells(
    base: Experiment,
    methods: list[str],
    sparsities: list[float],
    seeds: list[int],
    overrides: dict[str, Any] | None = None,
    schedule: Schedule | None = None,
) -> list[Cell]:
    """Every (seed, method, sparsity) on the same schedule (methods that train keep their own, and
    those whose sparsity emerges run once per seed), in that order; all input is checked here,
    before any training starts."""
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
    return [
        Cell(replace(base, seed=seed), name, sparsity, settings_for(name, overrides),
             OneShot() if get_method(name).trains else schedule)  # methods that train keep their own schedule
        for seed in seeds for name in methods for sparsity in targets[name]
    ]


def run_sweep(
    base: Experiment,
    methods: list[str],
    sparsities: list[float],
    seeds: list[int],
    overrides: dict[str, Any] | None = None,
    schedule: Schedule | None = None,
    progress: Progress | None = None,
    backend: Backend | None = None,
    on_cell: CellCallback | None = None,
) -> list[CellOutcome]:
    """The sweep's cells (``sweep_cells``) run on ``backend`` (default: in this process). The
    results keep their numbers, not their weights (``without_tensors``); a cell that failed on
    both tries is a ``CellFailure`` in its place."""
    cells = sweep_cells(base, methods, sparsities, seeds, overrides, schedule)
    return run_cells(cells, backend or Backend(), progress=progress, on_cell=on_cell).outcomes


def failure_row(failure: CellFailure) -> dict:
    """A failed cell as a sweep row: what the cell was, its error, the measured fields empty."""
    cell = failure.cell
    experiment, trains = cell.experiment, get_method(cell.method).trains
    known = {
        "dataset": experiment.dataset, "model": experiment.model, "imbalance": experiment.imbalance,
        "method": cell.method, "seed": experiment.seed, "epochs": experiment.train.epochs,
        "granularity": cell.settings.get("granularity", "unstructured"),
        "schedule": "built-in" if trains else cell.schedule.kind,
        "finetune_epochs": None if trains else cell.schedule.finetune_epochs, "target_sparsity": cell.sparsity,
    }
    return {**{name: known.get(name) for name in SWEEP_FIELDS}, "error": failure.error}


def sweep_rows(outcomes: list[CellOutcome]) -> list[dict]:
    """One row per cell (``report.sweep_row``); where a cell failed, every row gets an ``error``
    column (empty where the cell ran), so a CSV keeps one header."""
    rows = [failure_row(outcome) if isinstance(outcome, CellFailure) else sweep_row(outcome) for outcome in outcomes]
    if any(isinstance(outcome, CellFailure) for outcome in outcomes):
        rows = [{**row, "error": row.get("error")} for row in rows]
    return rows


def failure_lines(outcomes: list[CellOutcome]) -> list[str]:
    """One line per failed cell, for stderr beside the rows."""
    return [f"cell failed: {outcome.cell.label()}: {outcome.error}" for outcome in outcomes if isinstance(outcome, CellFailure)]
