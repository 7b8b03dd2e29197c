"""Training and evaluation: determinism, metrics against scikit-learn, masks that hold."""

import copy
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score

from pruning import criteria
from pruning.data import Dataset, load_dataset
from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense
from pruning.methods.base import PruneContext
from pruning.models import build_model, prunable_weight_names
from pruning.selection import mask_from_scores
from pruning.train import TrainConfig, TrainingDivergedError, evaluate, fit

# Shared through the per-run cache (tests/conftest.py) with any other test using the same experiment.
DENSE_EXPERIMENT = Experiment(dataset="mnist-5k", model="mlp", seed=0, train=TrainConfig(epochs=2))


pytestmark = pytest.mark.usefixtures("one_thread")


def subset(data: Dataset, n_train: int, n_test: int | None = None) -> Dataset:
    """The first ``n_train`` training (and ``n_test`` test) samples, as a Dataset."""
    n_test = len(data.y_test) if n_test is None else n_test
    return Dataset(
        data.name,
        data.x_train[:n_train],
        data.y_train[:n_train],
        data.x_test[:n_test],
        data.y_test[:n_test],
        data.class_names,
        data.mean,
        data.std,
    )


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist-5k")


@pytest.fixture(scope="module")
def small(mnist):
    return subset(mnist, 800, 300)


@pytest.fixture(scope="module")
def dense():
    """The 2-epoch mlp on mnist-5k (trained once per test run, then read from the cache)."""
    return train_dense(DENSE_EXPERIMENT)


