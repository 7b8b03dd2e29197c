"""N:M semi-structured masks (oracle: torch.ao.pruning's WeightNormSparsifier) and the Wanda
criterion (a layer worked by hand), with Wanda's per-row comparison."""

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.ao.pruning import WeightNormSparsifier

from pruning.experiment import Experiment, train_dense
from pruning.methods.base import PruneContext
from pruning.pipeline import prune_model
from pruning.registry import get_method
from pruning.selection import mask_from_scores
from pruning.train import TrainConfig

TINY = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))


@pytest.mark.parametrize("shape", [(6, 16), (32, 64), (3, 8)])
def test_magnitude_2_4_equals_torch_ao_weight_norm_sparsifier(shape):
    torch.manual_seed(sum(shape))
    model = nn.Sequential(nn.Linear(shape[1], shape[0]))
    oracle = copy.deepcopy(model)
    sparsifier = WeightNormSparsifier(sparsity_level=1.0, sparse_block_shape=(1, 4), zeros_per_block=2)
    sparsifier.prepare(oracle, [{"tensor_fqn": "0.weight"}])
    sparsifier.step()
    expected = oracle[0].parametrizations.weight[0].mask.bool()
    ours = mask_from_scores({"0.weight": model[0].weight.detach().abs()}, 0.5, granularity="nm", nm="2:4")["0.weight"]
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("pattern", ["1:4", "2:4", "4:8"])
def test_every_group_of_m_keeps_exactly_n_in_linear_and_conv_layers(pattern):
    n, m = map(int, pattern.split(":"))
    torch.manual_seed(1)
    scores = {"conv": torch.rand(5, 4, 3, 2), "linear": torch.rand(7, 16)}  # conv rows: 4 * 3 * 2 = 24 weights
    mask = mask_from_scores(scores, 0.9, granularity="nm", nm=pattern)
    for name, keep in mask.items():
        groups = keep.reshape(keep.shape[0], -1, m)
        assert bool((groups.sum(-1) == n).all()), name
        best = torch.topk(scores[name].reshape(keep.shape[0], -1, m), n, dim=-1).values.min(-1).values
        assert bool((scores[name].reshape(keep.shape[0], -1, m)[~groups] < best.unsqueeze(-1).expand_as(groups)[~groups]).all())


def test_layers_whose_rows_do_not_divide_into_m_stay_dense_and_are_listed():
    dense = train_dense(TINY).model
    result = prune_model(dense, TINY.load_data(), "magnitude", 0.5, {"granularity": "nm", "nm_pattern": "4:8"})
    rows = {name: keep.flatten(1).shape[1] for name, keep in result.mask.items()}
    expected_dense = tuple(name for name, length in rows.items() if length % 8)
    assert expected_dense, "the mlp has a layer whose input size is not a multiple of 8"
    assert result.details.left_dense == expected_dense
    for name, keep in result.mask.items():
        assert bool(keep.all()) if name in expected_dense else float(keep.float().mean()) == 0.5


def hand_worked_layer():
    """W = [[.1 .2 .3 .4], [4 3 2 1]] and inputs whose feature norms are [3, 1, 1, 0.5] (3 samples), so
    the Wanda scores are [[.3 .2 .3 .2], [12 3 2 .5]]."""
    layer = nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 0.2, 0.3, 0.4], [4.0, 3.0, 2.0, 1.0]]))
    x = torch.tensor([[3.0, 1.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    data = SimpleNamespace(x_train=x, y_train=torch.tensor([0, 1, 2]), num_classes=3)
    return nn.Sequential(layer), data


def test_wanda_scores_a_hand_worked_layer():
    model, data = hand_worked_layer()
    method = get_method("wanda")
    settings = method.settings({"samples_per_class": 1})
    scores = method.scores(model, settings, PruneContext(data=data, samples_per_class=1))
    assert torch.allclose(scores["0.weight"], torch.tensor([[0.3, 0.2, 0.3, 0.2], [12.0, 3.0, 2.0, 0.5]]))


def test_wanda_compares_per_row_as_the_paper_or_per_layer():
    model, data = hand_worked_layer()
    method = get_method("wanda")
    context = PruneContext(data=data, samples_per_class=1)
    by_row = method.prune(model, 0.5, method.settings({"samples_per_class": 1, "scope": "layerwise"}), context).mask
    assert by_row["0.weight"].int().tolist() == [[1, 0, 1, 0], [1, 1, 0, 0]]  # each row loses its 2 lowest
    by_layer = method.prune(model, 0.5, method.settings({"samples_per_class": 1, "scope": "layerwise",
                                                         "comparison": "layer"}), context).mask
    assert by_layer["0.weight"].int().tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]  # row 0's scores are all lowest


def test_per_row_comparison_spreads_each_layers_count_evenly_over_its_rows():
    dense = train_dense(TINY).model
    result = prune_model(dense, TINY.load_data(), "wanda", 0.7, {"scope": "global"})
    for name, keep in result.mask.items():
        pruned_per_row = (~keep).flatten(1).sum(1)
        assert int(pruned_per_row.max() - pruned_per_row.min()) <= 1, name
    assert result.mask.num_pruned == round(0.7 * result.mask.num_weights)
