"""The ACDC control of SequentialAttention++ (selection=acdc): attention fixed at 1, blocks chosen
by their L2 norm. Oracle: the registry's one-shot block-magnitude pruning (granularity block,
scope layerwise, the same block size), which its first selection from a dense mask must equal."""

import copy

import pytest
import torch

from pruning.experiment import Experiment, train_dense
from pruning.methods import seqattn
from pruning.methods.loop import TrainingRun
from pruning.methods.seqattn import SeqAttn
from pruning.pipeline import prune_model
from pruning.selection import expand_groups, group_scores
from pruning.train import TrainConfig
from tests.test_device import same_on_meta

TINY = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=2))
CONV = Experiment(dataset="digits", model="vgg-small")


def block_magnitude(model, data, sparsity: float, block_size: int):
    """The oracle: the registry's magnitude method, blocks of the same size, the same sparsity in every layer."""
    overrides = {"granularity": "block", "block_size": block_size, "scope": "layerwise", "prune_output_layer": True}
    return prune_model(model, data, "magnitude", sparsity, overrides).mask


def first_selection(run: TrainingRun, sparsity: float, **overrides):
    """A run's state after its first selection from the dense mask, on the run's current weights."""
    method = SeqAttn()
    state = seqattn._Run(run, [], sparsity, method.settings({"min_blocks": 1, **overrides}))
    state.sparsify_to(sparsity)
    return state


@pytest.fixture(scope="module")
def dense(one_thread):
    return train_dense(TINY).model


@pytest.mark.parametrize("case", ["mlp trained, border blocks", "vgg-small conv, init"])
def test_first_selection_of_the_control_is_layerwise_block_magnitude(case, dense, one_thread):
    experiment, block, start = (TINY, 3, dense) if case.startswith("mlp") else (CONV, 4, None)
    run = TrainingRun(experiment, start, epochs=1, from_init=start is None)
    sparsity = 0.7
    control = first_selection(run, sparsity, selection="acdc", block_size=block)
    expected = block_magnitude(run.model, run.data, sparsity, block)
    assert list(control.mask) == list(expected) == control.pruned  # every layer pruned, the output layer too
    for name in expected:
        assert torch.equal(control.mask[name], expected[name]), name
    assert 0.6 < control.mask.sparsity() < 0.8
    # at A = 1 SequentialAttention++ has no preference (all attention equal): its first cut is not magnitude's,
    # so the equality above is the norm ranking at work, not an accident of the layout
    attention = first_selection(run, sparsity, block_size=block)
    assert any(not torch.equal(attention.mask[name], expected[name]) for name in expected)


@pytest.fixture(scope="module")
def control_run(dense, one_thread):
    """A 2-cycle ACDC control run with the weights and masks of every first selection from a dense mask."""
    selections = []
    real_sparsify = seqattn._Run.sparsify_to

    def recording_sparsify(self, fraction):
        from_dense = all(bool(keep.all()) for keep in self.keep.values())
        weights = {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}
        real_sparsify(self, fraction)
        if from_dense and self.mask.sparsity() > 0:
            selections.append((fraction, weights, copy.deepcopy(self.mask)))

    method = SeqAttn()
    settings = method.settings({"selection": "acdc", "block_size": 3, "cycles": 2, "min_blocks": 1})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seqattn._Run, "sparsify_to", recording_sparsify)
        outcome = method.train(TINY, dense, 0.8, settings)
    return outcome, selections


def test_each_cycles_first_selection_in_a_run_is_block_magnitude_of_that_moment(control_run, dense):
    outcome, selections = control_run
    assert len(selections) == 2  # one per cycle: the dense phase in between regrew every block
    data = TINY.load_data()
    for fraction, weights, mask in selections:
        assert 0 < fraction < 0.8  # the first step of the exponential schedule
        model = copy.deepcopy(dense)
        model.load_state_dict(weights)
        expected = block_magnitude(model, data, fraction, 3)
        for name in expected:
            assert torch.equal(mask[name], expected[name]), name
    assert not torch.equal(selections[0][2]["fc1.weight"], selections[1][2]["fc1.weight"])  # the weights moved


def test_the_control_trains_no_attention_and_returns_block_sparse_weights(control_run):
    outcome, _ = control_run
    assert outcome.details.max_abs_logit == 0.0 and outcome.details.phases == 7
    phases = [row["phase"] for row in outcome.history]
    assert phases.count("dense") >= 2 and phases[-1] == "fine-tune"
    for name, keep in outcome.mask.items():
        kept_blocks = group_scores(keep.float(), "block", 3, "sum")
        assert torch.equal(expand_groups(kept_blocks > 0, keep.shape, "block", 3), keep), name  # no block partly kept
        nonzero = group_scores(outcome.state_dict[name].abs(), "block", 3, "sum") > 0
        assert torch.equal(nonzero, kept_blocks > 0), name
        blocks = kept_blocks.numel()
        assert int((kept_blocks == 0).sum()) == min(round(0.8 * blocks), blocks - 1), name


def test_defaults_alternate_and_the_clip_only_applies_to_attention():
    method = SeqAttn()
    settings = method.settings()
    assert settings["cycles"] == 2 and settings["selection"] == "attention"
    clip = next(param for param in method.params if param.name == "clip")
    assert clip.applies({"selection": "attention"}) and not clip.applies({"selection": "acdc"})


def test_the_control_is_the_same_on_meta(dense, one_thread):
    """The device detector of tests/test_device.py: no tensor of the control's path is made without a device."""
    method = SeqAttn()
    settings = method.settings({"selection": "acdc", "cycles": 2, "finetune_epochs": 1, "min_blocks": 1})
    outcome = same_on_meta(lambda: method.train(TINY, dense, 0.5, settings))
    assert outcome.mask.sparsity() > 0.4
