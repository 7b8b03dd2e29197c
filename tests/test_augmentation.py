"""The CIFAR recipe's augmentation (random crop with padding 4, horizontal flip) against
torchvision's own transforms, and end to end: what resnet20 sees while it trains on CIFAR-10 files."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from pruning.data import load_dataset
from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.models import build_model
from pruning.train import CROP_PADDING, TrainConfig, batches, black_pixel, fit, random_crop_flip
from tests.tiny_cifar import write_tiny_cifar10


def torchvision_crop_flip(image: torch.Tensor, black: torch.Tensor, top: int, left: int, flip: bool) -> torch.Tensor:
    """One image through torchvision: pad each channel with its black, crop, maybe flip."""
    padded = torch.stack([TF.pad(image[c:c + 1], [CROP_PADDING], fill=float(black[c]))[0] for c in range(len(black))])
    out = TF.crop(padded, top, left, image.shape[1], image.shape[2])
    return TF.horizontal_flip(out) if flip else out


def test_crop_flip_equals_torchvision_image_by_image():
    x = torch.randn(12, 3, 10, 9)
    black = torch.tensor([-1.5, -2.0, -0.25])
    out = random_crop_flip(x, black, torch.Generator().manual_seed(5))
    draws = torch.Generator().manual_seed(5)  # the draws documented: offsets (N, 2) in [0, 8], then flips
    offsets = torch.randint(0, 2 * CROP_PADDING + 1, (12, 2), generator=draws)
    flips = torch.rand(12, generator=draws) < 0.5
    assert 0 < int(flips.sum()) < 12 and len(set(map(tuple, offsets.tolist()))) > 6  # the case covers both
    for i in range(12):
        expected = torchvision_crop_flip(x[i], black, int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]))
        assert torch.equal(out[i], expected), i


def test_black_pixel_is_zero_before_standardising(tmp_path):
    write_tiny_cifar10(tmp_path)
    data = load_dataset("cifar10", root=tmp_path)
    black = black_pixel(data)
    raw = black * torch.tensor(data.std) + torch.tensor(data.mean)
    assert raw.abs().max() < 1e-6 and black.shape == (3,)


def test_augment_is_a_checked_setting_keyed_only_when_set():
    assert "augment" not in TrainConfig().to_dict()
    assert Experiment().key() == Experiment(train=TrainConfig(augment="none")).key()
    assert Experiment().key() != Experiment(train=TrainConfig(augment="crop-flip")).key()
    assert TrainConfig.from_settings({"augment": "crop-flip"}).augment == "crop-flip"
    with pytest.raises(BadInputError, match="augmentation"):
        TrainConfig(augment="mixup")


@pytest.mark.parametrize("model_name", ["resnet20", "vgg-small"])
def test_training_on_cifar10_sees_crops_and_flips_of_its_own_images(tmp_path, model_name):
    """Every image the model is given in training is one of the 2 x 9 x 9 crop-flips of the image the
    seeded batch order says it is; some are flipped or moved, and evaluation sees the images as they are."""
    write_tiny_cifar10(tmp_path)
    data = load_dataset("cifar10", root=tmp_path)
    torch.manual_seed(0)
    model = build_model(model_name, data.input_shape, data.num_classes)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append((module.training, args[0].detach().clone())))
    config = TrainConfig(epochs=1, batch_size=8, augment="crop-flip")
    fit(model, data, config, seed=3)
    training = [inputs for is_training, inputs in seen if is_training]
    order = torch.cat(batches(len(data.y_train), config.batch_size, torch.Generator().manual_seed(3)))
    assert [len(inputs) for inputs in training] == [8, 8, 4]
    black = black_pixel(data)
    moved = 0
    for image, source in zip(torch.cat(training), order):
        original = data.x_train[source]
        candidates = [torchvision_crop_flip(original, black, top, left, flip)
                      for top in range(9) for left in range(9) for flip in (False, True)]
        assert any(torch.equal(image, candidate) for candidate in candidates)
        moved += not torch.equal(image, original)
    assert moved >= 10  # 20 images: all but the unmoved, unflipped ones (1 in 162 each)
    evaluated = torch.cat([inputs for is_training, inputs in seen if not is_training])
    assert torch.equal(evaluated, data.x_test)
