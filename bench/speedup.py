"""Measured against theoretical speedup of 50% channel pruning, CIFAR-shaped inputs (3x32x32).

    python bench/speedup.py [--models resnet20,vgg-small] [--sparsity 0.5] [--scope layerwise]
                            [--threads 1] [--repeats 21]

Weights are random (He init, seed 0): latency depends on the architecture, not on the values.
The mask is magnitude pruning with granularity structured: each layer (layerwise scope) loses
``--sparsity`` of its filters, the output layer stays whole. Three physical variants share it:
- batch norms ``trained``: running statistics and affine parameters drawn like a trained
  network's, so zeroed filters emit constants the removal has to carry (a kept constant channel
  per group that feeds a zero-padded conv), all removable channels removed (multiple 1);
- the same, channel counts kept to multiples of 8 (CPU conv kernels work in blocks of channels);
- batch norms ``init`` (mean 0, var 1, gamma 1, beta 0): the constants are 0, nothing is carried.

Per variant: the mask's theoretical speedup (dense FLOPs / FLOPs of the nonzero weights, what the
Prune page shows), the physical model's FLOPs speedup, and measured speedup (dense latency /
pruned latency, median of up to ``--repeats`` passes, all models taking turns) in PyTorch eager
and onnxruntime at batch 1 and 64, on ``--threads`` intra-op threads. Goal: measured >= 0.7x the
FLOPs speedup of the model that runs (the physical one) at batch 64.
"""

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.export import export_onnx, onnx_latency  # noqa: E402
from pruning.metrics import model_stats  # noqa: E402
from pruning.models import build_model, prunable_weight_names  # noqa: E402
from pruning.physical.latency import measure_latency  # noqa: E402
from pruning.physical.removal import masked_copy, remove_pruned_channels  # noqa: E402
from pruning.selection import mask_from_scores  # noqa: E402

SHAPE = (3, 32, 32)
BATCHES = (1, 64)


