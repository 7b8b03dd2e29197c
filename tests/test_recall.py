"""Recall distortion: per-class recall, the intensification ratio alpha and its bootstrap interval,
the flipped-prediction list, and the Recall page (AppTest)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import recall_score
from torch import nn

from pruning.analysis.recall import class_recall, flipped_predictions, intensification, relative_gaps
from pruning.analysis.recall_runs import RecallRun, alpha_by_level, level_sparsities
from pruning.data import load_dataset
from pruning.experiment import Experiment, train_dense
from pruning.pipeline import prune_model
from pruning.plots.recall import display_pixels
from pruning.report import sweep_row
from pruning.sweep import run_sweep
from pruning.train import TrainConfig, evaluate
from tests.app_driver import figure_starting as figure
from tests.app_driver import figures, metric, open_page

DENSE_RECALL = np.array([0.95, 0.90, 0.97, 0.80, 0.88, 0.70, 0.93, 0.91, 0.75, 0.85])
DENSE_ACCURACY = 0.87


def recall_with_gaps(gaps, accuracy):
    """The per-class recalls that have these relative gaps at this accuracy."""
    return accuracy * (1 + np.asarray(gaps))


# --- alpha ---


def test_alpha_is_two_when_the_pruned_gaps_double():
    d0 = relative_gaps(DENSE_RECALL, DENSE_ACCURACY)
    shift = intensification(DENSE_RECALL, DENSE_ACCURACY, recall_with_gaps(2 * d0, 0.6), 0.6)
    assert shift.alpha == pytest.approx(2.0)
    assert shift.ci_low == pytest.approx(2.0) and shift.ci_high == pytest.approx(2.0), "an exact line leaves no doubt"
    assert shift.verdict == "intensified"
    halved = intensification(DENSE_RECALL, DENSE_ACCURACY, recall_with_gaps(d0 / 2, 0.8), 0.8)
    assert halved.alpha == pytest.approx(0.5) and halved.verdict == "de-intensified"


def test_alpha_is_one_when_nothing_changes():
    shift = intensification(DENSE_RECALL, DENSE_ACCURACY, DENSE_RECALL, DENSE_ACCURACY)
    assert shift.alpha == pytest.approx(1.0) and shift.ci_low == pytest.approx(1.0) and shift.ci_high == pytest.approx(1.0)
    assert shift.verdict == "no clear change"


def test_alpha_is_the_least_squares_slope_through_the_origin():
    generator = np.random.default_rng(1)
    d0 = relative_gaps(DENSE_RECALL, DENSE_ACCURACY).ravel()
    dt = 1.3 * d0 + generator.normal(0, 0.02, d0.shape)
    shift = intensification(DENSE_RECALL, DENSE_ACCURACY, recall_with_gaps(dt, 0.7), 0.7)
    slope, *_ = np.linalg.lstsq(d0[:, None], dt, rcond=None)
    assert shift.alpha == pytest.approx(float(slope[0]))


def test_undefined_alpha_is_none_in_json():
    flat = np.full(10, 0.9)
    shift = intensification(flat, 0.9, DENSE_RECALL, DENSE_ACCURACY)
    assert math.isnan(shift.alpha) and shift.verdict == "undefined"
    assert shift.to_json() == {"alpha": None, "ci_low": None, "ci_high": None}
    assert json.dumps(intensification(DENSE_RECALL, DENSE_ACCURACY, DENSE_RECALL, DENSE_ACCURACY).to_json())


def synthetic(classes: int, seeds: int, rng: np.random.Generator, alpha: float = 1.5):
    """Recalls of ``seeds`` dense models whose classes share their difficulty, and of pruned models
    whose gaps are ``alpha`` times the dense ones plus noise of each (seed, class)."""
    difficulty = rng.normal(0, 0.08, classes)
    d0 = difficulty + rng.normal(0, 0.01, (seeds, classes))
    dt = alpha * d0 + rng.normal(0, 0.05, (seeds, classes))
    accuracy0, accuracyt = np.full(seeds, 0.9), np.full(seeds, 0.7)
    return recall_with_gaps(d0, 0.9), accuracy0, recall_with_gaps(dt, 0.7), accuracyt


def interval_width(classes: int, seeds: int, repeats: int = 8) -> float:
    """Median interval width over repeated synthetic experiments; each interval contains its alpha."""
    widths = []
    for repeat in range(repeats):
        shift = intensification(*synthetic(classes, seeds, np.random.default_rng(repeat)))
        assert shift.ci_low <= shift.alpha <= shift.ci_high
        assert shift.classes == classes and shift.seeds == seeds
        widths.append(shift.ci_high - shift.ci_low)
    return float(np.median(widths))


def test_interval_contains_alpha_and_shrinks_with_more_classes_and_seeds():
    few, many = interval_width(10, 1), interval_width(100, 1)
    assert many < 0.6 * few, (few, many)
    one_seed, five_seeds = interval_width(10, 1), interval_width(10, 5)
    assert five_seeds < 0.8 * one_seed, (one_seed, five_seeds)


def test_interval_is_reproducible_for_a_seed():
    data = synthetic(10, 3, np.random.default_rng(0))
    first, again = intensification(*data), intensification(*data)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    other = intensification(*data, seed=1)
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)


def test_alpha_by_level_pools_seeds_level_by_level():
    rng = np.random.default_rng(0)
    runs = []
    for seed in range(3):
        dense, dense_accuracy, pruned, pruned_accuracy = synthetic(10, 1, rng)
        levels = [{"sparsity": s, "accuracy": float(pruned_accuracy[0]), "per_class_recall": list(dense[0] + k * (pruned[0] - dense[0]))}
                  for k, s in ((0.5, 0.5), (1.0, 0.9))]
        runs.append(RecallRun("magnitude", seed, list(dense[0]), float(dense_accuracy[0]), levels))
    rows = alpha_by_level(runs)
    assert [row["level"] for row in rows] == [1, 2] and [row["sparsity"] for row in rows] == [0.5, 0.9]
    assert all(row["seeds"] == 3 for row in rows)
    pooled = intensification([run.dense_recall for run in runs], [run.dense_accuracy for run in runs],
                             [run.levels[1]["per_class_recall"] for run in runs], [run.levels[1]["accuracy"] for run in runs])
    assert rows[1]["alpha"] == pytest.approx(pooled.alpha) and rows[1]["ci_low"] == pytest.approx(pooled.ci_low)
    assert level_sparsities(0.99, 0.6)[-1] == pytest.approx(0.99) and len(level_sparsities(0.99, 0.6)) == 6
    assert level_sparsities(0.75, 0.5) == pytest.approx([0.5, 0.75])


# --- per-class recall and accuracy ---


class FixedLogits(nn.Module):
    """A "model" whose input is the sample index and whose output is a fixed row of logits."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x):
        return self.logits[x[:, 0].long()]


