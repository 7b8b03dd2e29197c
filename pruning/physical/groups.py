"""Which masked channels of one DepGraph group can go, and the corrections that keep the outputs exact.

Torch-Pruning's dependency graph (DepGraph, Fang et al., CVPR 2023) groups every tensor coupled to
a channel: the BN that normalises it, the next layers' input channels, the convs tied to it
through residual additions. A group is removed together. The smaller model computes exactly what
the masked model computes (before any fine-tuning):

- A channel is removed only where it is an input-independent constant wherever it is read: every
  layer of its DepGraph group that writes it has that filter masked (a producer whose output is
  read only by a depthwise conv whose filter is masked does not count: its output is dead).
  Residual blocks couple several convs; a channel masked in some of them but used by another
  stays, and is counted as ``coupled``.
- A zeroed filter does not emit zero: its bias, or the BN after it (``beta - gamma * mean /
  sqrt(var + eps)``), through the activation, gives a constant ``v``. Where a Linear layer or an
  unpadded conv reads it, ``v * W[:, c]`` is folded into that layer's bias (or the running mean
  of the BN right after it). A zero-padded conv sees ``v`` inside the image and 0 in the padding,
  which no bias can reproduce: there the removed channels' contributions are moved onto one kept
  constant channel of the group (its input weights absorb ``sum_c v_c / v_k W[:, c]``), so a
  group keeps at most one or two such channels (counted as ``constant``).
- Every group keeps at least one channel (counted as ``last``).
- Attention heads go whole (``units``: q, k and v rows come in blocks of the head size), since the
  model reshapes them into equal heads; masked rows of a head that keeps others stay (``coupled``).
  A removed head whose q, k, v rows are zeroed sees equal scores for every token, so it outputs its
  v bias: a constant folded into the projection's bias like any other. A block keeps one head.
- A channel a LayerNorm normalises (the transformer's residual stream) stays: removing it would
  change the mean and variance the other channels are normalised by (counted as ``coupled``).
- Optionally (``channel_multiple``) a group keeps a few more removable channels so that its
  channel count is a multiple of, say, 8 (counted as ``aligned``): CPU conv kernels work in
  blocks of 8 or 16 channels, and 17 channels can take longer than 24 (bench/speedup.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
NORMS_ACROSS_CHANNELS = (nn.LayerNorm, nn.GroupNorm)


def _is_depthwise(module: nn.Module) -> bool:
    return (isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups > 1
            and module.groups == module.in_channels == module.out_channels)


def _absorbs_constants(module: nn.Module) -> bool:
    """A Linear layer or an unpadded, ungrouped conv turns a constant input channel into a
    constant output offset, which a bias can hold exactly."""
    if isinstance(module, nn.Linear):
        return True
    padding = module.padding
    if isinstance(padding, str):
        unpadded = padding == "valid" or all(k == 1 for k in module.kernel_size)
    else:
        unpadded = all(p == 0 for p in padding)
    return module.groups == 1 and unpadded


def _first_readers(graph, module: nn.Module) -> set | None:
    """The Linear/Conv layers that read ``module``'s output first (through BN, activations,
    additions, pooling, reshapes); None if the output reaches the network's output directly."""
    readers, stack, seen = set(), list(graph.module2node[module].outputs), set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node.module, LAYER_TYPES):
            readers.add(node.module)
        elif not node.outputs:
            return None
        else:
            stack.extend(node.outputs)
    return readers


@dataclass
class GroupPlan:
    """What one DepGraph group removes, and the exact corrections (folds) that go with it."""

    root: nn.Module
    handler: object
    producers: list  # (module, [(index, root index)])
    remove: set[int] = field(default_factory=set)
    folds: list = field(default_factory=list)  # callables, applied before any removal

    def producer_rows(self) -> dict[nn.Module, list[int]]:
        return {module: [index for index, root in pairs if root in self.remove] for module, pairs in self.producers}

    def fold(self) -> None:
        for apply in self.folds:
            apply()


