"""The LLM-era one-shot methods without any fine-tuning: magnitude, Wanda and SparseGPT at 50%
unstructured, 2:4 and 4:8, on vit-tiny and mlp (mnist-5k), over seeds, with each layer's output
reconstruction error.

    python bench/llm_era.py [--models vit-tiny,mlp] [--seeds 0,1,2] [--threads 2] [--out bench/llm_era.csv]

Every method prunes each layer to the same sparsity (the papers' uniform setting: magnitude and
Wanda with the layerwise scope, Wanda comparing within rows as its paper does; SparseGPT is per
layer by construction), the output layer included. Reconstruction error, per prunable layer: the
inputs X are those the *pruned* model feeds the layer on the 1,000 test images, and the error is
``||W X - W_hat X||^2 / ||W X||^2`` (bias left out), W the dense weight, averaged over layers. The
papers' ordering at 2:4 without retraining is SparseGPT >= Wanda >= magnitude; the summary says
whether it holds here.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.experiment import Experiment, train_dense  # noqa: E402
from pruning.models import prunable_layers  # noqa: E402
from pruning.pipeline import prune_model  # noqa: E402
from pruning.train import TrainConfig, evaluate  # noqa: E402
from pruning.vit import VIT_RECIPE  # noqa: E402

PATTERNS = {"50%": {"granularity": "unstructured"}, "2:4": {"granularity": "nm", "nm_pattern": "2:4"},
            "4:8": {"granularity": "nm", "nm_pattern": "4:8"}}
METHODS = {"magnitude": {"scope": "layerwise"}, "wanda": {"scope": "layerwise", "comparison": "row"}, "sparsegpt": {}}
# The dense recipes: the project's default for the mlp, AdamW with warm-up for the ViT (README).
RECIPES = {"vit-tiny": TrainConfig(**VIT_RECIPE)}
KEY = ["model", "seed", "method", "pattern"]


def layer_inputs(model: nn.Module, tensors: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each prunable layer's input when a copy of ``model`` holding ``tensors`` (the pruned weights) runs."""
    pruned = copy.deepcopy(model).eval()
    pruned.load_state_dict({name: tensors.get(name, value) for name, value in model.state_dict().items()})
    seen = {}
    for name, layer in prunable_layers(pruned).items():
        layer.register_forward_pre_hook(lambda module, args, name=name: seen.setdefault(name, args[0].detach()))
    with torch.no_grad():
        pruned(x)
    return seen


def reconstruction_errors(model: nn.Module, pruned: dict, x: torch.Tensor) -> dict[str, float]:
    """Per layer ||W X - W_hat X||^2 / ||W X||^2 on the inputs the pruned model gives it."""
    errors = {}
    for name, inputs in layer_inputs(model, pruned, x).items():
        layer = prunable_layers(model)[name]
        dense_w, pruned_w = layer.weight.detach(), pruned[f"{name}.weight"]
        if isinstance(layer, nn.Conv2d):
            dense_y, pruned_y = layer._conv_forward(inputs, dense_w, None), layer._conv_forward(inputs, pruned_w, None)
        else:
            dense_y, pruned_y = F.linear(inputs, dense_w), F.linear(inputs, pruned_w)
        errors[name] = float((dense_y - pruned_y).pow(2).sum() / dense_y.pow(2).sum().clamp(min=1e-12))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vit-tiny,mlp")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/llm_era.csv"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    done = set(pd.read_csv(args.out)[KEY].itertuples(index=False, name=None)) if args.out.exists() else set()
    started = time.perf_counter()
    for model_name in args.models.split(","):
        for seed in map(int, args.seeds.split(",")):
            experiment = Experiment(model=model_name, seed=seed, train=RECIPES.get(model_name, TrainConfig()))
            dense = train_dense(experiment)
            data = experiment.load_data()
            dense_accuracy = evaluate(dense.model, data.x_test, data.y_test, data.num_classes).accuracy
            for method, settings in METHODS.items():
                for pattern, granularity in PATTERNS.items():
                    if (model_name, seed, method, pattern) in done:
                        continue
                    cell = time.perf_counter()
                    result = prune_model(dense.model, data, method, 0.5, {**settings, **granularity}, seed=seed)
                    errors = reconstruction_errors(dense.model, result.pruned_tensors, data.x_test)
                    row = {"model": model_name, "seed": seed, "method": method, "pattern": pattern,
                           "dense": dense_accuracy,
                           "accuracy": result.pruned.accuracy, "sparsity": result.stats.sparsity,
                           "reconstruction_error": sum(errors.values()) / len(errors),
                           "seconds": time.perf_counter() - cell}
                    pd.DataFrame([row]).to_csv(args.out, mode="a", header=not args.out.exists(), index=False)
                    print(row, flush=True)
    print(f"\nran {time.perf_counter() - started:.0f} s\n")
    summary(pd.read_csv(args.out))


def summary(frame: pd.DataFrame) -> None:
    table = frame.groupby(["model", "pattern", "method"]).agg(
        accuracy=("accuracy", "mean"), spread=("accuracy", "std"), error=("reconstruction_error", "mean"),
        seeds=("seed", "count")).reset_index()
    print("| model | pattern | method | accuracy (mean ± std) | reconstruction error | seeds |\n|---|---|---|---|---|---|")
    for row in table.itertuples():
        print(f"| {row.model} | {row.pattern} | {row.method} | {100 * row.accuracy:.1f} ± {100 * (row.spread or 0):.1f} "
              f"| {row.error:.4f} | {row.seeds} |")
    for (model, pattern), group in table.groupby(["model", "pattern"]):
        accuracy = dict(zip(group.method, group.accuracy))
        holds = accuracy.get("sparsegpt", 0) >= accuracy.get("wanda", 0) >= accuracy.get("magnitude", 0)
        print(f"{model} {pattern}: SparseGPT >= Wanda >= magnitude {'holds' if holds else 'does not hold'} "
              f"({', '.join(f'{name} {100 * value:.1f}' for name, value in accuracy.items())})")


if __name__ == "__main__":
    main()
