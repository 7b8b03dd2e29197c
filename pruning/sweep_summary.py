"""Aggregate the rows of a sparsity sweep over seeds, for the Compare page's chart and tables."""

from __future__ import annotations


def sweep_summary(rows: list[dict], x_field: str, y_field: str = "accuracy_after_finetune") -> dict[str, list[dict]]:
    """Per method, per target sparsity (ascending): the mean of ``x_field`` and the mean, min and
    max of ``y_field`` over seeds."""
    grouped: dict[str, dict[float, list[dict]]] = {}
    for row in rows:
        grouped.setdefault(row["method"], {}).setdefault(row["target_sparsity"], []).append(row)
    summary = {}
    for method, by_sparsity in grouped.items():
        points = []
        for target in sorted(by_sparsity):
            group = by_sparsity[target]
            ys = [row[y_field] for row in group]
            points.append({"target_sparsity": target, "x": sum(row[x_field] for row in group) / len(group),
                           "mean": sum(ys) / len(ys), "min": min(ys), "max": max(ys), "seeds": len(group)})
        summary[method] = points
    return summary
