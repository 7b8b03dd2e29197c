"""The engine on the experiment's device: every path gives today's numbers, and none makes a tensor
that would land on the wrong device on a GPU.

The detector works without a GPU: a path runs once as usual and once inside ``torch.device("meta")``
with its model and data on the CPU. Every tensor the engine makes without saying where (``zeros``,
``arange``, ``randperm``...) is then a meta tensor, and the first operation that mixes it with the
real CPU tensors raises; those are exactly the tensors that would sit on the CPU next to a CUDA
model. The second run must not raise and must give the first run's numbers exactly, on the CPU.
Factory calls made inside captum are left alone: its scratch tensors (``torch.linspace(0, 1,
n).tolist()`` for the conductance steps) never meet the model, and are right on any device.
"""

import copy
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._device import DeviceContext, _device_constructors

from pruning.device import resolve_device
from pruning.errors import BadInputError
from pruning.experiment import Experiment, cached_dense_path, train_dense
from pruning.methods.oneshot import CriterionMethod
from pruning.pipeline import prune_model, run_prune
from pruning.registry import METHODS, get_method
from pruning.run_cache import _read_run, run_training_method, training_run_path
from pruning.schedules import SCHEDULES, Iterative, OneShot, make_schedule
from pruning.selection import kth_smallest
from pruning.sparsity_sweep import _read, compute_sweep, sparsity_sweep, sweep_path
from pruning.train import TrainConfig, batches, evaluate, fit, random_crop_flip, random_shift
from pruning.weights import _held, check_state_dict, use_weights

SMALL = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))
CONV = Experiment(dataset="digits", model="vgg-small", train=TrainConfig(epochs=1))
VIT = Experiment(dataset="digits", model="vit-tiny", train=TrainConfig(epochs=1))
SKIPPED_FIELDS = ("seconds",)  # wall-clock time differs between any two runs


# --- the detector and the comparison ---


def assert_same(expected, found, where="result"):
    """Equal numbers, bit for bit (NaN where the normal run had NaN), and every tensor on the device
    it had in the normal run; recursively through containers, dataclasses (``SKIPPED_FIELDS`` aside)
    and models (their state dicts)."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(found, torch.Tensor), where
        assert found.device == expected.device, f"{where}: on {found.device}, expected {expected.device}"
        assert (found.dtype, found.shape) == (expected.dtype, expected.shape), where
        assert torch.equal(torch.nan_to_num(found), torch.nan_to_num(expected)), where
        if expected.is_floating_point():
            assert torch.equal(found.isnan(), expected.isnan()), where
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(found, expected, err_msg=where)
    elif isinstance(expected, nn.Module):
        assert_same(expected.state_dict(), found.state_dict(), where)
    elif dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        assert type(found) is type(expected), where
        for field in dataclasses.fields(expected):
            if field.name not in SKIPPED_FIELDS:
                assert_same(getattr(expected, field.name), getattr(found, field.name), f"{where}.{field.name}")
    elif isinstance(expected, dict):
        assert type(found) is type(expected) and list(found) == list(expected), where
        for key in expected:
            assert_same(expected[key], found[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert type(found) is type(expected) and len(found) == len(expected), where
        for index, (one, other) in enumerate(zip(expected, found)):
            assert_same(one, other, f"{where}[{index}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert isinstance(found, float) and math.isnan(found), where
    else:
        assert found == expected, where


THIRD_PARTY = ("captum",)  # libraries whose own factory calls are not the engine's
TORCH_FILES = os.path.dirname(torch.__file__) + os.sep


def called_from(libraries) -> bool:
    """Whether the code that called torch (the first frame outside torch) belongs to one of ``libraries``."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(TORCH_FILES):
        frame = frame.f_back
    return frame is not None and any(f"{os.sep}{library}{os.sep}" in frame.f_code.co_filename for library in libraries)


