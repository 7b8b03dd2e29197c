"""The engine on a CUDA GPU against the CPU: the same paths with the same seed on both devices,
their results side by side with the tolerance each must meet, and the time each took.

    python bench/gpu_check.py [--epochs 2] [--cache]

On a machine without a CUDA GPU it says so in one line and exits 0 (nothing needs a GPU). It exits 1
when a row misses its tolerance. The dense models train into a fresh temporary cache (``--cache``:
the usual one), so the times are the work's, not a cache read's; CUDA is warmed up before timing.

Why results differ between devices, and the tolerances that follow:

- A GPU sums floats in other orders than the CPU (and cuDNN convolutions use TF32 by default,
  ``torch.backends.cudnn.allow_tf32``: a 10-bit mantissa), so every float differs in its last
  bits, and training amplifies that. Dense accuracy after training: within 1 point (10 of the
  1,000 test images); final train loss within 5% of the CPU's.
- Data-free scores (magnitude) on identical weights involve no arithmetic a device could change:
  the masks must be identical (0 weights differ). The pruned accuracy on those identical weights:
  within 0.3 points (a test image whose two top logits sit within rounding may flip).
- Data-driven scores (snip, |g w| from a gradient) on identical weights: the gradients differ in
  their last bits, so weights whose score sits at the threshold may swap sides: at most 0.5% of
  the weights kept on one device and pruned on the other; the pruned accuracy within 1 point.
- The sweep and dns start from each device's own dense model (trained on that device), and
  nothing is fine-tuned after one-shot pruning, which amplifies the weights' differences:
  magnitude and dns accuracies within 3 points, dns's emergent sparsity within 2 points; random
  pruning within 5 points (the same random mask on both devices, since it is drawn on the CPU, but
  a network missing a random half of its weights sits far from any minimum, where small weight
  differences move the accuracy most).
- Valley line, Hessian, attributions, physical removal on identical weights: losses within 1%
  (relative; TF32), line accuracies within 1 point (of 256 samples), the top Hessian eigenvalue
  within 2%, channel attributions (gradient x activation, conductance, ablation) within 2% of the
  largest, the same channels removed. Latency must say it was timed on the GPU.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.analysis.hessian import sharpness  # noqa: E402
from pruning.analysis.landscape import fixed_batch, full_tensors, line_path  # noqa: E402
from pruning.channel_attribution import channel_attributions  # noqa: E402
from pruning.class_balanced import balanced_batch  # noqa: E402
from pruning.device import describe_device  # noqa: E402
from pruning.experiment import Experiment, train_dense  # noqa: E402
from pruning.models import prunable_weight_names  # noqa: E402
from pruning.physical.costs import real_costs  # noqa: E402
from pruning.pipeline import prune_model, run_prune  # noqa: E402
from pruning.sweep import run_sweep  # noqa: E402
from pruning.train import TrainConfig  # noqa: E402

DEVICES = ("cpu", "cuda")


def timed(device: str, work):
    """``work()`` and its wall time, waiting for the GPU's queued kernels on both ends."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = work()
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def warm_up(experiment: Experiment) -> None:
    """CUDA's context, cuBLAS and cuDNN start once, before anything is timed."""
    data = experiment.load_data()
    model = experiment.build_model(data)
    torch.nn.functional.cross_entropy(model(data.x_train[:64]), data.y_train[:64]).backward()
    torch.cuda.synchronize()


