"""Loss valleys: the loss and error between a dense model and its pruned version.

- ``line_path``: along ``theta(a) = (1 - a) theta_dense + a theta_pruned`` (the same line as
  ``theta_dense + a (theta_pruned - theta_dense)``, written so that a = 0 and a = 1 give both
  models bit for bit), a in [-0.5, 1.5], on a fixed train and a fixed test batch.
- ``plane``: the plane through the dense point spanned by ``theta_pruned - theta_dense`` and a
  filter-normalised random direction (Li et al. 2018, "Visualizing the Loss Landscape of Neural
  Nets"); the dense model sits at (0, 0), the pruned one at (1, 0).
- ``error_barrier`` / ``level_barriers``: linear mode connectivity (Frankle et al. 2020), the
  highest error on the straight path minus the mean error of its two ends, here between
  consecutive levels of iterative pruning (``pruning.analysis.valley.iterative_levels``).

Every point is evaluated through ``torch.func.functional_call`` with the parameters of a chunk of
points stacked and ``torch.func.vmap`` over the stack; the model is never modified. Models run in
eval mode: batch norm uses its running statistics, which are interpolated with the weights (they
are buffers of the two models), so the two ends are exactly the dense and the pruned model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap

from pruning.errors import BadInputError
from pruning.masks import Mask
from pruning.models import functional_forward, prunable_weight_names
from pruning.train import Progress

LINE_SPAN = (-0.5, 1.5)
PLANE_SPAN = (-1.0, 1.0)  # along the random direction, in units of the filter-normalised direction
SAMPLES_PER_CHUNK = 2048  # chunk of grid points x batch: bounds activation memory like one batch of this size
MAX_POINTS_PER_CHUNK = 32
MAX_CHUNK_PARAMETERS = 64_000_000  # stacked parameter values per chunk (256 MB of float32)


def full_tensors(model: nn.Module, replacements: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Every parameter and buffer of ``model`` (detached), ``replacements`` taking the place of some."""
    tensors = {name: tensor.detach() for name, tensor in model.named_parameters()}
    tensors.update({name: tensor.detach() for name, tensor in model.named_buffers()})
    tensors.update({name: tensor.detach() for name, tensor in (replacements or {}).items()})
    return tensors