class MetaDetector(DeviceContext):
    """``torch.device("meta")`` for every factory call without a device, except those made inside
    ``THIRD_PARTY`` libraries."""

    def __init__(self):
        super().__init__("meta")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _device_constructors() and kwargs.get("device") is None and not called_from(THIRD_PARTY):
            kwargs["device"] = self.device
        return func(*args, **kwargs)


def same_on_meta(compute):
    """``compute()`` as usual, then with every tensor made without a device on meta: the same result."""
    expected = compute()
    with MetaDetector():
        found = compute()
    assert_same(expected, found)
    return expected


def test_the_detector_catches_a_tensor_made_without_a_device():
    weights = torch.ones(3)
    with MetaDetector(), pytest.raises(RuntimeError, match="meta"):
        weights + torch.arange(3)
    with MetaDetector(), pytest.raises(RuntimeError, match="meta"):
        weights + nn.functional.pad(torch.zeros(1), (1, 1))  # made through torch's own Python code: caught too
    with MetaDetector():
        assert torch.equal(weights + torch.arange(3, device=weights.device), torch.tensor([1.0, 2.0, 3.0], device="cpu"))
        with torch.device("cpu"):  # an explicit device context inside it still wins (Experiment.build_model)
            assert torch.zeros(1).device.type == "cpu"
        assert torch.zeros(1).is_meta


def test_the_comparison_fails_on_a_different_number_or_device():
    with pytest.raises(AssertionError):
        assert_same({"w": torch.zeros(2)}, {"w": torch.tensor([0.0, 1e-30])})
    with pytest.raises(AssertionError):
        assert_same([torch.zeros(2)], [torch.zeros(2, device="meta")])


# --- fixtures: trained on the CPU, outside the detector ---


@pytest.fixture(scope="module")
def dense(one_thread):
    return train_dense(SMALL).model


@pytest.fixture(scope="module")
def untrained_models(one_thread):
    """Untrained (at initialisation) vgg-small and vit-tiny: convolutions and attention, no training cost."""
    return {"conv": CONV.build_model(), "vit": VIT.build_model()}


def fast(params, **chosen) -> dict:
    """Settings for a quick run: every epoch count at its least (a new method is covered as it is)."""
    settings = {param.name: max(1, int(param.min or 1)) for param in params
                if param.type == "int" and param.name.endswith("epochs")}
    names = {param.name for param in params}
    return {**settings, **{name: value for name, value in chosen.items() if name in names}}


# --- dense training and evaluation ---


def test_dense_training_with_shift_and_crop_flip_is_the_same_on_meta(one_thread):
    config = TrainConfig(epochs=1, shift_pixels=1, augment="crop-flip")
    experiment = replace(SMALL, train=config)

    def train():
        trained = train_dense(experiment, use_cache=False)
        return trained.model, trained.history

    model, history = same_on_meta(train)
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])


def test_training_with_a_mask_and_evaluation_are_the_same_on_meta(dense):
    data = SMALL.load_data()
    mask = prune_model(dense, data, "magnitude", 0.5).mask

    def train():
        model = copy.deepcopy(dense)
        history = fit(model, data, TrainConfig(epochs=1, optimizer="sgd"), seed=3, mask=mask)
        return model, history, evaluate(model, data.x_test, data.y_test, data.num_classes,
                                        parameters=mask.masked_parameters(model))

    same_on_meta(train)


def test_the_cpu_draws_are_todays():
    """The device-generic draws (explicit CPU generators) give the numbers the code gave before."""
    order = torch.cat(list(batches(100, 7, torch.Generator().manual_seed(4))))
    assert torch.equal(order, torch.randperm(100, generator=torch.Generator().manual_seed(4)))
    x = torch.randn(5, 1, 6, 6)
    generator = torch.Generator().manual_seed(2)
    offsets = torch.randint(0, 3, (5, 2), generator=torch.Generator().manual_seed(2))
    shifted = random_shift(x, 1, generator)
    padded = nn.functional.pad(x, (1,) * 4, mode="replicate")
    for index, (row, column) in enumerate(offsets.tolist()):
        assert torch.equal(shifted[index], padded[index, :, row:row + 6, column:column + 6])
    cropped = random_crop_flip(x, torch.tensor([-1.0]), torch.Generator().manual_seed(5))
    reference = torch.Generator().manual_seed(5)
    offsets = torch.randint(0, 9, (5, 2), generator=reference)
    flips = torch.rand(5, generator=reference) < 0.5
    padded = nn.functional.pad(x, (4,) * 4, value=-1.0)
    for index, ((row, column), flip) in enumerate(zip(offsets.tolist(), flips.tolist())):
        window = padded[index, :, row:row + 6, column:column + 6]
        assert torch.equal(cropped[index], window.flip(-1) if flip else window)


