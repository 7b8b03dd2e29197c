import pytest
import torch

from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense
from pruning.pipeline import run_schedule
from pruning.schedules import (
    GradFlow,
    Gradual,
    Iterative,
    OneShot,
    gradflow_fraction,
    gradual_fraction,
    iterative_fraction,
    make_schedule,
    rewind_state,
)
from pruning.sweep import run_sweep
from pruning.train import TrainConfig

TINY = Experiment(model="mlp", train=TrainConfig(epochs=2))


def test_gradient_flow_rounds_follow_the_paper_formula():
    # p = 0.9, n = 3: k p / (k p + n (1 - p)) = 0.9/1.2, 1.8/2.1, 2.7/3.0
    assert [gradflow_fraction(k, 3, 0.9) for k in (1, 2, 3)] == pytest.approx([0.75, 1.8 / 2.1, 0.9])


def test_iterative_rounds_remove_the_same_fraction_of_what_remains():
    fractions = [iterative_fraction(r, 4, 0.9) for r in range(1, 5)]
    remaining = [1 - f for f in [0.0] + fractions]
    ratios = [after / before for before, after in zip(remaining, remaining[1:])]
    assert ratios == pytest.approx([0.1 ** 0.25] * 4)
    assert fractions[-1] == pytest.approx(0.9)


def test_gradual_schedule_is_cubic_and_reaches_the_target_at_75_percent():
    total = 400  # ramp = 300 steps
    assert gradual_fraction(0, total, 0.8) == 0.0
    assert gradual_fraction(150, total, 0.8) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert gradual_fraction(300, total, 0.8) == pytest.approx(0.8)
    assert gradual_fraction(400, total, 0.8) == pytest.approx(0.8)
    values = [gradual_fraction(step, total, 0.8) for step in range(0, 401, 10)]
    assert values == sorted(values)


def test_preview_curves_end_at_the_target():
    for schedule in (OneShot(), Iterative(), Gradual(), GradFlow(), OneShot(finetune_epochs=2), Gradual(frequency=7)):
        curve = schedule.curve(0.9, dense_epochs=4, steps_per_epoch=10)
        assert curve[-1]["sparsity"] == pytest.approx(0.9), schedule
        assert [p["epoch"] for p in curve] == sorted(p["epoch"] for p in curve)


@pytest.mark.parametrize(
    "kind, bad", [("sometimes", {}), ("oneshot", dict(prune_at="never")), ("iterative", dict(rounds=0)),
                  ("oneshot", dict(finetune_epochs=-1)), ("iterative", dict(rewind_to="yesterday")),
                  ("oneshot", dict(rounds=3))]
)
def test_bad_schedules_are_rejected(kind, bad):
    with pytest.raises(BadInputError):
        make_schedule(kind, bad)


def test_iterative_pruning_keeps_pruned_weights_pruned_and_lands_on_the_target():
    outcome = run_schedule(TINY, "magnitude", 0.9, None, Iterative(rounds=3))
    sparsities = [row["sparsity"] for row in outcome.history[1:]]
    assert sparsities == pytest.approx([iterative_fraction(r, 3, 0.9) for r in (1, 2, 3)], abs=1e-4)
    assert outcome.mask.sparsity() == pytest.approx(0.9, abs=1e-5)
    weights = outcome.state_dict["fc1.weight"]
    assert torch.all(weights[~outcome.mask["fc1.weight"]] == 0)


def test_rewinding_to_an_epoch_reproduces_that_epoch_of_the_dense_run():
    data = TINY.load_data()
    full = rewind_state(TINY, data, "epoch", TINY.train.epochs)
    dense = train_dense(TINY, use_cache=False).model.state_dict()
    for name, tensor in dense.items():
        assert torch.allclose(full[name], tensor, atol=1e-6), name
    initial = rewind_state(TINY, data, "init", 1)
    assert torch.equal(initial["fc1.weight"], TINY.build_model(data).state_dict()["fc1.weight"])


@pytest.mark.parametrize("schedule", [OneShot(prune_at="init"), OneShot(prune_at="early"), Gradual(gradual_epochs=1),
                                      GradFlow(rounds=2)])
