"""Everything along the sparsity slider, computed once per (experiment, method, settings, grid),
so a page can send it to the browser and let a person scrub without a server run.

At every grid sparsity: the mask, test accuracy and loss, per-class recall, the confusion matrix,
the intensification alpha with its interval, per-layer sparsity, compression, theoretical speedup
and the 1-D loss valley (train and test loss/accuracy along dense -> pruned on fixed batches).
Criteria whose scores do not depend on the sparsity (all but the iterative ones, SynFlow) are
scored once and cut at every grid point; iterative criteria prune anew at every point (slower).
Either way each point equals ``prune_model`` at that sparsity (tested). Cached on disk.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from pruning.analysis.landscape import LINE_SPAN, LinePath, axis, changed, evaluate_points, fixed_batch, full_tensors
from pruning.analysis.recall import intensification
from pruning.cache import load_entry, save_entry
from pruning.device import check_device, describe_device
from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense, variant_path
from pruning.masks import Mask
from pruning.methods.base import PruneContext, PruneOutcome
from pruning.models import model_device
from pruning.pipeline import measure
from pruning.registry import get_method
from pruning.selection import check_sparsity
from pruning.train import Progress, evaluate

FORMAT = 1
DEFAULT_POINTS = 50
TOP = 0.99
VALLEY_POINTS = 11  # even steps of a over [-0.5, 1.5]; with a = 0 and 1 added the line has 13 points
VALLEY_BATCH = 64  # fixed train and test samples the valley is evaluated on (each)


def sparsity_grid(points: int = DEFAULT_POINTS, top: float = TOP) -> list[float]:
    """``points`` sparsities from 0 to ``top``, denser near the top: each the mean of an even
    step and an even step in log density (log(1 - s)), where pruning starts to cost accuracy."""
    if points < 2:
        raise BadInputError(f"a sparsity grid needs at least 2 points, got {points}")
    top = check_sparsity(top)
    values = []
    for index in range(points):
        t = index / (points - 1)
        values.append(round(0.5 * t * top + 0.5 * (1 - (1 - top) ** t), 4))
    return sorted(set(values))


@dataclass
class SweepPoint:
    target: float  # the grid's sparsity (a channel or block ratio for structured and block granularity)
    sparsity: float  # achieved: fraction of prunable weights that are zero
    mask: Mask
    accuracy: float
    loss: float
    per_class_recall: list[float]
    confusion: list[list[int]]  # rows: true class, columns: predicted
    alpha: float | None
    ci_low: float | None
    ci_high: float | None
    layer_sparsity: dict[str, float]
    compression: float
    speedup: float
    valley: LinePath


@dataclass
class SparsitySweep:
    method: str
    settings: dict[str, Any]
    nested: bool  # scored once and cut at every point (else pruned anew at each)
    dense_accuracy: float
    dense_loss: float
    dense_recall: list[float]
    dense_confusion: list[list[int]]
    class_names: list[str]
    layer_params: dict[str, int]
    points: list[SweepPoint] = field(default_factory=list)
    seconds: float = 0.0
    timed_on: str = ""  # the device ``seconds`` was measured on (``pruning.device.describe_device``)
    stopped: str = ""  # why the grid ends early (a sparsity the settings refuse, e.g. one that empties a layer)

    @property
    def grid(self) -> list[float]:
        return [point.target for point in self.points]

    def nearest(self, sparsity: float) -> int:
        """The index of the grid point closest to ``sparsity``."""
        return min(range(len(self.points)), key=lambda index: abs(self.points[index].target - sparsity))


def sweep_path(experiment: Experiment, method_name: str, settings: dict, grid: list[float]):
    choices = {"format": FORMAT, "settings": settings, "grid": grid, "valley": [VALLEY_POINTS, VALLEY_BATCH]}
    return variant_path(experiment, f"sweeps/{method_name}", choices)


def sparsity_sweep(experiment: Experiment, method_name: str, overrides: dict | None = None,
                   grid: list[float] | None = None, dense: nn.Module | None = None, progress: Progress | None = None,
                   use_cache: bool = True) -> SparsitySweep:
    """The sweep of a one-shot method on ``experiment``'s trained dense model (``dense`` when the
    caller has it), read from the disk cache when this exact sweep was computed before (its masks
    then moved to the experiment's device, where a computed sweep has them)."""
    method = get_method(method_name)
    if method.trains:
        raise BadInputError(f"{method_name} prunes while it trains: scrub its run's snapshots instead of a sweep")
    settings = method.settings(overrides)
    grid = [check_sparsity(value) for value in (grid or sparsity_grid())]
    path = sweep_path(experiment, method_name, settings, grid)
    if use_cache:
        cached = _read(path, check_device(experiment.device))
        if cached is not None:
            return cached
    if dense is None:
        dense = train_dense(experiment, progress=progress).model
    sweep = compute_sweep(dense, experiment.load_data(), method_name, settings, grid, experiment.seed, progress)
    if use_cache:
        save_entry(_to_entry(sweep), path)
    return sweep


def compute_sweep(model: nn.Module, data, method_name: str, settings: dict, grid: list[float], seed: int = 0,
                  progress: Progress | None = None) -> SparsitySweep:
    """The sweep itself (no cache): ``model`` is never modified."""
    started = time.perf_counter()
    method = get_method(method_name)
    nested = getattr(method, "nested", False)
    dense_evaluation = evaluate(model, data.x_test, data.y_test, data.num_classes)
    dense_tensors = full_tensors(model)
    train_batch = fixed_batch(data.x_train, data.y_train, VALLEY_BATCH, seed=seed)
    test_batch = fixed_batch(data.x_test, data.y_test, VALLEY_BATCH, seed=seed)
    at_dense = torch.ones(1, 1, device=model_device(model))
    dense_ends = {split: evaluate_points(model, dense_tensors, *batch, position_weights=at_dense, vectorise=False)
                  for split, batch in (("train", train_batch), ("test", test_batch))}
    context = PruneContext(data=data, seed=seed)
    scores = method.scores(model, settings, context) if nested else None
    profile = method.layer_profile(model, scores, settings, context) if nested else None  # allocated once
    sweep = SparsitySweep(method_name, settings, nested, dense_evaluation.accuracy, dense_evaluation.loss,
                          dense_evaluation.per_class_recall, dense_evaluation.confusion.tolist(), list(data.class_names), {})
    for index, target in enumerate(grid):
        if progress:
            progress(index / len(grid), f"sparsity {target:.4g} ({index + 1}/{len(grid)})")
        try:
            if nested:
                outcome = PruneOutcome(method.select(scores, target, settings, profile=profile))
            else:  # with the method's own weights where it updates them (SparseGPT)
                outcome = method.prune(model, target, settings, PruneContext(data=data, seed=seed))
            mask = outcome.mask
        except BadInputError as error:  # higher sparsities are refused too: the grid ends here
            if not sweep.points:
                raise
            sweep.stopped = f"stops at {100 * sweep.points[-1].target:.1f}%: at {100 * target:.1f}% {error}"
            break
        result = measure(model, data, method_name, settings, target, outcome, time.perf_counter())
        tensors, evaluation, stats = result.pruned_tensors, result.pruned, result.stats
        shift = intensification(dense_evaluation.per_class_recall, dense_evaluation.accuracy,
                                evaluation.per_class_recall, evaluation.accuracy)
        valley = valley_line(model, dense_tensors, tensors, train_batch, test_batch, dense_ends)
        sweep.layer_params = sweep.layer_params or {layer.name: layer.params for layer in stats.layers}
        sweep.points.append(SweepPoint(
            target=target, sparsity=stats.sparsity, mask=mask, accuracy=evaluation.accuracy, loss=evaluation.loss,
            per_class_recall=evaluation.per_class_recall, confusion=evaluation.confusion.tolist(), alpha=shift.alpha,
            ci_low=shift.ci_low, ci_high=shift.ci_high,
            layer_sparsity={layer.name: layer.sparsity for layer in stats.layers},
            compression=stats.compression, speedup=stats.speedup, valley=valley))
    if progress:
        progress(1.0, "done")
    sweep.seconds, sweep.timed_on = time.perf_counter() - started, describe_device(model_device(model))
    return sweep


def valley_line(model: nn.Module, dense: dict, pruned: dict, train_batch, test_batch, dense_ends: dict) -> LinePath:
    """``landscape.line_path`` (same a grid and numbers) for the sweep, faster: the dense end
    (a = 0, the same at every sparsity) is evaluated once, and the points run one forward pass
    each (batching them through vmap was slower for convolutions: 150 against 250 ms for lenet5)."""
    a = axis(LINE_SPAN, VALLEY_POINTS, must_include=(0.0, 1.0))
    moving = [value for value in a if value != 0.0]
    alpha = torch.tensor(moving, dtype=torch.float32, device=model_device(model))
    weights = torch.stack([1 - alpha, alpha], dim=1)
    line = {}
    for split, (x, y) in (("train", train_batch), ("test", test_batch)):
        loss, accuracy = evaluate_points(model, dense, x, y, positions=[changed(dense, pruned)], position_weights=weights,
                                         vectorise=False)
        zero = a.index(0.0)
        line[f"{split}_loss"] = loss.tolist()[:zero] + dense_ends[split][0].tolist() + loss.tolist()[zero:]
        line[f"{split}_accuracy"] = accuracy.tolist()[:zero] + dense_ends[split][1].tolist() + accuracy.tolist()[zero:]
    return LinePath(a=a, **line)


# --- the disk cache: masks packed to bits (a lenet5 sweep is about 3 MB) ---


def pack(mask: Mask) -> dict[str, Any]:
    return {name: {"bits": torch.from_numpy(np.packbits(keep.cpu().numpy().ravel())), "shape": list(keep.shape)}
            for name, keep in mask.items()}


def unpack(packed: dict[str, Any]) -> Mask:
    masks = {}
    for name, entry in packed.items():
        count = math.prod(entry["shape"])
        bits = np.unpackbits(entry["bits"].numpy())[:count].astype(bool)
        masks[name] = torch.from_numpy(bits.reshape(entry["shape"]))
    return Mask(masks)


def _to_entry(sweep: SparsitySweep) -> dict[str, Any]:
    entry = {key: value for key, value in asdict(sweep).items() if key != "points"}
    entry["format"] = FORMAT
    entry["points"] = [{**{key: value for key, value in asdict(point).items() if key not in ("mask", "valley")},
                        "mask": pack(point.mask), "valley": asdict(point.valley)} for point in sweep.points]
    return entry


def _read(path, device: torch.device) -> SparsitySweep | None:
    entry = load_entry(path)
    if entry is None:
        return None
    try:
        if entry.pop("format") != FORMAT:
            return None
        points = [SweepPoint(**{**point, "mask": unpack(point["mask"]).to(device), "valley": LinePath(**point["valley"])})
                  for point in entry.pop("points")]
        return SparsitySweep(**entry, points=points)
    except Exception:  # an unreadable sweep is computed again, never trusted
        return None
