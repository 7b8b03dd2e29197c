"""Latency measured, not assumed: median wall time of forward passes, the models taking turns.

Counting FLOPs says what a smaller model could save; only a clock says what it does save on a
given machine (a masked model, for one, runs the dense kernels on zeros and saves nothing).
Models are timed on the device they are on; the timings say which one (a GPU call is waited for,
so its time is the kernels' and not just their launch).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from pruning.device import describe_device

BATCH_SIZES = (1, 64)
LATENCY_THREADS = 1


class Timings(dict):
    """``{model: {batch size: median ms}}`` and the device they were timed on (``device``: ``cpu`` or
    ``cuda``; ``device_name``: ``pruning.device.describe_device``'s words, threads or GPU name)."""

    def __init__(self, timings: dict[str, dict[int, float]], device: str | torch.device = "cpu"):
        super().__init__(timings)
        self.device = torch.device(device).type
        self.device_name = describe_device(device)


def random_batch(input_shape: tuple[int, ...], batch: int, seed: int = 0) -> torch.Tensor:
    """A seeded standard normal batch of ``batch`` inputs of ``input_shape``, on the CPU (the
    same inputs for every device; callers move it)."""
    return torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(seed), device="cpu")


def models_device(models: dict[str, nn.Module]) -> torch.device:
    """The one device all ``models`` are on (the CPU for models without parameters)."""
    devices = {tensor.device for model in models.values() for tensor in model.parameters()}
    if len(devices) > 1:
        raise ValueError(f"models to time side by side must share a device, got {sorted(map(str, devices))}")
    return devices.pop() if devices else torch.device("cpu")


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
) -> Timings:
    """:func:`time_in_turns` of each model's forward pass in eval mode, on the device the models
    are on (all on one), under ``torch.inference_mode`` with ``threads`` intra-op threads (restored
    afterwards; they matter on the CPU only). On a GPU every call waits for its kernels to finish."""
    device = models_device(models)
    runners = dict(models)
    if device.type == "cuda":
        runners = {name: _waited(model, device) for name, model in models.items()}
    inputs = {batch: x.to(device) for batch, x in latency_inputs(input_shape, batch_sizes, seed).items()}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for model in models.values():
            model.eval()
        with torch.inference_mode():
            return Timings(time_in_turns(runners, inputs, repeats, budget_seconds), device)
    finally:
        torch.set_num_threads(previous)


def _waited(model: nn.Module, device: torch.device) -> Callable:
    """``model``'s forward pass that returns only once the GPU has finished it (CUDA runs asynchronously)."""
    def run(x):
        output = model(x)
        torch.cuda.synchronize(device)
        return output

    return run