def plan_group(group, graph, masked_rows, inputs, reasons, channel_multiple: int = 1,
               units: dict | None = None) -> GroupPlan:
    """Which channels of ``group`` go (steps 1 to 3) and the folds that keep the outputs exact (step 4);
    ``reasons`` records why each masked filter that stays is kept. ``units`` maps a layer whose
    output rows go only in whole blocks (attention heads) to the block size."""
    producers, consumers = [], []
    for item in group.items:
        module = item.dep.target.module
        if not isinstance(module, LAYER_TYPES):
            continue
        pairs = list(zip(item.idxs, item.root_idxs))
        kind = getattr(item.dep.handler, "__name__", "")
        if kind == "prune_out_channels" or (_is_depthwise(module) and kind == "prune_in_channels"):
            producers.append((module, pairs))
        elif kind == "prune_in_channels":
            consumers.append((module, pairs))
    root_item = group.items[0]
    plan = GroupPlan(root_item.dep.target.module, root_item.dep.handler, producers)
    channels = sorted({root for _, pairs in producers for _, root in pairs} | set(root_item.root_idxs))

    # 1. candidates: channels every producer zeroes (or whose unzeroed producer only feeds a zeroed depthwise filter)
    depthwise_masked = {}
    for module, pairs in producers:
        if _is_depthwise(module):
            for index, root in pairs:
                depthwise_masked.setdefault(root, []).append((module, bool(masked_rows[module][index])))
    candidates = set(channels)
    if any(isinstance(item.dep.target.module, NORMS_ACROSS_CHANNELS) for item in group.items):
        candidates = set()  # a LayerNorm mixes its channels' statistics: none can go
    for module, pairs in producers:
        readers = None if _is_depthwise(module) else _first_readers(graph, module)
        for index, root in pairs:
            if masked_rows[module][index]:
                continue
            dead = readers is not None and readers and all(
                any(dw is reader and zeroed for dw, zeroed in depthwise_masked.get(root, [])) for reader in readers
            )
            if not dead:
                candidates.discard(root)

    # 2. the constant each candidate carries into each reading layer (checked constant on the probe)
    values = {}  # (consumer index, root) -> tensor of constants over the consumer's columns for that root
    for position, (module, pairs) in enumerate(consumers):
        seen = inputs.get(module)
        for index, root in pairs:
            if root not in candidates:
                continue
            if seen is None:
                candidates.discard(root)
                continue
            column = seen[..., index] if isinstance(module, nn.Linear) else seen[:, index]  # tokens x features
            value = column.reshape(-1)[0]
            if float((column - value).abs().max()) > 1e-6 * (1.0 + float(value.abs())):
                candidates.discard(root)  # not constant after all: keep it (never expected)
                continue
            values.setdefault((position, root), []).append((index, float(value)))

    # 3. zero-padded readers: constants need a kept constant channel to ride on
    needs = {}  # consumer position -> candidates with a nonzero constant there
    for position, (module, pairs) in enumerate(consumers):
        if _absorbs_constants(module):
            continue
        nonzero = {root for root in candidates for _, value in values.get((position, root), []) if value != 0.0}
        if nonzero:
            if module.groups > 1:  # grouped (not depthwise) convs: keep such channels as they are
                kept_here = nonzero
                candidates -= kept_here
                for root in kept_here:
                    _note(reasons, producers, root, "constant")
                continue
            needs[position] = nonzero
    carriers: set[int] = set()
    uncovered = {position for position, roots in needs.items() if roots}
    while uncovered:
        best = max(sorted(set().union(*(needs[p] for p in uncovered))),
                   key=lambda root: sum(root in needs[p] for p in uncovered))
        carriers.add(best)
        uncovered = {p for p in uncovered if best not in needs[p]}
    for root in carriers:
        _note(reasons, producers, root, "constant")
    remove = candidates - carriers
    unit = max([(units or {}).get(module, 1) for module, _ in producers] or [1])
    blocks = {}  # block -> its channels
    for root in channels:
        blocks.setdefault(root // unit, []).append(root)
    partial = {root for members in blocks.values() if not remove.issuperset(members) for root in members} & remove
    for root in partial:
        remove.discard(root)
        _note(reasons, producers, root, "coupled")
    if remove and len(remove) >= len(channels):
        last = blocks[max(remove) // unit]
        remove.difference_update(last)
        for root in last:
            _note(reasons, producers, root, "last")
    extra = 0 if unit > 1 else -(len(channels) - len(remove)) % max(channel_multiple, 1)
    for root in sorted(remove)[len(remove) - min(extra, len(remove)):]:
        remove.discard(root)
        _note(reasons, producers, root, "aligned")
    plan.remove = remove

    # 4. folds: absorb the removed channels' constants downstream
    for position, (module, pairs) in enumerate(consumers):
        removed_values = [(index, value) for root in remove for index, value in values.get((position, root), [])]
        if _absorbs_constants(module):
            if any(value != 0.0 for _, value in removed_values):
                plan.folds.append(_bias_fold(graph, module, removed_values))
        elif position in needs:
            pending = [(index, value) for index, value in removed_values if value != 0.0]
            if pending:
                carrier_values = [(index, value) for root in carriers
                                  for index, value in values.get((position, root), []) if value != 0.0]
                carrier_index, carrier_value = max(carrier_values, key=lambda pair: abs(pair[1]))
                plan.folds.append(_carrier_fold(module, pending, carrier_index, carrier_value))
    return plan


def _note(reasons, producers, root, reason) -> None:
    for module, pairs in producers:
        for index, pair_root in pairs:
            if pair_root == root:
                reasons[module][int(index)] = reason


def _bias_fold(graph, module: nn.Module, columns: list[tuple[int, float]]):
    """Add ``sum_c v_c * W[:, c]`` (summed over the kernel: no padding, so every output position
    sees the whole kernel) to the layer's bias, or subtract it from the running mean of the
    BatchNorm right after it, or give the layer a bias."""
    indices = torch.tensor([index for index, _ in columns], device=module.weight.device)
    constants = torch.tensor([value for _, value in columns], dtype=module.weight.dtype, device=module.weight.device)

    def apply():
        weight = module.weight.detach()[:, indices]
        delta = weight.reshape(weight.shape[0], weight.shape[1], -1).sum(2) @ constants
        if module.bias is not None:
            module.bias.add_(delta)
            return
        after = graph.module2node[module].outputs
        norm = after[0].module if len(after) == 1 else None
        if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_mean is not None:
            norm.running_mean.sub_(delta)  # BN with mean - d of (y - d) is BN of y
        else:
            module.bias = nn.Parameter(delta.clone())

    return apply


def _carrier_fold(module: nn.Module, columns: list[tuple[int, float]], carrier: int, carrier_value: float):
    """Move the removed constant channels' input weights onto the kept constant channel
    ``carrier``: conv(v_c * 1, W_c) = conv(v_k * 1, v_c / v_k W_c), padding included."""

    def apply():
        weight = module.weight.detach()
        for index, value in columns:
            weight[:, carrier] += (value / carrier_value) * weight[:, index]

    return apply
