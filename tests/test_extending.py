"""CONTRIBUTING.md's promises hold: a one-shot criterion is one function plus one registry entry,
a method that trains is one module's worth of code, and both then appear in the CLI's listing and
the app's method picker, and prune through the same pipeline as the built-in methods."""

import copy
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from pruning.cli import main
from pruning.criteria import Criterion
from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense
from pruning.methods.base import TrainingMethod
from pruning.methods.loop import TrainingRun
from pruning.methods.oneshot import CriterionMethod
from pruning.models import prunable_weight_names
from pruning.params import Param
from pruning.pipeline import prune_model, run_prune
from pruning.registry import METHODS, get_method, register
from pruning.run_cache import is_training_run_cached
from pruning.selection import mask_from_scores
from pruning.train import TrainConfig, TrainingHooks, cosine_sgd
from tests.app_driver import start

TINY = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))


def squared_scores(model: nn.Module, names: list[str], context, power: float = 2.0) -> dict[str, torch.Tensor]:
    """|w|^power: the same ranking as magnitude, so torch.nn.utils.prune is an oracle for its mask."""
    parameters = dict(model.named_parameters())
    return {name: parameters[name].detach().abs() ** power for name in names}


TOY_CRITERION = Criterion(
    name="toy-power", description="|w| to a power (a test's toy criterion).", formula=r"|w|^p", reference="none",
    score=squared_scores, needs_data=False,
    params=(Param("power", "float", 2.0, "The power p.", min=0.5, max=4.0, step=0.5, label="Power p"),),
)


class PruneThenRetrain(TrainingMethod):
    """A toy method that trains: global magnitude pruning of the trained model, then one epoch of
    SGD with the mask re-applied after every step."""

    name = "toy-trainer"
    description = "Prune by magnitude, then retrain one epoch with the mask (a test's toy method)."
    reference = "none"
    params = (Param("lr", "float", 0.01, "Learning rate.", min=1e-4, max=0.5, step=1e-4, label="Learning rate"),)

    def train(self, experiment, dense, sparsity, settings, progress=None):
        run = TrainingRun(experiment, dense, epochs=1, progress=progress)
        names = prunable_weight_names(run.model)
        mask = mask_from_scores({name: run.parameters[name].detach().abs() for name in names}, sparsity, scope="global")
        mask.apply_(run.model)
        run.record(0, mask, phase="pruned")
        optimizer, scheduler = cosine_sgd(run.model.parameters(), settings["lr"], run.total_steps)
        hooks = TrainingHooks(after_step=lambda step: mask.apply_(run.model))
        run.train(1, optimizer, hooks, snapshot=lambda step: (mask, None, "retraining"), scheduler=scheduler)
        return run.outcome(mask)


@pytest.fixture
def toy_methods():
    added = [register(CriterionMethod(TOY_CRITERION)), register(PruneThenRetrain())]
    yield added
    for method in added:
        METHODS.pop(method.name)


def test_registering_a_taken_name_is_refused(toy_methods):
    with pytest.raises(BadInputError, match="taken"):
        register(CriterionMethod(TOY_CRITERION))
    with pytest.raises(BadInputError, match="taken"):
        register(get_method("magnitude"))


def test_a_new_criterion_is_listed_and_prunes_like_its_oracle(toy_methods, capsys):
    assert main(["list", "--json"]) == 0
    listed = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)["methods"]}
    assert listed["toy-power"]["trains"] is False
    assert "power" in [param["name"] for param in listed["toy-power"]["params"]]
    assert listed["toy-trainer"]["trains"] is True

    dense = train_dense(TINY).model
    result = prune_model(dense, TINY.load_data(), "toy-power", 0.7, {"power": 3.0})
    reference = copy.deepcopy(dense)
    modules = dict(reference.named_modules())
    names = prunable_weight_names(reference, include_output=True)
    torch_prune.global_unstructured([(modules[name.rsplit(".", 1)[0]], "weight") for name in names],
                                    pruning_method=torch_prune.L1Unstructured, amount=0.7)
    for name in names:
        expected = dict(reference.named_buffers())[name + "_mask"].bool()
        assert torch.equal(result.mask[name], expected), name


def test_a_new_training_method_runs_through_the_pipeline_and_is_cached(toy_methods, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path))
    result = run_prune(TINY, "toy-trainer", 0.6)
    assert result.stats.sparsity == pytest.approx(0.6, abs=1e-3)
    assert result.history[0]["phase"] == "pruned" and result.history[-1]["phase"] == "retraining"
    assert len(result.snapshots) > 2 and all(shot.mask.sparsity() == pytest.approx(0.6, abs=1e-3) for shot in result.snapshots)
    weights = result.pruned_state_dict()
    assert all(torch.all(weights[name][~keep] == 0) for name, keep in result.mask.items()), "the mask held"
    method = get_method("toy-trainer")
    assert is_training_run_cached(TINY, method, 0.6, method.settings())


def test_the_app_picker_offers_registered_methods(toy_methods):
    at = start(dataset="digits", model="mlp", epochs=1)
    assert not at.exception
    options = at.selectbox(key="method").options
    assert "toy-power" in options and "toy-trainer (trains)" in options
    at.selectbox(key="method").set_value("toy-power").run()
    assert not at.exception
    assert at.slider(key="toy-power.power").value == 2.0, "its declared setting became a widget"
