"""The layer x class sensitivity scan of an experiment: which layers can be pruned how far, and
which classes each layer carries (``pruning.layer_scan`` on the trained dense model, cached).

One scan per (experiment, criterion, its settings, sparsities, split): each layer pruned alone with
the criterion and granularity, the others dense, no retraining. The suggested allocation at an
overall sparsity is the ``sensitivity`` allocation of the Prune page (``pruning.allocation``),
which measures its own scan on class-balanced training samples so the test split stays for
measuring; the scan shown here reads the split chosen (the test split by default).
"""

from __future__ import annotations

from dataclasses import asdict

from torch import nn

from pruning.cache import load_json_entry, save_json_entry
from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense, variant_path
from pruning.layer_scan import LayerScan, scan_layers
from pruning.methods.base import PruneContext
from pruning.methods.oneshot import CriterionMethod
from pruning.registry import get_method
from pruning.selection import check_sparsity
from pruning.train import Progress, progress_stage

SCAN_FORMAT = 1
DEFAULT_SPARSITIES = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
SPLITS = ("test", "train")


def scan_method(method_name: str) -> CriterionMethod:
    method = get_method(method_name)
    if not isinstance(method, CriterionMethod):
        raise BadInputError(f"{method_name} is not a one-shot criterion: a sensitivity scan prunes one layer at a time "
                            "with a criterion (magnitude, snip, taylor, ...)")
    return method


def sensitivity_scan(experiment: Experiment, method_name: str, overrides: dict | None = None,
                     sparsities: list[float] | None = None, split: str = "test", dense: nn.Module | None = None,
                     progress: Progress | None = None, use_cache: bool = True) -> LayerScan:
    """Each prunable layer of ``experiment``'s dense model pruned alone at each sparsity with
    ``method_name``'s criterion and granularity, measured on ``split``; read from the disk cache
    when this exact scan was done before."""
    method = scan_method(method_name)
    settings = method.settings({**(overrides or {}), "scope": "layerwise"})
    sparsities = sorted({check_sparsity(float(value)) for value in (sparsities or DEFAULT_SPARSITIES)})
    if not sparsities:
        raise BadInputError("a sensitivity scan needs at least one sparsity")
    if split not in SPLITS:
        raise BadInputError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    path = variant_path(experiment, f"sensitivity/{method_name}",
                        {"format": SCAN_FORMAT, "settings": settings, "sparsities": sparsities, "split": split})
    if use_cache:
        entry = load_json_entry(path)
        try:
            if entry is not None:
                return LayerScan(**entry)
        except TypeError:  # written by another version: scanned again
            pass
    start = 0.0 if dense is not None else 0.3
    if dense is None:
        dense = train_dense(experiment, progress=progress_stage(progress, 0.0, 0.3, "training: ")).model
    data = experiment.load_data()
    scores = method.scores(dense, settings, PruneContext(data=data, seed=experiment.seed))

    def select_layer(name, score, sparsity):
        return method.select({name: score}, sparsity, settings)[name]

    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_train, data.y_train)
    scan = scan_layers(dense, scores, sparsities, x, y, data.num_classes, select_layer,
                       progress_stage(progress, start, 1.0))
    if use_cache:
        save_json_entry(asdict(scan), path)
    return scan
