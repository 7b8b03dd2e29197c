"""The input activations each prunable layer sees, reduced to one norm per input feature.

Activation-aware scores weigh a weight by how large its input is: Wanda scores ``|W_ij| ||X_j||``
and OWL counts the outliers of that score per layer. For a Linear layer X_j is the j-th input
feature over the calibration samples; for a convolution it is the j-th column of the unfolded
input (input channel c at kernel offset (u, v)) over samples and output positions, so the norms
have the kernel's shape ``(in_channels / groups, kh, kw)`` and broadcast against the weight. They
are computed from shifted slices of the squared, zero-padded input, never by unfolding it (an
unfolded vgg-small input at batch 100 is about 240 MB).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pruning.autodiff import eval_mode
from pruning.errors import BadInputError
from pruning.models import prunable_layers


def _conv_column_squares(layer: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    """``sum over samples and output positions of x[c, p*s + u*d - pad]^2`` per input channel c and
    kernel offset (u, v), shaped like the weight where the convolution is grouped (an output channel
    of group g reads only that group's input channels) and ``(in, kh, kw)`` otherwise."""
    squared = F.pad(inputs.pow(2), [layer.padding[1], layer.padding[1], layer.padding[0], layer.padding[0]])
    out_h = (squared.shape[2] - layer.dilation[0] * (layer.kernel_size[0] - 1) - 1) // layer.stride[0] + 1
    out_w = (squared.shape[3] - layer.dilation[1] * (layer.kernel_size[1] - 1) - 1) // layer.stride[1] + 1
    sums = torch.empty(inputs.shape[1], *layer.kernel_size, device=inputs.device)
    for u in range(layer.kernel_size[0]):
        for v in range(layer.kernel_size[1]):
            top, left = u * layer.dilation[0], v * layer.dilation[1]
            window = squared[:, :, top: top + (out_h - 1) * layer.stride[0] + 1: layer.stride[0],
                             left: left + (out_w - 1) * layer.stride[1] + 1: layer.stride[1]]
            sums[:, u, v] = window.sum(dim=(0, 2, 3))
    if layer.groups == 1:
        return sums
    per_group = sums.view(layer.groups, inputs.shape[1] // layer.groups, *layer.kernel_size)
    return per_group.repeat_interleave(layer.out_channels // layer.groups, dim=0)


def input_feature_norms(model: nn.Module, names: list[str], x: torch.Tensor, chunk: int = 256) -> dict[str, torch.Tensor]:
    """``||X_j||_2`` for every input feature j of each named weight (``"<layer>.weight"``), over the
    samples ``x`` in eval mode; shaped to broadcast against the weight (Linear: ``(in,)``, Conv:
    ``(in, kh, kw)``, or the weight's shape when grouped). The model is not changed (hooks are
    removed, mode restored)."""
    layers = {f"{name}.weight": layer for name, layer in prunable_layers(model).items() if f"{name}.weight" in names}
    squared: dict[str, torch.Tensor] = {}

    def hook(name, layer):
        def record(_module, args):
            inputs = args[0].detach()
            if isinstance(layer, nn.Conv2d):
                part = _conv_column_squares(layer, inputs)
            elif isinstance(layer, nn.Linear):
                part = inputs.reshape(-1, inputs.shape[-1]).pow(2).sum(0)
            else:
                raise BadInputError(f"{name}: activation norms are defined for Linear and Conv2d layers only")
            squared[name] = squared[name] + part if name in squared else part
        return record

    handles = [layer.register_forward_pre_hook(hook(name, layer)) for name, layer in layers.items()]
    try:
        with eval_mode(model), torch.no_grad():
            for part in x.split(chunk):
                model(part)
    finally:
        for handle in handles:
            handle.remove()
    return {name: squared[name].sqrt() for name in layers}
