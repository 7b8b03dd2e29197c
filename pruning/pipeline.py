"""Prune a dense model and measure the result: the one path the CLI and the app share.

The dense model is never modified: pruned weights are built as a separate tensor dict and the
model is evaluated through ``torch.func.functional_call``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pruning.data import Dataset
from pruning.experiment import Experiment, train_dense
from pruning.masks import Mask
from pruning.methods import PruneContext, PruneOutcome, get_method
from pruning.metrics import ModelStats, model_stats
from pruning.schedules import Schedule, run_schedule
from pruning.selection import check_sparsity
from pruning.train import Evaluation, Progress, evaluate


@dataclass
class PruneResult:
    method: str
    settings: dict[str, Any]
    target_sparsity: float
    mask: Mask
    pruned_tensors: dict[str, torch.Tensor]  # parameters and buffers, pruned weights exactly 0
    stats: ModelStats
    pruned: Evaluation
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def pruned_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A plain state_dict (keys as ``model.state_dict()``) of the pruned model."""
        return {name: self.pruned_tensors.get(name, tensor).detach().clone() for name, tensor in model.state_dict().items()}


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


def measure(model, data, method_name, settings, sparsity, outcome: PruneOutcome, started: float) -> PruneResult:
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
        seconds=time.perf_counter() - started,
    )


@dataclass
class ExperimentPruneResult:
    experiment: Experiment
    dense: Evaluation
    result: PruneResult
    dense_model: nn.Module
    schedule: Schedule
    accuracy_before_finetune: float
    seconds: float

    def to_json(self) -> dict:
        stats = self.result.stats
        return {
            "dataset": self.experiment.dataset,
            "model": self.experiment.model,
            "imbalance": self.experiment.imbalance,
            "method": self.result.method,
            "settings": self.result.settings,
            "seed": self.experiment.seed,
            "epochs": self.experiment.train.epochs,
            "granularity": self.result.settings.get("granularity", "unstructured"),
            "schedule": self.schedule.kind,
            "schedule_settings": self.schedule.to_dict(),
            "finetune_epochs": self.schedule.finetune_epochs,
            "target_sparsity": self.result.target_sparsity,
            "sparsity": stats.sparsity,
            "compression": stats.compression,
            "params_total": stats.params_total,
            "params_nonzero": stats.params_nonzero,
            "flops_dense": stats.flops_dense,
            "flops_pruned": stats.flops_pruned,
            "theoretical_speedup": stats.speedup,
            "dense": self.dense.summary(),
            "pruned": self.result.pruned.summary(),
            "accuracy_before_finetune": self.accuracy_before_finetune,
            "accuracy_after_finetune": self.result.pruned.accuracy,
            "layers": [{"name": layer.name, "params": layer.params, "sparsity": layer.sparsity} for layer in stats.layers],
            "history": self.result.history,
            "seconds": self.seconds,
        }


def run_prune(
    experiment: Experiment,
    method_name: str,
    sparsity: float,
    overrides: dict[str, Any] | None = None,
    progress: Progress | None = None,
    schedule: Schedule | None = None,
) -> ExperimentPruneResult:
    """Train (or load the cached) dense model of ``experiment``, prune it on ``schedule``
    (default: one-shot after training) and evaluate both."""
    started = time.perf_counter()
    schedule = schedule or Schedule()
    settings = get_method(method_name).settings(overrides)  # reject bad input before any training
    sparsity = check_sparsity(sparsity)
    dense = train_dense(experiment, progress=progress)
    data = experiment.load_data()
    dense_evaluation = evaluate(dense.model, data.x_test, data.y_test, data.num_classes)
    if schedule.is_live:
        result = prune_model(dense.model, data, method_name, sparsity, overrides, seed=experiment.seed)
        before = result.pruned.accuracy
    else:
        outcome = run_schedule(experiment, method_name, sparsity, overrides, schedule, progress=progress, dense=dense.model)
        pruned = PruneOutcome(outcome.mask, outcome.state_dict, outcome.history)
        result = measure(dense.model, data, method_name, settings, sparsity, pruned, started)
        before = outcome.accuracy_before_finetune
    return ExperimentPruneResult(
        experiment, dense_evaluation, result, dense.model, schedule, before, time.perf_counter() - started
    )