def fixed_batch(x: Tensor, y: Tensor, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A seeded random subset of ``size`` samples (all of them if fewer): every grid point sees the
    same batch, and every device the same samples (drawn on the CPU)."""
    if size < 1:
        raise BadInputError(f"the evaluation batch size must be at least 1, got {size}")
    if size >= len(y):
        return x, y
    index = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed), device="cpu")[:size].to(x.device)
    return x[index], y[index]


def axis(span: tuple[float, float], points: int, must_include: tuple[float, ...] = ()) -> list[float]:
    """``points`` evenly spaced values over ``span`` plus the values that must be on the grid
    (the two models' coordinates), exactly, so the grid passes through them."""
    if points < 2:
        raise BadInputError(f"a grid needs at least 2 points per axis, got {points}")
    low, high = span
    if not low < high:
        raise BadInputError(f"the grid span must be increasing, got {span}")
    values = [low + (high - low) * i / (points - 1) for i in range(points)]
    step = (high - low) / (points - 1)
    for anchor in must_include:
        values = [value for value in values if abs(value - anchor) > 1e-6 * step] + [float(anchor)]
    return sorted(values)


def filter_normalized_direction(model: nn.Module, weights: dict[str, Tensor], seed: int = 0,
                                mask: Mask | None = None) -> dict[str, Tensor]:
    """A random direction over every parameter of ``model``, filter-normalised as in Li et al.
    (2018): each filter (a conv's output channel, a Linear's output row) of a Gaussian draw is
    rescaled to the norm of the same filter of ``weights``, so moving one unit changes every
    filter in proportion to its own size (scale-invariant layers are not favoured). Biases and
    norm-layer parameters get zero. With ``mask`` the direction stays among the surviving
    weights: it is zero where the mask prunes, and each filter takes the norm of its survivors.
    The draw is made on the CPU (the same direction on every device), then moved to the weights."""
    generator = torch.Generator().manual_seed(seed)
    filters = set(prunable_weight_names(model))
    direction = {}
    for name, parameter in model.named_parameters():
        if name not in filters:
            direction[name] = torch.zeros_like(parameter, dtype=torch.float32)
            continue
        draw = torch.randn(parameter.shape, generator=generator, device="cpu").to(parameter.device)
        target = weights[name].detach().float()
        if mask is not None and name in mask:
            keep = mask[name].to(parameter.device)
            draw, target = draw * keep, target * keep
        draw_norms = draw.flatten(1).norm(dim=1)
        target_norms = target.flatten(1).norm(dim=1)
        scale = torch.where(draw_norms > 0, target_norms / draw_norms.clamp_min(1e-30), torch.zeros_like(draw_norms))
        direction[name] = draw * scale.view(-1, *([1] * (draw.dim() - 1)))
    return direction


def _moving_names(base: dict[str, Tensor], positions: list[dict[str, Tensor]], directions: list[dict[str, Tensor]]) -> list[str]:
    """Floating tensors that differ between the grid points; the others are passed once, unbatched."""
    moving = []
    for name, tensor in base.items():
        if not tensor.is_floating_point():
            continue
        if any(name in position and not torch.equal(position[name], tensor) for position in positions) or any(
            name in direction and bool(direction[name].any()) for direction in directions
        ):
            moving.append(name)
    return moving


def default_chunk(batch: int, moving_parameters: int = 0) -> int:
    """Grid points per chunk: bounded by activations (points x batch) and by the stacked weights."""
    by_weights = MAX_CHUNK_PARAMETERS // max(1, moving_parameters)
    return max(1, min(MAX_POINTS_PER_CHUNK, SAMPLES_PER_CHUNK // max(1, batch), by_weights))


@torch.no_grad()
def evaluate_points(
    model: nn.Module,
    base: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    positions: list[dict[str, Tensor]] = (),
    directions: list[dict[str, Tensor]] = (),
    position_weights: Tensor | None = None,
    steps: Tensor | None = None,
    chunk: int | None = None,
    vectorise: bool = True,
    progress: Progress | None = None,
) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)`` at P points of parameter space

        theta_p = w_p0 base + sum_k w_pk positions[k] + sum_j s_pj directions[j]

    (``position_weights`` [P, 1 + K], rows summing to 1; ``steps`` [P, J]). A position missing a
    tensor has the base's, a direction missing one is zero there. Points run ``chunk`` at a time,
    their parameters stacked and ``vmap``-ed through ``functional_call`` (``vectorise=False``:
    one ``functional_call`` per point, same numbers, for comparison). Everything runs on the
    device of ``x``: the tensors given are moved there."""
    positions, directions = list(positions), list(directions)
    device = x.device
    points = len(position_weights) if position_weights is not None else len(steps)
    if position_weights is None:
        position_weights = torch.ones(points, 1, device=device)
    if steps is None:
        steps = torch.zeros(points, 0, device=device)
    if position_weights.shape != (points, 1 + len(positions)) or steps.shape != (points, len(directions)):
        raise ValueError("position_weights must be [P, 1 + positions], steps [P, directions]")
    coefficients = torch.cat([position_weights.to(device), steps.to(device)], dim=1).float()
    base = {name: tensor.to(device) for name, tensor in base.items()}
    positions = [{name: tensor.to(device) for name, tensor in position.items()} for position in positions]
    directions = [{name: tensor.to(device) for name, tensor in direction.items()} for direction in directions]
    moving = _moving_names(base, positions, directions)
    stacked = {
        name: torch.stack([base[name].float()] + [position.get(name, base[name]).float() for position in positions]
                          + [direction[name].float() if name in direction else torch.zeros_like(base[name], dtype=torch.float32)
                             for direction in directions])
        for name in moving
    }
    fixed = {name: tensor for name, tensor in base.items() if name not in stacked}
    chunk = chunk or default_chunk(len(y), sum(base[name].numel() for name in moving))

    def logits_of(parameters):
        return functional_forward(model, (parameters, fixed), (x,))

    batched_logits = vmap(logits_of)
    losses, accuracies = [], []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, points, chunk):
            rows = coefficients[start:start + chunk]
            parameters = {name: torch.tensordot(rows, tensor, dims=1) for name, tensor in stacked.items()}
            if vectorise and moving:
                logits = batched_logits(parameters)
            else:
                logits = torch.stack([logits_of({name: tensor[i] for name, tensor in parameters.items()})
                                      for i in range(len(rows))])
            count = len(rows)
            per_sample = nn.functional.cross_entropy(logits.reshape(count * len(y), -1), y.repeat(count), reduction="none")
            losses.append(per_sample.view(count, len(y)).mean(1))
            accuracies.append((logits.argmax(-1) == y).float().mean(1))
            if progress:
                progress(min(1.0, (start + count) / points), f"{start + count}/{points} grid points")
    finally:
        model.train(was_training)
    return torch.cat(losses), torch.cat(accuracies)


@dataclass
class LinePath:
    """Loss and accuracy along the line from the dense (a = 0) to the pruned model (a = 1)."""

    a: list[float]
    train_loss: list[float]
    train_accuracy: list[float]
    test_loss: list[float]
    test_accuracy: list[float]

    def barrier(self, split: str = "test") -> float:
        """Error barrier between the two models on this line (``error_barrier`` over a in [0, 1])."""
        return error_barrier(self.a, [1 - accuracy for accuracy in getattr(self, f"{split}_accuracy")])

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "train_barrier": self.barrier("train"), "test_barrier": self.barrier("test")}


@dataclass
class Plane:
    """Train loss over the plane (a along pruned - dense, b along the random direction).
    ``loss[i][j]`` and ``accuracy[i][j]`` are at ``(a[j], b[i])``: rows are b, as a contour plot wants."""

    a: list[float]
    b: list[float]
    loss: list[list[float]]
    accuracy: list[list[float]]
    points: dict[str, tuple[float, float]]
    restricted: bool

    def value_at(self, a: float, b: float) -> float:
        return self.loss[self.b.index(b)][self.a.index(a)]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "points": {name: list(point) for name, point in self.points.items()}}


def changed(dense: dict[str, Tensor], pruned: dict[str, Tensor]) -> dict[str, Tensor]:
    """The tensors of ``pruned`` that differ from ``dense`` (the others need no batching), on the
    dense tensors' device (pruned weights read from the cache are on the CPU)."""
    moved = {name: tensor.to(dense[name].device) for name, tensor in pruned.items() if name in dense}
    return {name: tensor for name, tensor in moved.items()
            if tensor.is_floating_point() and not torch.equal(tensor, dense[name])}


def line_path(
    model: nn.Module,
    dense: dict[str, Tensor],
    pruned: dict[str, Tensor],
    train_batch: tuple[Tensor, Tensor],
    test_batch: tuple[Tensor, Tensor],
    points: int = 21,
    span: tuple[float, float] = LINE_SPAN,
    chunk: int | None = None,
    progress: Progress | None = None,
) -> LinePath:
    """Train and test loss and accuracy at ``points`` values of a over ``span`` (plus a = 0 and 1)."""
    a = axis(span, points, must_include=(0.0, 1.0))
    alpha = torch.tensor(a, dtype=torch.float32, device=train_batch[0].device)
    weights = torch.stack([1 - alpha, alpha], dim=1)
    moved = changed(dense, pruned)
    results = {}
    for split, (x, y) in (("train", train_batch), ("test", test_batch)):
        report = (lambda fraction, message, split=split: progress(fraction, f"line, {split}: {message}")) if progress else None
        results[split] = evaluate_points(model, dense, x, y, positions=[moved], position_weights=weights, chunk=chunk,
                                         progress=report)
    return LinePath(a=a, train_loss=results["train"][0].tolist(), train_accuracy=results["train"][1].tolist(),
                    test_loss=results["test"][0].tolist(), test_accuracy=results["test"][1].tolist())


def plane(
    model: nn.Module,
    dense: dict[str, Tensor],
    pruned: dict[str, Tensor],
    batch: tuple[Tensor, Tensor],
    points: int = 21,
    span_a: tuple[float, float] = LINE_SPAN,
    span_b: tuple[float, float] = PLANE_SPAN,
    mask: Mask | None = None,
    seed: int = 0,
    chunk: int | None = None,
    vectorise: bool = True,
    progress: Progress | None = None,
) -> Plane:
    """Loss on ``batch`` over a ``points`` x ``points`` grid of the plane through the dense model
    spanned by ``pruned - dense`` (coordinate a) and a filter-normalised random direction
    (coordinate b, scaled to the dense weights; with ``mask``, restricted to the survivors)."""
    a = axis(span_a, points, must_include=(0.0, 1.0))
    b = axis(span_b, points, must_include=(0.0,))
    direction = filter_normalized_direction(model, dense, seed=seed, mask=mask)
    x, y = batch
    grid_b, grid_a = torch.meshgrid(torch.tensor(b, device=x.device), torch.tensor(a, device=x.device), indexing="ij")
    alpha, beta = grid_a.reshape(-1).float(), grid_b.reshape(-1).float()
    weights = torch.stack([1 - alpha, alpha], dim=1)
    loss, accuracy = evaluate_points(model, dense, x, y, positions=[changed(dense, pruned)], directions=[direction],
                                     position_weights=weights, steps=beta[:, None], chunk=chunk, vectorise=vectorise,
                                     progress=progress)
    return Plane(a=a, b=b, loss=loss.view(len(b), len(a)).tolist(), accuracy=accuracy.view(len(b), len(a)).tolist(),
                 points={"dense": (0.0, 0.0), "pruned": (1.0, 0.0)}, restricted=mask is not None)


def error_barrier(a: list[float], errors: list[float]) -> float:
    """Linear mode connectivity's barrier (Frankle et al. 2020): the highest error on the path
    between the two ends (a in [0, 1]) minus the mean of the errors at a = 0 and a = 1. Zero or
    near it: the two models lie in one linearly connected valley."""
    inside = [(value, error) for value, error in zip(a, errors) if 0.0 <= value <= 1.0]
    ends = dict(inside)
    if 0.0 not in ends or 1.0 not in ends:
        raise BadInputError("the path must include a = 0 and a = 1")
    return max(error for _, error in inside) - (ends[0.0] + ends[1.0]) / 2


@dataclass
class Level:
    """The weights after one round of iterative pruning (round 0: the trained dense model)."""

    round: int
    sparsity: float
    tensors: dict[str, Tensor]


def level_barriers(model: nn.Module, levels: list[Level], batch: tuple[Tensor, Tensor], points: int = 11,
                   chunk: int | None = None) -> list[dict[str, float]]:
    """Error barrier on ``batch`` between each pair of consecutive levels."""
    x, y = batch
    a = axis((0.0, 1.0), points)
    alpha = torch.tensor(a, dtype=torch.float32, device=x.device)
    weights = torch.stack([1 - alpha, alpha], dim=1)
    rows = []
    for start, end in zip(levels, levels[1:]):
        _, accuracy = evaluate_points(model, start.tensors, x, y, positions=[changed(start.tensors, end.tensors)],
                                      position_weights=weights, chunk=chunk)
        errors = (1 - accuracy).tolist()
        rows.append({"from_round": start.round, "to_round": end.round, "from_sparsity": start.sparsity,
                     "to_sparsity": end.sparsity, "barrier": error_barrier(a, errors),
                     "start_error": errors[0], "end_error": errors[-1], "max_error": max(errors)})
    return rows
