"""Real size and speed: structured masks applied physically, and latency measured, not assumed.

A masked model multiplies pruned weights by zero and runs the same dense kernels: it is neither
smaller nor faster. A *structured* mask (whole neurons/filters zeroed) can instead be applied for
real. Torch-Pruning's dependency graph (DepGraph, Fang et al., CVPR 2023) finds every tensor
coupled to a channel (the BN that normalises it, the next layers' input channels, the convs tied
to it through residual additions) and removes them together, leaving a smaller dense model.

The smaller model computes exactly what the masked model computes (before any fine-tuning):

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
- Optionally (``channel_multiple``) a group keeps a few more removable channels so that its
  channel count is a multiple of, say, 8 (counted as ``aligned``): CPU conv kernels work in
  blocks of 8 or 16 channels, and 17 channels can take longer than 24 (bench/speedup.py).
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from pruning.errors import BadInputError
from pruning.masks import Mask
from pruning.metrics import model_stats
from pruning.models import output_layer_name

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
BATCH_SIZES = (1, 64)
LATENCY_THREADS = 1
KINDS = ("dense", "masked", "physical")

COSTS_NOTE = (
    "Three different numbers. Compression (params) and theoretical speedup (FLOPs of the nonzero weights) "
    "are what the mask could give; latency is measured. The masked model runs the dense kernels on zeros, "
    "so it is as large and as slow as the dense one. The physical model has the pruned channels removed "
    "for real (structured masks only), so it is smaller and its speedup is measured, not assumed."
)


def structure_problem(mask: Mask) -> str | None:
    """Why ``mask`` cannot be applied physically, or None when it can: every masked neuron/filter
    must be kept or removed whole, since a dense kernel cannot skip single weights."""
    partial = []
    for name, entry in mask.items():
        rows = entry.reshape(entry.shape[0], -1) if entry.dim() > 1 else entry.reshape(-1, 1)
        if bool((rows.any(1) & ~rows.all(1)).any()):
            partial.append(name)
    if not partial:
        return None
    return (
        f"This mask cannot be applied physically: it prunes single weights or blocks inside neurons/filters "
        f"({len(partial)} of {len(mask)} layers, e.g. {partial[0]}), and dense kernels still multiply those "
        "zeros, so the model is neither smaller nor faster. Only structured pruning (granularity structured: "
        "whole neurons/filters) gives a physically smaller model."
    )


def masked_copy(model: nn.Module, state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A copy of ``model`` (left untouched) carrying ``state_dict`` (the pruned weights), in eval mode.
    (Safe while other sessions run the model: models.functional_forward never swaps its tensors.)"""
    copied = copy.deepcopy(model)
    if state_dict is not None:
        copied.load_state_dict(state_dict)
    return copied.eval()


@dataclass
class PhysicalLayer:
    name: str  # parameter name, e.g. "conv1.weight"
    out_channels: int  # before removal
    masked: int  # filters/neurons the mask zeroes
    removed: int  # filters/neurons physically removed
    params: int  # weight parameters left in the smaller model


@dataclass
class PhysicalPruning:
    """The smaller model, what was removed, and why some masked channels could not be."""

    model: nn.Module
    layers: list[PhysicalLayer]
    kept_masked: dict[str, int]  # masked filters left in place: coupled / constant / last / aligned
    max_abs_difference: float  # |smaller - masked| on random inputs, eval mode
    params: int
    flops: int

    @property
    def masked_channels(self) -> int:
        return sum(layer.masked for layer in self.layers)

    @property
    def removed_channels(self) -> int:
        return sum(layer.removed for layer in self.layers)

    def to_json(self) -> dict:
        return {
            "params": self.params,
            "flops": self.flops,
            "masked_channels": self.masked_channels,
            "removed_channels": self.removed_channels,
            "unremoved_channels": sum(self.kept_masked.values()),
            "unremoved": dict(self.kept_masked),
            "max_abs_difference": self.max_abs_difference,
            "layers": [vars(layer).copy() for layer in self.layers],
        }


