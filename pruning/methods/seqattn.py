"""SequentialAttention++ block sparsification (Yasuda et al., 2024): differentiable scoring of
weight blocks steering an ACDC-style alternation of dense and sparse training.

Every pruned layer's kernel, in the 2-D layout of ``pruning.selection`` (Linear: in x out; Conv:
in*kh*kw x out), is cut into B x B blocks (border blocks may be smaller), each with a learnable
logit L_b. The forward pass uses W * A * Mask with A = n_blocks * softmax(L) broadcast over each
block, so the mean attention is 1 and, with logits at 0, the network starts as it was. Attention
and weights train together; a block's attention says how much the loss wants it, and the blocks
with the lowest attention are the ones removed.

The run is ``cycles`` x [dense, sparsification, sparse] and a final fine-tune:

* dense: every block trains (pruned weights regrow from zero after a sparse phase);
* sparsification: after step t of the phase's T steps the per-layer block sparsity is
  s (1 - e^(-c tau)) / (1 - e^(-c)), tau = t / T, c = 4 (so s at its end); each increase removes
  the lowest-attention blocks among those still kept (pruned blocks stay pruned within the phase);
* sparse: the support is fixed (attention still learns); its start zeroes the pruned weights
  (ACDC), so the next dense phase regrows them from zero;
* fine-tune: the mask stays fixed and the attention is folded into the weights
  (W <- W * A * Mask), so the deployed weights are the ones trained; the learning rate decays
  (cosine) to zero.

Our readings: start from the experiment's trained dense model (``start_from=trained``: the
dense training already is ACDC's dense warm-up; ``init`` starts from the initialisation);
"clip attention" is clamping the logits to [-clip, clip] before the softmax, which bounds the
ratio of two blocks' attention by e^(2 clip) and keeps the mean of A exactly 1; every phase
gets a fresh SGD (momentum 0.9) optimizer, the optimizer reset, with weight decay on weights and
logits alike and a constant learning rate in the dense/sparsification/sparse phases (ACDC
alternates at one rate); the same block sparsity in every layer, except layers with fewer than
``min_blocks`` blocks, which are left dense (and without attention). The softmax runs over all
of a layer's blocks, pruned ones included, so the mean of A stays 1 whatever the mask. The
default learning rate, 0.03, re-warms the trained model enough for the blocks that remain to
take over the pruned ones' work (0.01 left mlp and lenet5 1-3 points lower at 90%). The weights
returned are the effective ones, so the plain model evaluated on them gives the method's accuracy.

The ACDC control (``selection=acdc``) runs the same blocks, phases, exponential schedule, optimizer
resets and fine-tune with the attention fixed at A = 1 (no logits) and each removal taking the
kept blocks of lowest L2 norm instead of lowest attention: what is left of SequentialAttention++
without its differentiable scores. From a dense mask its first selection is layerwise
block-magnitude pruning (``magnitude``, granularity block, scope layerwise, the same block size).
Our reading of ACDC (Peste et al., 2021) for the control: its sparse support comes from the same
gradual sparsification phase, not from one magnitude cut at the start of each sparse phase, so
that the two arms differ only in how the blocks are scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pruning.masks import Mask
from pruning.methods.base import Details, PruneOutcome, TrainingMethod
from pruning.methods.loop import TrainingRun
from pruning.models import prunable_weight_names
from pruning.params import Param
from pruning.selection import expand_groups, group_scores
from pruning.train import TrainingHooks, cosine_decay, progress_stage

MOMENTUM = 0.9
SELECTIONS = ("attention", "acdc")
DENSE, SPARSIFICATION, SPARSE, FINE_TUNE = "dense", "sparsification", "sparse", "fine-tune"


def sparsification_fraction(tau: float, sparsity: float, c: float = 4.0) -> float:
    """Block sparsity at fraction ``tau`` of the sparsification phase: s (1 - e^(-c tau)) / (1 - e^(-c)).
    Fast at first (most blocks go while the network is still near its dense optimum), then
    slow, so the last removals, which hurt most, leave time to adjust."""
    tau = min(max(tau, 0.0), 1.0)
    return sparsity * (1.0 - math.exp(-c * tau)) / (1.0 - math.exp(-c))


def block_count(shape: torch.Size, block_size: int) -> int:
    """Blocks of a weight of ``shape`` in the layout block-magnitude pruning uses (border blocks count whole)."""
    return group_scores(torch.empty(shape, device="meta"), "block", block_size, "sum").numel()  # the shape only


def block_attention(logits: torch.Tensor, clip: float = 0.0) -> torch.Tensor:
    """A = n * softmax(L) over a layer's n blocks (flat), logits clamped to [-clip, clip] first
    (``clip`` 0: no clamping). Sums to n, so the mean attention is 1 with or without clipping."""
    flat = logits.flatten()
    if clip > 0:
        flat = flat.clamp(-clip, clip)
    return flat.numel() * torch.softmax(flat, dim=0)


def make_phase_optimizer(parameters: list[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """A fresh optimizer for one phase: nothing carried over from the previous one (the reset)."""
    return torch.optim.SGD(parameters, lr=lr, momentum=MOMENTUM, weight_decay=weight_decay)


@dataclass(frozen=True)
class SeqAttnDetails(Details):
    phases: int
    skipped_layers: list[str]  # layers with fewer than min_blocks blocks, left dense
    blocks: int  # blocks of the pruned layers
    blocks_kept: int
    max_abs_logit: float


class SeqAttn(TrainingMethod):
    details_type = SeqAttnDetails
    name = "seqattn"
    description = (
        "SequentialAttention++ block sparsification: each layer's kernel (as a 2-D matrix: in x out, conv "
        "in*kh*kw x out, as block-magnitude pruning lays it out) is cut into BxB blocks, and each block gets "
        "a learnable attention logit; the network computes with W * A * Mask, A = (number of blocks) x "
        "softmax(logits), so the mean attention is 1. Training alternates ACDC-style: a dense phase (all "
        "blocks train, attention learns which matter), a sparsification phase removing the lowest-attention "
        "blocks on an exponential schedule up to the target block sparsity, and a sparse phase with the "
        "support fixed; after the cycles, a fine-tune with the mask fixed. Our readings: starts from the "
        "trained dense model (its training is the dense warm-up; 'init' starts from the initialisation "
        "instead); a fresh SGD optimizer (momentum 0.9) per phase, weight decay on weights and logits, "
        "constant learning rate except the fine-tune's cosine decay; pruned weights are zeroed when a sparse "
        "phase starts and regrow from zero in the next dense phase; 'clip attention' clamps the logits to "
        "[-clip, clip]; the same block sparsity in every layer, layers with fewer than min_blocks blocks left "
        "dense; the attention is folded into the weights for the fine-tune, and the returned weights are the "
        "effective ones. Two cycles by default, so dense and sparse phases alternate. selection=acdc is the ACDC "
        "control with the same blocks and phases: attention fixed at 1, blocks removed by lowest L2 norm (its "
        "first selection is layerwise block-magnitude pruning); our reading gives it the same gradual "
        "sparsification phase rather than ACDC's one magnitude cut per sparse phase."
    )
    formula = (
        r"W_{\mathrm{eff}} = W \odot A \odot M,\quad A_b = n_b\,\mathrm{softmax}(\mathrm{clip}(L))_b;\quad "
        r"s(\tau) = s\,\frac{1 - e^{-c\tau}}{1 - e^{-c}},\ c = 4;\quad "
        r"[\text{dense} \to \text{sparsify} \to \text{sparse}]^{\times k} \to \text{fine-tune}"
    )
    reference = (
        "Yasuda, Axiotis, Fu, Bateni & Mirrokni, SequentialAttention++ for Block Sparsification: "
        "Differentiable Pruning Meets Combinatorial Optimization, 2024."
    )
    params = (
        Param("block_size", "int", 4, "Side B of the BxB blocks of the 2-D kernel (border blocks may be smaller).", min=1, max=64,
              label="Block size"),
        Param("selection", "choice", "attention", "attention: SequentialAttention++, the blocks of lowest learned "
              "attention go; acdc: the ACDC control, attention fixed at 1 and the blocks of lowest L2 norm go (same "
              "blocks, phases and schedule).", choices=SELECTIONS, label="Block selection"),
        Param("cycles", "int", 2, "ACDC cycles of [dense, sparsification, sparse] phases (2 or more: dense and "
              "sparse phases alternate).", min=1, max=10, label="ACDC cycles"),
        Param("phase_epochs", "int", 1, "Epochs of each dense, sparsification and sparse phase.", min=1, max=50,
              label="Epochs per phase"),
        Param("finetune_epochs", "int", 1, "Epochs of the final fine-tune with the mask fixed.", min=1, max=50,
              label="Fine-tuning epochs (mask fixed)"),
        Param("lr", "float", 0.03, "SGD learning rate (momentum 0.9; a fresh optimizer per phase).", min=1e-4, max=0.5, step=1e-4,
              label="Learning rate"),
        Param("weight_decay", "float", 5e-4, "L2 weight decay on the weights and the attention logits.", min=0.0, max=0.01, step=1e-5,
              label="Weight decay"),
        Param("clip", "float", 3.0, "Logits are clamped to [-clip, clip] before the softmax (0: no clipping).", min=0.0, max=20.0, step=0.5,
              label="Attention logit clip", only_if=("selection", "attention")),
        Param("min_blocks", "int", 16, "Layers with fewer blocks than this are left dense.", min=1, max=10000,
              label="Fewest blocks to prune a layer"),
        Param("start_from", "choice", "trained", "The trained dense model, or the initialisation.", choices=("trained", "init"),
              label="Start from"),
        Param("prune_output_layer", "bool", True, "Prune the last Linear layer too.", label="Prune the output layer"),
    )

    def train(self, experiment, dense, sparsity, settings, progress=None) -> PruneOutcome:
        cycle = [(phase, settings["phase_epochs"]) for phase in (DENSE, SPARSIFICATION, SPARSE)]
        phases = cycle * settings["cycles"] + [(FINE_TUNE, settings["finetune_epochs"])]
        run = TrainingRun(experiment, dense, sum(epochs for _, epochs in phases),
                          from_init=settings["start_from"] == "init", progress=progress)
        return _Run(run, phases, sparsity, settings).execute()


class _Run:
    """The state of one run: weights, logits, per-block keep vectors, and the step count."""

    def __init__(self, run: TrainingRun, phases: list[tuple[str, int]], sparsity: float, settings: dict):
        self.run, self.phases, self.sparsity, self.settings = run, phases, sparsity, settings
        self.model, self.progress, self.total_steps = run.model, run.progress, run.total_steps
        self.block_size = settings["block_size"]
        self.parameters = run.parameters
        model = run.model
        self.names = prunable_weight_names(model, include_output=settings["prune_output_layer"])
        self.blocks = {name: block_count(self.parameters[name].shape, self.block_size) for name in self.names}
        self.skipped = [name for name in self.names if self.blocks[name] < settings["min_blocks"]]
        self.pruned = [name for name in self.names if name not in self.skipped]
        self.acdc = settings["selection"] == "acdc"  # the control: A = 1, no logits, blocks scored by their norm
        device = {name: self.parameters[name].device for name in self.pruned}
        self.logits = {} if self.acdc else {
            name: torch.zeros(self.blocks[name], device=device[name], requires_grad=True) for name in self.pruned}
        self.keep = {name: torch.ones(self.blocks[name], dtype=torch.bool, device=device[name]) for name in self.pruned}
        self.mask = Mask.ones_like(model, self.names)
        self.attention_folded = False
        self.steps_done = 0

    # -- effective weights -------------------------------------------------------------------

    def attention(self, name: str) -> torch.Tensor:
        """The layer's attention broadcast to the weight's shape (differentiable in the logits)."""
        values = block_attention(self.logits[name], self.settings["clip"])
        return expand_groups(values, self.parameters[name].shape, "block", self.block_size)  # works for values too

    def effective(self) -> dict[str, torch.Tensor]:
        """W * A * Mask for the pruned layers (W * Mask when A is 1: folded, or the ACDC control); the
        other parameters as they are."""
        if self.attention_folded or self.acdc:
            return {name: self.parameters[name] * self.mask[name] for name in self.pruned}
        return {name: self.parameters[name] * self.attention(name) * self.mask[name] for name in self.pruned}

    def effective_tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer the model computes with, detached (for evaluation)."""
        with torch.no_grad():
            return self.mask.masked_parameters(self.model, self.effective())

    # -- block selection ---------------------------------------------------------------------

    def block_scores(self, name: str) -> torch.Tensor:
        """Per block, what keeps it: its attention, or, in the ACDC control, its weights' L2 norm
        (the aggregate block-magnitude pruning ranks blocks by)."""
        if self.acdc:
            return group_scores(self.parameters[name], "block", self.block_size, "l2")
        return block_attention(self.logits[name], self.settings["clip"])

    def sparsify_to(self, fraction: float) -> None:
        """Prune, per layer, the lowest-scoring kept blocks until ``fraction`` of the blocks are
        pruned (rounded; every layer keeps at least one block). Pruned blocks stay pruned."""
        with torch.no_grad():
            for name in self.pruned:
                keep = self.keep[name]
                target = min(round(fraction * keep.numel()), keep.numel() - 1)
                more = target - (keep.numel() - int(keep.sum()))
                if more <= 0:
                    continue
                scores = self.block_scores(name).masked_fill(~keep, math.inf)
                keep[torch.argsort(scores, stable=True)[:more]] = False
                self.mask[name] = expand_groups(keep, self.parameters[name].shape, "block", self.block_size)

    def set_dense(self) -> None:
        for name in self.pruned:
            self.keep[name].fill_(True)
            self.mask[name] = torch.ones_like(self.mask[name])

    @torch.no_grad()
    def zero_pruned_weights(self) -> None:
        self.mask.apply_(self.model)

    @torch.no_grad()
    def fold_attention(self) -> None:
        """W <- W * A * Mask: the fine-tune trains the deployed weights themselves."""
        for name, tensor in self.effective().items():
            self.parameters[name].copy_(tensor)
        self.attention_folded = True

    # -- the run -------------------------------------------------------------------------------

    def record(self, phase: str) -> None:
        self.run.record(self.steps_done, self.mask, self.effective_tensors(), phase=phase)

    def phase_progress(self, phase: str, index: int, phase_steps: int):
        start = self.steps_done / self.total_steps
        return progress_stage(self.progress, start, start + phase_steps / self.total_steps,
                              f"{phase} phase ({index}/{len(self.phases)}): ")

    def run_phase(self, index: int, phase: str, epochs: int) -> None:
        phase_steps = epochs * self.run.per_epoch
        offset = self.steps_done
        if phase == DENSE:
            self.set_dense()
        elif phase == SPARSE:
            self.sparsify_to(self.sparsity)  # the support: already reached at the end of the sparsification
            self.zero_pruned_weights()
        elif phase == FINE_TUNE:
            self.fold_attention()
        trainable = list(self.model.parameters()) + ([] if self.attention_folded else list(self.logits.values()))
        optimizer = make_phase_optimizer(trainable, self.settings["lr"], self.settings["weight_decay"])
        scheduler = None
        if phase == FINE_TUNE:
            scheduler = cosine_decay(optimizer, phase_steps)
        self.record(phase)

        def after_step(step):
            self.steps_done = offset + step + 1
            if phase == SPARSIFICATION:
                self.sparsify_to(sparsification_fraction((step + 1) / phase_steps, self.sparsity))

        hooks = TrainingHooks(forward_parameters=self.effective, after_step=after_step)
        self.run.train(epochs, optimizer, hooks, snapshot=lambda done: (self.mask, self.effective_tensors(), phase),
                       scheduler=scheduler, seed_offset=index, step_offset=offset,
                       progress=self.phase_progress(phase, index, phase_steps))
        self.steps_done = offset + phase_steps
        self.record(phase)

    def execute(self) -> PruneOutcome:
        accuracy_before_finetune = None
        for index, (phase, epochs) in enumerate(self.phases, start=1):
            if phase == FINE_TUNE:
                accuracy_before_finetune = self.run.recorder.history[-1]["accuracy"]
            self.run_phase(index, phase, epochs)
        logit_range = max((float(logits.detach().abs().max()) for logits in self.logits.values()), default=0.0)
        state = {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}
        for name in self.pruned:
            state[name] = state[name] * self.mask[name]
        details = SeqAttnDetails(
            phases=len(self.phases),
            skipped_layers=list(self.skipped),
            blocks=sum(self.blocks[name] for name in self.pruned),
            blocks_kept=sum(int(self.keep[name].sum()) for name in self.pruned),
            max_abs_logit=logit_range,
        )
        return self.run.outcome(self.mask, details, state_dict=state, accuracy_before_finetune=accuracy_before_finetune)
