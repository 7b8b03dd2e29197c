"""Recall distortion: which classes pay for pruning, and whether pruning widens the gaps a model
already has between its classes.

Our reconstruction of the intensification statistic of Good et al. (NeurIPS 2022), not their
code. Per class c, the relative recall gap of the dense model and of the model pruned to sparsity t:

    d0_c = recall0_c / acc0 - 1        dt_c = recallt_c / acct - 1

and the intensification ratio alpha_t, the least-squares slope of dt on d0 through the origin,
sum(d0 dt) / sum(d0^2). alpha > 1: classes below accuracy fall further below it and classes above
rise further above it (intensification); alpha < 1: the gaps shrink (de-intensification).

The interval is a percentile bootstrap over classes. With several seeds (each its own dense
model, so its own d0) a drawn class brings its points from every seed: classes are the unit
because a class that is hard for one seed's model is hard for every seed's, so the points of one
class are not independent. Seed-to-seed noise enters through the spread of each class's points;
drawing seeds again within a class would count it twice (on synthetic data that widened the
interval by about half at 5 seeds, past the true spread of alpha). The fixed seed makes it reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from pruning.errors import BadInputError
from pruning.experiment import train_dense
from pruning.methods import get_method
from pruning.methods.undecayed import levels_for
from pruning.pipeline import prune_model, run_prune
from pruning.schedules import Schedule, iterative_fraction
from pruning.train import evaluate

RESAMPLES = 2000
LEVEL = 0.95

VERDICTS = {
    "intensified": "Pruning intensified the gaps: classes below accuracy lost more than the rest, relative to accuracy.",
    "de-intensified": "Pruning narrowed the gaps: classes below accuracy lost less than the rest, relative to accuracy.",
    "no clear change": "No clear change in the gaps: the interval contains 1.",
    "undefined": "Undefined: every class's dense recall equals the dense accuracy (no gaps to compare), "
                 "or a model gets nothing right.",
}


def class_recall(labels, predictions, num_classes: int) -> np.ndarray:
    """Recall of every class: correct predictions of the class / its samples (0 for a class
    without samples, as scikit-learn's ``zero_division=0``)."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    support = np.bincount(labels, minlength=num_classes)
    correct = np.bincount(labels[labels == predictions], minlength=num_classes)
    return np.divide(correct, support, out=np.zeros(num_classes), where=support > 0)


def relative_gaps(recall, accuracy) -> np.ndarray:
    """recall_c / accuracy - 1 per class (rows: seeds, with one accuracy per row); NaN where the
    accuracy is 0."""
    recall = np.atleast_2d(np.asarray(recall, dtype=float))
    accuracy = np.asarray(accuracy, dtype=float).reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(accuracy > 0, recall / accuracy - 1, np.nan)


def slope_through_origin(x, y) -> float:
    """Least-squares slope of y on x with no intercept, sum(x y) / sum(x^2); NaN when x is all 0."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    denominator = float(np.dot(x, x))
    return float(np.dot(x, y)) / denominator if denominator > 0 else math.nan


@dataclass(frozen=True)
class Intensification:
    alpha: float
    ci_low: float
    ci_high: float
    classes: int
    seeds: int
    resamples: int = RESAMPLES
    level: float = LEVEL
    d0: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False, compare=False)  # (seeds, classes)
    dt: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False, compare=False)

    @property
    def verdict(self) -> str:
        """A key of ``VERDICTS``: only an interval that excludes 1 counts as a change."""
        if math.isnan(self.alpha):
            return "undefined"
        if self.ci_low > 1:
            return "intensified"
        if self.ci_high < 1:
            return "de-intensified"
        return "no clear change"

    def to_json(self) -> dict[str, float | None]:
        """alpha and its interval, None for an undefined value (JSON has no NaN)."""
        return {name: None if math.isnan(value) else value
                for name, value in (("alpha", self.alpha), ("ci_low", self.ci_low), ("ci_high", self.ci_high))}


def intensification(dense_recall, dense_accuracy, pruned_recall, pruned_accuracy, resamples: int = RESAMPLES,
                    level: float = LEVEL, seed: int = 0) -> Intensification:
    """alpha with its bootstrap interval. Recalls are one list per model (one seed) or one row per
    seed (seeds x classes), accuracies a number or one per seed, the pruned rows matching the dense ones."""
    d0 = relative_gaps(dense_recall, dense_accuracy)
    dt = relative_gaps(pruned_recall, pruned_accuracy)
    if d0.shape != dt.shape:
        raise ValueError(f"dense and pruned recalls differ in shape: {d0.shape} vs {dt.shape}")
    seeds, classes = d0.shape
    alpha = slope_through_origin(d0, dt)
    low, high = bootstrap_interval(d0, dt, resamples, level, seed)
    return Intensification(alpha, low, high, classes, seeds, resamples, level, d0, dt)


def bootstrap_interval(d0: np.ndarray, dt: np.ndarray, resamples: int = RESAMPLES, level: float = LEVEL,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the slope over resamples of classes, each drawn class with its points
    of every seed; resamples whose d0 is all 0 are left out. NaN with fewer than 2 classes."""
    classes = d0.shape[1]
    if classes < 2 or not np.isfinite(d0).all() or not np.isfinite(dt).all():
        return math.nan, math.nan
    drawn = np.random.default_rng(seed).integers(0, classes, size=(resamples, classes))
    x, y = d0[:, drawn], dt[:, drawn]  # (seeds, resamples, classes)
    numerator, denominator = (x * y).sum(axis=(0, 2)), (x * x).sum(axis=(0, 2))
    slopes = numerator[denominator > 0] / denominator[denominator > 0]
    if not len(slopes):
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(slopes, [tail, 100 - tail])
    return float(low), float(high)


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
        outcome = run_prune(experiment, method_name, max_sparsity, {**settings, "level_fraction": level_fraction},
                            progress=progress)
        levels = _pruned_levels(outcome.result.history)
        return RecallRun(method_name, experiment.seed, outcome.dense.per_class_recall, outcome.dense.accuracy, levels)
    if iterative:
        schedule = Schedule(kind="iterative", rounds=levels_for(max_sparsity, level_fraction))
        outcome = run_prune(experiment, method_name, max_sparsity, settings, progress=progress, schedule=schedule)
        levels = _pruned_levels(outcome.result.history)
        return RecallRun(method_name, experiment.seed, outcome.dense.per_class_recall, outcome.dense.accuracy, levels)
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


# --- which test images pruning changed ---


@dataclass(frozen=True)
class Flip:
    """A test image whose prediction pruning changed."""

    index: int
    label: int
    dense: int
    pruned: int

    @property
    def kind(self) -> str:
        if self.dense == self.label:
            return "lost"
        return "gained" if self.pruned == self.label else "changed"


def flipped_predictions(labels, dense_predictions, pruned_predictions, num_classes: int, limit: int | None = 24) -> list[Flip]:
    """Test images whose prediction pruning changed, the classes whose recall fell most first;
    within a class, images it lost (dense right, pruned wrong) before those that changed between
    wrong answers and those it gained, then in test-set order. At most ``limit``."""
    labels, dense, pruned = (np.asarray(t.cpu() if isinstance(t, torch.Tensor) else t, dtype=np.int64)
                             for t in (labels, dense_predictions, pruned_predictions))
    loss = class_recall(labels, dense, num_classes) - class_recall(labels, pruned, num_classes)
    indices = np.flatnonzero(dense != pruned)
    kind_order = {"lost": 0, "changed": 1, "gained": 2}
    flips = [Flip(int(i), int(labels[i]), int(dense[i]), int(pruned[i])) for i in indices]
    flips.sort(key=lambda flip: (-loss[flip.label], flip.label, kind_order[flip.kind], flip.index))
    return flips if limit is None else flips[:limit]
