"""Model registry: every model is built from a dataset's input shape and class count.

Prunable parameters are the weights of Linear and Conv layers, as in the lottery-ticket experiments
(Frankle & Carbin, The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks, ICLR
2019; their OpenLTH code); biases and normalisation layers are never pruned.
"""

from __future__ import annotations

import copy
import threading
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from pruning.errors import BadInputError
from pruning.vit import VIT_RECIPE, vit_tiny

InputShape = tuple[int, int, int]


class LeNet300100(nn.Module):
    """LeNet-300-100 (LeCun et al. 1998): a 784-300-100-10 MLP on 28x28 inputs."""

    def __init__(self, input_shape: InputShape, num_classes: int):
        super().__init__()
        channels, height, width = input_shape
        self.fc1 = nn.Linear(channels * height * width, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class CaffeLeNet5(nn.Module):
    """The Caffe LeNet-5 used by Han et al. and DNS: conv 20@5x5, pool, conv 50@5x5, pool,
    fc 500 (ReLU), fc classes. About 431K parameters on 28x28 inputs; no ReLU after the convs,
    as in Caffe's lenet_train_test.prototxt."""

    def __init__(self, input_shape: InputShape, num_classes: int):
        super().__init__()
        channels, height, width = input_shape
        self.conv1 = nn.Conv2d(channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        feature_h = ((height - 4) // 2 - 4) // 2
        feature_w = ((width - 4) // 2 - 4) // 2
        if feature_h < 1 or feature_w < 1:
            raise BadInputError(
                f"lenet5 needs inputs of at least 16x16 pixels; this dataset's are {height}x{width}. "
                "Pick mlp or vgg-small for it."
            )
        self.fc1 = nn.Linear(50 * feature_h * feature_w, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.conv1(x), 2)
        x = nn.functional.max_pool2d(self.conv2(x), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


class SmallVGG(nn.Module):
    """A small VGG-style CNN with batch norm: [32, 32, pool, 64, 64, pool, 128, pool],
    global average pooling, one linear classifier. Works from 8x8 inputs up."""

    plan = (32, 32, "pool", 64, 64, "pool", 128, "pool")

    def __init__(self, input_shape: InputShape, num_classes: int):
        super().__init__()
        channels, height, width = input_shape
        if min(height, width) < 8:
            raise BadInputError(f"vgg-small needs inputs of at least 8x8 pixels; got {height}x{width}.")
        layers: list[nn.Module] = []
        for item in self.plan:
            if item == "pool":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1, bias=False), nn.BatchNorm2d(item), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """ResNet basic block; the shortcut is a 1x1 conv + BN where the shape changes
    (option B), which Torch-Pruning's dependency graph handles directly."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR-style ResNet-20 (He et al. 2016, section 4.2): 3 stages of 3 basic blocks with
    16, 32 and 64 channels, global average pooling, one linear layer."""

    def __init__(self, input_shape: InputShape, num_classes: int, blocks_per_stage: int = 3):
        super().__init__()
        channels, height, width = input_shape
        if min(height, width) < 8:
            raise BadInputError(f"resnet20 needs inputs of at least 8x8 pixels; got {height}x{width}.")
        self.conv1 = nn.Conv2d(channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_channels = [], 16
        for stage, out_channels in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                stages.append(BasicBlock(in_channels, out_channels, stride))
                in_channels = out_channels
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.layers(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _torchvision_resnet18(input_shape: InputShape, num_classes: int) -> nn.Module:
    """torchvision's resnet18 (random init, nothing downloaded) with its stem adapted to the
    input: the first conv takes the dataset's channels, and for small images (< 64 px) it
    becomes a 3x3 stride-1 conv without the max-pool, the usual CIFAR adaptation."""
    import torchvision

    channels, height, width = input_shape
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if min(height, width) < 64:
        model.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    return model


def _torchvision_mobilenet_v2(input_shape: InputShape, num_classes: int) -> nn.Module:
    """torchvision's mobilenet_v2 (random init) with the first conv taking the dataset's
    channels, and stride 1 instead of 2 for small images (< 64 px)."""
    import torchvision

    channels, height, width = input_shape
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    first = model.features[0][0]
    stride = 1 if min(height, width) < 64 else 2
    model.features[0][0] = nn.Conv2d(channels, first.out_channels, 3, stride, 1, bias=False)
    return model


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    build: Callable[[InputShape, int], nn.Module]
    recipe: dict | None = None  # training settings (TrainConfig fields) it needs instead of the defaults


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo("mlp", "LeNet-300-100: a 300-100 fully connected network (267K params on MNIST).", LeNet300100),
        ModelInfo("lenet5", "Caffe LeNet-5: two 5x5 convs (20, 50 filters), fc 500 (431K params on MNIST).", CaffeLeNet5),
        ModelInfo("vgg-small", "A small VGG-style CNN with batch norm (32-32-64-64-128 channels).", SmallVGG),
        ModelInfo("resnet20", "CIFAR-style ResNet-20 (16-32-64 channels, 0.27M params).", ResNet20),
        ModelInfo("resnet18", "torchvision ResNet-18 with a small-image stem (11M params).", _torchvision_resnet18),
        ModelInfo("mobilenet_v2", "torchvision MobileNetV2 with a small-image stem (2.2M params).", _torchvision_mobilenet_v2),
        ModelInfo("vit-tiny", "A small Vision Transformer: 4x4 patches, width 64, 4 blocks of 4 heads (139K params); "
                  "train it with AdamW (README).", vit_tiny, VIT_RECIPE),
    )
}


def model_names() -> list[str]:
    return list(MODELS)


def build_model(name: str, input_shape: InputShape, num_classes: int) -> nn.Module:
    """Build a registry model and check with one dummy forward pass that it fits the input,
    so a model/dataset pair that cannot work fails here with a clear message."""
    if name not in MODELS:
        raise BadInputError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    model = MODELS[name].build(tuple(input_shape), num_classes)
    try:
        with torch.no_grad():
            model.eval()
            output = model(torch.zeros(1, *input_shape, device=model_device(model)))
    except RuntimeError as error:
        raise BadInputError(
            f"model {name!r} does not fit inputs of shape {tuple(input_shape)}: {str(error).splitlines()[0]}"
        ) from None
    if output.shape != (1, num_classes):
        raise BadInputError(f"model {name!r} produced outputs of shape {tuple(output.shape)}, not (1, {num_classes})")
    return model


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` computes: the device of its parameters (tensors made for it go there)."""
    return next(model.parameters()).device


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Linear and Conv layers by module name, in forward-definition order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d))}


def output_layer_name(model: nn.Module) -> str:
    """The last Linear layer: the one OpenLTH leaves dense when asked to."""
    linear_names = [name for name, module in prunable_layers(model).items() if isinstance(module, nn.Linear)]
    return linear_names[-1] if linear_names else list(prunable_layers(model))[-1]


def prunable_weight_names(model: nn.Module, include_output: bool = True) -> list[str]:
    """Parameter names (as in ``state_dict``) of the prunable weights."""
    output = output_layer_name(model)
    return [f"{name}.weight" for name in prunable_layers(model) if include_output or name != output]


_SHADOWS: "weakref.WeakKeyDictionary[nn.Module, tuple[nn.Module, threading.Lock]]" = weakref.WeakKeyDictionary()
_SHADOWS_GUARD = threading.Lock()


def _shadow(model: nn.Module) -> tuple[nn.Module, threading.Lock]:
    """A tensor-less copy of ``model`` (on the meta device) and its lock, made once per model."""
    with _SHADOWS_GUARD:
        entry = _SHADOWS.get(model)
        if entry is None:
            entry = _SHADOWS[model] = (copy.deepcopy(model).to("meta"), threading.Lock())
        return entry


def functional_forward(model: nn.Module, tensors, args: tuple, **options):
    """``torch.func.functional_call(model, tensors, args)`` that never touches ``model``, so
    threads (app sessions) can share one model; a plain forward if ``tensors`` is None.

    ``functional_call`` swaps the module's own attributes for the given tensors while it runs:
    two threads calling it on one module see each other's tensors (measured: 909 of 1,200
    results wrong with four threads on one Linear layer), and a thread merely reading the
    module's parameters meanwhile reads another's. So the call runs on a tensor-less copy of
    the module's structure (one per model, one call at a time, in the model's train/eval mode)
    given the model's own parameters and buffers overridden by ``tensors`` (a dict or a tuple of
    dicts, as functional_call takes)."""
    if tensors is None:
        return model(*args)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for part in tensors if isinstance(tensors, tuple) else (tensors,):
        state.update(part)
    shadow, lock = _shadow(model)
    with lock:
        shadow.train(model.training)
        return functional_call(shadow, state, args, **options)
