"""The figure package's colours and layering, and the mask and sweep arithmetic it draws from."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from pruning.mask_diff import CHANGE_CODES, change_codes, mask_matrix
from pruning.plots import attributions as attribution_plots
from pruning.plots import masks as mask_plots
from pruning.plots import palette
from pruning.sweep_summary import sweep_summary

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Top-level package names a source file imports, wherever in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_turnover_draws_the_masks_kept_colour_not_the_attributions():
    """The Masks page's turnover chart draws its sparsity line in the dark "kept" of the mask
    heatmaps; the Attributions page's blue "kept" is a different colour with its own name."""
    keep = torch.tensor([[True, False], [False, True]])
    heatmap_kept = mask_plots.mask_heatmap_figure("w", keep).to_plotly_json()["data"][0]["colorscale"][-1][1]
    history = [{"step": 10, "sparsity": 0.5, "newly_pruned": 4, "spliced_back": 1},
               {"step": 20, "sparsity": 0.6, "newly_pruned": 2, "spliced_back": 0}]
    traces = {trace["name"]: trace for trace in mask_plots.mask_turnover_figure(history).to_plotly_json()["data"]}
    assert traces["sparsity (%)"]["line"]["color"] == heatmap_kept == palette.MASK_KEPT_COLOUR
    assert palette.CHANGE_COLOURS["kept"] == palette.MASK_KEPT_COLOUR
    assert palette.ATTRIBUTION_KEPT_COLOUR != palette.MASK_KEPT_COLOUR
    channels = attribution_plots.channel_attribution_figure(
        {"conv": (np.array([3.0, 1.0, 2.0]), np.array([False, True, False]))}, "gradxact")
    bars = {trace["name"]: trace for trace in channels.to_plotly_json()["data"] if trace.get("showlegend")}
    assert bars["kept"]["marker"]["color"] == palette.ATTRIBUTION_KEPT_COLOUR
    assert bars["removed by pruning"]["marker"]["color"] == palette.PRUNED_COLOUR


def test_palette_names_each_change_code():
    assert set(palette.CHANGE_COLOURS) == set(CHANGE_CODES)


def test_change_codes_mark_what_changed_between_snapshots():
    previous = torch.tensor([[True, True, False, False]])
    current = torch.tensor([[True, False, True, False]])
    assert change_codes(previous, current).tolist() == [[CHANGE_CODES["kept"], CHANGE_CODES["newly pruned"],
                                                         CHANGE_CODES["spliced back"], CHANGE_CODES["pruned"]]]
    assert mask_matrix(torch.ones(4, 3, 2, 2, dtype=torch.bool)).shape == (4, 12)


def test_sweep_summary_aggregates_over_seeds_in_sparsity_order():
    rows = [{"method": "magnitude", "target_sparsity": s, "seed": seed, "compression": c, "accuracy_after_finetune": a}
            for s, seed, c, a in ((0.9, 0, 10.0, 0.80), (0.5, 0, 2.0, 0.95), (0.9, 1, 12.0, 0.70))]
    points = sweep_summary(rows, "compression")["magnitude"]
    assert [p["target_sparsity"] for p in points] == [0.5, 0.9]
    assert points[1]["x"] == pytest.approx(11.0) and points[1]["mean"] == pytest.approx(0.75)
    assert (points[1]["min"], points[1]["max"], points[1]["seeds"]) == (0.70, 0.80, 2)


def test_figures_never_import_streamlit_and_the_engine_never_imports_plotly():
    figures = sorted((ROOT / "pruning" / "plots").glob("*.py"))
    assert figures
    for path in figures:
        assert "streamlit" not in imported_modules(path), path
    for path in (ROOT / "pruning" / "mask_diff.py", ROOT / "pruning" / "sweep_summary.py"):
        assert not imported_modules(path) & {"plotly", "streamlit"}, path