# --- one-shot methods: every registered one, at several granularities ---


def one_shot_cases():
    """Every one-shot method of the registry: criteria unstructured and structured (or structured only),
    head pruning on the transformer, any other method with its defaults."""
    for name, method in METHODS.items():
        if method.trains:
            continue
        if isinstance(method, CriterionMethod):
            quick = fast(method.params, rounds=3, n_steps=2)
            for granularity in (() if method.criterion.structured_only else ("unstructured",)) + ("structured",):
                yield pytest.param(name, "mlp", {**quick, "granularity": granularity}, id=f"{name}-{granularity}")
        elif name == "heads":
            yield pytest.param(name, "vit", {}, id="heads-norm")
            yield pytest.param(name, "vit", {"score": "taylor", "mlp": True}, id="heads-taylor-mlp")
        else:
            yield pytest.param(name, "mlp", fast(method.params), id=name)


def model_for(kind, dense, untrained_models):
    return dense if kind == "mlp" else untrained_models[kind]


def data_for(kind):
    return {"mlp": SMALL, "conv": CONV, "vit": VIT}[kind].load_data()


@pytest.mark.parametrize("method, kind, overrides", list(one_shot_cases()))
def test_every_one_shot_method_is_the_same_on_meta(dense, untrained_models, method, kind, overrides):
    model, data = model_for(kind, dense, untrained_models), data_for(kind)
    result = same_on_meta(lambda: prune_model(copy.deepcopy(model), data, method, 0.5, overrides, seed=1))
    assert all(entry.device.type == "cpu" for entry in result.mask.values())


@pytest.mark.parametrize("method, overrides", [
    ("magnitude", {}),
    ("wanda", {}),  # activation norms of convolutions, compared per row
    ("snip", {"granularity": "structured"}),
    ("grasp", {}),
    ("synflow", {"rounds": 2}),
    ("attr-gradxact", {"granularity": "structured"}),
    ("sparsegpt", {}),
    ("sparsegpt", {"granularity": "nm"}),
    ("magnitude", {"granularity": "block", "block_size": 2}),
], ids=lambda value: value if isinstance(value, str) else "-".join(map(str, value.values())) or "default")
def test_one_shot_methods_on_convolutions_are_the_same_on_meta(untrained_models, method, overrides):
    model, data = untrained_models["conv"], data_for("conv")
    same_on_meta(lambda: prune_model(copy.deepcopy(model), data, method, 0.6, overrides, seed=2))


@pytest.mark.parametrize("method, overrides", [
    ("magnitude", {"granularity": "nm"}),
    ("magnitude", {"granularity": "nm", "nm_pattern": "1:4"}),
    ("wanda", {"granularity": "nm"}),
    ("wanda", {"comparison": "row"}),
    ("sparsegpt", {"granularity": "nm"}),
])
def test_n_m_and_per_row_masks_are_the_same_on_meta(dense, method, overrides):
    data = SMALL.load_data()
    same_on_meta(lambda: prune_model(copy.deepcopy(dense), data, method, 0.5, overrides))


@pytest.mark.parametrize("scope", ["global", "layerwise", "erk", "owl", "sensitivity"])
@pytest.mark.parametrize("granularity", ["unstructured", "structured"])
def test_every_allocation_policy_is_the_same_on_meta(dense, scope, granularity):
    data = SMALL.load_data()
    overrides = {"scope": scope, "granularity": granularity, "allocation_samples_per_class": 5}
    same_on_meta(lambda: prune_model(copy.deepcopy(dense), data, "taylor", 0.6, overrides))