def trained_like_norms(model: nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                count = module.num_features
                module.running_mean.copy_(0.3 * torch.randn(count, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(count, generator=generator))
                module.weight.copy_(0.5 + torch.rand(count, generator=generator))
                module.bias.copy_(0.5 * torch.randn(count, generator=generator))


VARIANTS = (("trained", 1), ("trained", 8), ("init", 1))  # (batch norms, channel multiple)


def bench(name: str, args) -> list[dict]:
    """One interleaved timing run of the dense, the masked and every physical variant of ``name``.
    The variants share the weights and the mask; only the batch norms (and so the constants the
    removal carries) and the channel multiple differ. Latency depends on the architecture only,
    so one dense model serves them all."""
    torch.manual_seed(0)
    base = build_model(name, SHAPE, 10).eval()
    models = {"init": base, "trained": copy.deepcopy(base)}
    trained_like_norms(models["trained"])
    parameters = dict(base.named_parameters())
    scores = {weight: parameters[weight].detach().abs() for weight in prunable_weight_names(base, include_output=False)}
    mask = mask_from_scores(scores, args.sparsity, scope=args.scope, granularity="structured", aggregate="l2")
    stats = model_stats(base, mask, SHAPE)
    physical = {}
    for norms, multiple in VARIANTS:
        state = {key: tensor.clone() for key, tensor in models[norms].state_dict().items()}
        for weight, keep in mask.items():
            state[weight] = state[weight] * keep
        physical[f"{norms}/{multiple}"] = remove_pruned_channels(models[norms], mask, SHAPE, state,
                                                                 channel_multiple=multiple)
        if norms == "trained" and multiple == 1:
            masked = masked_copy(models[norms], state)
    networks = {"dense": masked_copy(models["trained"]), "masked": masked}
    networks.update({kind: result.model for kind, result in physical.items()})
    eager = measure_latency(networks, SHAPE, BATCHES, threads=args.threads, repeats=args.repeats, budget_seconds=60.0)
    with tempfile.TemporaryDirectory() as folder:
        paths = {kind: Path(folder) / f"{kind.replace('/', '-')}.onnx" for kind in networks if kind != "masked"}
        checks = {kind: export_onnx(networks[kind], SHAPE, path)["matches"] for kind, path in paths.items()}
        runtime = onnx_latency(paths, SHAPE, BATCHES, threads=args.threads, repeats=args.repeats, budget_seconds=60.0)
    rows = []
    for kind, result in physical.items():
        norms, multiple = kind.split("/")
        rows.append({
            "model": name,
            "norms": norms,
            "multiple": multiple,
            "params": f"{stats.params_total:,} -> {result.params:,}",
            "kept": f"{result.removed_channels}/{result.masked_channels}",
            "mask_theoretical": stats.speedup,
            "physical_flops": stats.flops_dense / result.flops,
            "masked_eager_64": eager["dense"][64] / eager["masked"][64],
            **{f"eager_{b}": eager["dense"][b] / eager[kind][b] for b in BATCHES},
            **{f"ort_{b}": runtime["dense"][b] / runtime[kind][b] for b in BATCHES},
            "dense_ms_64": eager["dense"][64],
            "ort_dense_ms_64": runtime["dense"][64],
            "exact": result.max_abs_difference,
            "onnx_ok": checks["dense"] and checks[kind],
        })
    return rows


def conv_times(channels=(16, 17, 24, 32, 33), threads: int = 1, repeats: int = 15) -> dict[int, float]:
    """A lone 3x3 conv, C -> C channels, batch 64 at 32x32: the fastest of ``repeats`` passes
    (convs taking turns). Shows what a channel count off the kernels' block size costs."""
    convs = {c: nn.Conv2d(c, c, 3, padding=1, bias=False).eval() for c in channels}
    inputs = {c: torch.randn(64, c, 32, 32) for c in channels}
    times = {c: [] for c in channels}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for c in channels:
                convs[c](inputs[c])
            for _ in range(repeats):
                for c in channels:
                    begin = time.perf_counter()
                    convs[c](inputs[c])
                    times[c].append(time.perf_counter() - begin)
    finally:
        torch.set_num_threads(previous)
    return {c: 1000.0 * min(values) for c, values in times.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet20,vgg-small")
    parser.add_argument("--sparsity", type=float, default=0.5, help="fraction of each layer's filters removed")
    parser.add_argument("--scope", default="layerwise", choices=("layerwise", "global"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    rows = [row for name in args.models.split(",") for row in bench(name, args)]
    print(f"{args.sparsity:.0%} of filters per layer ({args.scope}), input {SHAPE}, {args.threads} thread(s), "
          f"torch {torch.__version__}; speedups are x over dense, ratios are measured / FLOPs speedup of the "
          "physical model")
    print("| model | batch norms | channel multiple | params dense -> physical | masked filters removed "
          "| theoretical (mask) "
          "| FLOPs speedup (physical) | masked eager b64 | eager b1 | eager b64 | ORT b1 | ORT b64 "
          "| eager b64 / FLOPs | ORT b64 / FLOPs | dense ms b64 (eager, ORT) |")
    print("|---" * 15 + "|")
    for row in rows:
        print(f"| {row['model']} | {row['norms']} | {row['multiple']} | {row['params']} | {row['kept']} "
              f"| {row['mask_theoretical']:.2f}x "
              f"| {row['physical_flops']:.2f}x | {row['masked_eager_64']:.2f}x | {row['eager_1']:.2f}x "
              f"| {row['eager_64']:.2f}x | {row['ort_1']:.2f}x | {row['ort_64']:.2f}x "
              f"| {row['eager_64'] / row['physical_flops']:.2f} | {row['ort_64'] / row['physical_flops']:.2f} "
              f"| {row['dense_ms_64']:.0f}, {row['ort_dense_ms_64']:.0f} |")
    times = conv_times(threads=args.threads)
    print("a lone 3x3 conv at batch 64, 32x32, fastest of 15 passes: "
          + ", ".join(f"{c} -> {c} channels {ms:.1f} ms" for c, ms in times.items()))
    for row in rows:
        print(f"{row['model']} ({row['norms']} norms, multiple {row['multiple']}): physical outputs equal the "
              "masked model's to "
              f"{row['exact']:.1e}; ONNX checked in onnxruntime: {'yes' if row['onnx_ok'] else 'MISMATCH'}")


if __name__ == "__main__":
    main()
