"""Attention-head pruning of vit-tiny: the heads chosen are the lowest-scoring by a norm worked out
here, the Taylor score is the derivative finite differences measure, and the heads (and MLP neurons)
come out physically with the outputs of the masked model and the size the mask predicts."""

import copy
import json

import pytest
import torch
from torch import nn

from pruning.cli import main
from pruning.data import load_dataset
from pruning.errors import BadInputError
from pruning.masks import Mask, pruned_state_dict
from pruning.methods.base import PruneContext
from pruning.methods.heads import taylor_scores
from pruning.models import build_model, prunable_weight_names
from pruning.physical.costs import physical_or_note
from pruning.physical.removal import remove_pruned_channels
from pruning.pipeline import prune_model
from pruning.registry import get_method
from pruning.selection import mask_from_scores
from pruning.vit import attention_layers, head_rows

SHAPE = (1, 8, 8)
WIDTH, HEAD_DIM, HIDDEN = 64, 16, 128


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits")


def make(seed: int = 0) -> nn.Module:
    """vit-tiny with biases and norm parameters far from their initial values, so a zeroed head
    leaves a nonzero constant (its v bias) and a zeroed MLP neuron emits GELU(bias)."""
    torch.manual_seed(seed)
    model = build_model("vit-tiny", SHAPE, 10)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def head_norms(model: nn.Module) -> dict[str, list[float]]:
    """The L2 norm of each head's weights, gathered slice by slice."""
    norms = {}
    for name, attention in attention_layers(model).items():
        block = name.rsplit(".", 1)[0]
        norms[block] = []
        for head in range(attention.num_heads):
            rows = head_rows(attention, head)
            pieces = [getattr(attention, part).weight.detach()[rows].flatten() for part in "qkv"]
            pieces.append(attention.proj.weight.detach()[:, rows].flatten())
            norms[block].append(float(torch.linalg.vector_norm(torch.cat(pieces))))
    return norms


def pruned_heads(mask: Mask, model: nn.Module) -> dict[str, list[int]]:
    chosen = {}
    for name, attention in attention_layers(model).items():
        chosen[name.rsplit(".", 1)[0]] = [
            head for head in range(attention.num_heads) if not mask[f"{name}.v.weight"][head_rows(attention, head)].any()]
    return chosen


def test_the_mask_zeroes_the_lowest_norm_heads_whole_and_nothing_else(data):
    model = make()
    result = prune_model(model, data, "heads", 0.5)
    mask, norms = result.mask, head_norms(model)
    ranked = sorted((value, block, head) for block, values in norms.items() for head, value in enumerate(values))
    assert pruned_heads(mask, model) == {block: sorted(head for _, b, head in ranked[:8] if b == block) for block in norms}
    for name, attention in attention_layers(model).items():
        block = name.rsplit(".", 1)[0]
        for head in range(4):
            rows, gone = head_rows(attention, head), head in pruned_heads(mask, model)[block]
            for part in "qkv":
                assert bool(mask[f"{name}.{part}.weight"][rows].any()) is not gone
                assert bool(mask[f"{name}.{part}.weight"][rows].all()) is not gone
            assert bool(mask[f"{name}.proj.weight"][:, rows].any()) is not gone
    untouched = [name for name in mask if ".attention." not in name]
    assert untouched and all(bool(mask[name].all()) for name in untouched)
    assert "head.weight" not in mask
    removed = 8 * (3 * HEAD_DIM * WIDTH + WIDTH * HEAD_DIM)
    assert mask.num_pruned == removed
    assert (result.details.heads_removed, result.details.heads_total) == (8, 16)
    assert [kept.count(False) for kept in result.details.kept_heads.values()] == [
        len(heads) for heads in pruned_heads(mask, model).values()]


