"""The JSON edge: a ``PruneResult`` as the CLI prints it (``--json``, result.json) and as a sweep
row (CSV, the Compare page's table). Everything inside the engine passes the typed result."""

from __future__ import annotations

from pruning.analysis.recall import intensification
from pruning.pipeline import PruneResult

SWEEP_FIELDS = (
    "dataset", "model", "imbalance", "method", "seed", "epochs", "granularity", "schedule", "finetune_epochs",
    "target_sparsity", "sparsity", "compression", "params_total", "params_nonzero", "flops_dense",
    "flops_pruned", "theoretical_speedup", "accuracy_before_finetune", "accuracy_after_finetune", "seconds",
    "dense_accuracy", "alpha",
)


def result_json(result: PruneResult) -> dict:
    """The full report of a result pruned on an experiment (``run_prune``)."""
    if result.experiment is None or result.dense is None:
        raise ValueError("a report needs the experiment and the dense evaluation: prune with run_prune")
    experiment, stats, schedule = result.experiment, result.stats, result.schedule
    return {
        "dataset": experiment.dataset,
        "model": experiment.model,
        "imbalance": experiment.imbalance,
        "method": result.method,
        "settings": result.settings,
        "seed": experiment.seed,
        "device": experiment.device,
        "epochs": experiment.train.epochs,
        "granularity": result.settings.get("granularity", "unstructured"),
        "schedule": schedule.kind if schedule is not None else "built-in",
        "schedule_settings": schedule.to_dict() if schedule is not None else None,
        "finetune_epochs": schedule.finetune_epochs if schedule is not None else None,
        "target_sparsity": result.target_sparsity,
        "sparsity": stats.sparsity,
        "compression": stats.compression,
        "params_total": stats.params_total,
        "params_nonzero": stats.params_nonzero,
        "flops_dense": stats.flops_dense,
        "flops_pruned": stats.flops_pruned,
        "theoretical_speedup": stats.speedup,
        "dense": result.dense.summary(),
        "pruned": result.pruned.summary(),
        "intensification": intensification(result.dense.per_class_recall, result.dense.accuracy,
                                           result.pruned.per_class_recall, result.pruned.accuracy).to_json(),
        "accuracy_before_finetune": (result.accuracy_before_finetune if result.accuracy_before_finetune is not None
                                     else result.pruned.accuracy),
        "accuracy_after_finetune": result.accuracy_after_finetune,
        "layers": [{"name": layer.name, "params": layer.params, "sparsity": layer.sparsity} for layer in stats.layers],
        "history": result.history,
        "details": result.details.to_json() if result.details is not None else {},
        "seconds": result.seconds,
        "timed_on": result.timed_on,  # the device (and threads) ``seconds`` was measured on
    }


def sweep_row(result: PruneResult) -> dict:
    """The scalar fields of ``result_json`` (dense accuracy and alpha flattened): one CSV row."""
    report = result_json(result)
    report["dense_accuracy"] = report["dense"]["accuracy"]
    report["alpha"] = report["intensification"]["alpha"]
    return {name: report[name] for name in SWEEP_FIELDS}
