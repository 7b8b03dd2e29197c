"""Tensors into what plotly draws: figure builders that may be handed tensors turn them into NumPy
arrays here, through the CPU (a tensor on a GPU has no NumPy view)."""

from __future__ import annotations

import numpy as np
import torch


def as_numpy(values, dtype=None) -> np.ndarray:
    """``values`` (a tensor on any device, an array, a list) as a NumPy array of ``dtype``."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)
