"""Importance criteria: a score per prunable weight, higher = more important = kept longer.

A criterion maps ``(model, weight names, context)`` to ``{name: score tensor}`` of the weights'
shapes; ``pruning.selection`` turns scores into a mask at any granularity. ``aggregate`` says
how a criterion's weight scores combine into a neuron/filter/block score.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pruning.activations import input_feature_norms
from pruning.autodiff import eval_mode, gradient
from pruning.channel_attribution import DEFAULT_STEPS
from pruning.class_balanced import balanced_batch
from pruning.criteria_attribution import ablation_scores, conductance_scores, gradxact_scores
from pruning.errors import BadInputError
from pruning.loss_gradients import loss_signals
from pruning.models import functional_forward, model_device
from pruning.params import Param


@dataclass(frozen=True)
class Criterion:
    name: str
    description: str
    formula: str  # LaTeX
    reference: str
    score: Callable[..., dict[str, torch.Tensor]]
    aggregate: str = "sum"  # "sum" of weight scores per group, or "l2" norm
    needs_data: bool = True
    iterative: bool = False  # scored again after each of several pruning rounds (SynFlow)
    structured_only: bool = False  # scores whole neurons/filters: only structured granularity applies
    params: tuple[Param, ...] = ()  # extra declared settings, passed to ``score`` as keyword arguments
    samples_per_class: int = 10  # default class-balanced scoring batch (data criteria)
    group_terms: Callable[..., dict[str, torch.Tensor]] | None = None  # signed terms: a group scores |their sum|


def magnitude_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """``|w|`` (Han, Pool, Tran & Dally, Learning both Weights and Connections for Efficient Neural Networks,
    NeurIPS 2015)."""
    parameters = dict(model.named_parameters())
    return {name: parameters[name].detach().abs() for name in names}


def random_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """Uniform random scores from the experiment's seed: the baseline every comparison shows. Drawn on
    the CPU (the same scores on every device), then moved to the weights."""
    generator = torch.Generator().manual_seed(context.seed)
    parameters = dict(model.named_parameters())
    return {name: torch.rand(parameters[name].shape, generator=generator, device="cpu").to(parameters[name].device)
            for name in names}


# --- data-driven criteria: g = dL/dw and H g on a class-balanced training batch (pruning.loss_gradients) ---

GRADIENT_FLOW_SAMPLES_PER_CLASS = 256  # 2,560 on 10 classes: the gradient-flow paper's imp_samples
GRASP_TEMPERATURE = 200.0  # GraSP's logits / T (its code and the gradient-flow paper's grasp_T)


def snip_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """Loss preservation / SNIP connection sensitivity ``|w * g|`` (Lee, Ajanthan & Torr, SNIP: Single-shot
    Network Pruning based on Connection Sensitivity, ICLR 2019; loss preservation in Lubana & Dick, A Gradient
    Flow Framework for Analyzing Network Pruning, ICLR 2021).

    SNIP divides every score by the sum of all scores; that positive constant changes no
    ranking, so it is left out (the selected weights are identical)."""
    signals = loss_signals(model, names, context)
    return {name: (signals.weights[name] * signals.gradient[name]).abs() for name in names}


def biased_loss_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """Biased loss preservation ``|w^2 * g|`` (Lubana & Dick, ICLR 2021): loss preservation times ``|w|``."""
    signals = loss_signals(model, names, context)
    return {name: (signals.weights[name].square() * signals.gradient[name]).abs() for name in names}


def taylor_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """First-order Taylor importance ``(w * g)^2`` per weight (Molchanov, Mallya, Tyree, Frosio & Kautz,
    Importance Estimation for Neural Network Pruning, CVPR 2019).

    Reading chosen for filters/neurons: the *sum of the per-weight* ``(w g)^2`` over the group
    (aggregate ``sum``), not Molchanov's group form ``(sum over the group of w g)^2``, which lets
    opposite-signed contributions cancel. Per weight the two readings coincide."""
    signals = loss_signals(model, names, context)
    return {name: (signals.weights[name] * signals.gradient[name]).square() for name in names}


def grasp_scores(model: nn.Module, names: list[str], context,
                 temperature: float = GRASP_TEMPERATURE) -> dict[str, torch.Tensor]:
    """GraSP (Wang, Zhang & Grosse, Picking Winning Tickets Before Training by Preserving Gradient Flow,
    ICLR 2020), importance ``w * (H g)``: the **negated** GraSP score.

    GraSP's score is ``S = -w * (H g)`` and GraSP removes the weights with the *largest* S (the
    GraSP and gradient-flow papers' code agree). Why: removing weight ``w`` moves the weights by ``delta = -w e_w``, and the gradient norm changes by
    ``d(g^T g) ~ 2 delta^T H g = -2 w (H g) = 2 S``: the largest S are the weights whose removal
    raises (or least lowers) the gradient flow, the most negative S those whose removal would cut
    it most. Our selection keeps the *highest* scores and prunes the lowest, so this function
    returns ``-S = w * (H g)``: pruning its lowest values is removing GraSP's largest S. The
    score is signed (no absolute value); filters/neurons sum it. As both references' code, ``g`` and
    ``H`` are those of the cross-entropy of ``logits / temperature`` (T = 200 there: a softer softmax)."""
    signals = loss_signals(model, names, context, hessian=True, temperature=temperature)
    return {name: signals.weights[name] * signals.hessian_gradient[name] for name in names}


def grad_norm_terms(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """The signed ``w * (H g)`` (plain cross-entropy, T = 1) whose size is gradient-norm preservation's
    score: a filter/neuron scores ``|sum over it|``, as the gradient-flow paper's code (sum, then abs)."""
    return grasp_scores(model, names, context, temperature=1.0)