def test_per_class_recall_matches_sklearn_and_accuracy_is_their_support_weighted_mean():
    generator = torch.Generator().manual_seed(0)
    classes, count = 7, 900
    labels = torch.randint(0, classes, (count,), generator=generator)
    labels[labels == 6] = 5  # class 6 has no test sample
    logits = torch.randn(count, classes, generator=generator)
    logits[torch.arange(count), labels] += 1.0  # better than chance
    evaluation = evaluate(FixedLogits(logits), torch.arange(count).float()[:, None], labels, classes)
    predictions = evaluation.predictions.numpy()
    expected = recall_score(labels.numpy(), predictions, labels=list(range(classes)), average=None, zero_division=0)
    assert np.allclose(evaluation.per_class_recall, expected)
    assert np.allclose(class_recall(labels, predictions, classes), expected)
    support = np.bincount(labels.numpy(), minlength=classes)
    assert evaluation.accuracy == pytest.approx(float(np.dot(support, evaluation.per_class_recall) / support.sum()))


# --- flipped predictions ---


def test_flipped_predictions_list_every_flip_ordered_by_class_loss():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 600)
    dense = np.where(rng.random(600) < 0.85, labels, rng.integers(0, 10, 600))
    pruned = np.where(rng.random(600) < 0.25 * (labels % 3), rng.integers(0, 10, 600), dense)  # classes 1, 2 mod 3 suffer
    everything = flipped_predictions(labels, dense, pruned, 10, limit=None)
    assert sorted(flip.index for flip in everything) == list(np.flatnonzero(dense != pruned))
    for flip in everything:
        assert (flip.label, flip.dense, flip.pruned) == (labels[flip.index], dense[flip.index], pruned[flip.index])
        assert flip.dense != flip.pruned
    loss = class_recall(labels, dense, 10) - class_recall(labels, pruned, 10)
    losses = [loss[flip.label] for flip in everything]
    assert losses == sorted(losses, reverse=True), "the classes losing most come first"
    order = {"lost": 0, "changed": 1, "gained": 2}
    for first, second in zip(everything, everything[1:]):
        if first.label == second.label:
            assert (order[first.kind], first.index) < (order[second.kind], second.index)
    limited = flipped_predictions(torch.as_tensor(labels), torch.as_tensor(dense), torch.as_tensor(pruned), 10, limit=24)
    assert limited == everything[:24]
    assert flipped_predictions(labels, dense, dense, 10) == []


