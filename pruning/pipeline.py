"""Prune a dense model and measure the result: the one path the CLI, the sweep and the app share,
and the one result type they all get back (``PruneResult``).

The dense model is never modified: pruned weights are built as a separate tensor dict and the
model is evaluated through ``torch.func.functional_call``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from pruning.data import Dataset
from pruning.device import describe_device
from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense
from pruning.masks import Mask
from pruning.methods.base import Details, Method, PruneContext, PruneOutcome, Snapshot
from pruning.metrics import ModelStats, model_stats
from pruning.registry import get_method
from pruning.run_cache import run_training_method
from pruning.schedules import OneShot, RoundCallback, Schedule
from pruning.selection import check_sparsity
from pruning.train import Evaluation, Progress, evaluate


@dataclass
class PruneResult:
    """Pruned weights measured on the test split, from any path: one-shot (``prune_model``), a
    schedule or a method that trains on an experiment (``run_prune``), a sweep cell.

    ``accuracy_before_finetune`` is None where nothing was fine-tuned; ``details`` holds the
    method's own numbers. The experiment fields are set by ``run_prune``: the experiment, the
    schedule (None for a method that trains on its own), the dense model and its evaluation.
    ``seconds`` is wall-clock time on the device named by ``timed_on``."""

    method: str
    settings: dict[str, Any]
    target_sparsity: float | None  # None where the sparsity emerges from the method's settings
    mask: Mask
    pruned_tensors: dict[str, torch.Tensor]  # parameters and buffers, pruned weights exactly 0
    stats: ModelStats
    pruned: Evaluation
    history: list[dict] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    accuracy_before_finetune: float | None = None
    details: Details | None = None
    seconds: float = 0.0
    timed_on: str = ""  # the device ``seconds`` was measured on (``pruning.device.describe_device``)
    experiment: Experiment | None = None
    schedule: Schedule | None = None
    dense: Evaluation | None = None
    dense_model: nn.Module | None = None

    @property
    def accuracy_after_finetune(self) -> float:
        return self.pruned.accuracy

    def pruned_state_dict(self, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """A plain state_dict (keys as ``model.state_dict()``, default the dense model of
        ``run_prune``) of the pruned model."""
        model = model if model is not None else self.dense_model
        if model is None:
            raise ValueError("pruned_state_dict needs the dense model: pass it, or prune with run_prune")
        return {name: self.pruned_tensors.get(name, tensor).detach().clone() for name, tensor in model.state_dict().items()}

    def without_tensors(self) -> PruneResult:
        """The numbers without the weights, masks and models: what a sweep keeps of each cell."""
        return replace(self, mask=Mask(), pruned_tensors={}, snapshots=[], dense_model=None)


def prune_model(
    model: nn.Module,
    data: Dataset,
    method_name: str,
    sparsity: float,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> PruneResult:
    """Prune ``model`` (left untouched) one-shot with a registry method and evaluate it on the test split."""
    started = time.perf_counter()
    method = get_method(method_name)
    settings = method.settings(overrides)
    sparsity = check_sparsity(sparsity)
    outcome = method.prune(model, sparsity, settings, PruneContext(data=data, seed=seed))
    return measure(model, data, method_name, settings, sparsity, outcome, started)


def measure(model: nn.Module, data: Dataset, method_name: str, settings: dict[str, Any], sparsity: float | None,
            outcome: PruneOutcome, started: float) -> PruneResult:
    """Evaluate the pruned weights (``outcome.state_dict`` over ``model``'s, masked) without
    touching ``model``, and count their size and FLOPs."""
    tensors = outcome.mask.masked_parameters(model, outcome.state_dict)
    evaluation = evaluate(model, data.x_test, data.y_test, data.num_classes, parameters=tensors)
    stats = model_stats(model, outcome.mask, data.input_shape, parameters=tensors)
    return PruneResult(
        method=method_name,
        settings=settings,
        target_sparsity=sparsity,
        mask=outcome.mask,
        pruned_tensors={name: tensor.detach() for name, tensor in tensors.items()},
        stats=stats,
        pruned=evaluation,
        history=outcome.history,
        snapshots=outcome.snapshots,
        accuracy_before_finetune=outcome.accuracy_before_finetune,
        details=outcome.details,
        seconds=time.perf_counter() - started,
        timed_on=describe_device(data.x_test.device),
    )


def run_prune(
    experiment: Experiment,
    method_name: str,
    sparsity: float | None,
    overrides: dict[str, Any] | None = None,
    progress: Progress | None = None,
    schedule: Schedule | None = None,
) -> PruneResult:
    """Train (or load the cached) dense model of ``experiment``, prune it on ``schedule``
    (default: one-shot after training), or with a method that trains on its own schedule, and
    evaluate both. ``sparsity`` is None for methods whose sparsity emerges from their settings.
    The result's ``accuracy_before_finetune`` is None unless something was fine-tuned."""
    started = time.perf_counter()
    schedule = schedule or OneShot()
    method = get_method(method_name)
    settings = method.settings(overrides)  # reject bad input before any training
    sparsity = check_method_options(method, sparsity, schedule)
    dense = train_dense(experiment, progress=progress)
    data = experiment.load_data()
    dense_evaluation = evaluate(dense.model, data.x_test, data.y_test, data.num_classes)
    if method.trains:
        outcome = run_training_method(experiment, method, sparsity, settings, progress=progress, dense=dense.model)
    elif schedule.is_live:
        outcome = method.prune(dense.model, sparsity, settings, PruneContext(data=data, seed=experiment.seed))
    else:
        outcome = run_schedule(experiment, method_name, sparsity, overrides, schedule, progress=progress, dense=dense.model)
    result = measure(dense.model, data, method_name, settings, sparsity, outcome, started)
    return replace(result, experiment=experiment, schedule=None if method.trains else schedule,
                   dense=dense_evaluation, dense_model=dense.model,
                   seconds=time.perf_counter() - started)


def run_schedule(
    experiment: Experiment,
    method_name: str,
    sparsity: float,
    overrides: dict[str, Any] | None,
    schedule: Schedule,
    progress: Progress | None = None,
    dense: nn.Module | None = None,
    on_round: RoundCallback | None = None,
) -> PruneOutcome:
    """Prune ``experiment``'s model with a registry method on ``schedule`` (the method gives the
    *what*, the schedule the *when*). ``dense``: the trained dense model when the caller has it."""
    method = get_method(method_name)
    if method.trains:
        raise BadInputError(f"{method_name} prunes while it trains; a schedule needs a one-shot criterion")
    settings = method.settings(overrides)
    data = experiment.load_data()

    def prune(model: nn.Module, target: float, previous: Mask | None = None) -> Mask:
        context = PruneContext(data=data, seed=experiment.seed, previous_mask=previous)
        outcome = method.prune(model, target, settings, context)
        if outcome.state_dict is not None:  # a method that also updates the surviving weights (SparseGPT)
            model.load_state_dict(outcome.state_dict)
        return outcome.mask

    return schedule.run(experiment, prune, sparsity, progress=progress, dense=dense, on_round=on_round)


def check_method_options(method: Method, sparsity: float | None, schedule: Schedule) -> float | None:
    """The checked sparsity: a target in [0, 1) for methods that take one, None for those whose
    sparsity emerges. Methods that train have their own schedule: no other may be asked for."""
    if method.trains and schedule != OneShot():
        raise BadInputError(f"{method.name} prunes while it trains, on its own schedule: schedule and fine-tuning options do not apply")
    if method.target_sparsity:
        if sparsity is None:
            raise BadInputError(f"{method.name} needs a target sparsity")
        return check_sparsity(sparsity)
    if sparsity is not None:
        raise BadInputError(f"{method.name}'s sparsity emerges from its settings, not from a target: leave the sparsity out")
    return None