def remove_pruned_channels(
    model: nn.Module, mask: Mask, input_shape: tuple[int, ...], state_dict: dict[str, torch.Tensor] | None = None,
    check_batch: int = 4, seed: int = 0, channel_multiple: int = 1,
) -> PhysicalPruning:
    """The masked model (``model`` with ``state_dict``, pruned weights zero; ``model`` itself is
    not touched) with its masked channels removed for real, outputs unchanged (see the module
    docstring for which channels go). Raises BadInputError for a mask that prunes inside
    neurons/filters (unstructured, block)."""
    problem = structure_problem(mask)
    if problem:
        raise BadInputError(problem)
    import torch_pruning as tp  # here, not at import: only physical removal needs it

    masked = masked_copy(model, state_dict)
    small = copy.deepcopy(masked)
    for parameter in small.parameters():
        parameter.requires_grad_(True)  # DepGraph traces through autograd
    names = {module: name for name, module in small.named_modules()}
    probe = torch.randn(3, *input_shape, generator=torch.Generator().manual_seed(seed))
    inputs = _layer_inputs(small, probe)
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(small, example_inputs=torch.zeros(1, *input_shape), verbose=False)
    output_layer = dict(small.named_modules())[output_layer_name(small)]
    layers = {module: name for module, name in names.items() if isinstance(module, LAYER_TYPES)}
    removed_rows = {module: torch.zeros(module.weight.shape[0], dtype=torch.bool) for module in layers}
    masked_rows = {module: _masked_rows(mask, f"{name}.weight", module) for module, name in layers.items()}
    reasons = {module: {} for module in masked_rows}  # module -> {row: reason it stays}
    plans = [
        _plan_group(group, graph, masked_rows, inputs, reasons, channel_multiple)
        for group in graph.get_all_groups(ignored_layers=[output_layer])
    ]
    with torch.no_grad():
        for plan in plans:
            plan.fold()
    for plan in plans:
        if plan.remove:
            for module, rows in plan.producer_rows().items():
                removed_rows[module][rows] = True
            graph.get_pruning_group(plan.root, plan.handler, sorted(plan.remove)).prune()
    small.eval()

    summary, kept = [], {"coupled": 0, "constant": 0, "last": 0, "aligned": 0}
    for module, rows in masked_rows.items():
        summary.append(PhysicalLayer(f"{names[module]}.weight", rows.numel(), int(rows.sum()),
                                    int(removed_rows[module].sum()), module.weight.numel()))
        for row in torch.nonzero(rows & ~removed_rows[module]).flatten().tolist():
            kept[reasons[module].get(row, "coupled")] += 1
    check = torch.randn(check_batch, *input_shape, generator=torch.Generator().manual_seed(seed + 1))
    with torch.inference_mode():
        difference = float((small(check) - masked(check)).abs().max())
    stats = model_stats(small, None, tuple(input_shape))
    return PhysicalPruning(small, summary, kept, difference, stats.params_total, stats.flops_dense)


def _masked_rows(mask: Mask, name: str, module: nn.Module) -> torch.Tensor:
    """Which output neurons/filters of ``module`` the mask zeroes whole."""
    if name not in mask:
        return torch.zeros(module.weight.shape[0], dtype=torch.bool)
    return ~mask[name].reshape(mask[name].shape[0], -1).any(1)


