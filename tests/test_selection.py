import copy

import pytest
import torch
from torch.nn.utils import prune

from pruning.criteria import magnitude_scores, random_scores
from pruning.errors import BadInputError
from pruning.methods.base import PruneContext
from pruning.models import build_model, prunable_weight_names
from pruning.selection import kth_smallest, mask_from_scores

# Masks against torch.nn.utils.prune (global_unstructured, l1_unstructured) and the sparsity
# check are property tests in test_properties.py, over any layer shapes and sparsities; one
# end-to-end case here keeps real models (large tensors: kth_smallest's sampled path) covered.


def modules_of(model, names):
    modules = dict(model.named_modules())
    return [(modules[name.rsplit(".", 1)[0]], "weight") for name in names]


@pytest.mark.parametrize("model_name, shape", [("lenet5", (1, 28, 28)), ("resnet20", (3, 32, 32))])
def test_global_magnitude_on_real_models_equals_torch_global_unstructured(model_name, shape):
    torch.manual_seed(0)
    model = build_model(model_name, shape, 10)
    names = prunable_weight_names(model)
    ours = mask_from_scores(magnitude_scores(model, names, None), 0.99, "global", allow_empty_layers=True)
    oracle_model = copy.deepcopy(model)
    prune.global_unstructured(modules_of(oracle_model, names), pruning_method=prune.L1Unstructured, amount=0.99)
    for name, (module, _) in zip(names, modules_of(oracle_model, names)):
        assert torch.equal(ours[name], module.weight_mask.bool()), name
    # global scope really is global: layers end up with different sparsities
    assert len({round(value, 3) for value in ours.layer_sparsity().values()}) > 1


def test_ties_still_prune_exactly_the_requested_count():
    scores = {"a": torch.ones(10), "b": torch.ones(7)}
    mask = mask_from_scores(scores, 0.5, "global")
    assert mask.num_pruned == round(0.5 * 17)
    assert mask["a"][:8].logical_not().all(), "ties are pruned first-position first"


def test_kth_smallest_is_exact_on_large_tensors_including_the_fallback():
    values = torch.randn(3_000_000, generator=torch.Generator().manual_seed(0))
    for k in (1, 17, 1_500_000, 2_999_999, 3_000_000):
        assert kth_smallest(values, k) == torch.kthvalue(values, k).values
    tied = torch.cat([torch.zeros(2_000_000), torch.arange(1_000_000, dtype=torch.float)])
    for k in (1_999_999, 2_000_001, 2_500_000):
        assert kth_smallest(tied, k) == torch.kthvalue(tied, k).values


def test_random_masks_are_independent_of_the_magnitudes():
    """(Seeded and deterministic: the property test of random_scores in test_properties.py.)"""
    torch.manual_seed(0)
    model = build_model("mlp", (1, 28, 28), 10)
    names = prunable_weight_names(model)
    first = mask_from_scores(random_scores(model, names, PruneContext(None, seed=3)), 0.5)
    magnitude = mask_from_scores(magnitude_scores(model, names, None), 0.5)
    random_keep, magnitude_keep = first["fc1.weight"], magnitude["fc1.weight"]
    overlap = (random_keep & magnitude_keep).float().mean().item()
    independent = random_keep.float().mean().item() * magnitude_keep.float().mean().item()
    assert overlap == pytest.approx(independent, abs=0.01), "a random mask is independent of the magnitudes"


def test_unknown_scope_is_rejected():
    with pytest.raises(BadInputError, match="scope"):
        mask_from_scores({"a": torch.ones(3)}, 0.5, "per-channel")


def test_global_scope_never_empties_a_layer_unless_asked():
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 28, 28), 10)  # at init fc1's weights are the smallest
    scores = magnitude_scores(model, prunable_weight_names(model), None)
    free = mask_from_scores(scores, 0.99, allow_empty_layers=True)
    assert free.layer_sparsity()["fc1.weight"] == 1.0
    guarded = mask_from_scores(scores, 0.99)
    assert int(guarded["fc1.weight"].sum()) == 1, "the default keeps the layer's best weight"
    assert guarded.num_pruned == free.num_pruned
    capped = mask_from_scores(scores, 0.9, max_layer_sparsity=0.95)
    assert max(capped.layer_sparsity().values()) <= 0.95 + 1e-9
    assert capped.sparsity() == pytest.approx(0.9, abs=1e-5)
    with pytest.raises(BadInputError, match="per-layer cap"):
        mask_from_scores(scores, 0.9, max_layer_sparsity=0.5)


def test_structured_masks_remove_whole_neurons_and_filters():
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 28, 28), 10)
    names = prunable_weight_names(model, include_output=False)
    mask = mask_from_scores(magnitude_scores(model, names, None), 0.5, "layerwise", "structured", aggregate="l2")
    for name in names:
        rows = mask[name].flatten(1)
        assert torch.equal(rows.all(1), rows.any(1)), f"{name}: every filter/neuron all kept or all pruned"
        assert int((~rows.all(1)).sum()) == round(0.5 * rows.shape[0])
    # the filters kept are those with the largest L2 norm
    norms = model.conv2.weight.detach().flatten(1).norm(dim=1)
    kept = mask["conv2.weight"].flatten(1).all(1)
    assert norms[kept].min() >= norms[~kept].max()


@pytest.mark.parametrize("block_size", [2, 3, 8])
def test_block_masks_are_whole_blocks_of_the_2d_kernel(block_size):
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 28, 28), 10)
    names = prunable_weight_names(model)
    mask = mask_from_scores(magnitude_scores(model, names, None), 0.6, "global", "block", block_size, aggregate="l2")
    for name in names:
        matrix = mask[name].flatten(1).T  # (in*kh*kw, out), as the blocks are laid out
        for row in range(0, matrix.shape[0], block_size):
            for col in range(0, matrix.shape[1], block_size):
                block = matrix[row : row + block_size, col : col + block_size]
                assert block.all() or not block.any(), f"{name} block at ({row}, {col}) is mixed"


def test_a_sparsity_that_rounds_to_every_weight_is_rejected():
    with pytest.raises(BadInputError, match="nothing would be left"):
        mask_from_scores({"a": torch.rand(10)}, 0.99, allow_empty_layers=True)
