import copy
import itertools
import math

import pytest
import torch

from pruning.experiment import Experiment, train_dense
from pruning.methods import seqattn
from pruning.methods.loop import TrainingRun
from pruning.methods.seqattn import SeqAttn, block_attention, block_count, sparsification_fraction
from pruning.selection import expand_groups, group_scores, mask_from_scores
from pruning.train import TrainConfig, evaluate, steps_per_epoch

TINY = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=2))
BLOCK = 3  # divides neither 64 (fc1's inputs) nor 100 (fc2's outputs): border blocks are smaller
SPARSITY = 0.8
CYCLES = 2
# mlp on digits at B=3: fc1 22x100 blocks, fc2 100x34, fc3 34x4 = 136 -> fc3 has too few blocks
SETTINGS = {"block_size": BLOCK, "cycles": CYCLES, "min_blocks": 200}


def is_blockwise_constant(tensor: torch.Tensor, block_size: int) -> bool:
    """Every block of the 2-D layout (Linear: in x out, Conv: in*kh*kw x out), border blocks
    included, holds one value: each entry equals its block's first (top-left) entry."""
    matrix = tensor.flatten(1).T
    rows, cols = (torch.arange(size) // block_size * block_size for size in matrix.shape)
    return torch.equal(matrix[rows][:, cols], matrix)


def block_keep(entry: torch.Tensor, block_size: int) -> torch.Tensor:
    """Per-block keep vector of a weight-shaped mask; fails unless every block is all kept or all pruned."""
    assert is_blockwise_constant(entry, block_size), "a block is partly pruned"
    return group_scores(entry.float(), "block", block_size, "sum") > 0


def block_sparsity(entry: torch.Tensor, block_size: int) -> float:
    keep = block_keep(entry, block_size)
    return 1.0 - int(keep.sum()) / keep.numel()


@pytest.fixture(scope="module")
def dense(one_thread):
    return train_dense(TINY).model


@pytest.fixture(scope="module")
def run(dense, one_thread):
    """One run, with every optimizer the method creates recorded along with the size of its
    state when it first steps, and the progress reports."""
    optimizers, state_at_first_step, reports = [], [], []
    real_factory = seqattn.make_phase_optimizer

    def recording_factory(parameters, lr, weight_decay):
        optimizer = real_factory(parameters, lr, weight_decay)
        index = len(optimizers)
        optimizers.append(optimizer)

        def first_step(opt, args, kwargs):
            if len(state_at_first_step) == index:
                state_at_first_step.append(len(opt.state))

        optimizer.register_step_pre_hook(first_step)
        return optimizer

    method = SeqAttn()
    before = copy.deepcopy(dense.state_dict())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seqattn, "make_phase_optimizer", recording_factory)
        outcome = method.train(TINY, dense, SPARSITY, method.settings(SETTINGS),
                               progress=lambda fraction, message: reports.append((fraction, message)))
    assert all(torch.equal(before[name], tensor) for name, tensor in dense.state_dict().items()), "dense model modified"
    return {"outcome": outcome, "optimizers": optimizers, "state_at_first_step": state_at_first_step, "reports": reports,
            "per_epoch": steps_per_epoch(TINY.load_data(), TINY.train.batch_size)}


def test_mean_attention_is_exactly_one_with_and_without_clipping():
    generator = torch.Generator().manual_seed(0)
    for shape in [(7, 5), (1, 1), (40, 13)]:
        logits = 6.0 * torch.randn(shape, generator=generator)
        for clip in (0.0, 1.0, 3.0):
            attention = block_attention(logits, clip)
            assert attention.numel() == math.prod(shape)
            assert float(attention.double().mean()) == pytest.approx(1.0, abs=1e-6)
            if clip:
                assert float(attention.max() / attention.min()) <= math.exp(2 * clip) * (1 + 1e-5)
    assert torch.allclose(block_attention(torch.zeros(4, 6)), torch.ones(24))


