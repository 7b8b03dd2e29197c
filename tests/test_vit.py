"""vit-tiny and the AdamW + warm-up training option: the model fits both image sizes, its attention is
made of prunable Linear layers, the learning-rate schedule is the one written out by hand, AdamW's
weight decay is decoupled, and the dense cache keys of the models trained before these settings
existed do not change."""

import hashlib
import json
import math

import pytest
import torch
from torch import nn

from pruning.data import load_dataset
from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.models import MODELS, build_model, output_layer_name, prunable_weight_names
from pruning.pipeline import prune_model
from pruning.train import TrainConfig, cosine_decay, evaluate, fit, make_optimizer, random_shift, warmup_cosine
from pruning.vit import SelfAttention, attention_layers

SHAPES = {"mnist-5k": (1, 28, 28), "digits": (1, 8, 8)}


@pytest.mark.parametrize("dataset", list(SHAPES))
def test_vit_builds_for_28x28_and_8x8_inputs_as_16_tokens(dataset):
    model = build_model("vit-tiny", SHAPES[dataset], 10)
    assert model.patch == {"mnist-5k": (7, 7), "digits": (2, 2)}[dataset]
    x = torch.randn(3, *SHAPES[dataset])
    assert model.patches(x).shape == (3, 16, model.patch[0] * model.patch[1])
    assert model(x).shape == (3, 10)
    # the patches are the image's 7x7 (2x2) tiles, row by row: token 1 is the second tile of the first row
    ph, pw = model.patch
    assert torch.equal(model.patches(x)[:, 1], x[:, 0, :ph, pw:2 * pw].reshape(3, -1))


def test_attention_is_linear_layers_that_are_prunable_and_the_head_is_the_output_layer():
    model = build_model("vit-tiny", SHAPES["digits"], 10)
    attentions = attention_layers(model)
    assert len(attentions) == 4 and not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    names = prunable_weight_names(model)
    for prefix, attention in attentions.items():
        assert isinstance(attention, SelfAttention) and attention.num_heads == 4 and attention.head_dim == 16
        for part in ("q", "k", "v", "proj"):
            assert isinstance(getattr(attention, part), nn.Linear)
            assert f"{prefix}.{part}.weight" in names
    assert output_layer_name(model) == "head" and names[-1] == "head.weight"
    assert prunable_weight_names(model, include_output=False)[-1] == "blocks.3.fc2.weight"
    assert sum(p.numel() for p in model.parameters()) == 136_010


def test_an_image_size_the_patches_do_not_divide_is_a_clear_error():
    with pytest.raises(BadInputError, match="multiples of 4"):
        build_model("vit-tiny", (1, 30, 30), 10)


def test_magnitude_pruning_at_half_runs_through_the_pipeline(one_thread):
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("vit-tiny", data.input_shape, data.num_classes)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    result = prune_model(model, data, "magnitude", 0.5, {"scope": "layerwise"})
    assert result.mask.sparsity() == pytest.approx(0.5, abs=0.01)
    for name in ("blocks.0.attention.q.weight", "blocks.2.attention.proj.weight", "blocks.3.fc1.weight"):
        assert result.mask.layer_sparsity()[name] == pytest.approx(0.5, abs=0.01)
        assert float(result.pruned_tensors[name][~result.mask[name]].abs().max()) == 0.0
    assert 0.0 <= result.pruned.accuracy <= 1.0 and result.stats.params_nonzero < result.stats.params_total
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items()), "the model is untouched"


def hand_schedule(lr: float, total: int, warmup: int) -> list[float]:
    """The rate each step trains at: a linear ramp lr/W, 2lr/W, ..., lr, then half a cosine to zero."""
    ramp = [lr * (step + 1) / warmup for step in range(warmup)]
    return ramp + [lr * 0.5 * (1 + math.cos(math.pi * k / (total - warmup))) for k in range(total - warmup)]


def rates(scheduler, steps: int) -> list[float]:
    seen = []
    for _ in range(steps):
        seen.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return seen


def test_warmup_ramps_linearly_then_decays_along_the_cosine():
    layer = nn.Linear(2, 2)
    optimizer = make_optimizer(layer, TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05))
    got = rates(warmup_cosine(optimizer, total_steps=10, warmup_steps=4), 10)
    assert got == pytest.approx(hand_schedule(1e-3, 10, 4), rel=1e-9, abs=1e-15)
    assert got[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3]) and got[4] == pytest.approx(1e-3)
    # a warm-up longer than half the run is cut to half of it (a short fine-tuning)
    optimizer = make_optimizer(layer, TrainConfig(lr=0.1))
    assert rates(warmup_cosine(optimizer, 6, 100), 6) == pytest.approx(hand_schedule(0.1, 6, 3))


