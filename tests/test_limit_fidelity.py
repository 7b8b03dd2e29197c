"""The limit paper's recipe: the streamed whole-split Hessian, the L1 recipes and their presets, the
L1 objective per epoch, the tolerance of the actual limit."""

import pytest
import torch
from torch import nn

from pruning.analysis.hessian import loss_hessian, streamed_loss_hessian
from pruning.analysis.limit import LimitSettings, actual_limit, fundamental_limit
from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.methods.lomp import PAPER_L1_EPOCHS, L1Recipe, l1_recipe, l1_trained
from pruning.registry import get_method
from pruning.train import TrainConfig

TINY = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))


def tiny_problem(samples: int = 10, seed: int = 0):
    """A float64 two-layer tanh network (22 weights) and a few labelled points: small enough for
    the exact Hessian of torch.autograd.functional.hessian."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    x = torch.randn(samples, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 2, (samples,), generator=generator)
    return model, x, y


def exact_hessian(model, x, y, names):
    """The full Hessian of the mean cross-entropy in the flattened ``names``, from autograd."""
    parameters = dict(model.named_parameters())
    shapes = [parameters[name].shape for name in names]
    sizes = [parameters[name].numel() for name in names]

    def loss(flat):
        tensors = {**parameters, **{name: part.view(shape) for name, part, shape in zip(names, flat.split(sizes), shapes)}}
        return nn.functional.cross_entropy(torch.func.functional_call(model, tensors, (x,)), y)

    flat = torch.cat([parameters[name].detach().reshape(-1) for name in names])
    return torch.autograd.functional.hessian(loss, flat)


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 10, 64])
def test_the_streamed_product_is_the_whole_batch_product_and_the_exact_hessian_times_v(chunk_size):
    model, x, y = tiny_problem(samples=10)
    names = ["0.weight", "2.weight"]
    streamed = streamed_loss_hessian(model, x, y, chunk_size, names=names)
    in_memory = loss_hessian(model, x, y, names=names)
    exact = exact_hessian(model, x, y, names)
    assert streamed.size == in_memory.size == exact.shape[0] == 20
    for seed in range(3):
        v = torch.randn(streamed.size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert torch.allclose(streamed(v), in_memory(v), rtol=1e-10, atol=1e-12)
        assert torch.allclose(streamed(v), exact @ v, rtol=1e-10, atol=1e-12)


def test_a_last_partial_chunk_weighs_what_it_holds():
    """10 samples in chunks of 4: 4, 4 and 2. The plain mean of the three chunk means is another
    matrix (the last chunk would count double); the size-weighted sum is the whole batch's."""
    model, x, y = tiny_problem(samples=10, seed=1)
    names = ["0.weight", "2.weight"]
    v = torch.randn(20, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    chunks = [exact_hessian(model, x[i:i + 4], y[i:i + 4], names) @ v for i in (0, 4, 8)]
    weighted = (4 * chunks[0] + 4 * chunks[1] + 2 * chunks[2]) / 10
    unweighted = sum(chunks) / 3
    streamed = streamed_loss_hessian(model, x, y, 4, names=names)(v)
    assert torch.allclose(streamed, weighted, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(streamed, unweighted, rtol=1e-6, atol=1e-8), "the test must be able to tell them apart"
    assert torch.allclose(streamed, exact_hessian(model, x, y, names) @ v, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError):
        streamed_loss_hessian(model, x, y, 0, names=names)


def test_the_streamed_product_leaves_the_model_as_it_was():
    model, x, y = tiny_problem()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.train()
    hessian = streamed_loss_hessian(model, x, y, 3, names=["0.weight"])
    hessian(torch.ones(hessian.size, dtype=torch.float64))
    assert model.training and all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_the_presets_resolve_to_their_documented_recipes():
    assert PAPER_L1_EPOCHS == 200
    assert l1_recipe(TINY, "paper") == L1Recipe(epochs=200, lr=0.01, momentum=0.9, batch_size=128,
                                                schedule="constant", penalise_biases=True)
    assert l1_recipe(TINY, "paper", 7).epochs == 7
    config = TINY.train
    assert l1_recipe(TINY, "quick") == l1_recipe(TINY) == L1Recipe(config.epochs, config.lr, config.momentum,
                                                                    config.batch_size, "cosine", False)
    with pytest.raises(BadInputError):
        l1_recipe(TINY, "faithful")
    # The lomp method: quick by default; l1_epochs only matters with the paper recipe.
    lomp = get_method("lomp")
    assert lomp.settings()["preset"] == "quick" and lomp.settings()["l1"] == 5e-5
    assert lomp.settings({"l1_epochs": "3"})["l1_epochs"] == PAPER_L1_EPOCHS
    assert lomp.settings({"preset": "paper", "l1_epochs": "3"})["l1_epochs"] == 3
    # The limit analysis: the paper preset sweeps 1,000 fractions with 128 Lanczos steps unless told otherwise.
    quick, paper = LimitSettings(), LimitSettings(preset="paper")
    assert (quick.grid_step, quick.lanczos_steps, quick.hessian_samples, quick.hessian_batch) == (0.01, 100, 1000, 128)
    assert (paper.grid_step, paper.lanczos_steps, paper.l1_epochs, paper.tolerance) == (0.001, 128, 200, 0.0)
    assert paper.hessian_samples == 0, "paper: the whole training split"
    assert LimitSettings.from_pairs({"preset": "paper", "grid_step": "0.02"}).grid_step == 0.02
    assert LimitSettings(l1_epochs=5) == LimitSettings(), "quick trains the experiment's epochs: one key"
    for pairs in ({"preset": "x"}, {"l1_epochs": "2.5"}, {"hessian_samples": "-1"}, {"tolerance": "1"},
                  {"hessian_batch": "0"}):
        with pytest.raises(BadInputError):
            LimitSettings.from_pairs(pairs)


def test_the_paper_recipe_trains_at_a_constant_rate_and_records_the_l1_objective(one_thread, fresh_cache):
    recipe = l1_recipe(TINY, "paper", 2)
    trained = l1_trained(TINY, 1e-3, recipe=recipe)
    assert [row["epoch"] for row in trained.history] == [1, 2]
    # The last row's objective, recomputed independently at the final weights over the whole training split.
    model, data = trained.model, TINY.load_data()
    with torch.no_grad():
        cross_entropy = float(nn.functional.cross_entropy(model(data.x_train), data.y_train))
    norm = sum(float(parameter.detach().abs().sum()) for parameter in model.parameters())  # weights and biases
    last = trained.history[-1]
    assert last["cross_entropy"] == pytest.approx(cross_entropy, rel=1e-5)
    assert last["l1_norm"] == pytest.approx(norm, rel=1e-5)
    assert last["l1_objective"] == pytest.approx(cross_entropy + 1e-3 * norm, rel=1e-5)
    # A constant lr 0.01, momentum 0.9, batch 128: replayed by hand, the same weights.
    replay = TINY.build_model()
    optimizer = torch.optim.SGD(replay.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(TINY.seed)
    for _ in range(2):
        for index in torch.randperm(len(data.y_train), generator=generator, device="cpu").split(128):
            loss = nn.functional.cross_entropy(replay(data.x_train[index]), data.y_train[index])
            loss = loss + 1e-3 * sum(parameter.abs().sum() for parameter in replay.parameters())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for (name, mine), theirs in zip(model.state_dict().items(), replay.state_dict().values()):
        assert torch.allclose(mine, theirs, atol=1e-6), name
    # The quick recipe is another model, cached under the key it had before recipes existed.
    first = next(iter(model.state_dict()))
    assert not torch.equal(l1_trained(TINY, 1e-3).model.state_dict()[first], model.state_dict()[first])


def test_the_actual_limit_tolerance():
    fractions, accuracies = [0.0, 0.1, 0.2, 0.3, 0.4], [0.9, 0.9, 0.895, 0.89, 0.5]
    assert actual_limit(fractions, accuracies, 0.9) == 0.1
    assert actual_limit(fractions, accuracies, 0.9, tolerance=0.005) == 0.2
    assert actual_limit(fractions, accuracies, 0.9, tolerance=0.01) == 0.3


def test_the_limit_takes_the_hessian_over_the_whole_training_split(one_thread, fresh_cache):
    settings = LimitSettings(preset="paper", l1_epochs=1, lanczos_steps=6, row_probes=2, grid_step=0.1, bins=200,
                             tolerance=0.01)
    result = fundamental_limit(TINY, settings, use_cache=False)
    data = TINY.load_data()
    assert result.details["hessian_samples"] == len(data.y_train) and result.details["test_samples"] == len(data.y_test)
    assert result.details["l1_recipe"]["schedule"] == "constant" and len(result.details["l1_history"]) == 1
    assert "l1_objective" in result.details["l1_history"][0]
    assert result.actual == actual_limit(result.fractions, result.accuracy, result.dense_accuracy, 0.01)
    drawn = fundamental_limit(TINY, LimitSettings(**{**settings.to_dict(), "hessian_samples": 300}), use_cache=False)
    assert drawn.details["hessian_samples"] == 300 and drawn.actual == result.actual


def test_the_paper_recipe_and_the_streamed_limit_under_the_meta_detector(one_thread, tmp_path, monkeypatch):
    """A tensor made without a device would be a meta tensor and fail when it meets the CPU ones:
    under ``torch.device("meta")`` the paper recipe and the whole-split limit give exactly the CPU numbers."""
    settings = LimitSettings(preset="paper", l1_epochs=1, lanczos_steps=5, row_probes=2, grid_step=0.25, bins=100)
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path / "meta"))
    with torch.device("meta"):
        on_meta = fundamental_limit(TINY, settings, use_cache=False)
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path / "cpu"))
    assert on_meta.to_json() == fundamental_limit(TINY, settings, use_cache=False).to_json()