def _layer_inputs(model: nn.Module, probe: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
    """The input each Linear/Conv layer receives from ``probe`` (the masked model, eval mode)."""
    seen = {}
    handles = [module.register_forward_pre_hook(lambda module, args: seen.setdefault(module, args[0].detach().clone()))
               for module in model.modules() if isinstance(module, LAYER_TYPES)]
    try:
        with torch.no_grad():
            model.eval()(probe)
    finally:
        for handle in handles:
            handle.remove()
    return seen


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
class _GroupPlan:
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


def _plan_group(group, graph, masked_rows, inputs, reasons, channel_multiple: int = 1) -> _GroupPlan:
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
    plan = _GroupPlan(root_item.dep.target.module, root_item.dep.handler, producers)
    channels = sorted({root for _, pairs in producers for _, root in pairs} | set(root_item.root_idxs))

    # 1. candidates: channels every producer zeroes (or whose unzeroed producer only feeds a zeroed depthwise filter)
    depthwise_masked = {}
    for module, pairs in producers:
        if _is_depthwise(module):
            for index, root in pairs:
                depthwise_masked.setdefault(root, []).append((module, bool(masked_rows[module][index])))
    candidates = set(channels)
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
            column = seen[:, index]
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
    if remove and len(remove) >= len(channels):
        last = max(remove)
        remove.discard(last)
        _note(reasons, producers, last, "last")
    extra = -(len(channels) - len(remove)) % max(channel_multiple, 1)
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
    indices = torch.tensor([index for index, _ in columns])
    constants = torch.tensor([value for _, value in columns], dtype=module.weight.dtype)

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


def time_in_turns(runners: dict[str, Callable], inputs: dict[int, object], repeats: int = 7,
                  budget_seconds: float = 3.0) -> dict[str, dict[int, float]]:
    """Median wall time in milliseconds of one call ``runner(inputs[batch])`` of each runner per
    batch size. Each runner makes two warm-up calls; then the runners take turns, call by call, so
    that a change in the machine's load hits them all alike. At least 3 and at most ``repeats``
    timed calls each, fewer once ``budget_seconds`` are spent on a batch size."""
    timings = {name: {} for name in runners}
    for batch, x in inputs.items():
        for run in runners.values():
            run(x)
            run(x)
        times = {name: [] for name in runners}
        started = time.perf_counter()
        for turn in range(repeats):
            if turn >= 3 and time.perf_counter() - started > budget_seconds:
                break
            for name, run in runners.items():
                begin = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - begin)
        for name in runners:
            timings[name][batch] = 1000.0 * statistics.median(times[name])
    return timings


def latency_inputs(input_shape: tuple[int, ...], batch_sizes=BATCH_SIZES, seed: int = 0) -> dict[int, torch.Tensor]:
    """One seeded random batch per batch size: the inputs every latency measurement times."""
    return {batch: torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(seed)) for batch in batch_sizes}