def grad_norm_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """Gradient-norm preservation ``|w * (H g)|`` (Lubana & Dick, ICLR 2021): the first-order change
    of ``||g||^2`` on removing ``w`` is ``-2 w (H g)``; keep the weights whose removal changes it most."""
    return {name: term.abs() for name, term in grad_norm_terms(model, names, context).items()}


def _unclipped(model: nn.Module) -> nn.Module:
    """``model``, or a copy with clipped activations (ReLU6, Hardtanh) replaced by ReLU.

    SynFlow assumes positively homogeneous activations; on the all-ones input with |w| weights
    ReLU6 saturates (mobilenet_v2) and no gradient reaches the earlier layers at all."""
    if not any(isinstance(module, nn.Hardtanh) for module in model.modules()):
        return model
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Hardtanh):
                setattr(parent, child_name, nn.ReLU())
    return model


def synflow_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """SynFlow (Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020): ``|w| * dR/d|w|`` with ``R = sum f(1; |w|)``, no data.

    As the authors' code does, every parameter and floating buffer is replaced by its absolute
    value (the prunable weights also multiplied by the current mask, if any), the network runs
    in eval mode, in float64 to avoid overflow, on one all-ones input of the data's
    ``input_shape`` (clipped activations such as ReLU6 become ReLU, see :func:`_unclipped`). It
    runs through ``torch.func.functional_call`` (on a copy if activations were swapped), so the
    model is untouched. Scores are divided by R, which changes no ranking and keeps them in float32 range (each
    layer's scores then sum to about 1: SynFlow's conservation law). Weights the mask has already
    pruned score -1, below every live weight (live scores are >= 0), so they stay pruned."""
    mask = getattr(context, "mask", None)
    tensors = {name: tensor.detach().abs().double() for name, tensor in model.named_parameters()}
    for name, buffer in model.named_buffers():
        tensors[name] = buffer.detach().abs().double() if buffer.is_floating_point() else buffer
    weights = [
        (tensors[name] * mask[name] if mask is not None and name in mask else tensors[name]).requires_grad_(True)
        for name in names
    ]
    tensors.update(zip(names, weights))
    ones = torch.ones(1, *context.data.input_shape, dtype=torch.float64, device=model_device(model))
    network = _unclipped(model)
    with eval_mode(network):
        flow = functional_forward(network, tensors, (ones,)).sum()
        grads = gradient(flow, weights)
    if not torch.isfinite(flow) or flow <= 0:
        raise BadInputError(
            f"SynFlow's synaptic flow R is {flow.item()} (overflow or a dead network); it cannot rank weights"
        )
    scores = {}
    for name, weight, grad in zip(names, weights, grads):
        score = (weight.detach() * grad / flow.detach()).float()
        scores[name] = torch.where(mask[name], score, -1.0) if mask is not None and name in mask else score
    return scores


