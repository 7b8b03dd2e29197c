"""Recall distortion over pruning levels: one seed's dense model and the models pruned from it
at increasing sparsities (iteratively, as Good et al. prune, or one-shot), and alpha per level
pooled over seeds. The statistics themselves live in ``pruning.analysis.recall``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pruning.analysis.recall import LEVEL, RESAMPLES, intensification
from pruning.errors import BadInputError
from pruning.experiment import train_dense
from pruning.methods.undecayed import levels_for
from pruning.pipeline import prune_model, run_prune
from pruning.registry import get_method
from pruning.schedules import Iterative, iterative_fraction
from pruning.train import evaluate

# --- alpha over a sweep: one row per sparsity level, pooled over seeds ---


@dataclass
class RecallRun:
    """One seed's dense model and the models pruned from it at increasing sparsities: each level
    ``{sparsity, accuracy, per_class_recall}``."""

    method: str
    seed: int
    dense_recall: list[float]
    dense_accuracy: float
    levels: list[dict[str, Any]]


def alpha_by_level(runs: Sequence[RecallRun], resamples: int = RESAMPLES, level: float = LEVEL) -> list[dict]:
    """Per level (runs of several seeds pooled level by level; they share a schedule):
    ``{level, sparsity, accuracy, alpha, ci_low, ci_high, seeds}``, sparsity and accuracy the
    means over seeds."""
    rows = []
    for index in range(min(len(run.levels) for run in runs)):
        at = [run.levels[index] for run in runs]
        result = intensification([run.dense_recall for run in runs], [run.dense_accuracy for run in runs],
                                 [entry["per_class_recall"] for entry in at], [entry["accuracy"] for entry in at],
                                 resamples=resamples, level=level)
        rows.append({"level": index + 1, "sparsity": float(np.mean([entry["sparsity"] for entry in at])),
                     "accuracy": float(np.mean([entry["accuracy"] for entry in at])),
                     "alpha": result.alpha, "ci_low": result.ci_low, "ci_high": result.ci_high, "seeds": len(runs)})
    return rows


def level_sparsities(max_sparsity: float, level_fraction: float) -> list[float]:
    """The sparsities an iterative run to ``max_sparsity`` passes through, removing at most
    ``level_fraction`` of the remaining weights per level (undecayed pruning's own levels)."""
    levels = levels_for(max_sparsity, level_fraction)
    return [iterative_fraction(index, levels, max_sparsity) for index in range(1, levels + 1)]


def recall_run(experiment, method_name: str, max_sparsity: float, level_fraction: float,
               settings: dict[str, Any] | None = None, iterative: bool = True, progress=None) -> RecallRun:
    """``experiment`` pruned with a method at every level up to ``max_sparsity``.

    Iterative (the paper's setting): one run of iterative pruning with rewinding to
    ``max_sparsity`` passes through every lower level, retraining the experiment's epochs after
    each; undecayed pruning runs its own levels, any other method the iterative schedule with the
    same number of rounds, so both see the same sparsities and the same retraining. Not iterative:
    the trained dense model pruned one-shot at each of those sparsities, nothing retrained (methods
    that train cannot)."""
    method = get_method(method_name)
    settings = dict(settings or {})
    if method.trains:
        if not iterative or "level_fraction" not in {param.name for param in method.params}:
            raise BadInputError(f"{method_name} trains on its own schedule: only undecayed pruning gives alpha "
                                "per level, iteratively")
        result = run_prune(experiment, method_name, max_sparsity, {**settings, "level_fraction": level_fraction},
                            progress=progress)
        levels = _pruned_levels(result.history)
        return RecallRun(method_name, experiment.seed, result.dense.per_class_recall, result.dense.accuracy, levels)
    if iterative:
        schedule = Iterative(rounds=levels_for(max_sparsity, level_fraction))
        result = run_prune(experiment, method_name, max_sparsity, settings, progress=progress, schedule=schedule)
        levels = _pruned_levels(result.history)
        return RecallRun(method_name, experiment.seed, result.dense.per_class_recall, result.dense.accuracy, levels)
    dense = train_dense(experiment, progress=progress).model
    data = experiment.load_data()
    dense_evaluation = evaluate(dense, data.x_test, data.y_test, data.num_classes)
    sparsities = level_sparsities(max_sparsity, level_fraction)
    levels = []
    for index, sparsity in enumerate(sparsities):
        if progress:
            progress(index / len(sparsities), f"one-shot at sparsity {sparsity:.3f}")
        pruned = prune_model(dense, data, method_name, sparsity, settings, seed=experiment.seed)
        levels.append({"sparsity": pruned.stats.sparsity, "accuracy": pruned.pruned.accuracy,
                       "per_class_recall": pruned.pruned.per_class_recall})
    return RecallRun(method_name, experiment.seed, dense_evaluation.per_class_recall, dense_evaluation.accuracy, levels)


def _pruned_levels(history: list[dict]) -> list[dict]:
    """The rows of an iterative run after each level (the dense row, sparsity 0, left out)."""
    missing = [row for row in history if "per_class_recall" not in row]
    if missing:
        raise BadInputError("this cached run predates per-class recall in run histories: clear its cache entry and run again")
    return [{"sparsity": row["sparsity"], "accuracy": row["accuracy"], "per_class_recall": row["per_class_recall"]}
            for row in history if row["sparsity"] > 0]
