"""A sweep cell (one pruning of one experiment) and the work a worker does with it, on any backend.

A worker gets each distinct dense model once, as a ``DenseEntry`` (CPU tensors), and puts it into
its own disk cache before it prunes, so a worker on another machine never trains it again: the
pipeline then reads the dense model from that cache as it does in-process. Everything here is
plain data and module-level functions, so it pickles to a spawned process or a Ray task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pruning.cache import load_entry, save_entry
from pruning.data import DataUnavailableError
from pruning.errors import BadInputError
from pruning.experiment import Experiment, cached_dense_path, train_dense
from pruning.methods.base import Method
from pruning.pipeline import PruneResult, run_prune
from pruning.registry import METHODS, register
from pruning.schedules import Schedule
from pruning.weights import stored_weights, uploads_path

TRIES = 2  # a failed cell or dense model is tried once more
USER_ERRORS = (BadInputError, DataUnavailableError)  # never tried again: they stop the run, as bad input does


@dataclass(frozen=True, eq=False)
class Cell:
    """One pruning: ``method`` at ``sparsity`` (None where it emerges) with ``settings`` on ``schedule``."""

    experiment: Experiment
    method: str
    sparsity: float | None
    settings: dict[str, Any]
    schedule: Schedule

    def label(self) -> str:
        at = "" if self.sparsity is None else f" at sparsity {self.sparsity:g}"
        return f"seed {self.experiment.seed}, {self.method}{at}"


@dataclass
class CellFailure:
    """A cell that failed on every try: its error, in one line, where its result would be."""

    cell: Cell
    error: str


CellOutcome = PruneResult | CellFailure


@dataclass
class DenseEntry:
    """A trained dense model as it travels to the workers: the cache entry's contents, on the CPU."""

    experiment: Experiment
    state_dict: dict[str, torch.Tensor]
    history: list[dict]
    trained: bool  # trained by the task that made this entry, not read from a cache


def experiments_of(cells: list[Cell]) -> list[Experiment]:
    """The distinct dense experiments, in the order of their first cell."""
    return list(dict.fromkeys(cell.experiment for cell in cells))


def dense_failure(error: str) -> str:
    """The error of a cell whose dense model could not be trained."""
    return f"dense model: {error}"


def describe_error(error: BaseException) -> str:
    """``Type: message`` on one line, for a row and a progress line."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def dense_entry(experiment: Experiment) -> DenseEntry:
    """The dense model of ``experiment`` from this worker's cache, trained there first if missing;
    uploaded weights as they are (the caller's process holds them: call this there)."""
    if experiment.weights is not None:
        return DenseEntry(experiment, stored_weights(experiment), [], trained=False)
    dense = train_dense(experiment)
    state = {name: tensor.detach().cpu() for name, tensor in dense.model.state_dict().items()}
    return DenseEntry(experiment, state, dense.history, trained=not dense.from_cache)


def seed_cache(entry: DenseEntry) -> None:
    """Put ``entry`` into this worker's cache unless a readable copy is there (the format
    ``train_cached`` writes, or the uploads' for uploaded weights)."""
    experiment = entry.experiment
    if experiment.weights is not None:
        path, content = uploads_path(experiment.model, experiment.weights), {"state_dict": entry.state_dict}
    else:
        path = cached_dense_path(experiment)
        content = {"experiment": experiment.to_dict(), "state_dict": entry.state_dict, "history": entry.history}
    if load_entry(path) is None:
        save_entry(content, path)


def ensure_registered(method: Method) -> None:
    """A method registered in the caller's process (a plug-in, a test's method) exists here too."""
    if method.name not in METHODS:
        register(method)


def prune_cell(cell: Cell) -> PruneResult:
    """The cell's result, numbers only (the dense model comes from the cache, trained if missing)."""
    return run_prune(cell.experiment, cell.method, cell.sparsity, cell.settings, schedule=cell.schedule).without_tensors()


def run_cell(cell: Cell, method: Method, entry: DenseEntry | None) -> tuple[PruneResult, bool]:
    """A worker's job: the dense model put into this worker's cache, then the cell pruned. Returns
    the result and whether the dense model had to be trained here (it should not have been)."""
    ensure_registered(method)
    if entry is not None:
        seed_cache(entry)
    retrained = cell.experiment.weights is None and not train_dense(cell.experiment).from_cache
    return prune_cell(cell), retrained