# --- channel attributions (captum) as neuron/filter importance: pruning.criteria_attribution ---

def wanda_scores(model: nn.Module, names: list[str], context, comparison: str = "row") -> dict[str, torch.Tensor]:
    """``|W_ij| ||X_j||_2``, X_j the j-th input feature over a class-balanced training batch (conv:
    the unfolded input's columns). ``comparison`` is applied by the selection (per row or per layer)."""
    x, _ = balanced_batch(context.data, context.samples_per_class, context.seed)
    norms, parameters = input_feature_norms(model, names, x), dict(model.named_parameters())
    return {name: parameters[name].detach().abs() * norms[name] for name in names}


SCORING_NOTE = (
    " Scored by default on 256 training samples of each class (2,560 on 10 classes, the gradient-flow paper's "
    "imp_samples; all of a smaller class), in eval mode."
)
ATTRIBUTION_NOTE = (
    " The attributed activation is each Linear/Conv layer's output channel (bias included, before the "
    "activation function); every sample is attributed to its true class's logit, the channel's attribution is "
    "summed over its positions, and its score is |attribution| averaged over each class's samples of a "
    "class-balanced training batch, then over the classes. Scores whole neurons/filters, so only structured "
    "granularity applies; the output layer stays whole."
)

CRITERIA: dict[str, Criterion] = {
    criterion.name: criterion
    for criterion in (
        Criterion(
            "magnitude",
            "Remove the weights with the smallest absolute value (per filter: the smallest L2 norm). "
            "The classic baseline: cheap, and hard to beat on trained networks.",
            r"s(w) = |w|",
            "Han, Pool, Tran & Dally, Learning both Weights and Connections for Efficient Neural Networks, NeurIPS 2015.",
            magnitude_scores,
            aggregate="l2",
            needs_data=False,
        ),
        Criterion(
            "wanda",
            "Pruning by weights and activations: a weight's magnitude times the L2 norm of its input feature over "
            "a class-balanced calibration batch (conv layers: the unfolded input's columns), so a small weight on a "
            "large input survives. The paper compares scores within each output row (each row loses the same "
            "fraction); 'layer' compares over the whole layer. No retraining, no weight update.",
            r"s_{ij} = |W_{ij}| \cdot \lVert X_j \rVert_2",
            "Sun, Liu, Bair & Kolter, A Simple and Effective Pruning Approach for Large Language Models, ICLR 2024.",
            wanda_scores,
            params=(Param("comparison", "choice", "row", "row: each output row (neuron/filter) loses the same "
                          "fraction of its weights, as the paper; layer: one comparison per layer (unstructured only; "
                          "other granularities compare their groups).", choices=("row", "layer"),
                          label="Compare scores within"),),
        ),
        Criterion(
            "random",
            "Remove weights uniformly at random (seeded). The floor every other method must beat.",
            r"s(w) \sim \mathcal{U}(0, 1)",
            "Blalock, Gonzalez Ortiz, Frankle & Guttag, What is the State of Neural Network Pruning?, MLSys 2020.",
            random_scores,
            needs_data=False,
        ),
        Criterion(
            "snip",
            "Loss preservation (SNIP's connection sensitivity): keep the weights whose removal would change "
            "the loss most to first order, |w g|, with g the loss gradient on a class-balanced training batch. "
            "Favours weights that are both large and on a steep direction of the loss. Good at or near "
            "initialisation and on barely trained models; once a model has converged g is small and noisy "
            "and it can do worse than magnitude. Filters/neurons sum their weights' scores (as the gradient-flow "
            "paper's code)." + SCORING_NOTE,
            r"s(w) = \left| w \odot \frac{\partial L}{\partial w} \right|",
            "Lee, Ajanthan & Torr, SNIP: Single-shot Network Pruning based on Connection Sensitivity, ICLR 2019; "
            "as loss preservation in Lubana & Dick, A Gradient Flow Framework for Analyzing Network Pruning, "
            "ICLR 2021.",
            snip_scores,
            samples_per_class=GRADIENT_FLOW_SAMPLES_PER_CLASS,
        ),
        Criterion(
            "biased-loss",
            "Biased loss preservation: |w^2 g|, loss preservation weighted once more by |w|. Between magnitude "
            "and SNIP: it favours removing small weights (a small weight needs a very steep gradient to "
            "survive), which the gradient-flow paper found to track magnitude's fast early convergence while "
            "still using the loss. Filters/neurons sum their weights' scores (as the reference code)." + SCORING_NOTE,
            r"s(w) = \left| w^2 \odot \frac{\partial L}{\partial w} \right|",
            "Lubana & Dick, A Gradient Flow Framework for Analyzing Network Pruning, ICLR 2021.",
            biased_loss_scores,
            samples_per_class=GRADIENT_FLOW_SAMPLES_PER_CLASS,
        ),
        Criterion(
            "grasp",
            "GraSP (gradient signal preservation): score S = -w (H g), signed, and remove the weights with the "
            "largest S, i.e. keep those whose removal would most reduce the gradient norm (gradient flow) of the "
            "network; H g is a Hessian-gradient product by double backprop. Meant for pruning at initialisation "
            "so the sparse network still trains quickly. Because it is signed it may keep weights that increase "
            "the loss and it can hurt, especially on trained models (the gradient-flow paper's finding). "
            "Filters/neurons sum the signed scores (as both references' code). g and H g are those of the "
            "cross-entropy of the logits divided by a temperature T (default 200, as GraSP's and the gradient-flow "
            "paper's code; T = 1 is the plain loss)." + SCORING_NOTE,
            r"S(w) = -\,w \odot (H g) \ \text{(largest removed)}, \qquad s(w) = -S(w) = w \odot (H g)",
            "Wang, Zhang & Grosse, Picking Winning Tickets Before Training by Preserving Gradient Flow, ICLR 2020.",
            grasp_scores,
            samples_per_class=GRADIENT_FLOW_SAMPLES_PER_CLASS,
            params=(Param("temperature", "float", GRASP_TEMPERATURE, "T: g and H g are taken of the cross-entropy "
                          "of logits / T (GraSP's code and the gradient-flow paper's: 200; 1 = the plain loss).",
                          min=1.0, max=1000.0, step=1.0, label="T (softmax temperature)"),),
        ),
        Criterion(
            "grad-norm",
            "Gradient-norm preservation: |w (H g)|, the size of the first-order change of the gradient norm "
            "||g||^2 if the weight were removed; keep the weights that change it most, in either direction. "
            "The unsigned counterpart of GraSP from the gradient-flow paper: it preserves the training dynamics "
            "rather than the loss, and costs a Hessian-vector product. A filter/neuron scores the size of its "
            "summed change, |sum of w (H g)| (sum, then absolute value, as the reference code), so opposite changes "
            "within it cancel. Plain cross-entropy (T = 1, as the reference)." + SCORING_NOTE,
            r"s(w) = \left| w \odot (H g) \right|, \quad s(F) = \Big| \sum_{w \in F} w\, (H g)_w \Big|, "
            r"\quad H g = \nabla_w \big( g^\top \operatorname{sg}(g) \big)",
            "Lubana & Dick, A Gradient Flow Framework for Analyzing Network Pruning, ICLR 2021.",
            grad_norm_scores,
            samples_per_class=GRADIENT_FLOW_SAMPLES_PER_CLASS,
            group_terms=grad_norm_terms,
        ),
        Criterion(
            "taylor",
            "First-order Taylor importance: (w g)^2, the squared first-order change of the loss when the weight "
            "is removed, with g on a class-balanced training batch. Designed for pruning trained networks "
            "filter by filter; a filter/neuron scores the sum of its weights' (w g)^2 (Molchanov et al. also "
            "define the group score as the square of the summed w g; this lab sums the squares). Squaring "
            "makes a few large contributions dominate; like SNIP it is only as good as the batch gradient."
            + SCORING_NOTE,
            r"s(w) = \left( w \odot \frac{\partial L}{\partial w} \right)^2, \qquad s(F) = \sum_{w \in F} (w\, g_w)^2",
            "Molchanov, Mallya, Tyree, Frosio & Kautz, Importance Estimation for Neural Network Pruning, CVPR 2019 "
            "(first introduced in Molchanov et al., Pruning Convolutional Neural Networks for Resource Efficient "
            "Inference, ICLR 2017).",
            taylor_scores,
            samples_per_class=GRADIENT_FLOW_SAMPLES_PER_CLASS,
        ),
        Criterion(
            "synflow",
            "SynFlow (iterative synaptic flow conservation): data-free. Replace every weight by |w|, feed an "
            "all-ones input, and score each weight by its share |w| dR/d|w| of the total output R. Rescored "
            "over many rounds (default 100) with exponentially growing sparsity, it conserves the flow through "
            "every layer and so avoids layer collapse, where one-shot scores cut a layer off entirely at high "
            "sparsity. Needs no data and works at initialisation; it ignores the task, so on trained "
            "networks it is usually beaten by magnitude. Filters/neurons sum their weights' scores.",
            r"s(w) = |w| \odot \frac{\partial R}{\partial |w|}, \qquad "
            r"R = \mathbf{1}^\top f\big(\mathbf{1};\, |w| \odot m\big)",
            "Tanaka, Kunin, Yamins & Ganguli, Pruning Neural Networks without any Data by Iteratively Conserving "
            "Synaptic Flow, NeurIPS 2020.",
            synflow_scores,
            needs_data=False,
            iterative=True,
        ),
        Criterion(
            "attr-gradxact",
            "Gradient x activation of each neuron/filter (captum LayerGradientXActivation): the channel's "
            "activation times the gradient of the true class's logit, one backward pass. The first-order "
            "estimate of how much the logit would move if the channel were silenced; the channel-level "
            "counterpart of first-order Taylor pruning." + ATTRIBUTION_NOTE,
            r"s_c = \operatorname{mean}_k \operatorname{mean}_{i: y_i = k} "
            r"\Big| \sum_{h,w} a_{c,hw}(x_i)\, \frac{\partial F_{y_i}}{\partial a_{c,hw}}(x_i) \Big|",
            "Shrikumar, Greenside, Shcherbina & Kundaje, Not Just a Black Box: Learning Important Features Through "
            "Propagating Activation Differences, 2016; Molchanov et al., Pruning Convolutional Neural Networks for "
            "Resource Efficient Inference, ICLR 2017; Kokhlikyan et al., Captum, 2020.",
            gradxact_scores,
            structured_only=True,
        ),
        Criterion(
            "attr-conductance",
            "Layer conductance of each neuron/filter (captum LayerConductance): the integrated-gradients flow "
            "of the true class's logit through the channel along the straight path from a black image to the "
            "input in n_steps equal steps, ends included (n_steps + 1 forward/backward passes per layer). "
            "Unlike gradient x activation it accounts for saturation along the path; a layer's channels sum to "
            "about F(x) - F(black)." + ATTRIBUTION_NOTE,
            r"s_c = \operatorname{mean}_k \operatorname{mean}_{i: y_i = k} \Big| \sum_{h,w} \int_0^1 "
            r"\frac{\partial F_{y_i}}{\partial a_{c,hw}} \frac{\partial a_{c,hw}}{\partial \alpha}"
            r"\big(x' + \alpha (x_i - x')\big)\, d\alpha \Big|",
            "Dhamdhere, Sundararajan & Yan, How Important Is a Neuron?, ICLR 2019; Kokhlikyan et al., Captum, 2020.",
            conductance_scores,
            structured_only=True,
            params=(Param("n_steps", "int", DEFAULT_STEPS,
                          "Integration steps from the black image to each input (trapezoid points, both ends "
                          "included); cost grows with it.", min=2, max=64, label="Integration steps (n_steps)"),),
        ),
        Criterion(
            "attr-ablation",
            "Ablation of each neuron/filter (captum LayerFeatureAblation): the true class's logit minus the logit "
            "with the channel replaced by its bias, which is exactly what pruning that one channel leaves, so the "
            "score is the measured effect of removing the channel alone (not a gradient estimate). One forward "
            "pass per channel and sample, batched." + ATTRIBUTION_NOTE,
            r"s_c = \operatorname{mean}_k \operatorname{mean}_{i: y_i = k} "
            r"\big| F_{y_i}(x_i) - F_{y_i}(x_i;\ a_c \leftarrow b_c) \big|",
            "Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014 (occlusion); "
            "Kokhlikyan et al., Captum, 2020.",
            ablation_scores,
            structured_only=True,
        ),
    )
}
