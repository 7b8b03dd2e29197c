"""Property-based tests of masks and criteria: for any layer shapes and sparsity, not only the
few registry models the example tests use.

What ``pruning.selection.mask_from_scores`` promises, and so what is checked (``round`` is
Python's, as ``torch.nn.utils.prune`` counts; a group is a weight, a neuron/filter or a block):
- global scope prunes exactly ``round(s * N)`` of the N groups of all layers together, so the
  achieved group sparsity is within half a group of the target. Where that would prune every group,
  or break a layer's cap / keep-one rule, it raises ``BadInputError`` rather than prune another amount;
- layerwise scope prunes exactly ``min(round(s * n), n - protected)`` of each layer's n groups, with
  ``protected = max(ceil((1 - max_layer_sparsity) * n), 1)`` (0 instead of 1 when empty layers are
  allowed). Rounding is per layer, so the promise is per layer: within half a group of ``s * n``, or
  within one group where the keep-one rule binds (``round(s * n) == n``); the total may be off by up
  to one group per layer, not one overall.
For unstructured granularity these are the "within one weight" bounds. The other refusals
(``BadInputError``) checked for their reason: no prunable weights at all, a block as large as a
whole layer, a structured layer left without any neuron/filter.
"""

import copy
import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from pruning.criteria import magnitude_scores, random_scores
from pruning.data import Dataset
from pruning.errors import BadInputError
from pruning.masks import Mask, pruned_state_dict
from pruning.methods.base import PruneContext
from pruning.models import prunable_weight_names
from pruning.pipeline import prune_model
from pruning.selection import SAMPLE_SIZE, check_sparsity, group_scores, kth_smallest, mask_from_scores

FAST = settings(max_examples=300, deadline=None, database=None)
SLOW = settings(max_examples=40, deadline=None, database=None)  # each example builds, prunes and evaluates a network

# Edges first (0 prunes nothing, 0.99 nearly everything), then anything in between.
sparsities = st.one_of(st.sampled_from([0.0, 0.5, 0.99]), st.floats(0.0, 0.99, allow_nan=False))

# Linear (out, in) and Conv (out, in, kh, kw) weight shapes, small enough that edges are hit often.
weight_shapes = st.one_of(
    st.tuples(st.integers(1, 12), st.integers(1, 12)),
    st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),
)


@st.composite
def score_dicts(draw):
    """``{name: scores}`` for 0-4 layers of random shapes; scores either continuous (no ties) or
    drawn from a few integers (many ties, which selection breaks by position)."""
    shapes = draw(st.lists(weight_shapes, min_size=0, max_size=4))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    tied = draw(st.booleans())
    scores = {}
    for index, shape in enumerate(shapes):
        if tied:
            scores[f"layer{index}.weight"] = torch.randint(0, 3, shape, generator=generator).float()
        else:
            scores[f"layer{index}.weight"] = torch.rand(shape, generator=generator)
    return scores


