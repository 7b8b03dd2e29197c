"""bench/gradflow_early.py: its recording copy of the gradflow schedule must stay the engine's
schedule (same mask, same weights), and its threshold and verdict rules must say what they claim."""

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from pruning.experiment import Experiment
from pruning.pipeline import run_schedule
from pruning.schedules import GradFlow
from pruning.train import TrainConfig

PATH = Path(__file__).resolve().parent.parent / "bench" / "gradflow_early.py"
spec = importlib.util.spec_from_file_location("gradflow_early", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

TINY = Experiment(model="mlp", train=TrainConfig(epochs=3))


def test_recorded_schedule_is_the_engines_gradflow_step_for_step(one_thread):
    settings = {"granularity": "structured", "prune_output_layer": False}
    engine = run_schedule(TINY, "magnitude", 0.6, settings, GradFlow(rounds=2))
    recorded = run_schedule(TINY, "magnitude", 0.6, settings, bench.RecordedGradFlow(rounds=2))
    assert set(engine.mask) == set(recorded.mask)
    assert all(torch.equal(engine.mask[name], recorded.mask[name]) for name in engine.mask)
    assert all(torch.equal(engine.state_dict[name], recorded.state_dict[name]) for name in engine.state_dict)
    epochs = [row for row in recorded.history if row.get("phase") == "epoch"]
    prunings = [row for row in recorded.history if row.get("phase") == "pruning"]
    assert [row["epoch"] for row in epochs] == [1, 2, 3]
    assert [row["epoch"] for row in prunings] == [1, 2]
    assert all(math.isfinite(row["train_loss"]) for row in epochs)
    assert prunings[-1]["sparsity"] == pytest.approx(recorded.mask.sparsity())
    assert engine.history == [row for row in recorded.history if row.get("phase") not in ("epoch", "pruning")]


def test_epochs_to_threshold_counts_from_the_last_round_against_the_seeds_dense_control():
    class Args:
        rounds, epochs = 2, 5

    table = pd.DataFrame([
        {"model": "mlp", "seed": 0, "criterion": bench.DENSE, "train_loss_2": 0.5, "train_loss_3": 0.4,
         "train_loss_4": 0.3, "train_loss_5": 0.2},
        {"model": "mlp", "seed": 0, "criterion": "magnitude", "train_loss_2": 0.1, "train_loss_3": 0.9,
         "train_loss_4": 0.5, "train_loss_5": 0.4},
        {"model": "mlp", "seed": 0, "criterion": "grasp", "train_loss_2": 0.1, "train_loss_3": 0.9,
         "train_loss_4": 0.8, "train_loss_5": 0.7},
    ])
    counted = bench.epochs_to_threshold(table, Args).set_index("criterion")
    assert counted["threshold"].tolist() == [0.5, 0.5, 0.5]
    assert counted.loc[bench.DENSE, "epochs_to_threshold"] == 1
    assert counted.loc["magnitude", "epochs_to_threshold"] == 2  # epoch 4 is the second after round 2
    assert math.isnan(counted.loc["grasp", "epochs_to_threshold"])


def runs(values: dict[str, list[float]], column: str = "accuracy") -> pd.DataFrame:
    return pd.DataFrame([{"criterion": name, "seed": seed, column: value}
                         for name, series in values.items() for seed, value in enumerate(series)])


def test_verdicts_need_separated_intervals():
    assert bench.claim_snip_best(runs({"snip": [0.9, 0.91], "magnitude": [0.8, 0.81], "grasp": [0.7, 0.71]})).startswith("reproduced")
    assert bench.claim_snip_best(runs({"snip": [0.9, 0.8], "magnitude": [0.84, 0.85]})).startswith("partly")
    assert bench.claim_snip_best(runs({"snip": [0.7, 0.71], "magnitude": [0.8, 0.81]})).startswith("not")
    assert bench.claim_snip_best(runs({"snip": [0.9], "magnitude": [0.8]})).startswith("partly")  # one seed: no spread
    assert bench.claim_grasp_hurts(runs({"grasp": [0.5, 0.51], "magnitude": [0.8, 0.81], "snip": [0.8, 0.82]})).startswith("reproduced")
    assert bench.claim_grasp_hurts(runs({"grasp": [0.5, 0.51], "magnitude": [0.8, 0.81], "snip": [0.4, 0.6]})).startswith("partly")
    assert bench.claim_grasp_hurts(runs({"grasp": [0.8, 0.81], "magnitude": [0.5, 0.51], "random": [0.1, 0.1]})).startswith("not")
    losses = pd.concat([runs({"magnitude": [0.3, 0.31], "snip": [0.5, 0.51]}, column)
                        for column in bench.LOSSES], axis=1).loc[:, lambda frame: ~frame.columns.duplicated()]
    assert bench.claim_converges_faster(losses).startswith("reproduced")
    flipped = losses.assign(criterion=losses["criterion"].map({"magnitude": "snip", "snip": "magnitude"}))
    assert bench.claim_converges_faster(flipped).startswith("not")