def fresh_mlp(seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", (1, 28, 28), 10)


def weights(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- fit ---


def test_fit_is_deterministic_for_a_seed_and_seeds_differ(small):
    config = TrainConfig(epochs=1, lr=0.05, batch_size=64)
    start = fresh_mlp()
    runs = {}
    for label, seed in (("a", 0), ("b", 0), ("c", 1)):
        model = copy.deepcopy(start)
        history = fit(model, small, config, seed=seed)
        runs[label] = (weights(model), history)
    assert not same(runs["a"][0], weights(start))  # training happened
    assert same(runs["a"][0], runs["b"][0])
    assert runs["a"][1] == runs["b"][1]
    assert not same(runs["a"][0], runs["c"][0])  # another seed shuffles the batches differently
    # the history has one row per epoch with finite numbers
    (row,) = runs["a"][1]
    assert row["epoch"] == 1 and {"epoch", "train_loss", "test_accuracy", "test_loss"} <= set(row)
    assert all(math.isfinite(row[k]) for k in ("train_loss", "test_accuracy", "test_loss"))


def test_two_epochs_of_mlp_on_mnist_5k_is_well_above_chance(dense, mnist):
    assert len(dense.history) == 2
    assert dense.history[-1]["test_accuracy"] > 0.8
    assert dense.history[-1]["train_loss"] < dense.history[0]["train_loss"]
    evaluation = evaluate(dense.model, mnist.x_test, mnist.y_test, mnist.num_classes)
    assert evaluation.accuracy > 0.8
    assert evaluation.accuracy == pytest.approx(dense.history[-1]["test_accuracy"])


# --- evaluate ---


def check_against_sklearn(evaluation, model, x, y, num_classes):
    with torch.no_grad():
        logits = model.eval()(x)
    predictions = logits.argmax(1)
    assert torch.equal(evaluation.predictions, predictions)
    y_np, p_np = y.numpy(), predictions.numpy()
    labels = list(range(num_classes))
    assert evaluation.accuracy == pytest.approx(accuracy_score(y_np, p_np), abs=1e-12)
    np.testing.assert_allclose(
        evaluation.per_class_recall, recall_score(y_np, p_np, labels=labels, average=None, zero_division=0), atol=1e-12
    )
    np.testing.assert_array_equal(evaluation.confusion, confusion_matrix(y_np, p_np, labels=labels))
    assert evaluation.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    # accuracy = class-count-weighted mean of the per-class recall
    counts = np.bincount(y_np, minlength=num_classes)
    assert evaluation.accuracy == pytest.approx(float(np.dot(counts, evaluation.per_class_recall) / counts.sum()), abs=1e-12)


def test_evaluate_matches_sklearn_on_a_trained_model(dense, mnist):
    evaluation = evaluate(dense.model, mnist.x_test, mnist.y_test, mnist.num_classes, batch_size=256)
    check_against_sklearn(evaluation, dense.model, mnist.x_test, mnist.y_test, mnist.num_classes)
    assert len(evaluation.per_class_recall) == 10
    assert evaluation.confusion.shape == (10, 10) and evaluation.confusion.sum() == len(mnist.y_test)
    assert evaluation.summary() == {
        "accuracy": evaluation.accuracy,
        "loss": evaluation.loss,
        "per_class_recall": evaluation.per_class_recall,
    }


def test_evaluate_matches_sklearn_with_missing_classes_and_a_poor_model(mnist):
    """An untrained model predicts few classes, and class 9 is absent from the labels."""
    keep = mnist.y_test != 9
    x, y = mnist.x_test[keep][:300], mnist.y_test[keep][:300]
    model = fresh_mlp(3)
    evaluation = evaluate(model, x, y, 10, batch_size=64)
    check_against_sklearn(evaluation, model, x, y, 10)
    assert evaluation.per_class_recall[9] == 0.0
    assert evaluation.confusion[9].sum() == 0


def test_evaluate_with_masked_parameters_equals_a_masked_copy_and_leaves_the_model_alone(dense, mnist):
    model = dense.model
    before = weights(model)
    names = prunable_weight_names(model)
    mask = mask_from_scores(criteria.magnitude_scores(model, names, None), 0.95, "global")
    through_parameters = evaluate(model, mnist.x_test, mnist.y_test, 10, parameters=mask.masked_parameters(model))
    copy_model = mask.apply_(copy.deepcopy(model))
    on_copy = evaluate(copy_model, mnist.x_test, mnist.y_test, 10)
    assert same(weights(model), before)
    assert torch.equal(through_parameters.predictions, on_copy.predictions)
    assert through_parameters.accuracy == on_copy.accuracy
    assert through_parameters.loss == pytest.approx(on_copy.loss, rel=1e-6)
    np.testing.assert_array_equal(through_parameters.confusion, on_copy.confusion)
    assert through_parameters.per_class_recall == on_copy.per_class_recall
    # and the mask matters: at 95% sparsity the predictions are not the dense ones
    dense_eval = evaluate(model, mnist.x_test, mnist.y_test, 10)
    assert not torch.equal(dense_eval.predictions, through_parameters.predictions)


def test_evaluate_with_parameters_on_a_batchnorm_model_keeps_its_buffers():
    digits = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("vgg-small", digits.input_shape, 10)
    model.train()
    before = weights(model)  # includes running_mean/var buffers
    mask = mask_from_scores(criteria.random_scores(model, prunable_weight_names(model), PruneContext(digits, seed=0)), 0.5)
    x, y = digits.x_test[:100], digits.y_test[:100]
    through_parameters = evaluate(model, x, y, 10, parameters=mask.masked_parameters(model))
    on_copy = evaluate(mask.apply_(copy.deepcopy(model)), x, y, 10)
    assert same(weights(model), before)
    assert model.training  # restored
    assert torch.equal(through_parameters.predictions, on_copy.predictions)
    assert through_parameters.loss == pytest.approx(on_copy.loss, rel=1e-5)


# --- masks hold through fine-tuning ---


def prunable_zeros(model, names):
    parameters = dict(model.named_parameters())
    return sum(int((parameters[n] == 0).sum()) for n in names)


def test_fine_tuning_with_a_mask_keeps_the_exact_sparsity_despite_momentum_and_weight_decay(dense, mnist):
    model = copy.deepcopy(dense.model)
    names = prunable_weight_names(model)
    total = sum(dict(model.named_parameters())[n].numel() for n in names)
    mask = mask_from_scores(criteria.magnitude_scores(model, names, None), 0.9, "global")
    mask.apply_(model)
    pruned_start = weights(model)
    config = TrainConfig(epochs=1, lr=0.05, momentum=0.9, weight_decay=5e-3, optimizer="sgd", batch_size=32)
    fit(model, subset(mnist, 1000, 200), config, seed=0, mask=mask)

    target = round(0.9 * total)
    assert mask.num_pruned == target
    assert prunable_zeros(model, names) == target  # realised sparsity is exactly the target
    parameters = dict(model.named_parameters())
    for name in names:
        assert torch.all(parameters[name][~mask[name]] == 0)
        assert torch.count_nonzero(parameters[name][mask[name]]) == int(mask[name].sum())
    changed = [not torch.equal(parameters[n][mask[n]], pruned_start[n][mask[n]]) for n in names]
    assert all(changed)  # surviving weights were trained

    # Control: the same fine-tuning without the mask revives pruned weights (so the check above has teeth).
    unmasked = copy.deepcopy(dense.model)
    mask.apply_(unmasked)
    fit(unmasked, subset(mnist, 1000, 200), config, seed=0)
    assert prunable_zeros(unmasked, names) < target


def test_adam_with_a_mask_keeps_the_sparsity(small):
    model = fresh_mlp()
    names = prunable_weight_names(model)
    mask = mask_from_scores(criteria.magnitude_scores(model, names, None), 0.7, "layerwise")
    fit(model, subset(small, 256, 50), TrainConfig(epochs=1, lr=1e-3, weight_decay=1e-2, optimizer="adam"), mask=mask)
    assert prunable_zeros(model, names) == mask.num_pruned


# --- divergence and bad configuration ---


def test_a_diverging_run_raises_training_diverged_error_naming_the_learning_rate(small):
    model = fresh_mlp()
    with pytest.raises(TrainingDivergedError, match=r"learning rate.*1000000") as info:
        fit(model, subset(small, 640, 50), TrainConfig(epochs=1, lr=1e6), seed=0)
    assert isinstance(info.value, BadInputError)  # shown to the user as one line
    assert "diverged" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        ({"lr": 0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_train_config_is_a_bad_input_error(kwargs, pattern):
    with pytest.raises(BadInputError, match=pattern):
        TrainConfig(**kwargs)


def test_good_train_configs_are_accepted():
    assert TrainConfig(optimizer="adam", lr=1e-3).to_dict()["optimizer"] == "adam"
    assert TrainConfig(epochs=0).epochs == 0