def measure_latency(
    models: dict[str, nn.Module], input_shape: tuple[int, ...], batch_sizes=BATCH_SIZES, threads: int = LATENCY_THREADS,
    repeats: int = 7, budget_seconds: float = 3.0, seed: int = 0,
) -> dict[str, dict[int, float]]:
    """:func:`time_in_turns` of each model's forward pass in eval mode, on the CPU, under
    ``torch.inference_mode`` with ``threads`` intra-op threads (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for model in models.values():
            model.eval()
        with torch.inference_mode():
            return time_in_turns(models, latency_inputs(input_shape, batch_sizes, seed), repeats, budget_seconds)
    finally:
        torch.set_num_threads(previous)


@dataclass
class RealCosts:
    """Compression, theoretical speedup and measured latency of the dense, masked and
    physically pruned models, side by side."""

    input_shape: tuple[int, ...]
    params: dict[str, int | None]
    flops: dict[str, int | None]
    latency_ms: dict[str, dict[int, float] | None]
    threads: int
    physical: PhysicalPruning | None
    physical_note: str

    def speedup(self, kind: str) -> dict[int, float] | None:
        """Measured speedup over the dense model per batch size."""
        if self.latency_ms.get(kind) is None:
            return None
        return {batch: self.latency_ms["dense"][batch] / ms for batch, ms in self.latency_ms[kind].items()}

    def rows(self) -> list[dict]:
        """One row per model: params, compression, FLOPs, theoretical and measured speedup."""
        rows = []
        for kind in KINDS:
            params, flops = self.params[kind], self.flops[kind]
            latency, speedup = self.latency_ms[kind], self.speedup(kind)
            row = {
                "model": kind,
                "params": params,
                "compression": None if params is None else self.params["dense"] / max(params, 1),
                "flops": flops,
                "theoretical_speedup": None if flops is None else self.flops["dense"] / max(flops, 1),
            }
            for batch in sorted(self.latency_ms["dense"]):
                row[f"latency_ms_batch{batch}"] = None if latency is None else latency[batch]
                row[f"measured_speedup_batch{batch}"] = None if speedup is None else speedup[batch]
            rows.append(row)
        return rows

    def to_json(self) -> dict:
        def by_batch(values):
            return None if values is None else {str(batch): value for batch, value in values.items()}

        physical = None
        if self.physical is not None:
            physical = self.physical.to_json()
            physical["compression"] = self.params["dense"] / max(self.physical.params, 1)
            physical["speedup"] = self.flops["dense"] / max(self.physical.flops, 1)
        return {
            "physical": physical,
            "physical_note": self.physical_note,
            "latency_ms": {kind: by_batch(self.latency_ms[kind]) for kind in KINDS},
            "measured_speedup": {kind: by_batch(self.speedup(kind)) for kind in ("masked", "physical")},
            "latency_settings": {
                "device": "cpu",
                "threads": self.threads,
                "batch_sizes": sorted(self.latency_ms["dense"]),
                "input_shape": list(self.input_shape),
                "statistic": "median wall time of one forward pass: 3 to 7 passes after 2 warm-up passes, "
                             "the models taking turns, torch.inference_mode",
            },
            "costs_note": COSTS_NOTE,
        }


def physical_or_note(model: nn.Module, mask: Mask, input_shape, state_dict=None) -> tuple[PhysicalPruning | None, str]:
    """The physically pruned model with a note on what was removed, or None with the plain reason."""
    try:
        physical = remove_pruned_channels(model, mask, input_shape, state_dict)
    except BadInputError as error:
        return None, str(error)
    kept = sum(physical.kept_masked.values())
    note = (f"Removed {physical.removed_channels} of {physical.masked_channels} masked neurons/filters physically "
            f"(outputs equal the masked model's to {physical.max_abs_difference:.1e}).")
    if kept:
        parts = {"coupled": "that a coupled layer still uses (residual connections)",
                 "constant": "that carry the constants of removed channels into zero-padded convs",
                 "last": "so that no layer vanishes",
                 "aligned": "so that channel counts are multiples of the kernels' block size"}
        reasons = [f"{count} {parts[reason]}" for reason, count in physical.kept_masked.items() if count]
        note += " Kept " + "; ".join(reasons) + "."
    return physical, note


def real_costs(
    model: nn.Module, mask: Mask, input_shape: tuple[int, ...], state_dict: dict[str, torch.Tensor] | None = None,
    batch_sizes=BATCH_SIZES, threads: int = LATENCY_THREADS, progress=None,
) -> RealCosts:
    """The three costs of a pruned model (``model`` with ``state_dict`` and ``mask``; ``model``
    is not touched): params, FLOPs (``metrics.model_stats``) and measured CPU latency, for the
    dense, the masked and, where the mask is structured, the physically smaller model."""
    report = progress or (lambda fraction, message: None)
    input_shape = tuple(input_shape)
    dense = masked_copy(model)
    masked = masked_copy(model, state_dict)
    report(0.0, "removing pruned channels")
    physical, note = physical_or_note(model, mask, input_shape, state_dict)
    dense_stats = model_stats(dense, None, input_shape)
    masked_stats = model_stats(masked, mask, input_shape)
    report(0.3, "timing the dense, masked and physical models")
    models = {"dense": dense, "masked": masked} | ({"physical": physical.model} if physical else {})
    latency = measure_latency(models, input_shape, batch_sizes, threads)
    latency.setdefault("physical", None)
    report(1.0, "measured")
    return RealCosts(
        input_shape=input_shape,
        params={"dense": dense_stats.params_total, "masked": masked_stats.params_nonzero,
                "physical": None if physical is None else physical.params},
        flops={"dense": dense_stats.flops_dense, "masked": masked_stats.flops_pruned,
               "physical": None if physical is None else physical.flops},
        latency_ms=latency,
        threads=threads,
        physical=physical,
        physical_note=note,
    )
