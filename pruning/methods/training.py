"""What the methods that prune while training share: recording a run's mask snapshots, and
counting, between two snapshots, which weights were pruned and which came back."""

from __future__ import annotations

import torch
from torch import nn

from pruning.masks import Mask
from pruning.methods import Snapshot
from pruning.train import evaluate

SNAPSHOTS = 24  # snapshots kept per run (plus the start and the end)


def mask_transitions(previous: Mask | None, current: Mask) -> dict[str, int]:
    """Weights kept and pruned in ``current``; of those, how many were pruned since
    ``previous`` (kept then, pruned now) and how many were spliced back (pruned then, kept now)."""
    kept = sum(int(torch.count_nonzero(entry)) for entry in current.values())
    counts = {"kept": kept, "pruned": current.num_weights - kept, "newly_pruned": 0, "spliced_back": 0}
    if previous is not None:
        for name, entry in current.items():
            counts["newly_pruned"] += int(torch.count_nonzero(previous[name] & ~entry))
            counts["spliced_back"] += int(torch.count_nonzero(~previous[name] & entry))
    return counts


class RunRecorder:
    """Snapshots of a run every ``total_steps / count`` steps: the mask (copied), test accuracy
    of the effective weights, and the history row ``{step, epoch, sparsity, accuracy, phase,
    kept, pruned, newly_pruned, spliced_back, per_class_recall}`` (newly pruned and spliced back
    counted since the previous snapshot)."""

    def __init__(self, data, total_steps: int, steps_per_epoch: int, count: int = SNAPSHOTS):
        self.data = data
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.every = max(1, total_steps // count)
        self.history: list[dict] = []
        self.snapshots: list[Snapshot] = []

    def due(self, steps_done: int) -> bool:
        return steps_done % self.every == 0 or steps_done == self.total_steps

    def record(self, steps_done: int, mask: Mask, model: nn.Module, parameters: dict | None = None, phase: str = "") -> None:
        """``parameters``: the tensors the model computes with (default: its weights under ``mask``)."""
        if self.snapshots and self.snapshots[-1].step == steps_done:
            return
        parameters = parameters if parameters is not None else mask.masked_parameters(model)
        evaluation = evaluate(model, self.data.x_test, self.data.y_test, self.data.num_classes, parameters=parameters)
        accuracy = evaluation.accuracy
        mask = Mask({name: entry.clone() for name, entry in mask.items()})
        previous = self.snapshots[-1].mask if self.snapshots else None
        epoch = steps_done / self.steps_per_epoch
        self.history.append({"step": steps_done, "epoch": epoch, "sparsity": mask.sparsity(), "accuracy": accuracy,
                             "phase": phase, **mask_transitions(previous, mask),
                             "per_class_recall": evaluation.per_class_recall})
        self.snapshots.append(Snapshot(steps_done, epoch, mask, accuracy, phase))


def _training_methods():
    from pruning.methods.dns import DNS
    from pruning.methods.grda import GRDAMethod, SDprunMethod
    from pruning.methods.lomp import LOMP
    from pruning.methods.seqattn import SeqAttn
    from pruning.methods.undecayed import Undecayed

    return (DNS(), Undecayed(), GRDAMethod(), SDprunMethod(), SeqAttn(), LOMP())


TRAINING_METHODS = _training_methods()
