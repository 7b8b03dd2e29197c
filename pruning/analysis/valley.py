"""The loss-valley workflow the CLI's ``landscape`` command and the Loss valley page share: the
line from dense to pruned, the plane around it, the sharpness of both minima, and the barriers
between the levels of iterative pruning (linear mode connectivity, Frankle et al., ICML 2020).
``coarse_plane`` is the plane cheap enough to follow the page's sparsity slider live."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from pruning.analysis.hessian import sharpness
from pruning.analysis.landscape import (
    Level,
    LinePath,
    Plane,
    fixed_batch,
    full_tensors,
    level_barriers,
    line_path,
    plane,
)
from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense
from pruning.pipeline import PruneResult, run_schedule
from pruning.registry import get_method
from pruning.schedules import Iterative
from pruning.sparsity_sweep import VALLEY_BATCH, VALLEY_POINTS
from pruning.train import Progress, progress_stage

# The live plane: the a values of the sweep's line (so its b = 0 row sits on the scrubbed train
# curve's grid) on 64 fixed train samples, the sweep's train batch or its first samples
# (``fixed_batch`` takes a prefix of one seeded permutation). 143 points (13 x 11: the a axis keeps
# 0 and 1) x 64 samples take about a second of one CPU core on lenet5 and a tenth of one on the
# MLP; 128 samples would double that.
COARSE_GRID = VALLEY_POINTS
COARSE_BATCH = min(64, VALLEY_BATCH)
COARSE_SAMPLES_PER_CHUNK = 512  # grid points x samples per vmap chunk: measured fastest on CPU for lenet5 and the MLP


@dataclass
class LossValley:
    line: LinePath
    plane: Plane
    sharpness: dict[str, dict[str, float]] = field(default_factory=dict)  # {"dense": {...}, "pruned": {...}}

    def to_json(self) -> dict[str, Any]:
        report = {"line": self.line.to_json(), "plane": self.plane.to_json()}
        return report | ({"sharpness": self.sharpness} if self.sharpness else {})


def loss_valley(model: nn.Module, result: PruneResult, data, seed: int, grid: int = 21, batch_size: int = 256,
                restrict: bool = False, with_sharpness: bool = False, progress: Progress | None = None) -> LossValley:
    """The valley between the dense ``model`` and ``result`` pruned from it: loss and accuracy along
    dense -> pruned on fixed train and test batches, the plane of that line and a filter-normalised
    random direction (restricted to the surviving weights with ``restrict``), and optionally the
    sharpness (top Hessian eigenvalue, trace) at both ends."""
    if grid < 2:
        raise BadInputError(f"the grid needs at least 2 points per axis, got {grid}")
    if batch_size < 1:
        raise BadInputError(f"the evaluation batch needs at least 1 sample, got {batch_size}")
    device = next(model.parameters()).device  # a cached result's tensors are on the CPU: they follow the model
    pruned = {name: tensor.to(device) for name, tensor in result.pruned_tensors.items()}
    mask = result.mask.to(device) if restrict else None
    dense = full_tensors(model)
    train_batch = fixed_batch(data.x_train, data.y_train, batch_size, seed=seed)
    test_batch = fixed_batch(data.x_test, data.y_test, batch_size, seed=seed)
    ends = (0.0, 0.2, 0.85 if with_sharpness else 1.0)
    line = line_path(model, dense, pruned, train_batch, test_batch, points=grid, progress=progress_stage(progress, ends[0], ends[1]))
    surface = plane(model, dense, pruned, train_batch, points=grid, mask=mask, seed=seed,
                    progress=progress_stage(progress, ends[1], ends[2], "plane: "))
    valley = LossValley(line, surface)
    if with_sharpness:
        if progress:
            progress(ends[2], "sharpness of the dense model")
        valley.sharpness["dense"] = sharpness(model, *train_batch, parameters=None)
        if progress:
            progress((ends[2] + 1) / 2, "sharpness of the pruned model")
        valley.sharpness["pruned"] = sharpness(model, *train_batch, parameters=pruned)
    if progress:
        progress(1.0, "done")
    return valley


def coarse_plane(model: nn.Module, result: PruneResult, data, seed: int, restrict: bool = False,
                 grid: int = COARSE_GRID, batch_size: int = COARSE_BATCH) -> Plane:
    """``landscape.plane`` at a coarse ``grid`` on a small fixed train batch: the plane through the
    dense ``model``, ``result`` and the same filter-normalised random direction as ``loss_valley``'s
    (the same ``seed``; among the survivors with ``restrict``), cheap enough to recompute at every
    position of a sparsity slider. Same numbers as ``plane`` on that batch, up to float rounding."""
    if grid < 2:
        raise BadInputError(f"the grid needs at least 2 points per axis, got {grid}")
    batch = fixed_batch(data.x_train, data.y_train, batch_size, seed=seed)
    return plane(model, full_tensors(model), result.pruned_tensors, batch, points=grid,
                 mask=result.mask if restrict else None, seed=seed,
                 chunk=max(1, COARSE_SAMPLES_PER_CHUNK // len(batch[1])))


def iterative_levels(experiment: Experiment, method_name: str, sparsity: float, overrides: dict | None = None,
                     rounds: int = 3, rewind_to: str = "init", rewind_epoch: int = 1, dense: nn.Module | None = None,
                     progress: Progress | None = None) -> list[Level]:
    """The weights at every level of the iterative schedule (the schedule itself runs, so the
    last level is its result); level 0 is the trained dense model."""
    if get_method(method_name).trains:
        raise BadInputError(f"{method_name} prunes while it trains; iterative levels need a one-shot criterion")
    dense = dense if dense is not None else train_dense(experiment).model
    levels = [Level(0, 0.0, full_tensors(dense))]

    def keep_level(round_index: int, model: nn.Module, mask) -> None:
        levels.append(Level(round_index, mask.sparsity(), {name: t.clone() for name, t in full_tensors(model).items()}))

    schedule = Iterative(rounds=rounds, rewind_to=rewind_to, rewind_epoch=rewind_epoch)
    run_schedule(experiment, method_name, sparsity, overrides, schedule, progress=progress, dense=dense, on_round=keep_level)
    return levels


def level_barrier_rows(experiment: Experiment, method_name: str, sparsity: float, overrides: dict | None, rounds: int,
                       batch_size: int = 256, dense: nn.Module | None = None,
                       progress: Progress | None = None) -> list[dict[str, float]]:
    """The test error barrier between consecutive levels of ``rounds`` rounds of iterative pruning."""
    if rounds < 1:
        raise BadInputError(f"iterative levels need at least 1 round, got {rounds}")
    dense = dense if dense is not None else train_dense(experiment).model
    levels = iterative_levels(experiment, method_name, sparsity, overrides, rounds=rounds, dense=dense, progress=progress)
    data = experiment.load_data()
    return level_barriers(dense, levels, fixed_batch(data.x_test, data.y_test, batch_size, seed=experiment.seed))
