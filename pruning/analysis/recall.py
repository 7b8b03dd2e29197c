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

import numpy as np
import torch

from pruning.errors import BadInputError
from pruning.train import confusion_matrix, recall_per_class

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
    """Recall of every class from labels and predictions (``pruning.train.recall_per_class``)."""
    labels, predictions = (torch.as_tensor(values, dtype=torch.int64, device="cpu") for values in (labels, predictions))
    if bool(((labels < 0) | (labels >= num_classes) | (predictions < 0) | (predictions >= num_classes)).any()):
        raise BadInputError(f"labels and predictions must be classes 0..{num_classes - 1}")
    return np.array(recall_per_class(confusion_matrix(labels, predictions, num_classes)))


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
