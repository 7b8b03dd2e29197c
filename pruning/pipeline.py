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
from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense, variant_path
from pruning.cache import load_entry, save_entry
from pruning.masks import Mask
from pruning.methods import Method, PruneContext, PruneOutcome, Snapshot, get_method
from pruning.metrics import ModelStats, model_stats
from pruning.schedules import Schedule, run_schedule
from pruning.selection import check_sparsity
from pruning.train import Evaluation, Progress, evaluate


@dataclass
class PruneResult:
    method: str
    settings: dict[str, Any]
    target_sparsity: float | None  # None where the sparsity emerges from the method's settings
    mask: Mask
    pruned_tensors: dict[str, torch.Tensor]  # parameters and buffers, pruned weights exactly 0
    stats: ModelStats
    pruned: Evaluation
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    snapshots: list[Snapshot] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

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
        snapshots=outcome.snapshots,
        extras=outcome.extras,
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
        from pruning.analysis.recall import intensification  # imported here: the analysis builds on this module

        stats = self.result.stats
        trains = get_method(self.result.method).trains
        report = {
            "dataset": self.experiment.dataset,
            "model": self.experiment.model,
            "imbalance": self.experiment.imbalance,
            "method": self.result.method,
            "settings": self.result.settings,
            "seed": self.experiment.seed,
            "epochs": self.experiment.train.epochs,
            "granularity": self.result.settings.get("granularity", "unstructured"),
            "schedule": "built-in" if trains else self.schedule.kind,
            "schedule_settings": None if trains else self.schedule.to_dict(),
            "finetune_epochs": None if trains else self.schedule.finetune_epochs,
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
            "intensification": intensification(self.dense.per_class_recall, self.dense.accuracy,
                                               self.result.pruned.per_class_recall, self.result.pruned.accuracy).to_json(),
            "accuracy_before_finetune": self.accuracy_before_finetune,
            "accuracy_after_finetune": self.result.pruned.accuracy,
            "layers": [{"name": layer.name, "params": layer.params, "sparsity": layer.sparsity} for layer in stats.layers],
            "history": self.result.history,
            "details": self.result.extras,
            "seconds": self.seconds,
        }
        if "spliced_total" in self.result.extras:
            report["spliced_total"] = self.result.extras["spliced_total"]
        return report


def run_prune(
    experiment: Experiment,
    method_name: str,
    sparsity: float | None,
    overrides: dict[str, Any] | None = None,
    progress: Progress | None = None,
    schedule: Schedule | None = None,
) -> ExperimentPruneResult:
    """Train (or load the cached) dense model of ``experiment``, prune it on ``schedule``
    (default: one-shot after training), or with a method that trains on its own schedule, and
    evaluate both. ``sparsity`` is None for methods whose sparsity emerges from their settings."""
    started = time.perf_counter()
    schedule = schedule or Schedule()
    method = get_method(method_name)
    settings = method.settings(overrides)  # reject bad input before any training
    sparsity = check_method_options(method, sparsity, schedule)
    dense = train_dense(experiment, progress=progress)
    data = experiment.load_data()
    dense_evaluation = evaluate(dense.model, data.x_test, data.y_test, data.num_classes)
    if method.trains:
        outcome = run_training_method(experiment, method, sparsity, settings, progress=progress, dense=dense.model)
        result = measure(dense.model, data, method_name, settings, sparsity, outcome, started)
        before = outcome.extras.get("accuracy_before_finetune", result.pruned.accuracy)
    elif schedule.is_live:
        result = prune_model(dense.model, data, method_name, sparsity, overrides, seed=experiment.seed)
        before = result.pruned.accuracy
    else:
        outcome = run_schedule(experiment, method_name, sparsity, overrides, schedule, progress=progress, dense=dense.model)
        pruned = PruneOutcome(outcome.mask, outcome.state_dict, outcome.history, outcome.snapshots)
        result = measure(dense.model, data, method_name, settings, sparsity, pruned, started)
        before = outcome.accuracy_before_finetune
    return ExperimentPruneResult(
        experiment, dense_evaluation, result, dense.model, schedule, before, time.perf_counter() - started
    )


def check_method_options(method: Method, sparsity: float | None, schedule: Schedule) -> float | None:
    """The checked sparsity: a target in [0, 1) for methods that take one, None for those whose
    sparsity emerges. Methods that train have their own schedule: no other may be asked for."""
    if method.trains and schedule != Schedule():
        raise BadInputError(f"{method.name} prunes while it trains, on its own schedule: schedule and fine-tuning options do not apply")
    if method.target_sparsity:
        if sparsity is None:
            raise BadInputError(f"{method.name} needs a target sparsity")
        return check_sparsity(sparsity)
    if sparsity is not None:
        raise BadInputError(f"{method.name}'s sparsity emerges from its settings, not from a target: leave the sparsity out")
    return None


RUN_FORMAT = 1


def training_run_path(experiment: Experiment, method: Method, sparsity: float | None, settings: dict[str, Any]):
    return variant_path(experiment, f"runs/{method.name}", {"format": RUN_FORMAT, "sparsity": sparsity, "settings": settings})


def run_training_method(
    experiment: Experiment,
    method: Method,
    sparsity: float | None,
    settings: dict[str, Any],
    progress: Progress | None = None,
    dense: nn.Module | None = None,
    use_cache: bool = True,
) -> PruneOutcome:
    """A training-time method's run on ``experiment``: read from the disk cache when this exact
    run was done before (a file that cannot be read is ignored and rewritten), else run and cached."""
    path = training_run_path(experiment, method, sparsity, settings)
    if use_cache:
        cached = _read_run(path)
        if cached is not None:
            return cached
    if dense is None:
        dense = train_dense(experiment, progress=progress).model
    outcome = method.train(experiment, dense, sparsity, settings, progress=progress)
    if use_cache:
        save_entry(
            {
                "format": RUN_FORMAT,
                "mask": dict(outcome.mask),
                "state_dict": outcome.state_dict,
                "history": outcome.history,
                "snapshots": [{"step": shot.step, "epoch": shot.epoch, "accuracy": shot.accuracy, "phase": shot.phase,
                               "mask": dict(shot.mask)} for shot in outcome.snapshots],
                "extras": outcome.extras,
            },
            path,
        )
    return outcome


def is_training_run_cached(experiment: Experiment, method: Method, sparsity: float | None, settings: dict[str, Any]) -> bool:
    return training_run_path(experiment, method, sparsity, settings).exists()


def _read_run(path) -> PruneOutcome | None:
    entry = load_entry(path)
    if entry is None:
        return None
    try:
        if entry["format"] != RUN_FORMAT:
            return None
        snapshots = [Snapshot(shot["step"], shot["epoch"], Mask(shot["mask"]), shot["accuracy"], shot["phase"])
                     for shot in entry["snapshots"]]
        return PruneOutcome(Mask(entry["mask"]), entry["state_dict"], list(entry["history"]), snapshots, dict(entry["extras"]))
    except Exception:  # an unreadable run is redone, never trusted
        return None
