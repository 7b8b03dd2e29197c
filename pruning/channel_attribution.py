"""Channel attributions (Captum: Kokhlikyan et al., Captum: A Unified and Generic Model
Interpretability Library for PyTorch, 2020): how much of a model's decision rests on each
neuron/filter, per sample and per class; the scores the attribution criteria prune by.

The attributed activation is the *output of each Linear/Conv module* (bias included, before any
activation function or norm layer), because that is the tensor structured pruning acts on:
removing a neuron/filter zeroes its weight row and leaves that output equal to the bias (to 0
without one). Every sample is attributed to the logit of its true label; a channel's attribution
for one sample is the sum over its spatial positions of captum's per-element attribution, i.e.
the channel's total contribution to that logit:

- ``gradxact``: ``LayerGradientXActivation``, ``sum_hw a * dF_y/da`` (gradient x input, Shrikumar
  et al., Not Just a Black Box: Learning Important Features Through Propagating Activation
  Differences, 2016, applied to a layer): one backward pass; the first-order estimate of the logit
  change if the activation went to 0, as in Taylor pruning (Molchanov et al., Pruning
  Convolutional Neural Networks for Resource Efficient Inference, ICLR 2017);
- ``conductance``: ``LayerConductance`` (Dhamdhere, Sundararajan & Yan, How Important Is a
  Neuron?, ICLR 2019), the integrated-gradients flow through the channel on the straight path from
  the black-image baseline to the input, ``n_steps`` equal steps with both ends included (captum's
  default Gauss-Legendre points leave out both ends, and since LayerConductance multiplies by the
  differences between consecutive points the path falls short: about 9% of every attribution at 4
  steps, even on a linear network); over a layer the channels sum to about
  ``F_y(x) - F_y(baseline)``, exactly on a linear network;
- ``ablation``: ``LayerFeatureAblation`` (occlusion of a feature, after Zeiler & Fergus,
  Visualizing and Understanding Convolutional Networks, ECCV 2014), ``F_y(x)`` minus ``F_y`` with
  the channel replaced by its bias, which is what pruning the channel leaves: exactly the logit
  change from removing that one channel alone (one forward pass per channel, batched).

All three are in units of the target logit, so channels of different layers compare (global scope).
Per class, a channel's importance is the mean over that class's samples of the *absolute* per-sample
attribution (a channel that moves the logit strongly either way matters; signs would cancel
between samples). The model is never touched: attributions run on an eval-mode deep copy.

captum is imported inside the functions that use it: it takes about two seconds to load, which
the CLI and the pages that never attribute should not pay.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from pruning.errors import BadInputError

CHANNEL_METHODS = ("gradxact", "conductance", "ablation")
DEFAULT_STEPS = 16  # conductance: channel ranks within 0.998 (Spearman) of 128 steps on lenet5/mlp
CONDUCTANCE_POINTS = "riemann_trapezoid"  # both ends of the path included (see above)
SAMPLES_PER_PASS = 1024  # samples in one forward pass (samples x steps, or samples x ablated channels)
CHUNK = 256  # samples per gradient x activation pass


def captum_default_device() -> torch.device:
    """The default device while captum integrates along a path: the CPU. captum makes its
    integration points without a device and reads them into Python (``linspace(...).tolist()``), so
    a caller's default device must not reach them; the tensors it computes on follow the inputs."""
    return torch.device("cpu")


def evaluation_copy(model: nn.Module, state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """An eval-mode deep copy of ``model`` (with ``state_dict`` loaded, e.g. the pruned weights),
    parameters frozen: captum hooks and mode changes land on the copy, never on a shared model."""
    network = copy.deepcopy(model)
    if state_dict is not None:
        network.load_state_dict(state_dict)
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None
    return network


def input_baseline(x: torch.Tensor, mean=(), std=()) -> torch.Tensor:
    """The black image in the data's standardised units, ``(0 - mean) / std`` per channel (zeros,
    the mean image, when the statistics are unknown): the reference of conductance and integrated
    gradients, as Sundararajan et al. use a black image. On the device of ``x``."""
    if not (mean and std):
        return torch.zeros_like(x[:1])
    channels = x.shape[1]
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, *([1] * (x.dim() - 2)))
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, *([1] * (x.dim() - 2)))
    if mean_t.shape[1] != channels:
        raise BadInputError(f"the data has {channels} channels but {mean_t.shape[1]} channel means")
    return (-mean_t / std_t).expand(1, *x.shape[1:]).clone()


