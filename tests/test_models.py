"""Model registry, prunable-weight bookkeeping and the ShrinkBench-style metrics."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pruning.errors import BadInputError
from pruning.masks import Mask
from pruning.metrics import flops_per_weight, model_stats
from pruning.models import MODELS, build_model, model_names, output_layer_name, prunable_layers, prunable_weight_names

SHAPES = [(1, 28, 28), (3, 32, 32)]
MNIST = (1, 28, 28)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built():
    """Every registry model on every shape, built once (resnet18 takes a moment)."""
    torch.manual_seed(0)
    return {(name, shape): build_model(name, shape, 10) for name in MODELS for shape in SHAPES}


def test_registry_lists_the_expected_models():
    assert model_names() == list(MODELS)
    assert {"mlp", "lenet5", "vgg-small", "resnet20", "resnet18", "mobilenet_v2"} <= set(MODELS)
    for info in MODELS.values():
        assert info.description.strip()


@pytest.mark.parametrize("shape", SHAPES, ids=["1x28x28", "3x32x32"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_builds_and_gives_batch_by_classes_outputs(built, name, shape):
    model = built[name, shape]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


def test_parameter_counts_of_the_paper_networks():
    def count(name):
        return sum(p.numel() for p in build_model(name, MNIST, 10).parameters())

    # LeNet-300-100: 784*300+300 + 300*100+100 + 100*10+10
    assert count("mlp") == 266_610 == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    # Caffe LeNet-5 (DNS paper, ~431K): conv 20@5x5, conv 50@5x5, fc 800->500, fc 500->10
    assert count("lenet5") == 431_080 == (20 * 25 + 20) + (50 * 20 * 25 + 50) + (800 * 500 + 500) + (500 * 10 + 10)


def test_torchvision_models_come_through_the_registry(built):
    """Guards the torch/torchvision matching-pair install: torchvision imports, its compiled
    operators load against this torch, and our registry builds its networks."""
    import torchvision
    from torchvision.models import MobileNetV2, ResNet

    assert torchvision.__version__
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0]])
    kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.5, 0.7]), 0.5)  # a C++ op: fails on a mismatched pair
    assert kept.tolist() == [0, 2]
    for shape in SHAPES:
        resnet, mobilenet = built["resnet18", shape], built["mobilenet_v2", shape]
        assert isinstance(resnet, ResNet)
        assert isinstance(mobilenet, MobileNetV2)
        # stems adapted to the input's channels, small-image variant (3x3 stride 1, no max-pool)
        assert resnet.conv1.in_channels == shape[0] and resnet.conv1.kernel_size == (3, 3)
        assert isinstance(resnet.maxpool, nn.Identity)
        assert mobilenet.features[0][0].in_channels == shape[0] and mobilenet.features[0][0].stride == (1, 1)
        assert resnet.fc.out_features == 10
        assert mobilenet.classifier[-1].out_features == 10


def test_a_model_that_cannot_fit_the_input_is_a_clear_bad_input_error():
    with pytest.raises(BadInputError, match=r"lenet5 .*16x16.*8x8"):
        build_model("lenet5", (1, 8, 8), 10)
    with pytest.raises(BadInputError, match=r"vgg-small .*8x8"):
        build_model("vgg-small", (1, 4, 4), 10)


def test_unknown_model_is_a_bad_input_error_that_lists_the_choices():
    with pytest.raises(BadInputError, match=r"unknown model 'alexnet'.*mlp.*lenet5"):
        build_model("alexnet", MNIST, 10)


@pytest.mark.parametrize("name", list(MODELS))
def test_prunable_weights_are_exactly_the_linear_and_conv_weights(built, name):
    model = built[name, SHAPES[1]]
    modules = dict(model.named_modules())
    names = prunable_weight_names(model)
    expected = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert names == expected and names
    parameters = dict(model.named_parameters())
    for weight in names:
        assert weight in parameters
        assert isinstance(modules[weight.rsplit(".", 1)[0]], (nn.Linear, nn.Conv2d))
    assert not any(n.endswith(".bias") for n in names)
    assert not any(isinstance(modules[n.rsplit(".", 1)[0]], nn.BatchNorm2d) for n in names)

    last_linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    assert output_layer_name(model) == last_linear
    without_output = prunable_weight_names(model, include_output=False)
    assert without_output == [n for n in names if n != f"{last_linear}.weight"]
    assert len(without_output) == len(names) - 1


def test_output_layer_of_the_small_networks():
    assert prunable_weight_names(build_model("mlp", MNIST, 10), include_output=False) == ["fc1.weight", "fc2.weight"]
    assert prunable_weight_names(build_model("lenet5", MNIST, 10), include_output=False) == [
        "conv1.weight",
        "conv2.weight",
        "fc1.weight",
    ]


@pytest.mark.parametrize("shape", SHAPES, ids=["1x28x28", "3x32x32"])
@pytest.mark.parametrize("name", list(MODELS))
def test_dense_flops_equal_torch_flop_counter(built, name, shape):
    model = built[name, shape]
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    # the weight layers' FLOPs: vit-tiny's weight-free attention products (q k^T, A v: aten.bmm) are not counted
    expected = counter.get_total_flops() - counter.get_flop_counts()["Global"].get(torch.ops.aten.bmm, 0)
    stats = model_stats(model, None, shape)
    assert expected > 0
    assert stats.flops_dense == expected
    # nothing is masked: pruned FLOPs count only the exactly-zero weights a random init may hold
    # (resnet18's 11M weights can contain a stray 0.0)
    assert stats.flops_pruned == sum(layer.flops_dense // layer.params * layer.nonzero for layer in stats.layers)
    assert stats.flops_pruned == pytest.approx(expected, rel=1e-6)
    assert stats.speedup == pytest.approx(1.0, rel=1e-6)
    assert stats.sparsity < 1e-6


def _first(mask_shape, k):
    """A keep-mask that prunes the first k entries."""
    keep = torch.ones(mask_shape, dtype=torch.bool)
    keep.view(-1)[:k] = False
    return keep


def test_pruned_flops_sparsity_and_speedup_of_a_hand_made_lenet5_mask():
    torch.manual_seed(0)
    model = build_model("lenet5", MNIST, 10)
    k1, k2, k3 = 37, 100, 1234
    mask = Mask(
        {
            "conv1.weight": _first(model.conv1.weight.shape, k1),  # 24x24 output positions
            "conv2.weight": _first(model.conv2.weight.shape, k2),  # 8x8 output positions
            "fc1.weight": _first(model.fc1.weight.shape, k3),  # Linear: 2 FLOPs per weight
        }
    )
    dense = model_stats(model, None, MNIST)
    stats = model_stats(model, mask, MNIST)
    assert flops_per_weight(model, MNIST) == {"conv1": 2 * 24 * 24, "conv2": 2 * 8 * 8, "fc1": 2, "fc2": 2}
    assert stats.flops_dense == dense.flops_dense == 4_586_000
    removed = 2 * 24 * 24 * k1 + 2 * 8 * 8 * k2 + 2 * k3
    assert stats.flops_pruned == dense.flops_dense - removed
    assert stats.speedup == pytest.approx(dense.flops_dense / (dense.flops_dense - removed))
    by_name = {layer.name: layer for layer in stats.layers}
    assert by_name["conv1.weight"].flops_dense - by_name["conv1.weight"].flops_pruned == 2 * 24 * 24 * k1
    assert by_name["conv1.weight"].nonzero == 500 - k1
    assert by_name["conv1.weight"].sparsity == pytest.approx(k1 / 500)
    assert by_name["fc2.weight"].sparsity == 0.0
    # sparsity is over the masked (prunable) weights
    masked_total = 500 + 25_000 + 400_000
    assert stats.sparsity == pytest.approx((k1 + k2 + k3) / masked_total)
    # compression: all parameters (biases included) / nonzero ones
    assert stats.params_total == 431_080
    assert stats.params_nonzero == 431_080 - (k1 + k2 + k3)
    assert stats.compression == pytest.approx(431_080 / (431_080 - k1 - k2 - k3))
    # the model itself is not touched
    assert torch.count_nonzero(model.conv1.weight) == 500


def test_compression_counts_all_parameters_and_exact_zeros_shrinkbench_style():
    torch.manual_seed(0)
    model = build_model("mlp", MNIST, 10)
    with torch.no_grad():
        model.fc3.bias.zero_()  # 10 zero biases count as zeros too (ShrinkBench counts nonzero over all params)
    k = 200_000
    mask = Mask({"fc1.weight": _first(model.fc1.weight.shape, k)})
    stats = model_stats(model, mask, MNIST)
    assert stats.params_total == 266_610
    assert stats.params_nonzero == 266_610 - k - 10
    assert stats.compression == pytest.approx(266_610 / (266_610 - k - 10))
    assert stats.flops_dense == 532_400
    assert stats.flops_pruned == 532_400 - 2 * k
    assert stats.speedup == pytest.approx(532_400 / (532_400 - 2 * k))
    assert stats.sparsity == pytest.approx(k / 235_200)  # over the masked weights only


def test_parameters_override_is_used_for_the_counts():
    """Weights passed in ``parameters`` (e.g. after training-time pruning) replace the model's own."""
    torch.manual_seed(0)
    model = build_model("mlp", MNIST, 10)
    zeroed = model.fc2.weight.detach().clone()
    zeroed[:50] = 0  # 50 rows x 300 = 15,000 zeros
    stats = model_stats(model, None, MNIST, parameters={"fc2.weight": zeroed})
    assert stats.params_nonzero == 266_610 - 15_000
    assert stats.flops_pruned == 532_400 - 2 * 15_000
    assert stats.sparsity == pytest.approx(15_000 / (235_200 + 30_000 + 1_000))
    assert torch.count_nonzero(model.fc2.weight) == 30_000
    assert set(prunable_layers(model)) == {"fc1", "fc2", "fc3"}
