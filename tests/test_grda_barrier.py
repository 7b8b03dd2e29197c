"""bench/grda_barrier.py's layer-matched magnitude baseline: per layer, as many weights (or
neurons/filters) pruned as a reference mask prunes there, the smallest |w| (or L2 norm) first.
Oracle: torch.nn.utils.prune's l1_unstructured / ln_structured(n=2, dim=0) with that count."""

import copy

import torch
from torch import nn
from torch.nn.utils import prune

from bench.grda_barrier import layer_matched_magnitude
from pruning.masks import Mask


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))


def random_reference(model: nn.Module, pruned: dict[str, int], rows: bool) -> Mask:
    """A mask pruning ``pruned[name]`` random weights (or whole dim-0 rows) of each layer."""
    generator = torch.Generator().manual_seed(1)
    weights = dict(model.named_parameters())
    masks = {}
    for name, count in pruned.items():
        shape = weights[name].shape
        size = shape[0] if rows else weights[name].numel()
        keep = torch.ones(size, dtype=torch.bool)
        keep[torch.randperm(size, generator=generator)[:count]] = False
        masks[name] = keep.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone() if rows else keep.view(shape)
    return Mask(masks)


def oracle(model: nn.Module, name: str, count: int, structured: bool) -> torch.Tensor:
    module = copy.deepcopy(model[int(name.split(".")[0])])
    if structured:
        prune.ln_structured(module, "weight", amount=count, n=2, dim=0)
    else:
        prune.l1_unstructured(module, "weight", amount=count)
    return module.weight_mask.bool()


def test_unstructured_counts_per_layer_match_torch_prune():
    model = tiny_model()
    counts = {"0.weight": 37, "3.weight": 200}
    mask = layer_matched_magnitude(model, random_reference(model, counts, rows=False), "unstructured")
    for name, count in counts.items():
        assert int((~mask[name]).sum()) == count
        assert torch.equal(mask[name], oracle(model, name, count, structured=False))


def test_structured_prunes_the_lowest_l2_rows_per_layer():
    model = tiny_model()
    counts = {"0.weight": 2, "3.weight": 3}
    mask = layer_matched_magnitude(model, random_reference(model, counts, rows=True), "structured")
    for name, count in counts.items():
        assert torch.equal(mask[name], oracle(model, name, count, structured=True))


def test_a_layer_the_reference_emptied_is_empty_and_the_others_untouched():
    model = tiny_model()
    reference = random_reference(model, {"0.weight": 6 * 2 * 3 * 3, "3.weight": 0}, rows=False)  # every conv weight
    mask = layer_matched_magnitude(model, reference, "unstructured")
    assert not mask["0.weight"].any() and mask["3.weight"].all()
