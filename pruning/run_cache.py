"""Runs of methods that train, cached on disk per (experiment, method, sparsity, settings): a
run costs minutes, so the app loads a finished one in a new session without a button press."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruning.cache import load_entry, save_entry
from pruning.device import check_device
from pruning.experiment import Experiment, train_dense, variant_path
from pruning.masks import Mask
from pruning.methods.base import Method, PruneOutcome, Snapshot
from pruning.train import Progress

RUN_FORMAT = 2


def training_run_path(experiment: Experiment, method: Method, sparsity: float | None, settings: dict[str, Any]) -> Path:
    return variant_path(experiment, f"runs/{method.name}", {"format": RUN_FORMAT, "sparsity": sparsity, "settings": settings})


def is_training_run_cached(experiment: Experiment, method: Method, sparsity: float | None, settings: dict[str, Any]) -> bool:
    return training_run_path(experiment, method, sparsity, settings).exists()


def run_training_method(
    experiment: Experiment,
    method: Method,
    sparsity: float | None,
    settings: dict[str, Any],
    progress: Progress | None = None,
    dense: nn.Module | None = None,
    use_cache: bool = True,
) -> PruneOutcome:
    """A training-time method's run on ``experiment``: read from the disk cache when this exact
    run was done before (a file that cannot be read is ignored and rewritten), else run and cached.
    A run read back has its masks and weights on the experiment's device, as a fresh run has."""
    path = training_run_path(experiment, method, sparsity, settings)
    if use_cache:
        cached = _read_run(path, method, check_device(experiment.device))
        if cached is not None:
            return cached
    if dense is None:
        dense = train_dense(experiment, progress=progress).model
    outcome = method.train(experiment, dense, sparsity, settings, progress=progress)
    if outcome.details is not None and type(outcome.details) is not method.details_type:
        raise TypeError(f"{method.name} returned {type(outcome.details).__name__} details but declares details_type "
                        f"{getattr(method.details_type, '__name__', None)}: a cached run could not be read back")
    if use_cache:
        save_entry(
            {
                "format": RUN_FORMAT,
                "mask": dict(outcome.mask),
                "state_dict": outcome.state_dict,
                "history": outcome.history,
                "snapshots": [{"step": shot.step, "epoch": shot.epoch, "accuracy": shot.accuracy, "phase": shot.phase,
                               "mask": dict(shot.mask)} for shot in outcome.snapshots],
                "accuracy_before_finetune": outcome.accuracy_before_finetune,
                "details": outcome.details.to_json() if outcome.details is not None else None,
            },
            path,
        )
    return outcome


def _read_run(path: Path, method: Method, device: torch.device) -> PruneOutcome | None:
    """The cached run at ``path`` (read onto the CPU) moved to ``device``; None if it cannot be used."""
    entry = load_entry(path)
    if entry is None:
        return None
    try:
        if entry["format"] != RUN_FORMAT:
            return None
        snapshots = [Snapshot(shot["step"], shot["epoch"], Mask(shot["mask"]).to(device), shot["accuracy"], shot["phase"])
                     for shot in entry["snapshots"]]
        details = None if entry["details"] is None else method.details_type(**entry["details"])
        state = entry["state_dict"]
        state = None if state is None else {name: tensor.to(device) for name, tensor in state.items()}
        return PruneOutcome(Mask(entry["mask"]).to(device), state, list(entry["history"]), snapshots,
                            accuracy_before_finetune=entry["accuracy_before_finetune"], details=details)
    except Exception:  # an unreadable run is redone, never trusted
        return None
