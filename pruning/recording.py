"""Recording a run: the mask snapshots and history rows that the Masks page scrubs through and
the Prune page draws, for schedules and methods that train alike (one recorder for both)."""

from __future__ import annotations

from torch import nn

from pruning.mask_diff import mask_transitions, same_mask
from pruning.masks import Mask
from pruning.methods.base import Snapshot
from pruning.train import evaluate

SNAPSHOTS = 24  # snapshots kept per run of a method that trains (plus the start and the end)


class RunRecorder:
    """History rows ``{step, epoch, sparsity, accuracy, phase, per_class_recall}`` (with a mask
    also ``kept, pruned, newly_pruned, spliced_back`` since the previous snapshot) and mask
    snapshots of one run.

    ``total_steps`` spaces the recordings a training method asks for (``due``): one every
    ``total_steps / count`` steps. ``changes_only`` keeps a snapshot only when the mask differs
    from the previous one (schedules record after every pruning step and after training, when
    the mask has not moved)."""

    def __init__(self, data, steps_per_epoch: int, total_steps: int = 0, count: int = SNAPSHOTS,
                 changes_only: bool = False):
        self.data = data
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.every = max(1, total_steps // count)
        self.changes_only = changes_only
        self.history: list[dict] = []
        self.snapshots: list[Snapshot] = []

    def due(self, steps_done: int) -> bool:
        return steps_done % self.every == 0 or steps_done == self.total_steps

    def record(self, steps_done: int, mask: Mask | None, model: nn.Module, parameters: dict | None = None,
               phase: str = "", epoch: float | None = None) -> None:
        """Evaluate the model on the test split and record it. ``parameters``: the tensors the
        model computes with (default: its own weights under ``mask``); ``mask`` None: the dense
        model before any pruning (a history row, no snapshot); ``epoch`` defaults to the step's."""
        if mask is not None and self.snapshots and self.snapshots[-1].step == steps_done and not self.changes_only:
            return
        if parameters is None and mask is not None:
            parameters = mask.masked_parameters(model)
        evaluation = evaluate(model, self.data.x_test, self.data.y_test, self.data.num_classes, parameters=parameters)
        epoch = steps_done / self.steps_per_epoch if epoch is None else epoch
        row = {"step": steps_done, "epoch": epoch, "sparsity": mask.sparsity() if mask else 0.0,
               "accuracy": evaluation.accuracy, "phase": phase}
        if mask is not None:
            previous = self.snapshots[-1].mask if self.snapshots else None
            row.update(mask_transitions(previous, mask))
            if not (self.changes_only and previous is not None and same_mask(previous, mask)):
                copied = Mask({name: entry.clone() for name, entry in mask.items()})
                self.snapshots.append(Snapshot(steps_done, epoch, copied, evaluation.accuracy, phase))
        row["per_class_recall"] = evaluation.per_class_recall
        self.history.append(row)
