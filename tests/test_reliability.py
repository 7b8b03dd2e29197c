"""Reliability and security: bad input, bring-your-own weights, training faults, the cache, and
concurrent sessions sharing one dense model."""

import dataclasses
import hashlib
import io
import math
import multiprocessing
import os
import pickle
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch.nn.utils import prune as torch_prune

from pruning import cache
from pruning.cli import main
from pruning.data import load_dataset
from pruning.errors import BadInputError
from pruning.experiment import Experiment, cached_dense_path, train_dense
from pruning.models import build_model
from pruning.pipeline import prune_model
from pruning.registry import get_method
from pruning.run_cache import run_training_method, training_run_path
from pruning.train import TrainConfig, TrainingDivergedError
from pruning.weights import load_tensors, stored_weights, use_weights
from tests.app_driver import metric, start

MLP = Experiment(dataset="mnist-5k", model="mlp", train=TrainConfig(epochs=1))
LENET5 = Experiment()  # the app's default experiment: its dense model is shared with the AppTests


def file_bytes(obj, protocol=None) -> bytes:
    buffer = io.BytesIO()
    if protocol is None:
        torch.save(obj, buffer)
    else:
        pickle.dump(obj, buffer, protocol=protocol)
    return buffer.getvalue()


def state_of(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def same(left: dict, right: dict) -> bool:
    return left.keys() == right.keys() and all(torch.equal(left[name], right[name]) for name in left)


def one_line_error(capsys, argv, pattern):
    code = main(argv)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert code == 2, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    # one error line, the last (progress lines of a training that failed may come before it)
    assert len(errors) == 1 and captured.err.strip().splitlines()[-1] == errors[0], captured.err
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def mlp():
    return train_dense(MLP)


@pytest.fixture(scope="module")
def lenet5():
    return train_dense(LENET5)


# --- 1. bad input: the engine raises BadInputError naming the problem ---

def _lenet5_untrained():
    data = load_dataset("mnist-5k")
    torch.manual_seed(0)  # fixed weights: whether 99% of the filters empty a layer depends on them
    return build_model("lenet5", data.input_shape, data.num_classes), data


# Only inputs the CLI's table (test_cli.BAD_INPUTS) does not already send through the same engine
# call: there each message is checked end to end (BadInputError -> one line, exit 2). The CLI
# checks dataset and model names against its registries itself, and it runs run_prune, not
# prune_model (the pages' entry point). check_sparsity's values: test_properties.py.
ENGINE_CASES = {
    "sparsity_one": (lambda m, d: prune_model(m, d, "magnitude", 1.0), r"sparsity"),
    "unknown_dataset": (lambda m, d: load_dataset("nope"), r"(?i)unknown dataset 'nope'"),
    "unknown_model": (lambda m, d: build_model("nope", (1, 28, 28), 10), r"unknown model 'nope'"),
    "hyperparameter_below_range": (lambda m, d: get_method("magnitude").settings({"block_size": 0}), r"block_size"),
    "seed_negative": (lambda m, d: Experiment(seed=-1), r"seed"),
}


@pytest.mark.parametrize("case", list(ENGINE_CASES))
def test_bad_input_raises_a_clear_error_in_the_engine(case):
    call, pattern = ENGINE_CASES[case]
    model, data = _lenet5_untrained()
    with pytest.raises(BadInputError, match=pattern):
        call(model, data)


def test_structured_pruning_keeps_a_filter_in_every_layer_by_default():
    model, data = _lenet5_untrained()
    result = prune_model(model, data, "magnitude", 0.99, {"granularity": "structured"})
    for name, keep in result.mask.items():
        assert keep.flatten(1).all(1).any(), f"{name} lost every filter"


def test_bad_input_after_training_is_one_line_in_the_cli(lenet5, capsys):
    base = ["prune", "--model", "lenet5", "--sparsity"]
    one_line_error(capsys, [*base, "0.5", "--granularity", "block", "--set", "block_size=32"],
                   r"block size 32 is larger than layer conv1\.weight \(25x20")
    one_line_error(capsys, [*base, "0.99", "--granularity", "structured", "--set", "allow_empty_layers=true"],
                   r"every neuron/filter of \w+\.weight")


@pytest.mark.parametrize(
    "widgets, pattern",
    [
        ([("radio", "magnitude.granularity", "block"), ("slider", "magnitude.block_size", 32)], r"block size 32 is larger"),
        ([("radio", "magnitude.granularity", "structured"), ("toggle", "magnitude.allow_empty_layers", True),
          ("slider", "sparsity", 0.99)], r"every neuron/filter"),
    ],
)
def test_bad_input_in_the_app_is_a_message_and_the_page_keeps_working(lenet5, widgets, pattern):
    at = start()
    for kind, key, value in widgets:  # one at a time: block size is shown once block granularity is chosen
        getattr(at, kind)(key=key).set_value(value).run()
    assert not at.exception
    assert any(re.search(pattern, error.value) for error in at.error), [error.value for error in at.error]
    # the rest keeps working: back to a valid choice, the page prunes again
    at.radio(key="magnitude.granularity").set_value("unstructured")
    at.slider(key="sparsity").set_value(0.5).run()
    assert not at.exception and not at.error
    assert metric(at, "Sparsity achieved") == "50.00%"


# --- 2. bring your own weights ---

def test_uploaded_weights_replace_training_and_keep_their_own_cache(mlp, capsys):
    content = file_bytes(mlp.model.state_dict())
    uploaded = use_weights(MLP, content)
    assert uploaded.weights is not None and uploaded.key() != MLP.key()
    dense = train_dense(uploaded)
    assert same(state_of(dense.model), state_of(mlp.model)) and dense.history == []
    assert use_weights(MLP, content) == uploaded  # same content, same name


def test_cli_weights_give_the_uploaded_models_accuracy(mlp, tmp_path, capsys):
    # weights that are not the trained ones: the dense accuracy must be theirs
    state = {name: tensor * 0.5 if name.endswith("weight") else tensor for name, tensor in state_of(mlp.model).items()}
    torch.save(state, tmp_path / "mine.pt")
    assert main(["prune", "--model", "mlp", "--epochs", "1", "--sparsity", "0.5", "--weights", str(tmp_path / "mine.pt"),
                 "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    model = build_model("mlp", (1, 28, 28), 10)
    model.load_state_dict(state)
    from pruning.train import evaluate

    data = load_dataset("mnist-5k")
    assert report["dense"]["accuracy"] == evaluate(model, data.x_test, data.y_test, 10).accuracy


def test_torch_prune_checkpoints_and_data_parallel_keys_are_understood(mlp):
    pruned = build_model("mlp", (1, 28, 28), 10)
    pruned.load_state_dict(mlp.model.state_dict())
    torch_prune.l1_unstructured(pruned.fc1, "weight", amount=0.5)
    state = pruned.state_dict()
    assert "fc1.weight_orig" in state and "fc1.weight_mask" in state
    wrapped = {f"module.{name}": tensor for name, tensor in state.items()}
    uploaded = use_weights(MLP, file_bytes({"state_dict": wrapped}))
    loaded = stored_weights(uploaded)
    assert torch.equal(loaded["fc1.weight"], pruned.fc1.weight.detach())
    assert (loaded["fc1.weight"] == 0).float().mean() == pytest.approx(0.5)


def test_an_uploaded_mask_zeroes_exactly_the_masked_weights(mlp):
    state = state_of(mlp.model)
    mask = {"fc2.weight": (torch.rand(state["fc2.weight"].shape, generator=torch.Generator().manual_seed(0)) > 0.3)}
    loaded = stored_weights(use_weights(MLP, file_bytes(state), file_bytes(mask)))
    assert torch.equal(loaded["fc2.weight"], state["fc2.weight"] * mask["fc2.weight"])
    assert torch.equal(loaded["fc1.weight"], state["fc1.weight"])


@pytest.mark.parametrize(
    "damage, pattern",
    [
        ("missing", r"missing fc3\.bias"),
        ("unexpected", r"unexpected extra\.weight"),
        ("shape", r"fc2\.weight has shape \(100, 299\), the model's is \(100, 300\)"),
        ("nan", r"NaN or infinite values in fc1\.weight"),
        ("not_tensors", r"not a state_dict: fc1\.weight not a tensor"),
        ("a_tensor", r"holds Tensor, not a state_dict"),
        ("garbage", r"refused: it is not a file of plain tensors"),
        ("truncated", r"cannot be read as a torch file"),
    ],
)
def test_weights_that_do_not_fit_get_a_clear_error(mlp, damage, pattern):
    state = state_of(mlp.model)
    if damage == "missing":
        del state["fc3.bias"]
    elif damage == "unexpected":
        state["extra.weight"] = torch.zeros(2)
    elif damage == "shape":
        state["fc2.weight"] = state["fc2.weight"][:, :299]
    elif damage == "nan":
        state["fc1.weight"][0, 0] = math.nan
    elif damage == "not_tensors":
        state["fc1.weight"] = 3
    content = {"a_tensor": file_bytes(torch.zeros(3)), "garbage": b"not a torch file",
               "truncated": file_bytes(state)[:5000]}.get(damage) or file_bytes(state)
    with pytest.raises(BadInputError, match=pattern):
        use_weights(MLP, content)


@pytest.mark.parametrize(
    "mask, pattern",
    [
        ({"fc9.weight": torch.ones(2)}, r"fc9\.weight not among its prunable weights"),
        ({"fc1.weight": torch.ones(3, 3)}, r"fc1\.weight has shape \(3, 3\)"),
        ({"fc3.weight": torch.full((10, 100), 2.0)}, r"values other than 0 and 1"),
    ],
)
def test_masks_that_do_not_fit_get_a_clear_error(mlp, mask, pattern):
    with pytest.raises(BadInputError, match=pattern):
        use_weights(MLP, file_bytes(state_of(mlp.model)), file_bytes(mask))


def test_an_oversized_file_is_refused_before_it_is_read(mlp, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNING_MAX_UPLOAD_MB", "0.1")
    torch.save(mlp.model.state_dict(), tmp_path / "big.pt")  # about 1 MB
    with pytest.raises(BadInputError, match=r"over the 0 MB limit|over the 0\.1 MB limit|MB limit"):
        load_tensors((tmp_path / "big.pt").read_bytes())
    one_line_error(capsys, ["prune", "--model", "mlp", "--epochs", "1", "--sparsity", "0.5", "--weights",
                            str(tmp_path / "big.pt")], r"big\.pt.*MB limit")


class RunsCode:
    """Unpickling this calls ``open(marker, "w")``: a file appears if the pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, protocol, capsys):
    marker = tmp_path / "code-ran"
    content = file_bytes({"fc1.weight": RunsCode(str(marker))}, protocol=protocol)
    with pytest.raises(pickle.UnpicklingError):  # the oracle: a plain unpickler would run it...
        torch.load(io.BytesIO(content), weights_only=True)
    assert not marker.exists()
    with pytest.raises(BadInputError, match=r"refused: it is not a file of plain tensors.*builtins\.open|refused"):
        use_weights(MLP, content)
    assert not marker.exists()
    (tmp_path / "evil.pt").write_bytes(content)
    one_line_error(capsys, ["prune", "--model", "mlp", "--epochs", "1", "--sparsity", "0.5", "--weights",
                            str(tmp_path / "evil.pt")], r"refused")
    assert not marker.exists()
    pickle.loads(content)  # ...as this shows: the same bytes, unpickled without the guard, do run code
    assert marker.exists()


# --- 3. training faults ---

def test_a_diverging_training_method_names_the_cause_and_caches_nothing(mlp, fresh_cache):
    method = get_method("dns")
    settings = {**method.settings({"epochs": 1}), "lr": 1e6}  # beyond the declared range on purpose
    with pytest.raises(TrainingDivergedError, match=r"diverged.*loss became (nan|inf)"):
        run_training_method(MLP, method, None, settings, dense=mlp.model)
    assert not training_run_path(MLP, method, None, settings).exists()


def test_a_diverging_dense_training_is_one_line_in_the_cli(fresh_cache, capsys):
    one_line_error(capsys, ["prune", "--model", "mlp", "--epochs", "1", "--lr", "1e9", "--sparsity", "0.5"],
                   r"diverged.*learning rate")
    assert not any(path.is_file() for path in fresh_cache.rglob("*"))


# --- 4. the cache ---

def test_least_recently_used_entries_are_evicted_past_the_cap(fresh_cache, monkeypatch):
    monkeypatch.setenv("PRUNING_CACHE_MAX_MB", str(2.5 * 400_000 / 2**20))  # room for two 400 kB entries
    paths = [fresh_cache / "runs" / f"{index}.pt" for index in range(3)]
    cache.save_entry({"x": torch.zeros(100_000)}, paths[0])
    cache.save_entry({"x": torch.ones(100_000)}, paths[1])
    os.utime(paths[0], (1, 1)), os.utime(paths[1], (2, 2))  # both old, 1 used before 0...
    assert cache.load_entry(paths[0]) is not None  # ...until 0 is read again: now 1 is the least recent
    cache.save_entry({"x": torch.full((100_000,), 2.0)}, paths[2])
    assert paths[0].exists() and not paths[1].exists() and paths[2].exists()
    assert cache.usage().bytes <= cache.max_bytes()
    assert cache.clear() == 2 and cache.usage().files == 0


def test_evicted_uploaded_weights_give_a_clear_message(mlp, fresh_cache):
    uploaded = use_weights(MLP, file_bytes(mlp.model.state_dict()))
    cache.clear()
    with pytest.raises(BadInputError, match=r"no longer in the cache"):
        train_dense(uploaded)


def _write_repeatedly(path, value, times):
    for _ in range(times):
        cache.save_entry({"value": torch.full((200_000,), float(value)), "check": value}, path)


def test_two_processes_writing_one_entry_never_leave_a_broken_file(fresh_cache):
    path = fresh_cache / "dense" / "shared.pt"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_repeatedly, args=(path, value, 30)) for value in (1, 2)]
    for writer in writers:
        writer.start()
    seen = set()
    while any(writer.is_alive() for writer in writers):
        entry = cache.load_entry(path)
        if entry is not None:  # absent before the first rename; afterwards always one whole entry
            assert torch.all(entry["value"] == entry["check"])
            seen.add(entry["check"])
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    final = cache.load_entry(path)
    assert final["check"] in (1, 2) and torch.all(final["value"] == final["check"])
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_the_app_shows_the_cache_against_its_cap(lenet5, fresh_cache):
    cache.save_entry({"x": torch.zeros(1000)}, fresh_cache / "runs" / "entry.pt")
    at = start()  # the dense model comes from the app's memory; the disk cache is the fresh one
    assert any(re.search(r"MB in 1 files \(cap 2048 MB", caption.value) for caption in at.sidebar.caption)
    assert at.sidebar.button(key="clear_cache")  # clicked in the browser test: AppTest cannot rerun the sidebar


# --- 5. concurrent sessions ---

def test_threads_pruning_one_dense_model_each_get_their_own_result(mlp):
    data = MLP.load_data()
    before = state_of(mlp.model)
    cases = [(method, sparsity) for method in ("magnitude", "snip", "random") for sparsity in (0.3, 0.6, 0.9)]
    with ThreadPoolExecutor(max_workers=1) as pool:  # one at a time, in a worker thread like the others
        expected = {case: pool.submit(prune_model, mlp.model, data, *case, seed=0).result().mask for case in cases}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(cases, pool.map(lambda case: prune_model(mlp.model, data, *case, seed=0), cases)))
    for case, result in results.items():
        assert same(dict(result.mask), dict(expected[case])), case
        assert result.stats.sparsity == pytest.approx(case[1], abs=1e-6)
    assert same(state_of(mlp.model), before)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_app_sessions_pruning_at_once_keep_their_own_settings(lenet5):
    first, second = start(), start()
    cached = _digest(cached_dense_path(LENET5))
    before = state_of(lenet5.model)
    first.slider(key="sparsity").set_value(0.5)
    second.slider(key="sparsity").set_value(0.95)
    barrier = threading.Barrier(2)

    def run(at):
        barrier.wait()
        return at.run()

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(run, (first, second)))
    assert not first.exception and not second.exception
    assert metric(first, "Sparsity achieved") == "50.00%" and metric(second, "Sparsity achieved") == "95.00%"
    assert metric(first, "Dense accuracy") == metric(second, "Dense accuracy")
    assert _digest(cached_dense_path(LENET5)) == cached
    assert same(state_of(train_dense(LENET5).model), before)


def test_uploaded_weights_in_one_session_do_not_leak_into_another(mlp):
    uploaded = use_weights(MLP, file_bytes(mlp.model.state_dict()))
    assert dataclasses.replace(uploaded, weights=None) == MLP
    assert train_dense(MLP).from_cache and cached_dense_path(MLP).exists()


def test_sessions_opening_an_untrained_model_at_once_train_it_once(fresh_cache):
    experiment = dataclasses.replace(MLP, seed=7)
    barrier = threading.Barrier(2)

    def open_app(_):
        barrier.wait()
        return start(wait_for_sweeps=False, model="mlp", epochs=1, seed=7)  # the first run, with its training status

    with ThreadPoolExecutor(max_workers=2) as pool:
        sessions = list(pool.map(open_app, range(2)))
    assert all(not at.exception for at in sessions)
    assert metric(sessions[0], "Dense accuracy") == metric(sessions[1], "Dense accuracy")
    trained = [at for at in sessions if any("Trained and cached" in status.label for status in at.status)]
    assert len(trained) == 1, "both sessions trained the model"
    assert [path.name for path in (fresh_cache / "dense").iterdir()] == [cached_dense_path(experiment).name]


def test_scores_that_are_not_finite_are_refused_not_ranked():
    from pruning.selection import mask_from_scores

    with pytest.raises(BadInputError, match=r"scores of a are NaN or infinite"):
        mask_from_scores({"a": torch.tensor([math.nan, math.nan, 0.0])}, 0.5)
    # a 1x1 layer is a single block whatever the block size: not refused
    mask = mask_from_scores({"a": torch.ones(1, 1), "b": torch.rand(8, 8)}, 0.5, granularity="block", block_size=2)
    assert mask["a"].all()


def test_a_damaged_stored_upload_is_dropped_and_stored_again_on_the_next_use(mlp, fresh_cache):
    from pruning.weights import uploads_path

    content = file_bytes(mlp.model.state_dict())
    uploaded = use_weights(MLP, content)
    uploads_path(MLP.model, uploaded.weights).write_bytes(b"truncated")
    with pytest.raises(BadInputError, match=r"no longer in the cache"):
        train_dense(uploaded)
    assert use_weights(MLP, content) == uploaded
    assert same(state_of(train_dense(uploaded).model), state_of(mlp.model))
