"""gRDA / sDprun learning-rate schedules: the authors' half-then-decay against hand-computed values."""

import pytest
import torch
from torch import nn

from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.methods.grda import GRDA, GRDAMethod, SDprunMethod, half_then_decay_factor, lr_scheduler
from pruning.train import TrainConfig, steps_per_epoch
from tests.test_device import same_on_meta

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=2))


def test_factor_per_epoch_matches_the_hand_computation():
    # 10 epochs: alpha = e / 10; 1 up to 0.5; then 1 - 0.99 (alpha - 0.5) / 0.4; 0.01 above 0.9
    expected = [1, 1, 1, 1, 1, 0.7525, 0.505, 0.2575, 0.01, 0.01]
    assert [half_then_decay_factor(epoch, 10) for epoch in range(1, 11)] == pytest.approx(expected, abs=1e-12)
    # 4 epochs: 0.25 and 0.5 keep the lr, 0.75 -> 1 - 0.99 * 0.625 = 0.38125, 1.0 -> 0.01
    assert [half_then_decay_factor(epoch, 4) for epoch in range(1, 5)] == pytest.approx([1, 1, 0.38125, 0.01], abs=1e-12)


def test_the_scheduler_changes_the_lr_once_per_epoch():
    w = nn.Parameter(torch.ones(2))
    optimizer = GRDA([w], lr=0.1, c=0.0)
    scheduler = lr_scheduler(optimizer, "half-then-decay", epochs=4, per_epoch=3)
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        w.sum().backward()
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.1] * 6 + [0.038125] * 3 + [0.001] * 3, abs=1e-12)
    assert lr_scheduler(optimizer, "constant", epochs=4, per_epoch=3) is None


@pytest.mark.parametrize("method", [GRDAMethod(), SDprunMethod()], ids=["grda", "sdprun"])
def test_a_run_steps_at_the_schedules_lr_and_its_threshold_follows(method, monkeypatch):
    """The lr of every optimizer step of a real run, and the threshold it accumulates, against
    the hand values: Lambda = sum_n c lr_n^(1/2 + mu) (n^mu - (n - 1)^mu)."""
    lrs = []
    real_step = GRDA.step

    def recording_step(self, closure=None):
        lrs.append({group["lr"] for group in self.param_groups})
        return real_step(self, closure)

    monkeypatch.setattr(GRDA, "step", recording_step)
    c, mu, lr = 0.03, 0.6, 0.1
    settings = method.settings({"c": c, "mu": mu, "lr": lr, "epochs": 4, "lr_schedule": "half-then-decay"})
    outcome = method.train(TINY, None, None, settings)
    per_epoch = steps_per_epoch(TINY.load_data(), TINY.train.batch_size)
    expected = [lr] * (2 * per_epoch) + [lr * 0.38125] * per_epoch + [lr * 0.01] * per_epoch
    assert all(len(step_lrs) == 1 for step_lrs in lrs)  # both parameter groups at the same lr
    assert [step_lrs.pop() for step_lrs in lrs] == pytest.approx(expected, rel=1e-12)
    threshold = sum(c * rate ** (0.5 + mu) * (n ** mu - (n - 1) ** mu) for n, rate in enumerate(expected, start=1))
    assert outcome.details.final_threshold == pytest.approx(threshold, rel=1e-9)
    constant = c * lr ** (0.5 + mu) * len(expected) ** mu
    assert threshold < 0.9 * constant  # the decay slows the threshold: a different run from the constant lr's


def test_the_schedule_is_a_setting_of_both_methods_and_bad_names_are_refused():
    for method in (GRDAMethod(), SDprunMethod()):
        assert method.settings()["lr_schedule"] == "constant"
        with pytest.raises(BadInputError):
            method.settings({"lr_schedule": "cosine"})


def test_the_decayed_run_is_the_same_on_meta():
    """The device detector of tests/test_device.py over a run with the schedule."""
    method = GRDAMethod()
    settings = method.settings({"epochs": 2, "lr_schedule": "half-then-decay"})
    outcome = same_on_meta(lambda: method.train(TINY, None, None, settings))
    assert outcome.details.final_threshold > 0