def test_every_schedule_reaches_the_target_with_the_mask_holding(schedule):
    outcome = run_schedule(TINY, "magnitude", 0.8, None, schedule)
    assert outcome.mask.sparsity() == pytest.approx(0.8, abs=1e-4)
    for name, keep in outcome.mask.items():
        assert torch.all(outcome.state_dict[name][~keep] == 0), name
    assert outcome.history[-1]["accuracy"] > 0.5, "the sparse network trained"
    if schedule.kind == "oneshot" and schedule.prune_at in ("init", "early"):
        assert outcome.history[0]["accuracy"] < 0.3, "the run started from initialisation"


def test_finetuning_reports_accuracy_before_and_after_with_sparsity_unchanged():
    outcome = run_schedule(TINY, "random", 0.9, None, OneShot(finetune_epochs=2))
    assert outcome.mask.sparsity() == pytest.approx(0.9, abs=1e-5)
    nonzero = sum(int(torch.count_nonzero(outcome.state_dict[name])) for name in outcome.mask)
    assert nonzero == outcome.mask.num_weights - outcome.mask.num_pruned
    assert outcome.history[-1]["accuracy"] > outcome.accuracy_before_finetune + 0.05, "fine-tuning recovers random pruning"


def test_sweep_has_a_row_per_method_sparsity_and_seed_with_baselines():
    rows = run_sweep(TINY, ["magnitude"], [0.5, 0.95], [0, 1], overrides={"scope": "layerwise"})
    assert len(rows) == 2 * 2 * 2
    assert {row.method for row in rows} == {"magnitude", "random"}
    for row in rows:
        assert row.stats.sparsity == pytest.approx(row.target_sparsity, abs=1e-4)
    at_95 = {(row.method, row.experiment.seed): row.accuracy_after_finetune for row in rows if row.target_sparsity == 0.95}
    assert all(at_95[("random", seed)] < at_95[("magnitude", seed)] for seed in (0, 1))
    with pytest.raises(BadInputError, match="no method"):
        run_sweep(TINY, ["magnitude"], [0.5], [0], overrides={"bogus": 1})


def test_cli_flags_are_generated_from_the_declared_settings():
    from pruning.cli import build_parser, experiment_from_args, schedule_from_args

    args = build_parser().parse_args(["prune", "--schedule", "gradual", "--frequency", "5", "--gradual-epochs", "2",
                                      "--finetune-epochs", "1", "--momentum", "0.8", "--weight-decay", "0",
                                      "--optimizer", "adam", "--batch-size", "32"])
    assert schedule_from_args(args) == Gradual(frequency=5, gradual_epochs=2, finetune_epochs=1)
    assert experiment_from_args(args).train == TrainConfig(momentum=0.8, weight_decay=0.0, optimizer="adam", batch_size=32)
    assert TrainConfig.from_settings() == TrainConfig(), "the declared defaults are the dataclass's"
    ignored = build_parser().parse_args(["prune", "--early-epochs", "2"])  # applies only with --prune-at early
    assert schedule_from_args(ignored) == OneShot() and OneShot(prune_at="early", early_epochs=2).early_epochs == 2
    for argv, message in ((["--rounds", "3"], "oneshot schedule's settings"),
                          (["--schedule", "iterative", "--rounds", "0"], "rounds must be at least 1"),
                          (["--momentum", "high"], "momentum must be a number")):
        args = build_parser().parse_args(["prune", *argv])
        with pytest.raises(BadInputError, match=message):
            experiment_from_args(args)
            schedule_from_args(args)


def test_a_schedule_is_a_hashable_read_only_choice():
    schedule = Iterative(rounds=25)  # more rounds than the widget offers: still valid
    assert schedule == Iterative(rounds=25) and hash(schedule) == hash(Iterative(rounds=25)) != hash(Iterative())
    schedule.settings["rounds"] = 2
    assert schedule.rounds == 25
    with pytest.raises(BadInputError, match="needs more training epochs"):
        run_schedule(TINY, "magnitude", 0.5, None, OneShot(prune_at="early", early_epochs=TINY.train.epochs))
