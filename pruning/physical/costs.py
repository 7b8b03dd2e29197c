"""The three costs of a pruned model side by side: compression (params), theoretical speedup
(FLOPs of the nonzero weights) and measured latency, for the dense, the masked and, where the mask
is structured, the physically smaller model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from pruning.errors import BadInputError
from pruning.masks import Mask
from pruning.metrics import model_stats
from pruning.physical.latency import BATCH_SIZES, LATENCY_THREADS, measure_latency
from pruning.physical.removal import PhysicalPruning, masked_copy, remove_pruned_channels
from pruning.physical.semi_structured import SemiStructuredLayer, is_two_four, time_semi_structured

KINDS = ("dense", "masked", "physical")

COSTS_NOTE = (
    "Three different numbers. Compression (params) and theoretical speedup (FLOPs of the nonzero weights) "
    "are what the mask could give; latency is measured. The masked model runs the dense kernels on zeros, "
    "so it is as large and as slow as the dense one. The physical model has the pruned channels removed "
    "for real (structured masks only), so it is smaller and its speedup is measured, not assumed."
)


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
    semi_structured: list[SemiStructuredLayer] = field(default_factory=list)  # 2:4 Linear layers timed on a GPU
    semi_structured_note: str = ""  # what was timed, or why nothing was (empty: the mask has no 2:4 layer)
    device: str = "cpu"  # where the latency was timed: "cpu" or "cuda" (the model's device)
    device_name: str = ""  # pruning.device.describe_device's words for it (threads or the GPU's name)

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
                "device": self.device,
                "device_name": self.device_name or self.device,
                "threads": self.threads,
                "batch_sizes": sorted(self.latency_ms["dense"]),
                "input_shape": list(self.input_shape),
                "statistic": "median wall time of one forward pass: 3 to 7 passes after 2 warm-up passes, "
                             "the models taking turns, torch.inference_mode",
            },
            "costs_note": COSTS_NOTE,
            "semi_structured": {"layers": [{**asdict(row), "speedup": row.speedup} for row in self.semi_structured],
                                "note": self.semi_structured_note} if self.semi_structured_note else None,
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
        parts = {"coupled": "that a coupled layer still uses (residual connections, heads kept in part, LayerNorms)",
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
    is not touched): params, FLOPs (``metrics.model_stats``) and measured latency on the model's
    device, for the dense, the masked and, where the mask is structured, the physically smaller
    model (removed on a CPU copy, timed on the model's device like the others)."""
    report = progress or (lambda fraction, message: None)
    input_shape = tuple(input_shape)
    mask = mask.to(next(model.parameters()).device)  # a mask read from the cache is on the CPU
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
    two_four = any(is_two_four(keep) for keep in mask.values())
    semi_rows, semi_note = time_semi_structured(masked, mask) if two_four else ([], "")
    report(1.0, "measured")
    return RealCosts(
        input_shape=input_shape,
        params={"dense": dense_stats.params_total, "masked": masked_stats.params_nonzero,
                "physical": None if physical is None else physical.params},
        flops={"dense": dense_stats.flops_dense, "masked": masked_stats.flops_pruned,
               "physical": None if physical is None else physical.flops},
        latency_ms=latency,
        threads=threads,
        device=latency.device,
        device_name=latency.device_name,
        physical=physical,
        semi_structured=semi_rows,
        semi_structured_note=semi_note,
        physical_note=note,
    )