def test_display_pixels_undo_the_standardisation():
    data = load_dataset("mnist-5k")
    raw = np.load(Path(__file__).resolve().parent.parent / "data" / "mnist_5k.npz")["x_test"][:4]
    pixels = display_pixels(data.x_test[:4], data.mean, data.std)
    assert pixels.shape == (4, 28, 28, 3) and pixels.dtype == np.uint8
    assert (pixels[..., 0] == pixels[..., 2]).all(), "one channel is shown as grey"
    scale = 255 if raw.max() > 1 else 1
    assert np.abs(pixels[..., 0].astype(int) - np.round(raw.astype(float) * 255 / scale)).max() <= 1
    colour = display_pixels(torch.randn(2, 3, 8, 8), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    assert colour.shape == (2, 8, 8, 3)
    unknown = display_pixels(torch.randn(2, 1, 8, 8), (), ())
    assert unknown.min() == 0 and unknown.max() == 255


# --- the Recall page ---

TINY = Experiment(model="mlp", train=TrainConfig(epochs=1))


@pytest.fixture(scope="module")
def recall_page():
    return open_page("recall", model="mlp", epochs=1)


def test_recall_page_draws_the_gaps_the_bars_and_alpha(recall_page):
    gaps = figure(recall_page, "Recall gaps, dense against pruned")
    names = [trace["name"] for trace in gaps["data"]]
    assert names[0] == "y = x (gaps unchanged)" and names[1] == "class" and names[2].startswith("fit through 0")
    points = gaps["data"][1]
    assert points["text"] == [str(digit) for digit in range(10)]
    alpha = float(metric(recall_page, "Intensification α"))
    assert gaps["data"][2]["y"][1] / gaps["data"][2]["x"][1] == pytest.approx(alpha, abs=0.01), "the fitted slope line"
    assert {shape["type"] for shape in gaps["layout"]["shapes"]} == {"line"}, "the zero lines"
    bars = figure(recall_page, "Recall per class")
    assert [trace["name"] for trace in bars["data"]] == ["dense", "pruned"]
    assert any(text in box.value for box in (*recall_page.info, *recall_page.warning, *recall_page.success)
               for text in ("intensified", "narrowed", "No clear change"))
    assert any("class imbalance" in box.value for box in recall_page.info), "the page says how to provoke the effect"


def test_moving_the_sparsity_slider_changes_alpha(recall_page):
    alphas = {}
    for sparsity in (0.5, 0.97):
        recall_page.slider(key="recall.sparsity").set_value(sparsity).run()
        assert not recall_page.exception and not recall_page.error
        alphas[sparsity] = float(metric(recall_page, "Intensification α"))
    assert alphas[0.5] != alphas[0.97]
    recall_page.slider(key="recall.sparsity").set_value(0.0).run()
    assert float(metric(recall_page, "Intensification α")) == pytest.approx(1.0), "nothing pruned, nothing changed"
    assert any("changed no test prediction" in box.value for box in recall_page.info)


def test_confusion_change_and_flipped_images_match_the_pruned_model(recall_page):
    sparsity = 0.95
    recall_page.slider(key="recall.sparsity").set_value(sparsity).run()
    assert not recall_page.exception
    data = TINY.load_data()
    dense = train_dense(TINY).model  # the page's dense model, from the test run's cache
    dense_eval = evaluate(dense, data.x_test, data.y_test, data.num_classes)
    pruned = prune_model(dense, data, "magnitude", sparsity, seed=0).pruned
    change = figure(recall_page, "Confusion matrix change")["data"][0]
    assert change["zmid"] == 0 and change["zmin"] == -change["zmax"]
    assert np.array_equal(np.array(change["z"]), pruned.confusion - dense_eval.confusion)
    flips = figure(recall_page, "Test images whose prediction pruning changed")
    indices = flips["layout"]["meta"]["indices"]
    expected = flipped_predictions(data.y_test, dense_eval.predictions, pruned.predictions, 10, limit=24)
    assert indices == [flip.index for flip in expected] and len(indices) == min(24, int((dense_eval.predictions != pruned.predictions).sum()))
    assert all(dense_eval.predictions[i] != pruned.predictions[i] for i in indices)
    assert [trace["type"] for trace in flips["data"]] == ["image"] and len(flips["layout"]["annotations"]) == len(indices)
    titles = [note["text"] for note in flips["layout"]["annotations"]]
    assert all(f"{int(dense_eval.predictions[i])} → {int(pruned.predictions[i])}" in title and f"true {int(data.y_test[i])}" in title
               for i, title in zip(indices, titles)), "each image is titled with its old, new and true label"


def test_the_sweep_button_draws_alpha_against_sparsity(recall_page):
    assert not [spec for spec in figures(recall_page) if spec["layout"]["title"]["text"].startswith("Intensification ratio")]
    recall_page.select_slider(key="recall.sweep_max").set_value(0.75)
    recall_page.slider(key="recall.sweep_level_fraction").set_value(0.5).run()
    assert any("50.0%, 75.0%" in caption.value for caption in recall_page.caption), "the sparsities the sweep will measure"
    recall_page.button(key="recall.sweep_run").click().run()
    assert not recall_page.exception and not recall_page.error
    assert recall_page.get("status"), "the sweep ran with its progress"
    spec = figure(recall_page, "Intensification ratio α against sparsity")
    curves = {trace["name"]: trace for trace in spec["data"]}
    assert set(curves) == {"magnitude", "undecayed"}
    for trace in curves.values():
        assert trace["x"] == pytest.approx([50.0, 75.0], abs=0.5)
        assert all(math.isfinite(value) for value in trace["y"])
    recall_page.run()  # a rerun shows the kept result without running again
    assert figure(recall_page, "Intensification ratio α against sparsity") and not recall_page.get("status")


def test_sweep_rows_carry_alpha():
    rows = [sweep_row(result) for result in run_sweep(TINY, ["magnitude"], [0.9], [0])]
    assert all("alpha" in row for row in rows)
    magnitude = next(row for row in rows if row["method"] == "magnitude")
    assert isinstance(magnitude["alpha"], float) and math.isfinite(magnitude["alpha"])