def test_sparsification_schedule_follows_the_exponential_formula():
    assert sparsification_fraction(0.0, 0.9) == 0.0
    assert sparsification_fraction(1.0, 0.9) == pytest.approx(0.9)
    # s (1 - e^(-c tau)) / (1 - e^(-c)) with c = 4: tau = 1/2 -> 0.8 (1 - e^-2) / (1 - e^-4)
    assert sparsification_fraction(0.5, 0.8) == pytest.approx(0.8 * 0.8646647 / 0.9816844)
    assert sparsification_fraction(0.25, 0.5) == pytest.approx(0.5 * 0.6321206 / 0.9816844)
    values = [sparsification_fraction(step / 20, 0.9) for step in range(21)]
    assert values == sorted(values)
    assert values[10] > 0.45 * 1.5  # front-loaded: well past the linear ramp halfway through


def test_blocks_with_the_lowest_attention_go_first_and_stay_pruned(dense):
    method = SeqAttn()
    state = seqattn._Run(TrainingRun(TINY, dense, epochs=1), [], 0.75, method.settings({"block_size": 4}))
    generator = torch.Generator().manual_seed(1)
    for logits in state.logits.values():
        logits.data = torch.randn(logits.shape, generator=generator)
    state.sparsify_to(0.5)
    first = {name: keep.clone() for name, keep in state.keep.items()}
    for name, keep in first.items():
        attention = block_attention(state.logits[name].detach(), state.settings["clip"])
        assert int((~keep).sum()) == round(0.5 * keep.numel())
        assert float(attention[~keep].max()) <= float(attention[keep].min())
        assert torch.equal(state.mask[name], expand_groups(keep, state.model.get_parameter(name).shape, "block", 4))
    for logits in state.logits.values():  # new attention: earlier removals must not come back
        logits.data = torch.randn(logits.shape, generator=generator)
    state.sparsify_to(0.75)
    for name, keep in state.keep.items():
        attention = block_attention(state.logits[name].detach(), state.settings["clip"])
        assert not bool((keep & ~first[name]).any())
        assert int((~keep).sum()) == round(0.75 * keep.numel())
        newly_pruned = first[name] & ~keep
        assert float(attention[newly_pruned].max()) <= float(attention[keep].min())


def test_blocks_use_the_layout_of_block_magnitude_pruning_for_conv_and_linear():
    # With A proportional to each block's norm, SequentialAttention++ removes exactly the blocks
    # layerwise block-magnitude pruning removes: the same 2-D layout (conv: in*kh*kw x out).
    experiment = Experiment(dataset="digits", model="vgg-small")
    method = SeqAttn()
    run = TrainingRun(experiment, None, epochs=1, from_init=True)
    state = seqattn._Run(run, [], 0.7, method.settings({"block_size": 4, "clip": 0.0, "min_blocks": 1}))
    model = run.model
    weights = {name: model.get_parameter(name).detach() for name in state.names}
    for name, logits in state.logits.items():
        logits.data = group_scores(weights[name], "block", 4, "l2").log()
    state.sparsify_to(0.7)
    expected = mask_from_scores({name: weight.abs() for name, weight in weights.items()}, 0.7, scope="layerwise",
                                granularity="block", block_size=4, aggregate="l2")
    assert any(weight.dim() == 4 for weight in weights.values())
    for name in state.names:
        assert torch.equal(state.mask[name], expected[name]), name
        assert is_blockwise_constant(state.mask[name], 4)
        assert is_blockwise_constant(state.attention(name).detach(), 4)  # one attention value per block


def test_every_mask_is_block_structured_also_with_border_blocks(run):
    outcome = run["outcome"]
    assert len(outcome.snapshots) > 10
    for mask in [outcome.mask] + [snapshot.mask for snapshot in outcome.snapshots]:
        for entry in mask.values():
            block_keep(entry, BLOCK)  # asserts: no partly pruned block
    # fc1 is 64 x 300 in the 2-D layout: 22 x 100 blocks, the last block row 1 high; fc2 300 x 100: 100 x 34
    assert [block_count(outcome.mask[name].shape, BLOCK) for name in ("fc1.weight", "fc2.weight")] == [2200, 3400]