def test_the_sampled_kth_smallest_of_a_large_tensor_is_the_same_on_meta():
    values = torch.rand(1_200_000, generator=torch.Generator().manual_seed(0))  # past the exact-search size
    for k in (1, 600_000, 1_199_999):
        found = same_on_meta(lambda k=k: kth_smallest(values, k))
        assert found == torch.kthvalue(values, k).values


# --- schedules: every registered one, and rewinding to an epoch ---


def schedule_cases():
    for kind, cls in SCHEDULES.items():
        settings = {param.name: max(1, int(param.min or 1)) for param in cls.params if param.type == "int"}
        yield pytest.param("magnitude", make_schedule(kind, {**settings, **({"rounds": 2} if "rounds" in settings else {})}),
                           id=kind)
    yield pytest.param("magnitude", OneShot(prune_at="init", finetune_epochs=1), id="oneshot-init-finetune")
    yield pytest.param("snip", Iterative(rounds=2, rewind_to="epoch", rewind_epoch=1), id="iterative-rewind-epoch")
    yield pytest.param("sparsegpt", Iterative(rounds=2), id="iterative-sparsegpt")


@pytest.mark.parametrize("method, schedule", list(schedule_cases()))
def test_every_schedule_is_the_same_on_meta(dense, method, schedule):
    same_on_meta(lambda: run_prune(SMALL, method, 0.6, schedule=schedule))


# --- methods that train: every registered one ---


def training_cases():
    return [pytest.param(name, id=name) for name, method in METHODS.items() if method.trains]


@pytest.mark.parametrize("name", training_cases())
def test_every_training_method_is_the_same_on_meta(dense, name, tmp_path, monkeypatch):
    """Each run in an empty cache, so the L1-trained model of LOMP trains under the detector too."""
    method = get_method(name)
    settings = method.settings(fast(method.params, level_fraction=0.5, cycles=1))
    sparsity = 0.5 if method.target_sparsity else None
    folders = itertools.count()

    def train():
        monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path / str(next(folders))))
        return run_training_method(SMALL, method, sparsity, settings, dense=dense)

    outcome = same_on_meta(train)
    assert outcome.history and all(entry.device.type == "cpu" for entry in outcome.mask.values())


# --- the live sparsity sweep ---


@pytest.mark.parametrize("method, overrides", [
    ("magnitude", {}),
    ("wanda", {"scope": "owl", "allocation_samples_per_class": 5}),
    ("synflow", {"rounds": 2}),
    ("sparsegpt", {}),
])
def test_the_sparsity_sweep_is_the_same_on_meta(dense, method, overrides):
    data = SMALL.load_data()
    settings = get_method(method).settings(overrides)
    sweep = same_on_meta(lambda: compute_sweep(copy.deepcopy(dense), data, method, settings, [0.0, 0.5, 0.9], seed=0))
    assert sweep.timed_on.startswith("cpu")


# --- what is read back from the cache lands on the experiment's device ---


