"""Directional pruning: gRDA (Chao et al., NeurIPS 2020) and its structured version sDprun
(Li et al., 2021). Both are optimizers that prune while they train, from initialisation.

gRDA keeps the plain SGD sum of gradient steps in an accumulator a (started at the initial
weights w0) and sets the weights to a soft-thresholded copy of it,

    a_n = a_{n-1} - lr_n grad L(w_{n-1}),    w_n = sign(a_n) max(|a_n| - Lambda_n, 0),

with a threshold that grows with the step count, Lambda_n = c lr^(1/2 + mu) n^mu for a constant
lr. Since the threshold acts on the accumulated steps and not on the previous weights, a pruned
weight is not stuck: if its gradients keep pushing, |a| passes Lambda_n and it comes back.
Sparsity grows with training, and the paper shows the run tends to the *directional pruning*
solution: the sparse point in the flat valley of the SGD minimum.

Our readings:
- Learning-rate schedules: the threshold accumulates, per step, the increment
  c lr_n^(1/2) ((n lr_n)^mu - ((n - 1) lr_n)^mu) with the current lr_n, which sums to the closed
  form for a constant lr (the increment form of the reference code).
- sDprun: its group soft threshold over the dim-0 slices of a weight (a conv filter, a Linear
  neuron's incoming weights), w_g = a_g max(0, 1 - Lambda_n sqrt(|g|) / ||a_g||_2), is our reading
  of the paper's structured threshold; the same Lambda_n schedule as gRDA. The output layer is
  left unregularised (removing one of its neurons removes a class).
- Both methods train with no momentum and no weight decay (as the authors' script runs gRDA);
  biases and normalisation layers are trained by plain SGD (c = 0).
- ``lr_schedule``: ``constant``, or ``half-then-decay``, the schedule of the authors' training
  script (directional_pruning/Connectivity_Projection/train.py): per epoch e of E (1-based),
  alpha = e / E; the factor is 1 for alpha <= 0.5, 1 - 0.99 (alpha - 0.5) / 0.4 for alpha <= 0.9,
  then 0.01. The threshold's increments follow the lr, so its growth slows when the lr decays.
- c: the authors' scripts use c = 0.0005 (VGG16, CIFAR-10, 600 epochs) and c = 0.001 (WRN28x10,
  CIFAR-10/100, 200 epochs), lr 0.1, batch 128, mu 0.4-0.7. What sets the sparsity is Lambda_n,
  which grows as n^mu: their ~78,000 steps at c = 0.001 (and ~235,000 at c = 0.0005), at mu 0.51,
  reach about the threshold c = 0.01 reaches in our ~630 steps (10 epochs of mnist-5k at batch 64),
  so the defaults keep c at 0.01 (sDprun 0.015); c = 0.001 in a 10-epoch run leaves the mlp about
  93% dense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pruning.masks import Mask
from pruning.methods.base import Details, PruneOutcome, TrainingMethod
from pruning.methods.loop import TrainingRun
from pruning.models import prunable_weight_names
from pruning.params import Param
from pruning.train import TrainingHooks

LR_SCHEDULES = ("constant", "half-then-decay")


def threshold_increment(c: float, lr: float, mu: float, step: int) -> float:
    """Lambda_n - Lambda_{n-1} at step n (1-based) with the step's lr: c lr^(1/2) ((n lr)^mu - ((n-1) lr)^mu)."""
    return c * math.sqrt(lr) * ((step * lr) ** mu - ((step - 1) * lr) ** mu)