def test_without_warmup_the_schedule_is_the_plain_cosine_decay():
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    plain = rates(cosine_decay(make_optimizer(first, TrainConfig()), 7), 7)
    assert rates(warmup_cosine(make_optimizer(second, TrainConfig()), 7, 0), 7) == plain
    assert plain == pytest.approx([0.05 * 0.5 * (1 + math.cos(math.pi * k / 7)) for k in range(7)])


def test_adamw_decays_the_weights_apart_from_the_gradient():
    """With a zero gradient Adam's step is zero, so AdamW moves w to exactly w (1 - lr * decay);
    Adam's L2 decay would instead feed decay * w into the adaptive step (about lr per weight)."""
    layer = nn.Linear(3, 2)
    start = layer.weight.detach().clone()
    optimizer = make_optimizer(layer, TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.1))
    assert type(optimizer) is torch.optim.AdamW
    for parameter in layer.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    assert torch.allclose(layer.weight, start * (1 - 0.01 * 0.1), rtol=0, atol=1e-7)
    adam = make_optimizer(nn.Linear(3, 2), TrainConfig(optimizer="adam", lr=0.01, weight_decay=0.1))
    assert type(adam) is torch.optim.Adam


def test_the_settings_parse_from_the_cli_and_bad_values_are_refused():
    config = TrainConfig.from_settings({"optimizer": "adamw", "warmup_epochs": "2", "shift_pixels": "1"})
    assert (config.optimizer, config.warmup_epochs, config.shift_pixels) == ("adamw", 2, 1)
    with pytest.raises(BadInputError):
        TrainConfig.from_settings({"warmup_epochs": "-1"})
    with pytest.raises(BadInputError):
        TrainConfig(optimizer="lamb")


def old_key(experiment: Experiment) -> str:
    """The cache key as it was computed before warm-up and shifts existed: the six settings only."""
    train = {name: getattr(experiment.train, name)
             for name in ("epochs", "lr", "momentum", "weight_decay", "batch_size", "optimizer")}
    choices = {"dataset": experiment.dataset, "model": experiment.model, "imbalance": experiment.imbalance,
               "seed": experiment.seed, "train": train}
    return hashlib.sha256(json.dumps({"format": 1, **choices}, sort_keys=True).encode()).hexdigest()[:16]


def test_dense_cache_keys_of_existing_experiments_do_not_change():
    default = Experiment()
    assert default.key() == "4715ce6714a9e59d" == old_key(default)  # the key the default lenet5 model was cached under
    for experiment in (Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1, optimizer="adam")),
                       Experiment(model="resnet20", seed=3, train=TrainConfig(lr=0.1, batch_size=32))):
        assert experiment.key() == old_key(experiment)
    assert "warmup_epochs" not in default.to_dict()["train"]
    keys = {Experiment(train=TrainConfig(**settings)).key()
            for settings in ({}, {"warmup_epochs": 1}, {"shift_pixels": 1}, {"optimizer": "adamw"})}
    assert len(keys) == 4, "a new setting away from its default names a new model"


def test_random_shift_moves_each_image_by_at_most_the_given_pixels():
    x = torch.zeros(50, 1, 8, 8)
    x[:, 0, 4, 3] = 1.0
    moved = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and torch.equal(moved.sum((1, 2, 3)), x.sum((1, 2, 3)))
    where = torch.nonzero(moved[:, 0])[:, 1:] - torch.tensor([4, 3])
    assert int(where.abs().max()) == 2 and len({tuple(step) for step in where.tolist()}) > 10
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)


def test_a_short_adamw_warmup_training_on_digits_learns(one_thread):
    data = load_dataset("digits")
    config = TrainConfig(optimizer="adamw", lr=2e-3, weight_decay=0.05, warmup_epochs=1, epochs=3, shift_pixels=1)
    torch.manual_seed(0)
    model = build_model("vit-tiny", data.input_shape, data.num_classes)
    before = evaluate(model, data.x_test, data.y_test, data.num_classes).accuracy
    history = fit(model, data, config, seed=0)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["test_accuracy"] > max(0.4, before + 0.2), (before, history)  # chance is 0.1
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_the_registry_lists_vit_tiny_with_its_training_recipe():
    info = MODELS["vit-tiny"]
    assert "Transformer" in info.description
    assert TrainConfig(**info.recipe).optimizer == "adamw"