def every_tensor(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from every_tensor(getattr(value, field.name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from every_tensor(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from every_tensor(item)


def test_a_cached_training_run_reads_back_equal_and_on_the_experiments_device(dense, fresh_cache, monkeypatch):
    """Read back, the run equals the run that was cached; read for another device (a GPU, stood in for
    by meta: the cache file is on the CPU either way), every mask, snapshot and weight moves there."""
    method = get_method("dns")
    settings = method.settings({"epochs": 1})
    fresh = run_training_method(SMALL, method, None, settings, dense=dense)
    cached = run_training_method(SMALL, method, None, settings, dense=dense)
    assert cached is not fresh
    assert_same(fresh, cached)
    moved = _read_run(training_run_path(SMALL, method, None, settings), method, torch.device("meta"))
    tensors = list(every_tensor(moved))
    assert len(tensors) > len(moved.mask) + len(moved.snapshots) and all(tensor.is_meta for tensor in tensors)
    monkeypatch.setattr("pruning.run_cache.check_device", lambda device: torch.device("meta"))
    through_the_experiment = run_training_method(SMALL, method, None, settings, dense=dense)
    assert all(tensor.is_meta for tensor in every_tensor(through_the_experiment))


def test_a_cached_sweep_reads_back_equal_and_on_the_experiments_device(dense, fresh_cache, monkeypatch):
    grid = [0.0, 0.5, 0.9]
    fresh = sparsity_sweep(SMALL, "magnitude", grid=grid, dense=dense)
    cached = sparsity_sweep(SMALL, "magnitude", grid=grid, dense=dense)
    assert_same(fresh, cached)
    path = sweep_path(SMALL, "magnitude", get_method("magnitude").settings(), grid)
    assert all(entry.is_meta for point in _read(path, torch.device("meta")).points for entry in point.mask.values())
    monkeypatch.setattr("pruning.sparsity_sweep.check_device", lambda device: torch.device("meta"))
    moved = sparsity_sweep(SMALL, "magnitude", grid=grid, dense=dense)
    assert all(entry.is_meta for point in moved.points for entry in point.mask.values())


def test_a_result_read_back_through_the_pipeline_equals_the_computed_one(dense, fresh_cache):
    """run_prune of a method that trains: the second call reads the dense model and the run from the cache."""
    settings = fast(get_method("grda").params)
    first = run_prune(SMALL, "grda", None, settings)
    again = run_prune(SMALL, "grda", None, settings)
    assert_same(first, again)
    assert first.timed_on.startswith("cpu")


# --- uploaded weights ---


def test_uploaded_weights_and_mask_are_the_same_on_meta(dense, fresh_cache):
    state = {name: tensor.clone() for name, tensor in dense.state_dict().items()}
    mask = prune_model(dense, SMALL.load_data(), "magnitude", 0.5).mask
    weights_file, mask_file = io.BytesIO(), io.BytesIO()
    torch.save(state, weights_file)
    torch.save(dict(mask), mask_file)

    def upload():
        named = use_weights(SMALL, weights_file.getvalue(), mask_file.getvalue(), store=False)
        model = train_dense(named).model
        del _held[named.model, named.weights]  # so the second upload checks the files again
        return model

    model = same_on_meta(upload)
    assert_same(mask.apply_(copy.deepcopy(dense)), model)


def test_uploaded_weights_are_put_on_the_models_device(dense):
    state = {name: tensor.clone() for name, tensor in dense.state_dict().items()}
    checked = check_state_dict(state, copy.deepcopy(dense).to("meta"), "mlp")
    assert list(checked) == list(state) and all(tensor.is_meta for tensor in checked.values())


# --- the cache key and the device choice ---


def test_a_cpu_experiment_keeps_the_key_it_had_before_devices():
    before_devices = {"format": 1, "dataset": "mnist-5k", "model": "lenet5", "imbalance": 1.0, "seed": 0,
                      "train": {"epochs": 6, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64,
                                "optimizer": "sgd"}}
    key = hashlib.sha256(json.dumps(before_devices, sort_keys=True).encode()).hexdigest()[:16]
    assert Experiment().key() == Experiment(device="cpu").key() == key
    assert "device" not in Experiment().to_dict()


def test_a_cuda_experiment_is_cached_apart():
    gpu = Experiment(device="cuda")
    assert gpu.to_dict()["device"] == "cuda"
    assert gpu.key() != Experiment().key()
    assert cached_dense_path(gpu) != cached_dense_path(Experiment())
    method = get_method("dns")
    assert training_run_path(gpu, method, None, {}) != training_run_path(Experiment(), method, None, {})


def test_an_unresolved_or_unknown_device_is_refused():
    for device in ("auto", "tpu"):
        with pytest.raises(BadInputError, match=device):
            Experiment(device=device)
    with pytest.raises(BadInputError, match="tpu"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(BadInputError, match="cuda"):
        resolve_device("cuda")
    gpu = replace(SMALL, device="cuda")
    with pytest.raises(BadInputError, match="cuda"):
        gpu.load_data()
    with pytest.raises(BadInputError, match="cuda"):
        run_prune(gpu, "magnitude", 0.5)
    assert resolve_device("auto") == "cpu"


# --- on a real GPU ---


def kept_agreement(one, other) -> float:
    """The fraction of weights both masks keep or both prune."""
    same = sum(int((one[name] == other[name].to(one[name].device)).sum()) for name in one)
    return same / sum(entry.numel() for entry in one.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_prune_on_cuda_matches_the_cpu(dense, fresh_cache):
    """Tolerances: unstructured magnitude ranks the same |w| on both devices, so its mask is identical
    and the pruned model's accuracy differs by at most one test sample (a logit near a tie may round
    the other way), its loss by 1e-4 (relative; float32 sums in another order). Scores that sum (filter
    norms) or come from gradients, activations or Hessians differ in the last float32 bits: at least
    99% of the mask agrees, accuracy within one point, loss within 1% (relative). A dense model trained
    on the GPU differs from the CPU's by the rounding of every step: after one epoch its pruned accuracy
    is within 5 points. Runs read back from the cache equal the runs that were cached, on the GPU."""
    data = SMALL.load_data()
    gpu_model, gpu_data = copy.deepcopy(dense).to("cuda"), data.to("cuda")
    one_sample = 1 / len(data.y_test)
    for method, overrides in (("magnitude", {}), ("magnitude", {"granularity": "structured"}), ("snip", {}),
                              ("synflow", {"rounds": 3}), ("sparsegpt", {}), ("wanda", {"granularity": "nm"})):
        cpu = prune_model(dense, data, method, 0.7, overrides, seed=0)
        gpu = prune_model(gpu_model, gpu_data, method, 0.7, overrides, seed=0)
        assert all(tensor.device.type == "cuda" for tensor in every_tensor(gpu.mask)), method
        assert all(tensor.device.type == "cuda" for tensor in gpu.pruned_tensors.values()), method
        assert gpu.timed_on.startswith("cuda")
        if method == "magnitude" and not overrides:
            assert kept_agreement(cpu.mask, gpu.mask) == 1.0
            assert abs(gpu.pruned.accuracy - cpu.pruned.accuracy) <= one_sample + 1e-12
            assert gpu.pruned.loss == pytest.approx(cpu.pruned.loss, rel=1e-4)
        else:
            assert kept_agreement(cpu.mask, gpu.mask) >= 0.99, method
            assert abs(gpu.pruned.accuracy - cpu.pruned.accuracy) <= 0.01, method
            assert gpu.pruned.loss == pytest.approx(cpu.pruned.loss, rel=1e-2), method
    gpu_experiment = replace(SMALL, device="cuda")
    on_gpu, on_cpu = run_prune(gpu_experiment, "magnitude", 0.5), run_prune(SMALL, "magnitude", 0.5)
    assert next(on_gpu.dense_model.parameters()).device.type == "cuda"
    assert abs(on_gpu.pruned.accuracy - on_cpu.pruned.accuracy) <= 0.05
    method = get_method("dns")
    settings = method.settings({"epochs": 1})
    fresh = run_training_method(gpu_experiment, method, None, settings)
    cached = run_training_method(gpu_experiment, method, None, settings)
    assert all(tensor.device.type == "cuda" for tensor in every_tensor(cached))
    assert all(torch.equal(fresh.state_dict[name], cached.state_dict[name]) for name in fresh.state_dict)
    assert kept_agreement(fresh.mask, cached.mask) == 1.0
    grid = [0.0, 0.5, 0.9]
    swept = sparsity_sweep(gpu_experiment, "magnitude", grid=grid)
    again = sparsity_sweep(gpu_experiment, "magnitude", grid=grid)
    assert all(entry.device.type == "cuda" for point in again.points for entry in point.mask.values())
    assert [point.accuracy for point in again.points] == [point.accuracy for point in swept.points]
    assert swept.timed_on.startswith("cuda")