class Table:
    """Rows of (path, cpu, cuda, difference, tolerance, ok, times), printed as one table."""

    def __init__(self):
        self.rows = []

    def add(self, path: str, cpu, cuda, difference: float, tolerance: float, times=(None, None), unit: str = ""):
        self.rows.append((path, cpu, cuda, difference, tolerance, difference <= tolerance, times, unit))

    def print(self) -> bool:
        def show(value):
            return f"{value:.4g}" if isinstance(value, float) else str(value)

        header = ("path", "cpu", "cuda", "difference", "tolerance", "ok", "cpu s", "cuda s")
        lines = [header]
        for path, cpu, cuda, difference, tolerance, ok, times, unit in self.rows:
            lines.append((path, show(cpu), show(cuda), show(difference) + unit, show(tolerance) + unit,
                          "ok" if ok else "FAIL", *("" if t is None else f"{t:.2f}" for t in times)))
        widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
        for index, line in enumerate(lines):
            print("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip())
            if index == 0:
                print("  ".join("-" * width for width in widths))
        return all(row[5] for row in self.rows)


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def check(epochs: int) -> bool:
    table = Table()
    experiments = {device: Experiment(dataset="mnist-5k", model="lenet5", train=TrainConfig(epochs=epochs), device=device)
                   for device in DEVICES}
    data = {device: experiment.load_data() for device, experiment in experiments.items()}
    warm_up(experiments["cuda"])

    # Dense training: each device trains from the same initial weights with the same batches.
    dense, times = {}, {}
    for device, experiment in experiments.items():
        dense[device], times[device] = timed(device, lambda experiment=experiment: train_dense(experiment))
    last = {device: dense[device].history[-1] for device in DEVICES}
    accuracy = {device: 100 * last[device]["test_accuracy"] for device in DEVICES}
    table.add(f"dense training, {epochs} epochs: test accuracy (%)", accuracy["cpu"], accuracy["cuda"],
              abs(accuracy["cpu"] - accuracy["cuda"]), 1.0, (times["cpu"], times["cuda"]))
    loss = {device: last[device]["train_loss"] for device in DEVICES}
    table.add("dense training: final train loss", loss["cpu"], loss["cuda"], 100 * relative(loss["cpu"], loss["cuda"]), 5.0,
              unit="%")

    # The CPU-trained weights on the GPU: paths that must agree on identical weights.
    models = {"cpu": dense["cpu"].model, "cuda": experiments["cuda"].build_model(data["cuda"])}
    models["cuda"].load_state_dict(dense["cpu"].model.state_dict())
    models["cuda"].eval()
    pruned = {}
    for method, mask_tolerance, accuracy_tolerance in (("magnitude", 0.0, 0.3), ("snip", 0.5, 1.0)):
        for sparsity in (0.5, 0.9):
            results = {}
            for device in DEVICES:
                results[device], times[device] = timed(
                    device, lambda device=device: prune_model(models[device], data[device], method, sparsity, seed=0))
            pruned[(method, sparsity)] = results
            masks = {device: results[device].mask for device in DEVICES}
            differing = sum(int((masks["cpu"][name] != masks["cuda"][name].cpu()).sum()) for name in masks["cpu"])
            share = 100 * differing / masks["cpu"].num_weights
            table.add(f"{method} {sparsity}: weights kept on one device only", 0, differing, share, mask_tolerance,
                      (times["cpu"], times["cuda"]), unit="%")
            accuracy = {device: 100 * results[device].pruned.accuracy for device in DEVICES}
            table.add(f"{method} {sparsity}: pruned test accuracy (%)", accuracy["cpu"], accuracy["cuda"],
                      abs(accuracy["cpu"] - accuracy["cuda"]), accuracy_tolerance)

    # The loss valley's line from dense to magnitude 0.5, identical weights on both devices.
    lines = {}
    for device in DEVICES:
        model, batches = models[device], {}
        for split in ("train", "test"):
            x, y = (data[device].x_train, data[device].y_train) if split == "train" else (data[device].x_test, data[device].y_test)
            batches[split] = fixed_batch(x, y, 256, seed=0)
        lines[device], times[device] = timed(device, lambda model=model, batches=batches, device=device: line_path(
            model, full_tensors(model), pruned[("magnitude", 0.5)][device].pruned_tensors, batches["train"],
            batches["test"], points=11))
    losses = {device: lines[device].train_loss + lines[device].test_loss for device in DEVICES}
    worst = max(relative(a, b) for a, b in zip(losses["cpu"], losses["cuda"]))
    table.add("valley line (11 points): loss at a = 1, train", losses["cpu"][lines["cpu"].a.index(1.0)],
              losses["cuda"][lines["cuda"].a.index(1.0)], 100 * worst, 1.0, (times["cpu"], times["cuda"]), unit="%")
    accuracies = {device: lines[device].train_accuracy + lines[device].test_accuracy for device in DEVICES}
    worst = max(abs(a - b) for a, b in zip(accuracies["cpu"], accuracies["cuda"]))
    table.add("valley line: largest accuracy difference (%)", "", "", 100 * worst, 1.0)

    # Sharpness: the top Hessian eigenvalue of the dense loss on one fixed batch.
    top = {}
    for device in DEVICES:
        x, y = fixed_batch(data[device].x_train, data[device].y_train, 128, seed=0)
        top[device], times[device] = timed(device, lambda model=models[device], x=x, y=y: sharpness(
            model, x, y, iterations=20, probes=2)["top_eigenvalue"])
    table.add("Hessian top eigenvalue (20 Lanczos steps)", top["cpu"], top["cuda"], 100 * relative(top["cpu"], top["cuda"]),
              2.0, (times["cpu"], times["cuda"]), unit="%")

    # Channel attributions (captum, each method) on 5 training images per class.
    for method in ("gradxact", "conductance", "ablation"):
        attributions = {}
        for device in DEVICES:
            x, y = balanced_batch(data[device], 5, seed=0)
            layers = [name.removesuffix(".weight") for name in prunable_weight_names(models[device], include_output=False)]
            attributions[device], times[device] = timed(device, lambda model=models[device], x=x, y=y, layers=layers:
                                                        channel_attributions(model, layers, x, y, method, n_steps=8))
        worst = max(float((attributions["cpu"][name] - attributions["cuda"][name].cpu()).abs().max())
                    / max(float(attributions["cpu"][name].abs().max()), 1e-12) for name in attributions["cpu"])
        table.add(f"captum {method} channel attributions (of the largest)", "", "", 100 * worst, 2.0,
                  (times["cpu"], times["cuda"]), unit="%")

    # Physical removal (on a CPU copy) and latency (timed on the model's own device).
    costs = {}
    for device in DEVICES:
        model = models[device]
        result = prune_model(model, data[device], "magnitude", 0.5, {"granularity": "structured"}, seed=0)
        costs[device], times[device] = timed(device, lambda model=model, result=result: real_costs(
            model, result.mask, data["cpu"].input_shape, result.pruned_state_dict(model), batch_sizes=(1, 64)))
    removed = {device: costs[device].physical.removed_channels if costs[device].physical else -1 for device in DEVICES}
    table.add("physical removal: channels removed", removed["cpu"], removed["cuda"], abs(removed["cpu"] - removed["cuda"]),
              0, (times["cpu"], times["cuda"]))
    named = {device: costs[device].to_json()["latency_settings"]["device_name"] for device in DEVICES}
    table.add("latency timed on", named["cpu"], named["cuda"], float(not named["cuda"].startswith("cuda")), 0)
    for device in DEVICES:
        print(f"{device}: dense latency at batch 64 {costs[device].latency_ms['dense'][64]:.3f} ms "
              f"({costs[device].device_name})")

    # A short sweep (magnitude with the random and magnitude baselines), each device's own dense model.
    sweeps = {}
    for device in DEVICES:
        sweeps[device], times[device] = timed(device, lambda device=device: run_sweep(
            experiments[device], ["magnitude"], [0.5, 0.9], [0]))
    for index, (cpu, cuda) in enumerate(zip(sweeps["cpu"], sweeps["cuda"])):
        accuracy = {"cpu": 100 * cpu.pruned.accuracy, "cuda": 100 * cuda.pruned.accuracy}
        table.add(f"sweep {cpu.method} {cpu.target_sparsity}: test accuracy (%)", accuracy["cpu"], accuracy["cuda"],
                  abs(accuracy["cpu"] - accuracy["cuda"]), 5.0 if cpu.method == "random" else 3.0,
                  (times["cpu"], times["cuda"]) if index == 0 else (None, None))

    # A method that trains: dns for 1 epoch from each device's own dense model (c_rate 1: a sparsity
    # where the accuracy is not yet collapsing, so the comparison means something).
    runs = {}
    for device in DEVICES:
        runs[device], times[device] = timed(device, lambda device=device: run_prune(
            experiments[device], "dns", None, {"epochs": 1, "c_rate": 1.0}))
    accuracy = {device: 100 * runs[device].pruned.accuracy for device in DEVICES}
    table.add("dns (c_rate 1), 1 epoch: test accuracy (%)", accuracy["cpu"], accuracy["cuda"], abs(accuracy["cpu"] - accuracy["cuda"]),
              3.0, (times["cpu"], times["cuda"]))
    sparsity = {device: 100 * runs[device].stats.sparsity for device in DEVICES}
    table.add("dns (c_rate 1), 1 epoch: sparsity (%)", sparsity["cpu"], sparsity["cuda"], abs(sparsity["cpu"] - sparsity["cuda"]), 2.0)

    print(f"cpu: {describe_device('cpu')}; cuda: {describe_device('cuda')}; torch {torch.__version__}; "
          f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}, matmul TF32 {torch.backends.cuda.matmul.allow_tf32}")
    return table.print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="dense training epochs (default 2)")
    parser.add_argument("--cache", action="store_true", help="use the usual cache instead of a fresh temporary one")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to compare")
        return 0
    if args.cache:
        return 0 if check(args.epochs) else 1
    with tempfile.TemporaryDirectory() as folder:
        os.environ["PRUNING_CACHE_DIR"] = folder
        return 0 if check(args.epochs) else 1


if __name__ == "__main__":
    sys.exit(main())