def _layers(network: nn.Module, layer_names: list[str]) -> list[nn.Module]:
    modules = dict(network.named_modules())
    missing = [name for name in layer_names if not isinstance(modules.get(name), (nn.Linear, nn.Conv1d, nn.Conv2d))]
    if missing:
        raise BadInputError(f"no Linear/Conv layer named {missing[0]!r} in this model")
    return [modules[name] for name in layer_names]


def _per_channel(attribution: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C): a channel's attribution summed over its positions."""
    attribution = attribution.detach()
    return attribution.flatten(2).sum(2) if attribution.dim() > 2 else attribution


def _check_inputs(x: torch.Tensor, y: torch.Tensor, method: str, n_steps: int) -> None:
    if method not in CHANNEL_METHODS:
        raise BadInputError(f"unknown channel attribution {method!r}; choose one of: {', '.join(CHANNEL_METHODS)}")
    if len(x) == 0 or len(x) != len(y):
        raise BadInputError(f"attributions need samples with one label each; got {len(x)} samples, {len(y)} labels")
    if method == "conductance" and int(n_steps) < 2:
        raise BadInputError(f"conductance needs at least 2 integration steps, got {n_steps}")


def channel_attributions(model: nn.Module, layer_names: list[str], x: torch.Tensor, y: torch.Tensor,
                         method: str = "gradxact", n_steps: int = DEFAULT_STEPS,
                         baseline: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Signed attribution of every sample's true-label logit ``y_i`` to each output channel of each
    named Linear/Conv module: ``{layer name: (N, C)}`` (see the module docstring for the three
    methods). ``baseline`` (conductance): the reference input, broadcast over the batch, default
    zeros. Samples go through in chunks so memory stays bounded."""
    from captum.attr import LayerConductance, LayerGradientXActivation  # slow to load: on first use

    _check_inputs(x, y, method, n_steps)
    network = evaluation_copy(model)
    layers = _layers(network, layer_names)
    y = y.long()
    if method == "gradxact":
        explainer = LayerGradientXActivation(network, layers)
        parts = [explainer.attribute(xc, target=yc) for xc, yc in zip(x.split(CHUNK), y.split(CHUNK))]
        return {name: torch.cat([_per_channel(part[index]) for part in parts]) for index, name in enumerate(layer_names)}
    if method == "conductance":
        result, reference = {}, (torch.zeros_like(x[:1]) if baseline is None else baseline.to(device=x.device, dtype=x.dtype))
        chunk = max(1, SAMPLES_PER_PASS // int(n_steps))
        for name, layer in zip(layer_names, layers):
            explainer = LayerConductance(network, layer)
            with captum_default_device():
                result[name] = torch.cat([
                    _per_channel(explainer.attribute(xc, baselines=reference.expand_as(xc), target=yc,
                                                     n_steps=int(n_steps), method=CONDUCTANCE_POINTS))
                    for xc, yc in zip(x.split(chunk), y.split(chunk))
                ])
        return result
    return {name: _ablation(network, name, layer, x, y) for name, layer in zip(layer_names, layers)}


def _downstream(network: nn.Module, layer_name: str) -> nn.Module | None:
    """The part of ``network`` after the layer, as a module taking the layer's output, when the
    output depends on the input only through that layer (sequential models: mlp, lenet5,
    vgg-small); None otherwise (a residual block's inner conv, untraceable control flow).

    Ablating one channel then reruns only what follows the layer, not the convolutions before it:
    for lenet5's fc1 (500 channels, 100 images) 0.08 s instead of 14 s on one core, the same numbers."""
    try:
        traced = torch.fx.symbolic_trace(network)
    except Exception:  # noqa: BLE001 - not traceable: the full-network path is always right
        return None
    nodes = list(traced.graph.nodes)
    hits = [node for node in nodes if node.op == "call_module" and node.target == layer_name]
    if len(hits) != 1:
        return None
    graph = torch.fx.Graph()
    env = {hits[0]: graph.placeholder("activation")}
    for node in nodes[nodes.index(hits[0]) + 1:]:
        if node.op == "placeholder" or any(source not in env for source in node.all_input_nodes):
            return None  # the output also depends on something computed before the layer
        env[node] = graph.node_copy(node, lambda source: env[source])
    return torch.fx.GraphModule(traced, graph)


def _ablation(network: nn.Module, name: str, layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, C): the target logit minus the target logit with channel c of ``layer``'s output
    replaced by its bias. Through ``LayerFeatureAblation`` on the whole network, or, where the
    rest of the network depends on the input only through this layer, through ``FeatureAblation``
    on that rest (:func:`_downstream`), fed the layer's output computed once."""
    from captum.attr import FeatureAblation, LayerFeatureAblation  # slow to load: on first use

    if isinstance(layer, nn.Linear):
        shape = (1, layer.out_features)
    else:
        shape = (1, layer.out_channels, *([1] * (2 if isinstance(layer, nn.Conv2d) else 1)))
    groups = torch.arange(shape[1], device=layer.weight.device).view(shape)
    left = layer.bias.detach().view(shape) if layer.bias is not None else 0.0  # what pruning the channel leaves
    rest = _downstream(network, name)

    def target_logit(inputs: torch.Tensor, targets: torch.Tensor, forward=network) -> torch.Tensor:
        # captum expands additional arguments with the perturbed batch, but not a tensor target
        return forward(inputs).gather(1, targets[:, None]).squeeze(1)

    parts = []
    for xc, yc in zip(x.split(CHUNK), y.split(CHUNK)):
        per_eval = max(1, SAMPLES_PER_PASS // len(xc))
        if rest is None:
            attribution = LayerFeatureAblation(target_logit, layer).attribute(
                xc, layer_baselines=left, additional_forward_args=(yc,), layer_mask=groups, perturbations_per_eval=per_eval)
        else:
            captured = []  # the hook is removed below, before the next chunk
            handle = layer.register_forward_hook(
                lambda module, inputs, output: captured.append(output.detach().clone()))  # noqa: B023
            try:
                with torch.no_grad():
                    network(xc)
            finally:
                handle.remove()
            # a clone in: an in-place activation after the layer must not rewrite captum's copy of it
            attribution = FeatureAblation(lambda a, t: target_logit(a.clone(), t, forward=rest)).attribute(
                captured[0], baselines=left, additional_forward_args=(yc,), feature_mask=groups,
                perturbations_per_eval=per_eval)
        # every position of a channel carries that channel's ablation effect: read one, not their sum
        parts.append(attribution.detach().flatten(2).mean(2) if attribution.dim() > 2 else attribution.detach())
    return torch.cat(parts)


def class_channel_attributions(per_sample: dict[str, torch.Tensor], y: torch.Tensor,
                               num_classes: int) -> dict[str, np.ndarray]:
    """Per layer a (classes, channels) matrix: the mean over a class's samples of the absolute
    per-sample channel attribution. Rows of classes without samples are NaN. Summed on the CPU:
    the matrices are NumPy arrays."""
    y = torch.as_tensor(y, device="cpu").long()
    counts = torch.bincount(y, minlength=num_classes).double()
    matrices = {}
    for name, values in per_sample.items():
        values = values.detach().cpu()
        sums = torch.zeros(num_classes, values.shape[1], dtype=torch.float64, device="cpu").index_add_(
            0, y, values.abs().double())
        with np.errstate(invalid="ignore", divide="ignore"):
            matrices[name] = (sums / counts[:, None]).numpy()
    return matrices


def channel_importance(class_matrix: dict[str, np.ndarray], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """One score per channel: the mean over classes of the class matrix (classes weigh equally,
    whatever their sample counts; classes without samples are left out), on ``device`` (that of
    the weights the scores will meet)."""
    return {name: torch.from_numpy(np.nanmean(matrix, axis=0)).float().to(device) for name, matrix in class_matrix.items()}


def spread_over_channel(importance: torch.Tensor, weight_shape: torch.Size) -> torch.Tensor:
    """Per-weight scores of a layer whose output channel c scores ``importance[c]``: each of the
    channel's k weights carries ``importance[c] / k``, so a neuron/filter's summed score (the
    structured group score, aggregate "sum") is the channel attribution, up to float rounding.
    On the device of ``importance``."""
    per_channel = math.prod(weight_shape[1:])
    if importance.numel() != weight_shape[0]:
        raise BadInputError(f"{importance.numel()} channel scores for a weight of {weight_shape[0]} output channels")
    return (importance / per_channel).view(-1, *([1] * (len(weight_shape) - 1))).expand(weight_shape).clone()