def test_one_fresh_optimizer_per_phase(run):
    outcome, optimizers = run["outcome"], run["optimizers"]
    assert outcome.details.phases == 3 * CYCLES + 1
    assert len(optimizers) == 3 * CYCLES + 1
    assert len({id(optimizer) for optimizer in optimizers}) == len(optimizers)
    assert run["state_at_first_step"] == [0] * len(optimizers)  # every phase starts with no momentum
    assert all(len(optimizer.state) > 0 for optimizer in optimizers)  # and each one trained its phase
    logit_count = 2  # fc1 and fc2 have attention; fc3 is skipped
    parameter_count = len(list(TINY.build_model().parameters()))
    sizes = [sum(len(group["params"]) for group in optimizer.param_groups) for optimizer in optimizers]
    assert sizes == [parameter_count + logit_count] * (3 * CYCLES) + [parameter_count]  # attention folded for the fine-tune
    phases = []
    for row in outcome.history:
        if not phases or phases[-1] != row["phase"]:
            phases.append(row["phase"])
    assert phases == ["dense", "sparsification", "sparse"] * CYCLES + ["fine-tune"]


def test_sparsification_phase_tracks_the_exponential_schedule(run):
    outcome, per_epoch = run["outcome"], run["per_epoch"]
    pruned_layers = ["fc1.weight", "fc2.weight"]
    checked = 0
    for cycle in range(CYCLES):
        start = (3 * cycle + 1) * per_epoch  # one epoch per phase
        shots = [shot for shot in outcome.snapshots if start < shot.step <= start + per_epoch]
        assert shots[-1].step == start + per_epoch
        for shot in shots:
            expected = sparsification_fraction((shot.step - start) / per_epoch, SPARSITY)
            for name in pruned_layers:
                blocks = block_count(shot.mask[name].shape, BLOCK)
                assert block_sparsity(shot.mask[name], BLOCK) == pytest.approx(expected, abs=0.5 / blocks + 1e-9)
                checked += 1
        for name in pruned_layers:
            blocks = block_count(shots[-1].mask[name].shape, BLOCK)
            assert block_sparsity(shots[-1].mask[name], BLOCK) == round(SPARSITY * blocks) / blocks
        for earlier, later in itertools.pairwise(shots):  # pruned blocks stay pruned within the phase
            assert all(not bool((later.mask[name] & ~earlier.mask[name]).any()) for name in pruned_layers)
    assert checked > 10
    second_dense = [shot for shot in outcome.snapshots if 3 * per_epoch < shot.step < 4 * per_epoch]
    assert second_dense and all(shot.mask.sparsity() == 0.0 for shot in second_dense)  # ACDC: the dense phase regrows


def test_final_weights_reproduce_the_accuracy_and_match_the_mask(run, dense):
    outcome = run["outcome"]
    data = TINY.load_data()
    model = copy.deepcopy(dense)
    model.load_state_dict(outcome.state_dict)
    accuracy = evaluate(model, data.x_test, data.y_test, data.num_classes).accuracy
    assert accuracy == outcome.history[-1]["accuracy"]
    assert outcome.history[0]["accuracy"] == evaluate(dense, data.x_test, data.y_test, data.num_classes).accuracy
    for name, entry in outcome.mask.items():
        nonzero_blocks = group_scores(outcome.state_dict[name].abs(), "block", BLOCK, "sum") > 0
        assert torch.equal(nonzero_blocks, block_keep(entry, BLOCK))
    assert outcome.details.skipped_layers == ["fc3.weight"]
    assert bool(outcome.mask["fc3.weight"].all())
    for name in ("fc1.weight", "fc2.weight"):
        blocks = block_count(outcome.mask[name].shape, BLOCK)
        assert block_sparsity(outcome.mask[name], BLOCK) == round(SPARSITY * blocks) / blocks
    assert outcome.accuracy_before_finetune is not None


def test_progress_spans_the_whole_run_and_names_the_phase(run):
    fractions = [fraction for fraction, _ in run["reports"]]
    assert fractions == sorted(fractions) and 0.0 < fractions[0] and fractions[-1] == pytest.approx(1.0)
    assert {message.split(" phase")[0] for _, message in run["reports"]} == {"dense", "sparsification", "sparse", "fine-tune"}


def test_starting_from_initialisation(dense, one_thread):
    method = SeqAttn()
    outcome = method.train(TINY, dense, 0.5, method.settings({"start_from": "init", "lr": 0.05}))
    data = TINY.load_data()
    untrained = evaluate(TINY.build_model(data), data.x_test, data.y_test, data.num_classes).accuracy
    assert outcome.history[0]["accuracy"] == untrained
    assert outcome.history[-1]["accuracy"] > untrained + 0.3
    assert outcome.mask.sparsity() == pytest.approx(0.5, abs=0.02)
