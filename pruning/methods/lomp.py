"""LOMP, the pruning recipe of the fundamental-limit paper (Zhang et al., "How Sparse Can We
Prune a Deep Network"): train from initialisation with cross-entropy + lambda ||w||_1 (no weight
decay), then prune the smallest weights globally, one-shot, with no fine-tuning.

The L1-trained model is cached on disk per (experiment, lambda), so pruning it to another
sparsity costs one magnitude selection, not a training run. Training uses the experiment's
epochs, learning rate, momentum and cosine decay, with weight decay replaced by the L1 term on
the prunable weights (biases and norm layers unregularised).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pruning.experiment import DenseModel, Experiment, train_cached, variant_path
from pruning.methods.base import Details, PruneOutcome, TrainingMethod
from pruning.models import prunable_weight_names
from pruning.params import Param
from pruning.recording import RunRecorder
from pruning.selection import mask_from_scores
from pruning.train import Progress, TrainingHooks, cosine_sgd, steps_per_epoch, train_epochs


def l1_penalty(model: torch.nn.Module, names: list[str], strength: float):
    """lambda * sum |w| over the named weights, as a callable for ``TrainingHooks.penalty``."""
    parameters = dict(model.named_parameters())
    return lambda: strength * sum(parameters[name].abs().sum() for name in names)


def l1_trained(experiment: Experiment, strength: float, progress: Progress | None = None) -> DenseModel:
    """``experiment``'s model trained with CE + strength ||w||_1 and no weight decay (cached)."""

    def train(model, data):
        config = experiment.train
        optimizer, scheduler = cosine_sgd(model.parameters(), config.lr, config.epochs * steps_per_epoch(data, config.batch_size),
                                          momentum=config.momentum)
        hooks = TrainingHooks(penalty=l1_penalty(model, prunable_weight_names(model), strength))
        return train_epochs(model, data, config.epochs, config.batch_size, optimizer, seed=experiment.seed,
                            scheduler=scheduler, hooks=hooks, progress=progress)

    return train_cached(experiment, variant_path(experiment, "l1", {"l1": strength}), train)


@dataclass(frozen=True)
class LOMPDetails(Details):
    l1_norm: float  # ||w||_1 of the prunable weights of the L1-trained model
    accuracy_unpruned: float | None  # the L1-trained model's test accuracy before pruning


class LOMP(TrainingMethod):
    details_type = LOMPDetails
    name = "lomp"
    description = (
        "LOMP (L1-regularised one-shot magnitude pruning), the recipe of the fundamental-limit paper: train "
        "from initialisation with cross-entropy plus lambda times the L1 norm of the weights (no weight decay), "
        "then prune the smallest weights globally in one shot, with no fine-tuning. The L1 term drives many "
        "weights towards zero during training, so the one-shot cut removes little. The L1-trained model is "
        "cached: other sparsities cost no retraining."
    )
    formula = r"\min_w\ \mathrm{CE}(w) + \lambda \lVert w \rVert_1,\qquad m = \mathrm{top}_{(1-s)}\,|w^*|\ \text{(global, no fine-tuning)}"
    reference = "Zhang et al., How Sparse Can We Prune a Deep Network: A Fundamental Limit Perspective, 2024."
    params = (
        Param("l1", "float", 5e-5, "lambda of the L1 term on the prunable weights.", min=0.0, max=0.01, step=1e-6,
              label="λ (L1 strength)"),
        Param("prune_output_layer", "bool", True, "Prune the last Linear layer too.", label="Prune the output layer"),
    )

    def train(self, experiment, dense, sparsity, settings, progress=None) -> PruneOutcome:
        data = experiment.load_data()
        trained = l1_trained(experiment, settings["l1"], progress=progress)
        model = trained.model
        names = prunable_weight_names(model, include_output=settings["prune_output_layer"])
        parameters = dict(model.named_parameters())
        mask = mask_from_scores({name: parameters[name].detach().abs() for name in names}, sparsity, scope="global")
        per_epoch = steps_per_epoch(data, experiment.train.batch_size)
        total = experiment.train.epochs * per_epoch
        recorder = RunRecorder(data, per_epoch, total)
        history = [{"step": row["epoch"] * per_epoch, "epoch": row["epoch"], "sparsity": 0.0,
                    "accuracy": row["test_accuracy"], "phase": "L1 training"} for row in trained.history]
        recorder.record(total, mask, model, phase="pruned (no fine-tuning)")
        history.append(recorder.history[-1])
        state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        l1_norm = sum(float(parameters[name].detach().abs().sum()) for name in names)
        details = LOMPDetails(l1_norm=l1_norm, accuracy_unpruned=history[-2]["accuracy"] if len(history) > 1 else None)
        return PruneOutcome(mask, state, history, recorder.snapshots, details=details)
