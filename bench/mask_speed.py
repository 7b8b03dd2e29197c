"""Global magnitude masking of torchvision's resnet18 (about 11M prunable weights):
ours against torch.nn.utils.prune.global_unstructured, same masks, timed side by side.

    python bench/mask_speed.py [--repeats 5]
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn.utils import prune

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.criteria import magnitude_scores  # noqa: E402
from pruning.models import build_model, prunable_weight_names  # noqa: E402
from pruning.selection import mask_from_scores  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.9)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model("resnet18", (3, 32, 32), 10)
    names = prunable_weight_names(model)
    print(f"resnet18: {sum(dict(model.named_parameters())[n].numel() for n in names):,} prunable weights, "
          f"sparsity {args.sparsity}, {torch.get_num_threads()} threads")
    ours_times, oracle_times = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        mask = mask_from_scores(magnitude_scores(model, names, None), args.sparsity, "global")
        ours_times.append(time.perf_counter() - started)

        oracle = copy.deepcopy(model)
        modules = dict(oracle.named_modules())
        targets = [(modules[name.rsplit(".", 1)[0]], "weight") for name in names]
        started = time.perf_counter()
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=args.sparsity)
        oracle_times.append(time.perf_counter() - started)
        same = all(torch.equal(mask[name], module.weight_mask.bool()) for name, (module, _) in zip(names, targets))
        assert same, "masks differ"
    ours, oracle = statistics.median(ours_times), statistics.median(oracle_times)
    print(f"ours (median of {args.repeats}):                  {1000 * ours:8.1f} ms")
    print(f"torch.nn.utils.prune.global_unstructured: {1000 * oracle:8.1f} ms")
    print(f"same masks: yes; speedup {oracle / ours:.1f}x (goal: >= 10x)")


if __name__ == "__main__":
    main()