@st.composite
def networks(draw):
    """A random Conv/Linear stack with its input shape and class count: 0-2 convs, 0-2 hidden
    Linear layers, then the output Linear layer; weights drawn from a seeded generator."""
    channels, side = draw(st.integers(1, 3)), draw(st.integers(2, 5))
    convs = draw(st.lists(st.tuples(st.integers(1, 5), st.sampled_from([1, 3])), max_size=2))
    hidden = draw(st.lists(st.integers(1, 12), max_size=2))
    classes = draw(st.integers(2, 4))
    layers, width = [], channels
    for out, kernel in convs:
        layers += [nn.Conv2d(width, out, kernel, padding=kernel // 2), nn.ReLU()]
        width = out
    layers.append(nn.Flatten())
    features = width * side * side
    for out in hidden:
        layers += [nn.Linear(features, out), nn.ReLU()]
        features = out
    layers.append(nn.Linear(features, classes))
    model = nn.Sequential(*layers)
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model, (channels, side, side), classes


def dataset_for(input_shape, classes) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    return Dataset(
        name="synthetic",
        x_train=torch.randn(4 * classes, *input_shape, generator=generator),
        y_train=torch.arange(4 * classes) % classes,
        x_test=torch.randn(3 * classes, *input_shape, generator=generator),
        y_test=torch.arange(3 * classes) % classes,
        class_names=tuple(str(label) for label in range(classes)),
    )


def groups_of(tensor, granularity, block_size):
    """Per group: how many of its entries are kept (for a mask) or how many it has (for ones)."""
    return group_scores(tensor.float(), granularity, block_size, "sum")


def protected_count(groups: int, max_layer_sparsity: float, allow_empty_layers: bool) -> int:
    return max(math.ceil((1.0 - max_layer_sparsity) * groups - 1e-9), 0 if allow_empty_layers else 1)


def bits(tensor):
    """The tensor's bytes as integers, so -0.0 != 0.0 and NaN == NaN: a bit-for-bit comparison."""
    return tensor.view(torch.int32) if tensor.dtype == torch.float32 else tensor


def assert_binary_and_shaped(mask, expected_shapes):
    assert isinstance(mask, Mask)
    assert list(mask) == list(expected_shapes)
    for name, entry in mask.items():
        assert entry.dtype == torch.bool, name
        assert tuple(entry.shape) == tuple(expected_shapes[name]), name


@FAST
@given(
    scores=score_dicts(),
    sparsity=sparsities,
    scope=st.sampled_from(["global", "layerwise"]),
    granularity=st.sampled_from(["unstructured", "structured", "block"]),
    block_size=st.integers(1, 5),
    max_layer_sparsity=st.one_of(st.just(1.0), st.floats(0.5, 1.0)),
    allow_empty_layers=st.booleans(),
)
def test_mask_prunes_the_promised_count_and_is_binary(
    scores, sparsity, scope, granularity, block_size, max_layer_sparsity, allow_empty_layers
):
    """Global: exactly round(s * groups) pruned, else BadInputError; layerwise: each layer exactly
    min(round(s * n), n - protected). Masks are bool, weight-shaped, whole groups, caps respected.
    Refusals are checked to have their documented reason."""
    call = dict(scope=scope, granularity=granularity, block_size=block_size,
                max_layer_sparsity=max_layer_sparsity, allow_empty_layers=allow_empty_layers)
    if not scores:
        with pytest.raises(BadInputError, match="no prunable weights"):
            mask_from_scores(scores, sparsity, **call)
        return
    sizes = {name: groups_of(torch.ones(score.shape), granularity, block_size) for name, score in scores.items()}
    counts = {name: size.numel() for name, size in sizes.items()}
    protected = {name: protected_count(n, max_layer_sparsity, allow_empty_layers) for name, n in counts.items()}
    total = sum(counts.values())
    amount = round(sparsity * total)
    infeasible = scope == "global" and (amount >= total or amount > total - sum(protected.values()))
    # Documented refusals: a block as large as a whole layer (of more than one weight); a structured layer left without neurons/filters.
    whole_layer_block = granularity == "block" and any(
        block_size >= rows and block_size >= cols and rows * cols > 1
        for rows, cols in (score.flatten(1).T.shape for score in scores.values())
    )
    may_empty = granularity == "structured" and 0 in protected.values()
    try:
        mask = mask_from_scores(scores, sparsity, **call)
    except BadInputError as error:
        assert infeasible or whole_layer_block or (may_empty and "every neuron" in str(error)), str(error)
        return
    assert not infeasible and not whole_layer_block, "an infeasible request was not refused"
    assert_binary_and_shaped(mask, {name: score.shape for name, score in scores.items()})
    pruned_groups = {}
    for name, entry in mask.items():
        kept = groups_of(entry, granularity, block_size)
        assert torch.all((kept == 0) | (kept == sizes[name])), f"{name}: a group is partly pruned"
        pruned_groups[name] = int(torch.count_nonzero(kept == 0))
        assert counts[name] - pruned_groups[name] >= protected[name], f"{name}: cap or keep-one rule broken"
    if scope == "global":
        assert sum(pruned_groups.values()) == amount
        assert abs(sum(pruned_groups.values()) - sparsity * total) <= 0.5
    else:
        for name, n in counts.items():
            assert pruned_groups[name] == min(round(sparsity * n), n - protected[name]), name
            if max_layer_sparsity == 1.0:
                assert abs(pruned_groups[name] - sparsity * n) <= 1.0, name
                if round(sparsity * n) < n or allow_empty_layers:
                    assert abs(pruned_groups[name] - sparsity * n) <= 0.5, name
    if granularity == "unstructured":
        assert mask.num_pruned == sum(pruned_groups.values())


@FAST
@given(scores=score_dicts(), first=sparsities, second=sparsities, scope=st.sampled_from(["global", "layerwise"]))
def test_what_is_pruned_stays_pruned_when_sparsity_grows(scores, first, second, scope):
    """Iterative schedules pass the last mask as ``previous``: raising the sparsity only removes more."""
    first, second = sorted((first, second))
    try:
        earlier = mask_from_scores(scores, first, scope, allow_empty_layers=True)
        later = mask_from_scores(scores, second, scope, allow_empty_layers=True, previous=earlier)
    except BadInputError:
        assume(False)  # global scope asked to prune every weight: covered by the count test
    for name in scores:
        assert not torch.any(later[name] & ~earlier[name]), f"{name}: a pruned weight came back"


@FAST
@given(values=st.lists(st.one_of(st.integers(-3, 3), st.sampled_from([0.5, -0.0]), st.floats(-3, 3, width=32)), min_size=1,
                       max_size=30))
def test_mask_accepts_only_0_1_and_stores_bool(values):
    """A mask entry is bool whatever 0/1 dtype it came in; any other value is refused, by name."""
    tensor = torch.tensor(values, dtype=torch.float32)
    if all(value in (0, 1) for value in values):
        mask = Mask({"w": tensor})
        assert mask["w"].dtype == torch.bool and torch.equal(mask["w"], tensor == 1)
    else:
        with pytest.raises(BadInputError, match="other than 0 and 1"):
            Mask({"w": tensor})


@SLOW
@given(
    network=networks(),
    sparsity=sparsities,
    method=st.sampled_from(["magnitude", "random"]),
    scope=st.sampled_from(["global", "layerwise"]),
    granularity=st.sampled_from(["unstructured", "structured", "block"]),
    block_size=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_pruning_never_changes_surviving_weights_and_round_trips(network, sparsity, method, scope, granularity,
                                                                  block_size, seed):
    """prune_model leaves the model untouched; its pruned state dict is the original times the
    mask bit for bit (biases and other tensors identical), and so is pruned_state_dict's; mask and
    state dict survive Mask.save/load (atomic: no temporary file left) and
    torch.save/torch.load(weights_only=True) unchanged, and the state dict loads strictly."""
    model, input_shape, classes = network
    data = dataset_for(input_shape, classes)
    original = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    overrides = {"scope": scope, "granularity": granularity, "block_size": block_size}
    names = prunable_weight_names(model, include_output=granularity != "structured")
    if not names:  # structured pruning leaves the output layer whole: a lone output layer has nothing to prune
        with pytest.raises(BadInputError, match="no prunable weights"):
            prune_model(model, data, method, sparsity, overrides, seed=seed)
        return
    try:
        result = prune_model(model, data, method, sparsity, overrides, seed=seed)
    except BadInputError:
        assume(False)  # infeasible target (checked in the count test)
    for name, tensor in model.state_dict().items():
        assert torch.equal(bits(tensor), bits(original[name])), f"{name}: the dense model was modified"
    mask = result.mask
    assert_binary_and_shaped(mask, {name: original[name].shape for name in names})
    assert result.stats.sparsity == mask.sparsity()
    state = result.pruned_state_dict(model)
    assert list(state) == list(original)
    for name, tensor in state.items():
        expected = original[name] * mask[name] if name in mask else original[name]
        assert torch.equal(bits(tensor), bits(expected)), f"{name}: pruned tensor is not original x mask"
    plain = pruned_state_dict(model, mask)  # plain: the model's own keys, no weight_orig / weight_mask
    assert list(plain) == list(state) and all(torch.equal(bits(plain[name]), bits(state[name])) for name in state)

    with tempfile.TemporaryDirectory() as folder:
        mask.save(Path(folder) / "mask.pt")
        assert [path.name for path in Path(folder).iterdir()] == ["mask.pt"], "atomic save leaves no temporary file"
        loaded_mask = Mask.load(Path(folder) / "mask.pt")
        torch.save(state, Path(folder) / "model.pt")
        loaded_state = torch.load(Path(folder) / "model.pt", weights_only=True)
    assert list(loaded_mask) == list(mask)
    for name, entry in mask.items():
        assert loaded_mask[name].dtype == torch.bool and torch.equal(loaded_mask[name], entry), name
    assert list(loaded_state) == list(state)
    for name, tensor in state.items():
        assert loaded_state[name].dtype == tensor.dtype and torch.equal(bits(loaded_state[name]), bits(tensor)), name
    fresh = copy.deepcopy(model)
    fresh.load_state_dict(loaded_state, strict=True)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(bits(tensor), bits(state[name])), name


def distinct_magnitudes_(model, names, seed):
    """Give the prunable weights distinct absolute values (a shuffled 1..N, random signs), so
    the lowest-magnitude set is unique and tie-breaking cannot differ from torch's."""
    parameters = dict(model.named_parameters())
    total = sum(parameters[name].numel() for name in names)
    generator = torch.Generator().manual_seed(seed)
    values = (torch.randperm(total, generator=generator) + 1).float() / total
    signs = torch.randint(0, 2, (total,), generator=generator).float() * 2 - 1
    values, start = values * signs, 0
    with torch.no_grad():
        for name in names:
            count = parameters[name].numel()
            parameters[name].copy_(values[start : start + count].view(parameters[name].shape))
            start += count


def modules_of(model, names):
    modules = dict(model.named_modules())
    return [(modules[name.rsplit(".", 1)[0]], "weight") for name in names]


@FAST
@given(network=networks(), sparsity=sparsities, seed=st.integers(0, 1000))
def test_global_magnitude_equals_torch_global_unstructured(network, sparsity, seed):
    """Same weights pruned as prune.global_unstructured(L1Unstructured) on any stack without ties."""
    model, _, _ = network
    names = prunable_weight_names(model)
    distinct_magnitudes_(model, names, seed)
    total = sum(dict(model.named_parameters())[name].numel() for name in names)
    scores = magnitude_scores(model, names, None)
    if round(sparsity * total) >= total:  # torch would prune everything; we refuse
        with pytest.raises(BadInputError):
            mask_from_scores(scores, sparsity, "global", allow_empty_layers=True)
        return
    ours = mask_from_scores(scores, sparsity, "global", allow_empty_layers=True)
    oracle = copy.deepcopy(model)
    prune.global_unstructured(modules_of(oracle, names), pruning_method=prune.L1Unstructured, amount=sparsity)
    for name, (module, _) in zip(names, modules_of(oracle, names)):
        assert torch.equal(ours[name], module.weight_mask.bool()), name


@FAST
@given(network=networks(), sparsity=sparsities, seed=st.integers(0, 1000))
def test_layerwise_magnitude_equals_torch_l1_unstructured(network, sparsity, seed):
    """Same weights pruned as prune.l1_unstructured in every layer (empty layers allowed, as torch
    allows them); with the default keep-one rule only a layer torch empties differs, by one weight."""
    model, _, _ = network
    names = prunable_weight_names(model)
    distinct_magnitudes_(model, names, seed)
    scores = magnitude_scores(model, names, None)
    ours = mask_from_scores(scores, sparsity, "layerwise", allow_empty_layers=True)
    kept_one = mask_from_scores(scores, sparsity, "layerwise")
    oracle = copy.deepcopy(model)
    for name, (module, _) in zip(names, modules_of(oracle, names)):
        prune.l1_unstructured(module, "weight", amount=sparsity)
        expected = module.weight_mask.bool()
        assert torch.equal(ours[name], expected), name
        if expected.any():
            assert torch.equal(kept_one[name], expected), name
        else:
            assert int(kept_one[name].sum()) == 1 and kept_one[name].view(-1)[scores[name].view(-1).argmax()], name


@FAST
@given(shapes=st.lists(weight_shapes, min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_random_scores_are_seeded_deterministic_and_ignore_the_weights(shapes, seed):
    """Same seed, same scores (whatever the weights); another seed, other scores."""
    class Weights(nn.Module):
        def __init__(self, fill):
            super().__init__()
            self.layers = nn.ParameterList([nn.Parameter(torch.full(shape, fill)) for shape in shapes])

    first, second = Weights(1.0), Weights(-5.0)
    names = [name for name, _ in first.named_parameters()]
    scores = random_scores(first, names, PruneContext(data=None, seed=seed))
    again = random_scores(second, names, PruneContext(data=None, seed=seed))
    other = random_scores(first, names, PruneContext(data=None, seed=seed + 1))
    for name in names:
        assert scores[name].shape == dict(first.named_parameters())[name].shape
        assert torch.equal(scores[name], again[name]), name
    flat = torch.cat([score.flatten() for score in scores.values()])
    assume(flat.numel() >= 4)  # a couple of uniforms could in principle coincide; four cannot in practice
    assert not torch.equal(flat, torch.cat([score.flatten() for score in other.values()]))


@SLOW
@given(network=networks(), sparsity=sparsities, seed=st.integers(0, 1000))
def test_random_method_masks_are_seeded_deterministic(network, sparsity, seed):
    """The random baseline through prune_model: the same seed gives the same mask every time."""
    model, input_shape, classes = network
    data = dataset_for(input_shape, classes)
    try:
        first = prune_model(model, data, "random", sparsity, {"scope": "layerwise"}, seed=seed).mask
    except BadInputError:
        assume(False)
    second = prune_model(copy.deepcopy(model), data, "random", sparsity, {"scope": "layerwise"}, seed=seed).mask
    assert list(first) == list(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name


@SLOW
@given(
    kind=st.sampled_from(["normal", "ties", "heavy-tail", "sorted", "constant"]),
    fraction=st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0)),
    extra=st.integers(1, 200_000),
    seed=st.integers(0, 2**31 - 1),
)
def test_kth_smallest_is_exact_on_the_sampled_path(kind, fraction, extra, seed):
    """Above 16 x SAMPLE_SIZE values kth_smallest brackets the answer with a sample: whatever the
    distribution and k, it must still equal torch.kthvalue exactly."""
    count = 16 * SAMPLE_SIZE + extra
    generator = torch.Generator().manual_seed(seed)
    values = {
        "normal": lambda: torch.randn(count, generator=generator),
        "ties": lambda: torch.randint(0, 5, (count,), generator=generator).float(),
        "heavy-tail": lambda: torch.randn(count, generator=generator).exp() ** 8,
        "sorted": lambda: torch.sort(torch.randn(count, generator=generator)).values,
        "constant": lambda: torch.zeros(count),
    }[kind]()
    k = min(max(1, round(fraction * count)), count)
    assert kth_smallest(values, k) == torch.kthvalue(values, k).values


@FAST
@given(value=st.one_of(st.sampled_from([1.0, -0.1, "abc", None]), st.floats(allow_nan=True, allow_infinity=True),
                       st.integers(-5, 5)))
def test_check_sparsity_accepts_exactly_the_half_open_unit_interval(value):
    """[0, 1) is accepted unchanged; everything else (1, negatives, NaN, inf, not a number) is a
    BadInputError that names the sparsity."""
    if isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value < 1.0:
        assert check_sparsity(value) == float(value)
    else:
        with pytest.raises(BadInputError, match="sparsity"):
            check_sparsity(value)