def test_every_block_keeps_a_head_and_per_block_takes_the_same_share(data):
    model = make()
    method, context = get_method("heads"), PruneContext(data=data)
    most = method.prune(model, 0.99, method.settings({}), context)
    assert [len(heads) for heads in pruned_heads(most.mask, model).values()] == [3, 3, 3, 3]
    even = method.prune(model, 0.5, method.settings({"allocation": "per_block"}), context)
    norms = head_norms(model)
    assert pruned_heads(even.mask, model) == {
        block: sorted(sorted(range(4), key=lambda head: values[head])[:2]) for block, values in norms.items()}


def test_mlp_neurons_go_with_the_heads_when_asked(data):
    model = make()
    method = get_method("heads")
    outcome = method.prune(model, 0.25, method.settings({"mlp": "true"}), PruneContext(data=data))
    fc1, fc2 = outcome.mask["blocks.0.fc1.weight"], outcome.mask["blocks.0.fc2.weight"]
    gone = ~fc1.any(1)
    assert torch.equal(~fc2.any(0), gone) and bool(fc1[~gone].all()) and bool(fc2[:, ~gone].all())
    assert outcome.details.mlp_neurons_removed == round(0.25 * 4 * HIDDEN) == int(sum(
        (~outcome.mask[f"blocks.{block}.fc1.weight"].any(1)).sum() for block in range(4)))


def test_the_taylor_score_is_the_gate_derivative_finite_differences_measure(data):
    """s_h = mean over samples of |dL(x)/dxi_h|, xi_h scaling head h's output; scaling the head's
    projection columns by xi is the same thing, so central differences give the derivative."""
    model = make().double()
    x, y = data.x_train[:6].double(), data.y_train[:6]
    scores, _ = taylor_scores(model, x, y)
    attention = model.blocks[1].attention
    step = 1e-5
    for head in range(4):
        rows = head_rows(attention, head)
        losses = []
        for scale in (1 + step, 1 - step):
            tilted = copy.deepcopy(model)
            with torch.no_grad():
                tilted.blocks[1].attention.proj.weight[:, rows] *= scale
                losses.append(nn.functional.cross_entropy(tilted(x), y, reduction="none"))
        derivative = (losses[0] - losses[1]) / (2 * step)
        assert float(scores["blocks.1"][head]) == pytest.approx(float(derivative.abs().mean()), rel=1e-5)
    method = get_method("heads")
    outcome = method.prune(make(), 0.25, method.settings({"score": "taylor", "samples_per_class": 2}), PruneContext(data=data))
    assert outcome.details.score == "taylor" and outcome.details.heads_removed == 4


def test_an_iterative_schedule_keeps_the_heads_it_pruned(data):
    model = make()
    method, settings = get_method("heads"), get_method("heads").settings({})
    first = method.prune(model, 0.25, settings, PruneContext(data=data))
    # score the second round on other weights, as a fine-tuned model would have
    other = make(seed=5)
    second = method.prune(other, 0.5, settings, PruneContext(data=data, previous_mask=first.mask))
    for block, heads in pruned_heads(first.mask, model).items():
        assert set(heads) <= set(pruned_heads(second.mask, model)[block])
    assert second.details.heads_removed == 8


def test_a_model_without_attention_is_a_clear_error(data):
    torch.manual_seed(0)
    with pytest.raises(BadInputError, match="vit-tiny"):
        prune_model(build_model("mlp", SHAPE, 10), data, "heads", 0.5)


