"""Dynamic Network Surgery (Guo, Yao & Chen, NeurIPS 2016): pruning *and splicing*.

Every prunable layer keeps its dense weights W and a mask T. From the trained weights, each layer
gets thresholds a = 0.9 t, b = 1.1 t with t = max(mean|W| + c_rate std|W|, 0). At every step,
with probability (1 + gamma iter)^(-power) and only before ``iter_stop``, the mask is updated:
T = 0 where |W| < a (prune), T = 1 where |W| > b (splice back), unchanged in between. The forward
pass uses W * T and the update is straight-through, W <- W - lr dL/d(W * T), so pruned weights keep
learning and can grow back past b.

Our readings: one c_rate for every layer (the paper tunes it per layer); SGD with a cosine decay
of the learning rate over the run; iter_stop is given as a fraction of the run's steps. We use
momentum 0.9 by default, which the paper's description of the update leaves out: pruned weights
then carry momentum too. On mlp/mnist-5k it was worth about a point of accuracy at the same
sparsity (bench/RESULTS.md); set momentum to 0 for the plain update.
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
from pruning.train import TrainingHooks, cosine_sgd


def dns_thresholds(weight: torch.Tensor, c_rate: float) -> tuple[float, float]:
    """(a, b) of one layer: 0.9 t and 1.1 t, t = max(mean|W| + c_rate std|W|, 0)."""
    magnitude = weight.detach().abs()
    t = max(float(magnitude.mean() + c_rate * magnitude.std()), 0.0)
    return 0.9 * t, 1.1 * t


def surgery_(mask: Mask, weights: dict[str, torch.Tensor], thresholds: dict[str, tuple[float, float]]) -> tuple[int, int]:
    """One mask update in place: prune below a, splice back above b. Returns (pruned, spliced) counts."""
    pruned = spliced = 0
    for name, keep in mask.items():
        a, b = thresholds[name]
        magnitude = weights[name].detach().abs()
        prune = keep & (magnitude < a)
        splice = ~keep & (magnitude > b)
        pruned += int(torch.count_nonzero(prune))
        spliced += int(torch.count_nonzero(splice))
        keep.logical_and_(~prune).logical_or_(splice)
    return pruned, spliced


def straight_through(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """W * T in the forward pass, gradient passed to W unmasked: dL/dW := dL/d(W * T)."""
    return weight + (weight * keep - weight).detach()


@dataclass(frozen=True)
class DNSDetails(Details):
    spliced_total: int  # pruned weights that came back over the run
    pruned_total: int  # prunings over the run (a weight pruned twice counts twice)
    mask_updates: int  # steps at which the surgery ran
    thresholds: dict[str, list[float]]  # per layer: [a, b]


class DNS(TrainingMethod):
    details_type = DNSDetails
    name = "dns"
    target_sparsity = False
    description = (
        "Dynamic Network Surgery: retrains the trained model while pruning small weights and splicing back "
        "pruned ones that grow large again. Each layer has two thresholds a < b set from the mean and standard "
        "deviation of its weight magnitudes (higher c_rate = sparser); with a probability that decays with the "
        "iteration, weights below a are masked and masked weights above b return. Masked weights keep being "
        "updated (straight-through), so a wrong cut can heal. The sparsity emerges from c_rate; it is not set "
        "by the sparsity slider. Our readings: one c_rate for all layers, cosine learning-rate decay, iter_stop as a "
        "fraction of the run, and SGD momentum 0.9 by default (the paper's update has none: set it to 0 for that); "
        "pruned weights carry momentum too."
    )
    formula = (
        r"t_k = \max(\mu_k + c\,\sigma_k, 0),\ a_k = 0.9\,t_k,\ b_k = 1.1\,t_k;\quad "
        r"T \leftarrow \begin{cases} 0 & |W| < a_k \\ 1 & |W| > b_k \\ T & \text{else} \end{cases}"
        r"\ \text{w.p. } (1+\gamma\,\mathrm{iter})^{-\mathrm{power}};\quad "
        r"W \leftarrow W - \eta\,\frac{\partial L}{\partial (W \odot T)}"
    )
    reference = "Guo, Yao & Chen, Dynamic Network Surgery for Efficient DNNs, NeurIPS 2016."
    params = (
        Param("c_rate", "float", 2.5, "Threshold t = mean|W| + c_rate std|W| per layer; higher = sparser.", min=-1.0, max=8.0, step=0.1,
              label="Threshold scale c_rate"),
        Param("epochs", "int", 20, "Epochs of surgery (retraining with pruning and splicing).", min=1, max=200,
              label="Surgery epochs"),
        Param("lr", "float", 0.01, "SGD learning rate (cosine decay to 0 over the run).", min=1e-4, max=0.5, step=1e-4,
              label="Learning rate (cosine decay)"),
        Param("momentum", "float", 0.9, "SGD momentum (the paper's update has none: 0).", min=0.0, max=0.99, step=0.01,
              label="Momentum"),
        Param("weight_decay", "float", 5e-4, "L2 weight decay on all parameters.", min=0.0, max=0.01, step=1e-5,
              label="Weight decay"),
        Param("gamma", "float", 1e-4, "Mask-update probability (1 + gamma iter)^(-power).", min=0.0, max=1.0, step=1e-5,
              label="γ (mask-update probability decay)"),
        Param("power", "float", 1.0, "Mask-update probability (1 + gamma iter)^(-power).", min=0.0, max=5.0, step=0.1,
              label="Mask-update probability power"),
        Param("iter_stop_fraction", "float", 0.75, "The mask freezes after this fraction of the steps (iter_stop).", min=0.0, max=1.0, step=0.05,
              label="iter_stop (fraction of the run)"),
        Param("prune_output_layer", "bool", True, "Give the last Linear layer a mask too.", label="Prune the output layer"),
    )

    def train(self, experiment, dense, sparsity, settings, progress=None) -> PruneOutcome:
        run = TrainingRun(experiment, dense, settings["epochs"], progress=progress)
        model, parameters = run.model, run.parameters
        names = prunable_weight_names(model, include_output=settings["prune_output_layer"])
        thresholds = {name: dns_thresholds(parameters[name], settings["c_rate"]) for name in names}
        mask = Mask.ones_like(model, names)
        iter_stop = math.floor(settings["iter_stop_fraction"] * run.total_steps)
        optimizer, scheduler = cosine_sgd(model.parameters(), settings["lr"], run.total_steps,
                                          momentum=settings["momentum"], weight_decay=settings["weight_decay"])
        coin = torch.Generator().manual_seed(experiment.seed)
        totals = {"pruned": 0, "spliced": 0, "updates": 0}

        def before_step(step):
            probability = (1 + settings["gamma"] * step) ** (-settings["power"])
            if step < iter_stop and float(torch.rand((), generator=coin, device="cpu")) < probability:
                pruned, spliced = surgery_(mask, parameters, thresholds)
                totals["pruned"] += pruned
                totals["spliced"] += spliced
                totals["updates"] += 1

        run.record(0, mask, phase="trained dense")
        hooks = TrainingHooks(forward_parameters=lambda: {name: straight_through(parameters[name], mask[name]) for name in names},
                              before_step=before_step)
        run.train(settings["epochs"], optimizer, hooks, scheduler=scheduler,
                  snapshot=lambda done: (mask, None, "surgery" if done - 1 < iter_stop else "frozen"))
        details = DNSDetails(spliced_total=totals["spliced"], pruned_total=totals["pruned"], mask_updates=totals["updates"],
                             thresholds={name: list(pair) for name, pair in thresholds.items()})
        return run.outcome(mask, details)
