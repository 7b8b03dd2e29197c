"""Where the engine computes: the CPU or a CUDA GPU.

The device is a choice of the experiment (``Experiment.device``): its data and models live there
and every tensor the engine makes follows the tensors it works on (``x.device``). What is stored
on disk (cached models, masks, runs) is read back onto the CPU and moved where it is used, so a
cache written on a GPU machine reads on a CPU one. ``auto`` is resolved where a command or the
app starts, never stored: an experiment names the device it ran on.
"""

from __future__ import annotations

import torch

from pruning.errors import BadInputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEVICES = ("cpu", "cuda")  # what an experiment records once "auto" is resolved


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_device(choice: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is there, else ``cpu``; ``cuda`` without one is a
    clear error (never a silent fallback: the user asked for the GPU)."""
    if choice not in DEVICE_CHOICES:
        raise BadInputError(f"unknown device {choice!r}; choose one of: {', '.join(DEVICE_CHOICES)}")
    if choice == "auto":
        return "cuda" if cuda_available() else "cpu"
    if choice == "cuda" and not cuda_available():
        raise BadInputError("device cuda asked for, but torch sees no CUDA GPU on this machine; use --device cpu or auto")
    return choice


def check_device(device: str) -> torch.device:
    """The torch device of an experiment's ``device``, checked where tensors are first put on it."""
    return torch.device(resolve_device(device))


def describe_device(device: str | torch.device) -> str:
    """For timings and reports: ``cpu (2 threads)`` or the GPU's name."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
