"""Undecayed pruning (Good et al., NeurIPS 2022): a score that accounts for weight decay.

With g = dCE/dw over the training data (model in train mode, loss without the decay term) and
lambda the weight-decay coefficient, score = |-w g + lambda w^2|. At a stationary point of
CE + lambda/2 ||w||^2, g = -lambda w and the score is 2 lambda w^2: magnitude pruning; away
from it the gradient adds information. g is the mean over the whole training split by default
(streamed in chunks, memory bounded): at lambda = 5e-4 the lambda w^2 term (~1e-6) is far below
the noise of w g on one batch of 128, which would make the score SNIP's.

As in the reference code (OpenLTH), it runs inside iterative pruning with rewinding: from the
trained dense model, each level prunes a fraction of the remaining weights globally, rewinds the
survivors to their initial (or epoch-k) weights and retrains with the experiment's training
recipe. Our reading of "20% per level": the number of levels is the fewest that reach the target
removing at most ``level_fraction`` per level, ceil(log(1 - s) / log(1 - f)), and every level
removes the same fraction of what remains, so the last one lands exactly on the target.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from pruning.class_balanced import balanced_batch
from pruning.loss_gradients import streamed_gradient
from pruning.masks import Mask
from pruning.methods.base import Details, PruneOutcome, TrainingMethod
from pruning.models import prunable_weight_names
from pruning.params import Param
from pruning.schedules import Iterative
from pruning.selection import check_sparsity, mask_from_scores


def gradient_batch(data, gradient_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples g is averaged over: the whole training split (``gradient_samples`` 0), or a
    class-balanced batch of ``gradient_samples`` / classes of each class (rounded up; all of a
    smaller class), drawn with ``seed``."""
    if int(gradient_samples) == 0:
        return data.x_train, data.y_train
    return balanced_batch(data, math.ceil(int(gradient_samples) / data.num_classes), seed)


def cross_entropy_sum(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y, reduction="sum")


def undecayed_scores(model: nn.Module, names: list[str], data, strength: float, gradient_samples: int = 0,
                     seed: int = 0, chunk: int | None = None) -> dict[str, torch.Tensor]:
    """|-w g + lambda w^2| of every named weight, g the gradient of the mean cross-entropy over
    :func:`gradient_batch`, streamed in chunks (``pruning.loss_gradients``), in train mode (on a
    copy of the model, so its batch-norm statistics are not touched; batch norm then normalises
    each chunk by its own statistics, as a training batch)."""
    scorer = copy.deepcopy(model).train()
    x, y = gradient_batch(data, gradient_samples, seed)
    parameters = dict(scorer.named_parameters())
    weights = [parameters[name] for name in names]
    gradients = streamed_gradient(partial(cross_entropy_sum, scorer), weights, x, y, chunk)
    return {name: (-weight.detach() * gradient + strength * weight.detach().square()).abs()
            for name, weight, gradient in zip(names, weights, gradients)}


def levels_for(sparsity: float, level_fraction: float) -> int:
    """Fewest levels removing at most ``level_fraction`` of the remaining weights each that reach ``sparsity``."""
    if sparsity <= 0:
        return 1
    return max(1, math.ceil(math.log(1 - sparsity) / math.log(1 - level_fraction) - 1e-9))


@dataclass(frozen=True)
class UndecayedDetails(Details):
    levels: int  # iterative pruning levels run to reach the target


class Undecayed(TrainingMethod):
    details_type = UndecayedDetails
    name = "undecayed"
    description = (
        "Undecayed pruning (UP): scores each weight by |-w g + lambda w^2|, g the cross-entropy gradient averaged "
        "over the whole training split (default; streamed in chunks, model in train mode; or a class-balanced "
        "batch of gradient_samples) and lambda the weight-decay coefficient. One batch of 128 would be too noisy: "
        "lambda w^2 (~1e-6) sits far below its noise in w g. At a stationary point of the weight-decayed loss "
        "this is magnitude pruning (g = -lambda w, score 2 lambda w^2); away from one the gradient counts too. "
        "Runs inside iterative pruning with rewinding, as the reference code does: each level removes about 20% "
        "of the remaining weights globally, rewinds the survivors and retrains. Our reading: equal fractions per "
        "level, as many levels as needed to reach the target with at most level_fraction each."
    )
    formula = r"\mathrm{score}(w) = \left| -w\,\frac{\partial \mathrm{CE}}{\partial w} + \lambda\, w^2 \right|"
    reference = "Good et al., Recall Distortion in Neural Network Pruning and the Undecayed Pruning Algorithm, NeurIPS 2022."
    params = (
        Param("level_fraction", "float", 0.2, "At most this fraction of the remaining weights is pruned per level.",
              min=0.05, max=0.9, step=0.05, label="Fraction pruned per level"),
        Param("weight_decay_lambda", "float", 5e-4, "lambda in the score: the weight-decay coefficient (reference code: 5e-4).",
              min=0.0, max=0.01, step=1e-5, label="λ (weight decay in the score)"),
        Param("gradient_samples", "int", 0, "Training samples g is averaged over: 0 = the whole training split "
              "(default); n = a class-balanced batch of n (n / classes of each class, all of a smaller class). "
              "Streamed in chunks either way, so memory stays bounded.", min=0, max=100_000,
              ui_range=(0, 10_000), label="Samples for the gradient (0 = all)"),
        Param("rewind_to", "choice", "init", "Rewind survivors to their initial weights or to those of an early epoch.",
              choices=("init", "epoch"), label="Rewind survivors to"),
        Param("rewind_epoch", "int", 1, "Epoch to rewind to (with rewind_to = epoch).", min=1, ui_range=(1, 30),
              label="Rewind epoch", only_if=("rewind_to", "epoch")),
        Param("prune_output_layer", "bool", True, "Prune the last Linear layer too (OpenLTH leaves it dense).",
              label="Prune the output layer"),
    )

    def train(self, experiment, dense, sparsity, settings, progress=None) -> PruneOutcome:
        sparsity = check_sparsity(sparsity)
        data = experiment.load_data()
        levels = levels_for(sparsity, settings["level_fraction"])
        schedule = Iterative(rounds=levels, rewind_to=settings["rewind_to"], rewind_epoch=settings["rewind_epoch"])
        calls = {"count": 0}

        def prune(model: nn.Module, target: float, previous: Mask | None = None) -> Mask:
            calls["count"] += 1
            names = prunable_weight_names(model, include_output=settings["prune_output_layer"])
            scores = undecayed_scores(model, names, data, settings["weight_decay_lambda"], settings["gradient_samples"],
                                      seed=experiment.seed + calls["count"])
            return mask_from_scores(scores, target, scope="global", previous=previous)

        outcome = schedule.run(experiment, prune, sparsity, progress=progress, dense=dense)
        outcome.details = UndecayedDetails(levels=levels)
        return outcome
