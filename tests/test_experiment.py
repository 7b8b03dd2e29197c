"""Experiments: the cache key, the dense-model disk cache, and pruning that leaves the dense model alone."""

import dataclasses
import os

import pytest
import torch

from pruning.experiment import Experiment, cache_dir, cached_dense_path, is_cached, train_dense
from pruning.pipeline import prune_model, run_prune
from pruning.report import result_json
from pruning.train import TrainConfig, TrainingDivergedError

# digits + mlp + 1 epoch: well under a second to train.
FAST = Experiment(dataset="digits", model="mlp", seed=0, train=TrainConfig(epochs=1))


pytestmark = pytest.mark.usefixtures("one_thread")


def weights(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def files_in(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- key ---


def test_key_changes_with_every_choice_and_is_stable_otherwise():
    base = Experiment(dataset="mnist-5k", model="mlp", imbalance=1.0, seed=0, train=TrainConfig(epochs=2, lr=0.05))
    variants = {
        "dataset": dataclasses.replace(base, dataset="digits"),
        "model": dataclasses.replace(base, model="lenet5"),
        "imbalance": dataclasses.replace(base, imbalance=10.0),
        "seed": dataclasses.replace(base, seed=1),
        "epochs": dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=3)),
        "lr": dataclasses.replace(base, train=dataclasses.replace(base.train, lr=0.1)),
        "batch_size": dataclasses.replace(base, train=dataclasses.replace(base.train, batch_size=128)),
        "optimizer": dataclasses.replace(base, train=dataclasses.replace(base.train, optimizer="adam")),
        "momentum": dataclasses.replace(base, train=dataclasses.replace(base.train, momentum=0.5)),
        "weight_decay": dataclasses.replace(base, train=dataclasses.replace(base.train, weight_decay=0.0)),
    }
    keys = {name: experiment.key() for name, experiment in variants.items()}
    assert base.key() not in keys.values()
    assert len(set(keys.values())) == len(keys)  # all different from each other too
    # stable: the same choices give the same key, every time and from a separately built object
    again = Experiment(dataset="mnist-5k", model="mlp", imbalance=1.0, seed=0, train=TrainConfig(epochs=2, lr=0.05))
    assert again.key() == base.key() == base.key()
    assert len(base.key()) == 16 and all(c in "0123456789abcdef" for c in base.key())
    # and the cache file is named by it
    assert base.key() in cached_dense_path(base).name
    assert cached_dense_path(base) != cached_dense_path(variants["seed"])


def test_equal_experiments_have_equal_keys():
    a, b = Experiment(imbalance=1), Experiment(imbalance=1.0)
    assert a == b
    assert a.key() == b.key()
    c, d = Experiment(train=TrainConfig(lr=1)), Experiment(train=TrainConfig(lr=1.0))
    assert c == d
    assert c.key() == d.key()


# --- dense-model cache ---


def test_cache_dir_follows_the_environment(fresh_cache):
    assert cache_dir() == fresh_cache
    assert cached_dense_path(FAST).parent == fresh_cache / "dense"


def test_train_dense_trains_once_then_loads_from_the_cache(fresh_cache):
    assert not is_cached(FAST)
    first = train_dense(FAST)
    assert first.from_cache is False
    assert is_cached(FAST)
    assert len(first.history) == 1
    second = train_dense(FAST)
    assert second.from_cache is True
    assert same(weights(first.model), weights(second.model))
    assert second.history == first.history
    assert not second.model.training
    # only the finished file: no temporary files left beside it
    assert files_in(fresh_cache) == [cached_dense_path(FAST).name]
    assert not any(name.endswith(".tmp") or name.startswith(".") for name in files_in(fresh_cache))


def test_use_cache_false_neither_reads_nor_writes(fresh_cache):
    dense = train_dense(FAST, use_cache=False)
    assert dense.from_cache is False
    assert files_in(fresh_cache) == []


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "wrong_object"])
def test_a_damaged_cache_file_is_rebuilt_not_trusted(fresh_cache, damage):
    reference = weights(train_dense(FAST).model)
    path = cached_dense_path(FAST)
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"this is not a torch file" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"something": torch.zeros(3)}, path)
    rebuilt = train_dense(FAST)
    assert rebuilt.from_cache is False
    assert same(weights(rebuilt.model), reference)  # retrained from the seed, same weights
    # the rebuilt file is good again
    again = train_dense(FAST)
    assert again.from_cache is True
    assert same(weights(again.model), reference)
    assert files_in(fresh_cache) == [path.name]


@pytest.mark.parametrize("damage", ["missing_key", "missing_history"])
def test_a_cache_file_that_does_not_fit_is_rebuilt_from_the_seed(fresh_cache, damage):
    reference = weights(train_dense(FAST, use_cache=False).model)
    path = cached_dense_path(FAST)
    path.parent.mkdir(parents=True, exist_ok=True)
    if damage == "missing_key":  # e.g. written by an older version of the architecture
        state = {k: torch.zeros_like(v) for k, v in reference.items() if k != "fc3.bias"}
        torch.save({"state_dict": state, "history": []}, path)
    else:
        torch.save({"state_dict": {k: torch.zeros_like(v) for k, v in reference.items()}}, path)
    rebuilt = train_dense(FAST)
    assert rebuilt.from_cache is False
    assert same(weights(rebuilt.model), reference)


def test_a_diverged_training_leaves_nothing_in_the_cache(fresh_cache):
    diverging = dataclasses.replace(FAST, train=TrainConfig(epochs=1, lr=1e6))
    with pytest.raises(TrainingDivergedError):
        train_dense(diverging)
    assert not is_cached(diverging)
    assert files_in(fresh_cache) == []


# --- pruning leaves the dense model alone ---


def test_run_prune_does_not_modify_the_dense_model(fresh_cache):
    reference = weights(train_dense(FAST).model)
    outcome = run_prune(FAST, "magnitude", 0.9)
    assert same(weights(outcome.dense_model), reference)
    assert outcome.stats.sparsity == pytest.approx(0.9, abs=1e-6)
    # the pruned tensors are separate: zero where the mask is False, the dense weights elsewhere
    for name, keep in outcome.mask.items():
        pruned = outcome.pruned_tensors[name]
        assert torch.all(pruned[~keep] == 0)
        assert torch.equal(pruned[keep], reference[name][keep])
        assert torch.count_nonzero(reference[name][~keep]) > 0  # the dense weights there are not zero
    report = result_json(outcome)
    assert report["sparsity"] == pytest.approx(0.9, abs=1e-6)
    assert report["dense"]["accuracy"] > report["pruned"]["accuracy"] - 0.5  # sanity: both evaluated


def test_prune_model_leaves_the_model_untouched_for_both_methods(fresh_cache):
    dense = train_dense(FAST)
    before = weights(dense.model)
    data = FAST.load_data()
    for method in ("magnitude", "random"):
        for scope in ("global", "layerwise"):
            result = prune_model(dense.model, data, method, 0.6, {"scope": scope}, seed=0)
            assert result.stats.sparsity == pytest.approx(0.6, abs=1e-6)
            assert same(weights(dense.model), before)
    assert not any(n.endswith("_orig") or n.endswith("_mask") for n in dense.model.state_dict())
    assert not os.path.exists(fresh_cache / "dense" / "tmp")
