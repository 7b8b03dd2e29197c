"""Latency measured, not assumed: median wall time of forward passes, the models taking turns.

Counting FLOPs says what a smaller model could save; only a clock says what it does save on a
given machine (a masked model, for one, runs the dense kernels on zeros and saves nothing).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

BATCH_SIZES = (1, 64)
LATENCY_THREADS = 1


def random_batch(input_shape: tuple[int, ...], batch: int, seed: int = 0) -> torch.Tensor:
    """A seeded standard normal batch of ``batch`` inputs of ``input_shape``."""
    return torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(seed))


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
    return {batch: random_batch(input_shape, batch, seed) for batch in batch_sizes}


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