def check_removal(model: nn.Module, mask: Mask):
    state = pruned_state_dict(model, mask)
    result = remove_pruned_channels(model, mask, SHAPE, state)
    masked = make()
    masked.load_state_dict(state)
    x = torch.randn(7, *SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        difference = float((result.model.eval()(x) - masked(x)).abs().max())
    return result, difference


def test_heads_and_mlp_neurons_come_out_physically_with_the_masked_outputs(data):
    model = make()
    method = get_method("heads")
    outcome = method.prune(model, 0.5, method.settings({"mlp": True, "allocation": "per_block"}), PruneContext(data=data))
    result, difference = check_removal(model, outcome.mask)
    assert difference < 1e-5 and result.max_abs_difference < 1e-5
    assert [attention.num_heads for attention in attention_layers(result.model).values()] == [2, 2, 2, 2]
    assert [block.fc1.out_features for block in result.model.blocks] == [64, 64, 64, 64]
    dense = sum(parameter.numel() for parameter in model.parameters())
    per_head = 3 * (HEAD_DIM * WIDTH + HEAD_DIM) + WIDTH * HEAD_DIM  # q, k, v rows and biases, projection columns
    per_neuron = WIDTH + 1 + WIDTH  # fc1 row and bias, fc2 column
    assert result.params == dense - 8 * per_head - 4 * 64 * per_neuron
    assert result.params == sum(parameter.numel() for parameter in result.model.parameters())
    assert result.removed_channels == result.masked_channels and sum(result.kept_masked.values()) == 0


def test_a_head_zeroed_in_q_k_v_only_leaves_its_v_bias_which_is_folded_into_the_projection():
    """Without the projection columns zeroed, a removed head still adds W_o[:, h] b_v (uniform
    attention over any tokens averages the constant v bias): removal folds it into the projection bias."""
    model = make()
    mask = Mask.ones_like(model, prunable_weight_names(model, include_output=False))
    for name, attention in attention_layers(model).items():
        for head in (0, 2):
            for part in "qkv":
                mask[f"{name}.{part}.weight"][head_rows(attention, head)] = False
    result, difference = check_removal(model, mask)
    assert difference < 1e-5
    assert [attention.num_heads for attention in attention_layers(result.model).values()] == [2, 2, 2, 2]
    # the constant matters: dropping the heads without the fold would change the outputs
    unfolded = make()
    unfolded.load_state_dict(pruned_state_dict(model, mask))
    with torch.no_grad():
        for attention in attention_layers(unfolded).values():
            for head in (0, 2):
                attention.proj.weight[:, head_rows(attention, head)] = 0
    x = torch.randn(7, *SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert float((unfolded(x) - result.model(x)).abs().max()) > 1e-3


def test_a_structured_magnitude_mask_removes_mlp_neurons_and_keeps_partial_heads():
    model = make()
    parameters = dict(model.named_parameters())
    scores = {name: parameters[name].detach().abs() for name in prunable_weight_names(model, include_output=False)}
    mask = mask_from_scores(scores, 0.5, scope="layerwise", granularity="structured", aggregate="l2")
    result, difference = check_removal(model, mask)
    assert difference < 1e-5
    layers = {layer.name: layer for layer in result.layers}
    assert layers["blocks.0.fc1.weight"].removed == layers["blocks.0.fc1.weight"].masked == 64
    assert layers["blocks.0.attention.q.weight"].removed == 0  # rows zeroed here and there, never whole heads
    assert layers["blocks.0.fc2.weight"].removed == 0  # the residual stream is normalised by LayerNorms: stays
    assert result.kept_masked["coupled"] > 0


def test_the_cli_writes_the_smaller_vit_and_its_files(fresh_cache, tmp_path, capsys, one_thread):
    out = tmp_path / "out"
    code = main(["prune", "--model", "vit-tiny", "--method", "heads", "--sparsity", "0.5", "--dataset", "digits",
                 "--optimizer", "adamw", "--lr", "2e-3", "--weight-decay", "0.05", "--epochs", "1", "--out", str(out),
                 "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["physical"]["removed_channels"] == report["physical"]["masked_channels"] == 8 * 3 * HEAD_DIM
    assert report["physical"]["max_abs_difference"] < 1e-5
    assert {"physical.onnx", "physical.pt2", "layers.csv", "mask.pt"} <= {path.name for path in out.iterdir()}
    smaller = torch.export.load(str(out / "physical.pt2")).module()
    assert smaller(torch.zeros(2, *SHAPE)).shape == (2, 10)


def test_the_real_costs_note_speaks_of_the_removed_heads(data):
    model = make()
    outcome = get_method("heads").prune(model, 0.25, get_method("heads").settings({}), PruneContext(data=data))
    physical, note = physical_or_note(model, outcome.mask, SHAPE, pruned_state_dict(model, outcome.mask))
    assert physical is not None and "Removed 192 of 192" in note
