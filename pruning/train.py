"""Training and evaluation. Seeded and deterministic for a seed (on one machine and thread count).

When a mask is given it holds through training: gradients of pruned weights are zeroed before
the step and the mask is re-applied after every optimizer step, so neither momentum nor weight
decay can revive a pruned weight (the "mask drift" pitfall).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from pruning.errors import BadInputError
from pruning.masks import Mask
from pruning.models import functional_forward
from pruning.params import Param, resolve_settings

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], message)


def progress_stage(progress: Progress | None, start: float = 0.0, end: float = 1.0, prefix: str = "") -> Progress | None:
    """``progress`` for one stage of a longer computation: the stage's fractions mapped to
    [start, end] of the whole, its messages prefixed (None stays None)."""
    if progress is None:
        return None
    return lambda fraction, message: progress(min(1.0, start + fraction * (end - start)), prefix + message)

OPTIMIZERS = ("sgd", "adam", "adamw")
AUGMENTATIONS = ("none", "crop-flip")
CROP_PADDING = 4  # the CIFAR recipe's random crop (He et al. 2016): pad 4, crop back to the image size


class TrainingDivergedError(BadInputError):
    """The loss became NaN or infinite; nothing from the run is kept."""


TRAIN_PARAMS = (
    Param("epochs", "int", 6, "Dense training epochs.", min=0, ui_range=(1, 30), label="Epochs"),
    Param("lr", "float", 0.05, "Learning rate at the start (cosine decay to zero per step).", min=1e-9, step=1e-3,
          label="Learning rate (cosine decay)"),
    Param("momentum", "float", 0.9, "SGD momentum.", min=0.0, max=0.999, ui_range=(0.0, 0.99), step=0.01,
          label="Momentum"),
    Param("weight_decay", "float", 5e-4, "Weight decay: an L2 term in the gradient for sgd and adam, decoupled "
          "(w <- w - lr * decay * w) for adamw.", min=0.0, step=1e-5, label="Weight decay"),
    Param("batch_size", "int", 64, "Training batch size.", min=1, label="Batch size"),
    Param("optimizer", "choice", "sgd", "sgd (with momentum), adam, or adamw (Adam with decoupled weight decay: "
          "Loshchilov & Hutter, ICLR 2019; the usual choice for transformers).", choices=OPTIMIZERS, label="Optimizer"),
    Param("shift_pixels", "int", 0, "Data augmentation: every training image is moved by its own random offset of up "
          "to this many pixels along each axis, drawn anew each epoch (edge pixels repeated); 0 = none.", min=0, max=8,
          ui_range=(0, 4), label="Random shift (pixels)"),
    Param("augment", "choice", "none", "Data augmentation of the CIFAR recipe (He et al., CVPR 2016): crop-flip pads "
          "each training image by 4 black pixels, crops it back at a random position and flips it left-right with "
          "probability 1/2, drawn anew each epoch; none = the images as they are.", choices=AUGMENTATIONS,
          label="Augmentation"),
    Param("warmup_epochs", "int", 0, "Epochs of linear learning-rate warm-up (from lr / steps to lr) before the "
          "cosine decay; at most half of a run (a short fine-tuning warms up for half its steps).", min=0,
          ui_range=(0, 10), label="Warm-up epochs"),
)
TRAIN_DEFAULTS = {param.name: param.default for param in TRAIN_PARAMS}
# Settings added after models were cached: left out of ``to_dict`` (and so of cache keys) at their defaults.
KEYED_WHEN_SET = ("shift_pixels", "warmup_epochs", "augment")


@dataclass(frozen=True)
class TrainConfig:
    """How the dense model trains; the fields are ``TRAIN_PARAMS`` (the CLI flags and the
    sidebar's widgets are generated from them)."""

    epochs: int = TRAIN_DEFAULTS["epochs"]
    lr: float = TRAIN_DEFAULTS["lr"]
    momentum: float = TRAIN_DEFAULTS["momentum"]
    weight_decay: float = TRAIN_DEFAULTS["weight_decay"]
    batch_size: int = TRAIN_DEFAULTS["batch_size"]
    optimizer: str = TRAIN_DEFAULTS["optimizer"]
    shift_pixels: int = TRAIN_DEFAULTS["shift_pixels"]
    warmup_epochs: int = TRAIN_DEFAULTS["warmup_epochs"]
    augment: str = TRAIN_DEFAULTS["augment"]

    def __post_init__(self):
        for name, kind in (("epochs", int), ("batch_size", int), ("lr", float), ("momentum", float), ("weight_decay", float),
                           ("shift_pixels", int), ("warmup_epochs", int)):
            object.__setattr__(self, name, kind(getattr(self, name)))  # 1 and 1.0 are the same choice
        if self.optimizer not in OPTIMIZERS:
            raise BadInputError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if self.augment not in AUGMENTATIONS:
            raise BadInputError(f"unknown augmentation {self.augment!r}; choose one of: {', '.join(AUGMENTATIONS)}")
        if self.epochs < 0 or self.batch_size < 1 or not (self.lr > 0 and math.isfinite(self.lr)):
            raise BadInputError("epochs must be >= 0, batch_size >= 1 and lr a positive number")
        if self.warmup_epochs < 0 or self.shift_pixels < 0:
            raise BadInputError("warmup_epochs and shift_pixels must be >= 0")

    def to_dict(self) -> dict:
        """The settings as a dict; those in ``KEYED_WHEN_SET`` only when not at their default, so
        the models trained before they existed keep their cache keys."""
        return {name: value for name, value in asdict(self).items()
                if name not in KEYED_WHEN_SET or value != TRAIN_DEFAULTS[name]}

    @classmethod
    def from_settings(cls, overrides: dict | None = None) -> TrainConfig:
        """A config from declared settings (strings from the CLI are parsed and range-checked)."""
        return cls(**resolve_settings(TRAIN_PARAMS, overrides, owner="dense training"))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def cosine_decay(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning rate decayed to zero along a cosine over ``total_steps`` steps (stepped per step)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Step s (0-based) trains at ``lr * (s + 1) / W`` for s < W (W = ``warmup_steps``, at most half
    of the run), then at ``lr * (1 + cos(pi (s - W) / (T - W))) / 2``: the cosine decay of
    ``cosine_decay`` started after the warm-up. Without warm-up it is ``cosine_decay`` itself."""
    total = max(1, total_steps)
    warmup = min(max(0, warmup_steps), total // 2)
    if warmup == 0:
        return cosine_decay(optimizer, total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total - warmup) / (total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cosine_sgd(parameters, lr: float, total_steps: int, momentum: float = 0.9,
               weight_decay: float = 0.0) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with a per-step cosine decay to zero: the recipe of the methods that train from the
    trained model on their own learning rate (DNS, LOMP's L1 training); ``fit`` builds the same
    from a ``TrainConfig`` (which may ask for Adam) with ``make_optimizer`` + ``cosine_decay``."""
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return optimizer, cosine_decay(optimizer, total_steps)


def batches(num_samples: int, batch_size: int, generator: torch.Generator, device: torch.device | None = None):
    """Shuffled index batches from a seeded CPU generator (the same order on every device), on ``device``."""
    order = torch.randperm(num_samples, generator=generator, device="cpu")
    return (order if device is None else order.to(device)).split(batch_size)


def random_shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) moved by its own random offset in [-pixels, pixels] along
    each axis, the edge pixels repeated into the gap (MNIST-style images: background)."""
    count, channels, height, width = x.shape
    padded = nn.functional.pad(x, (pixels,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * pixels + 1, (count, 2), generator=generator, device="cpu").to(x.device)
    return _crop(padded, offsets, height, width)


def _crop(padded: torch.Tensor, offsets: torch.Tensor, height: int, width: int,
          flips: torch.Tensor | None = None) -> torch.Tensor:
    """A height x width window of each padded image at its (row, column) offset, mirrored
    left-right where ``flips`` is True."""
    count, channels, _, padded_width = padded.shape
    columns = offsets[:, 1:] + torch.arange(width, device=padded.device)
    if flips is not None:
        columns = torch.where(flips[:, None], columns.flip(1), columns)
    rows = (offsets[:, :1] + torch.arange(height, device=padded.device))[:, None, :, None]
    rows = rows.expand(count, channels, height, padded_width)
    return padded.gather(2, rows).gather(3, columns[:, None, None, :].expand(count, channels, height, width))


def random_crop_flip(x: torch.Tensor, black: torch.Tensor, generator: torch.Generator,
                     padding: int = CROP_PADDING) -> torch.Tensor:
    """The CIFAR recipe's augmentation on standardised images ``x`` (N, C, H, W): each padded by
    ``padding`` pixels of ``black`` (the standardised value of a black pixel, per channel, as
    torchvision's RandomCrop pads before normalising), cropped back at a random position and
    flipped left-right with probability 1/2 (offsets and flips from ``generator``, on the CPU)."""
    count, channels, height, width = x.shape
    padded = black.to(x)[None, :, None, None].repeat(count, 1, height + 2 * padding, width + 2 * padding)
    padded[:, :, padding:padding + height, padding:padding + width] = x
    offsets = torch.randint(0, 2 * padding + 1, (count, 2), generator=generator, device="cpu").to(x.device)
    flips = (torch.rand(count, generator=generator, device="cpu") < 0.5).to(x.device)
    return _crop(padded, offsets, height, width, flips)


def black_pixel(data) -> torch.Tensor:
    """Each channel's standardised value of a black (0) pixel, from the dataset's mean and std."""
    return -torch.tensor(data.mean, device=data.device) / torch.tensor(data.std, device=data.device)


@dataclass
class TrainingHooks:
    """How a pruning method changes the plain training loop without writing its own.

    ``forward_parameters`` gives the tensors the forward pass uses instead of the model's own
    (through ``functional_call``: effective weights such as ``W * mask``, straight-through or
    attention-scaled); ``penalty`` is added to the cross-entropy (an L1 term); the step hooks get
    the global step index (0-based, counted over all epochs of this call)."""

    forward_parameters: Callable[[], dict[str, torch.Tensor]] | None = None
    penalty: Callable[[], torch.Tensor] | None = None
    before_step: Callable[[int], None] | None = None  # before the forward pass
    after_backward: Callable[[int], None] | None = None  # before optimizer.step
    after_step: Callable[[int], None] | None = None  # after optimizer.step
    on_epoch_end: Callable[[dict], None] | None = None  # may add fields to the epoch's history row


def steps_per_epoch(data, batch_size: int) -> int:
    return math.ceil(len(data.y_train) / batch_size)


def train_epochs(
    model: nn.Module,
    data,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    seed: int = 0,
    scheduler=None,
    hooks: TrainingHooks | None = None,
    progress: Progress | None = None,
    total_epochs: int | None = None,
    shift_pixels: int = 0,
    augment: str = "none",
) -> list[dict]:
    """Train ``model`` in place with cross-entropy for ``epochs`` epochs of seeded shuffled
    batches, stepping ``scheduler`` (if any) per step; one history row per epoch
    ``{epoch, train_loss, test_accuracy, test_loss}``. Raises TrainingDivergedError on NaN/inf.
    ``total_epochs`` is the length of the run the progress fraction refers to (default ``epochs``);
    ``shift_pixels`` > 0 moves each training image at random (``random_shift``, its own seeded stream);
    ``augment="crop-flip"`` crops and flips them (``random_crop_flip``, another seeded stream)."""
    hooks = hooks or TrainingHooks()
    generator = torch.Generator().manual_seed(seed)
    shifts = torch.Generator().manual_seed(seed + 1) if shift_pixels else None
    crops = torch.Generator().manual_seed(seed + 2) if augment == "crop-flip" else None
    black = black_pixel(data) if crops is not None else None
    per_epoch = steps_per_epoch(data, batch_size)
    total_steps = max(1, (total_epochs or epochs) * per_epoch)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        total_loss = 0.0
        for step, index in enumerate(batches(len(data.y_train), batch_size, generator, data.device)):
            global_step = (epoch - 1) * per_epoch + step
            if hooks.before_step:
                hooks.before_step(global_step)
            inputs = data.x_train[index]
            if shifts is not None:
                inputs = random_shift(inputs, shift_pixels, shifts)
            if crops is not None:
                inputs = random_crop_flip(inputs, black, crops)
            if hooks.forward_parameters:
                logits = functional_call(model, hooks.forward_parameters(), (inputs,))
            else:
                logits = model(inputs)
            loss = nn.functional.cross_entropy(logits, data.y_train[index])
            if hooks.penalty:
                loss = loss + hooks.penalty()
            if not torch.isfinite(loss):
                group = optimizer.param_groups[0]
                lr = group.get("initial_lr", group["lr"])
                raise TrainingDivergedError(
                    f"training diverged at epoch {epoch}, step {step + 1}: the loss became {loss.item()}; "
                    f"lower the learning rate (now {lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hooks.after_backward:
                hooks.after_backward(global_step)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if hooks.after_step:
                hooks.after_step(global_step)
            total_loss += loss.item() * len(index)
            if progress:
                progress(min(1.0, (global_step + 1) / total_steps), f"epoch {epoch}/{total_epochs or epochs}")
        parameters = hooks.forward_parameters() if hooks.forward_parameters else None
        evaluation = evaluate(model, data.x_test, data.y_test, data.num_classes, parameters=parameters)
        row = {"epoch": epoch, "train_loss": total_loss / len(data.y_train),
               "test_accuracy": evaluation.accuracy, "test_loss": evaluation.loss}
        if hooks.on_epoch_end:
            hooks.on_epoch_end(row)
        history.append(row)
    return history


def fit(
    model: nn.Module,
    data,
    config: TrainConfig,
    seed: int = 0,
    mask: Mask | None = None,
    progress: Progress | None = None,
    update_mask: Callable[[int, nn.Module], Mask | None] | None = None,
    stop_after_epochs: int | None = None,
) -> list[dict]:
    """Train ``model`` in place with ``config``'s optimizer, its warm-up and a cosine learning-rate
    decay to zero (per step); one history row per epoch ``{epoch, train_loss, test_accuracy, test_loss,
    sparsity}``.

    ``update_mask(step, model)``, called before every step, may return a new mask (gradual
    pruning); ``stop_after_epochs`` stops early on the same learning-rate schedule, which
    reproduces the weights of epoch k of a full run (rewinding)."""
    optimizer = make_optimizer(model, config)
    per_epoch = steps_per_epoch(data, config.batch_size)
    scheduler = warmup_cosine(optimizer, config.epochs * per_epoch, config.warmup_epochs * per_epoch)
    state = {"mask": mask}
    if mask:
        mask.apply_(model)

    def before_step(step):
        new_mask = update_mask(step, model) if update_mask else None
        if new_mask is not None:
            state["mask"] = new_mask
            new_mask.apply_(model)

    def after_backward(step):
        if state["mask"]:
            state["mask"].mask_gradients_(model)

    def after_step(step):
        if state["mask"]:
            state["mask"].apply_(model)

    def on_epoch_end(row):
        row["sparsity"] = state["mask"].sparsity() if state["mask"] else 0.0

    hooks = TrainingHooks(before_step=before_step, after_backward=after_backward, after_step=after_step,
                          on_epoch_end=on_epoch_end)
    epochs = min(config.epochs, stop_after_epochs) if stop_after_epochs is not None else config.epochs
    return train_epochs(model, data, epochs, config.batch_size, optimizer, seed=seed, scheduler=scheduler,
                        hooks=hooks, progress=progress, total_epochs=config.epochs, shift_pixels=config.shift_pixels,
                        augment=config.augment)


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    per_class_recall: list[float]  # recall of class c = correct predictions of c / samples of c
    confusion: np.ndarray  # rows: true class, columns: predicted class
    predictions: torch.Tensor

    def summary(self) -> dict:
        return {"accuracy": self.accuracy, "loss": self.loss, "per_class_recall": self.per_class_recall}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    parameters: dict[str, torch.Tensor] | None = None,
    batch_size: int = 256,
) -> Evaluation:
    """Accuracy, mean cross-entropy, per-class recall and confusion matrix, in eval mode.
    With ``parameters`` (e.g. ``mask.masked_parameters(model)``) the model is evaluated through
    ``torch.func.functional_call`` and its own weights are never touched. Batches of 256 keep
    activations in cache: about 1.5x faster than one batch of 1,000 for lenet5 on 2 cores."""
    was_training = model.training
    model.eval()
    try:
        logits = torch.cat(
            [
                functional_forward(model, parameters, (chunk,))
                for chunk in x.split(batch_size)
            ]
        )
    finally:
        model.train(was_training)
    loss = nn.functional.cross_entropy(logits, y).item()
    predictions = logits.argmax(1)
    confusion = confusion_matrix(y, predictions, num_classes)
    return Evaluation(
        accuracy=(predictions == y).double().mean().item(),
        loss=loss,
        per_class_recall=recall_per_class(confusion),
        confusion=confusion.cpu().numpy(),
        predictions=predictions,
    )


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs: rows true, columns predicted."""
    return torch.bincount(labels * num_classes + predictions, minlength=num_classes**2).view(num_classes, num_classes)


def recall_per_class(confusion: torch.Tensor) -> list[float]:
    """Recall of each class, correct predictions of it / its samples; 0 for a class without
    samples (scikit-learn's ``zero_division=0``). The one per-class recall of the project."""
    return (confusion.diag().double() / confusion.sum(1).clamp(min=1)).tolist()