def half_then_decay_factor(epoch: int, epochs: int) -> float:
    """The lr factor of epoch ``epoch`` (1-based) of ``epochs`` in the authors' training script:
    1 for the first half, then linearly down to 0.01 at 90% of the run, 0.01 for the rest."""
    alpha = epoch / epochs
    if alpha <= 0.5:
        return 1.0
    if alpha <= 0.9:
        return 1.0 - (alpha - 0.5) / 0.4 * 0.99
    return 0.01


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, epochs: int, per_epoch: int):
    """The scheduler (stepped per step) for ``schedule``; None for a constant lr. The factor changes
    once per epoch, as the reference sets the lr at the start of each epoch."""
    if schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: half_then_decay_factor(min(step // per_epoch + 1, epochs), epochs))


def soft_threshold(accumulator: torch.Tensor, threshold: float) -> torch.Tensor:
    """sign(a) max(|a| - Lambda, 0), elementwise."""
    return accumulator.sign() * (accumulator.abs() - threshold).clamp_min(0.0)


def group_soft_threshold(accumulator: torch.Tensor, threshold: float) -> torch.Tensor:
    """a_g max(0, 1 - Lambda sqrt(|g|) / ||a_g||_2) for each dim-0 slice g. A 1-D tensor's
    dim-0 slices are its single entries (|g| = 1), where this is the elementwise soft threshold."""
    if accumulator.dim() < 2:
        return soft_threshold(accumulator, threshold)
    rows = accumulator.flatten(1)
    norms = rows.norm(dim=1).clamp_min(torch.finfo(rows.dtype).tiny)  # an all-zero group stays 0, not NaN
    scale = (1.0 - threshold * math.sqrt(rows.shape[1]) / norms).clamp_min(0.0)
    return accumulator * scale.view(-1, *([1] * (accumulator.dim() - 1)))


class GRDA(torch.optim.Optimizer):
    """Generalised regularised dual averaging (gRDA), with the sDprun group threshold as an option.

    Per parameter group: ``lr``, ``c`` (threshold scale, 0 = plain SGD), ``mu`` (threshold growth
    exponent; the theory wants 0.5 < mu < 1) and ``group_threshold`` (False: elementwise soft
    threshold; True: sDprun's group soft threshold over dim-0 slices of tensors with dim >= 2,
    elementwise for 1-D tensors, whose slices are single entries). No momentum, no weight decay.

    State per parameter: ``step`` (n), ``threshold`` (Lambda_n, the sum of the per-step increments
    at each step's lr, so lr schedulers work) and ``accumulator`` (a, set to the parameter's value
    at its first step with a non-zero threshold: w0 when c > 0). With c = 0 the accumulator would equal the weights, so none is
    kept and the step is exactly ``torch.optim.SGD``'s without momentum."""

    def __init__(self, params, lr: float = 0.1, c: float = 0.005, mu: float = 0.51, group_threshold: bool = False):
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if not c >= 0.0:
            raise ValueError(f"invalid threshold scale c: {c}")
        if not mu > 0.0:
            raise ValueError(f"invalid threshold exponent mu: {mu}")
        super().__init__(params, {"lr": lr, "c": c, "mu": mu, "group_threshold": group_threshold})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, c, mu = group["lr"], group["c"], group["mu"]
            shrink = group_soft_threshold if group["group_threshold"] else soft_threshold
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if not state:
                    state["step"] = 0
                    state["threshold"] = 0.0
                state["step"] += 1
                state["threshold"] += threshold_increment(c, lr, mu, state["step"])
                if "accumulator" not in state:
                    if state["threshold"] == 0.0:  # nothing thresholded yet: a = w, a plain SGD step
                        parameter.add_(parameter.grad, alpha=-lr)
                        continue
                    state["accumulator"] = parameter.detach().clone()
                accumulator = state["accumulator"]
                accumulator.add_(parameter.grad, alpha=-lr)
                parameter.copy_(shrink(accumulator, state["threshold"]))
        return loss

    def current_threshold(self) -> float:
        """The largest Lambda_n over all parameters (they agree within a group)."""
        return max((state.get("threshold", 0.0) for state in self.state.values()), default=0.0)


def nonzero_mask(parameters: dict[str, torch.Tensor], names: list[str]) -> Mask:
    """The weights gRDA has not zeroed: exact zeros are pruned, everything else is kept."""
    return Mask({name: parameters[name].detach() != 0 for name in names})


def zero_groups(weight: torch.Tensor) -> int:
    """How many dim-0 slices of ``weight`` are entirely zero."""
    return int((weight.detach().flatten(1) == 0).all(dim=1).sum())


@dataclass(frozen=True)
class GRDADetails(Details):
    final_threshold: float  # Lambda_n at the last step
    steps: int


@dataclass(frozen=True)
class SDprunDetails(GRDADetails):
    groups: int  # neurons/filters of the thresholded layers
    pruned_groups: int  # of those, removed whole


def _shared_params(c_default: float) -> tuple[Param, ...]:
    return (
        Param("c", "float", c_default, "Threshold scale c in Lambda_n = c lr^(1/2+mu) n^mu; higher = sparser "
              "(the authors' scripts: 0.0005-0.001 over 200-600 epochs; a short run needs a larger c for the same "
              "threshold).", min=0.0, max=0.1, step=1e-4, label="c (threshold scale)"),
        Param("mu", "float", 0.51, "Threshold growth exponent mu in (0.5, 1); higher = sparsity grows faster.",
              min=0.51, max=0.99, step=0.01, label="μ (threshold growth)"),
        Param("lr", "float", 0.1, "Learning rate (no momentum, no weight decay): throughout, or at the start of the "
              "schedule.", min=1e-4, max=0.5, step=1e-4, label="Learning rate"),
        Param("lr_schedule", "choice", "constant", "constant: the lr throughout; half-then-decay: the authors' "
              "training script's, the lr for the first half of the epochs, then down linearly to 1% of it at 90% "
              "of the run, 1% for the last 10% (set per epoch).", choices=LR_SCHEDULES, label="Learning-rate schedule"),
        Param("epochs", "int", 10, "Epochs of training from initialisation.", min=1, max=200, label="Training epochs"),
    )


class GRDAMethod(TrainingMethod):
    details_type = GRDADetails
    name = "grda"
    target_sparsity = False
    structured = False  # sDprun: group threshold, output layer left out
    description = (
        "gRDA (generalised regularised dual averaging): an optimizer that prunes while it trains, from the "
        "experiment's initialisation (not from the trained dense model). It sums plain SGD steps in an "
        "accumulator a started at the initial weights, and sets each weight to a soft-thresholded copy of it, "
        "w = sign(a) max(|a| - Lambda_n, 0), with a threshold Lambda_n = c lr^(1/2+mu) n^mu that grows with the "
        "step n. Weights whose accumulated gradient steps stay small are exactly zero; a pruned weight can come "
        "back when its gradients keep pushing. The sparsity emerges from c and mu and grows with training; it is "
        "not set by the sparsity slider. The paper shows gRDA tends to the directional pruning solution: the "
        "sparse point in the flat valley of the SGD minimum, reached by moving along the flat directions, so "
        "the training loss stays about where SGD leaves it (the Loss valleys page shows the loss along the line "
        "from the SGD solution to the pruned one). All prunable weights, the output layer included, are "
        "thresholded; biases and normalisation layers train by plain SGD. Our readings: no momentum or weight "
        "decay, as the authors' script runs gRDA; the lr is constant by default, and lr_schedule=half-then-decay "
        "is their script's schedule (the lr for the first half of the epochs, then linearly down to 1% of it at 90% "
        "of the run); the threshold is accumulated step by step with the current lr, which equals the closed form "
        "for a constant lr. The authors' c is 0.0005-0.001 (CIFAR, lr 0.1, batch 128, 200-600 epochs, mu 0.4-0.7); "
        "the threshold grows as n^mu, so our 10-epoch runs (about 630 steps on mnist-5k) need a larger c for the "
        "same threshold: the default c stays 0.01 (c = 0.001 leaves about 7% of the mlp's weights pruned in 10 "
        "epochs, 25% in 200 epochs with the decay)."
    )
    formula = (
        r"a_0 = w_0,\quad a_n = a_{n-1} - \eta\,\nabla L(w_{n-1});\quad "
        r"\Lambda_n = c\,\eta^{1/2+\mu}\,n^{\mu};\quad "
        r"w_n = \operatorname{sign}(a_n)\,\max(|a_n| - \Lambda_n,\ 0)"
    )
    reference = "Chao, Wang, Xing & Cheng, Directional Pruning of Deep Neural Networks, NeurIPS 2020."
    params = _shared_params(0.01)

    def train(self, experiment, dense, sparsity, settings, progress=None) -> PruneOutcome:
        # the paper trains from scratch: ``dense`` is not used
        run = TrainingRun(experiment, None, settings["epochs"], from_init=True, progress=progress)
        parameters = run.parameters
        names = prunable_weight_names(run.model, include_output=not self.structured)
        others = [tensor for name, tensor in parameters.items() if name not in names]
        optimizer = GRDA(
            [{"params": [parameters[name] for name in names], "c": settings["c"], "group_threshold": self.structured},
             {"params": others, "c": 0.0}],
            lr=settings["lr"], mu=settings["mu"],
        )
        scheduler = lr_scheduler(optimizer, settings["lr_schedule"], settings["epochs"], run.per_epoch)
        run.record(0, nonzero_mask(parameters, names), phase="initialisation")
        run.train(settings["epochs"], optimizer, TrainingHooks(), scheduler=scheduler,
                  snapshot=lambda done: (nonzero_mask(parameters, names), None, "training"))
        details = GRDADetails(final_threshold=optimizer.current_threshold(), steps=run.total_steps)
        if self.structured:
            details = SDprunDetails(details.final_threshold, details.steps,
                                    groups=sum(parameters[name].shape[0] for name in names),
                                    pruned_groups=sum(zero_groups(parameters[name]) for name in names))
        return run.outcome(nonzero_mask(parameters, names), details)


class SDprunMethod(GRDAMethod):
    details_type = SDprunDetails
    name = "sdprun"
    structured = True
    description = (
        "sDprun (structured directional pruning): the structured version of gRDA. It trains from the "
        "experiment's initialisation with the same accumulator a of plain SGD steps and the same growing "
        "threshold Lambda_n = c lr^(1/2+mu) n^mu, but thresholds whole groups instead of single weights: each "
        "conv filter or each Linear neuron's incoming weights (a dim-0 slice of the weight) is shrunk towards "
        "zero together, w_g = a_g max(0, 1 - Lambda_n sqrt(|g|) / ||a_g||_2), and is removed as a whole when "
        "its accumulated norm falls below Lambda_n sqrt(|g|). The sparsity emerges from c and mu and grows with "
        "training; it is not set by the sparsity slider. The paper's claim is pruned accuracy without "
        "retraining, landing in the same minimum valley as SGD (check it on the Loss valleys page). The output "
        "layer is left unregularised, since removing one of its neurons removes a class; biases and "
        "normalisation layers train by plain SGD. Our readings: this group soft threshold (the group-lasso "
        "proximal step with the gRDA threshold schedule) is our reading of the paper's structured threshold; "
        "no momentum or weight decay; a constant lr by default, or gRDA's half-then-decay schedule; the default "
        "c (0.015) is above the gRDA authors' 0.0005-0.001 for the same reason as gRDA's (short runs)."
    )
    formula = (
        r"a_0 = w_0,\quad a_n = a_{n-1} - \eta\,\nabla L(w_{n-1});\quad "
        r"\Lambda_n = c\,\eta^{1/2+\mu}\,n^{\mu};\quad "
        r"w_{n,g} = a_{n,g}\,\max\!\left(0,\ 1 - \frac{\Lambda_n \sqrt{|g|}}{\lVert a_{n,g} \rVert_2}\right)"
    )
    reference = ("Li, Liu, Shao, Wang & Geng, Structured Directional Pruning via Perturbation Orthogonal "
                 "Projection, 2021.")
    params = _shared_params(0.015)
