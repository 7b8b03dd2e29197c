"""Speed of the loss-valley grid: a 21 x 21 plane (441 points) through the dense and the
magnitude-pruned lenet5 (mnist-5k), one fixed batch, against

- the same number of plain forward passes (one model, one batch, 441 times): the floor;
- a loop that loads a state dict into a model copy per grid point and runs it;
- one ``functional_call`` per point (the engine with ``vectorise=False``).

Measured side by side in one run, the order rotated each repeat so a busy machine hits every
side alike; the best of the repeats is reported. Goal: grid <= 1.5x the plain forward passes.

    python bench/landscape_speed.py [--grid 21] [--batch 256] [--repeats 2] [--chunks 8,16,32]
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.analysis import landscape  # noqa: E402
from pruning.experiment import Experiment, train_dense  # noqa: E402
from pruning.pipeline import prune_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--grid", type=int, default=21)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunks", default="", help="comma-separated chunk sizes to time as well (default: the engine's)")
    args = parser.parse_args()
    experiment = Experiment(dataset=args.dataset, model=args.model)
    model = train_dense(experiment).model.eval()
    data = experiment.load_data()
    pruned = prune_model(model, data, "magnitude", 0.9).pruned_tensors
    dense = landscape.full_tensors(model)
    x, y = landscape.fixed_batch(data.x_train, data.y_train, args.batch)
    a = landscape.axis(landscape.LINE_SPAN, args.grid, (0.0, 1.0))
    b = landscape.axis(landscape.PLANE_SPAN, args.grid, (0.0,))
    points = len(a) * len(b)
    direction = landscape.filter_normalized_direction(model, dense)

    @torch.no_grad()
    def plain():
        for _ in range(points):
            model(x)

    @torch.no_grad()
    def state_dict_loop():
        copy_ = copy.deepcopy(model)
        for beta in b:
            for alpha in a:
                state = {name: (1 - alpha) * dense[name] + alpha * pruned[name] + beta * direction[name]
                         if name in direction else dense[name] for name in dense}
                copy_.load_state_dict(state)
                copy_(x)

    def grid(chunk=None, vectorise=True):
        return lambda: landscape.plane(model, dense, pruned, (x, y), points=args.grid, chunk=chunk, vectorise=vectorise)

    sides = {"plain forward passes": plain, f"grid, vmap (chunk {landscape.default_chunk(len(y))})": grid(),
             "grid, functional_call per point": grid(vectorise=False), "state dict per point": state_dict_loop}
    for chunk in [int(c) for c in args.chunks.split(",") if c.strip()]:
        sides[f"grid, vmap (chunk {chunk})"] = grid(chunk=chunk)
    landscape.plane(model, dense, pruned, (x, y), points=2)  # warm-up: 4 x 3 points
    times = {name: float("inf") for name in sides}
    names = list(sides)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            started = time.perf_counter()
            sides[name]()
            times[name] = min(times[name], time.perf_counter() - started)
            print(f"  repeat {repeat + 1}: {name} {times[name]:.2f} s", file=sys.stderr, flush=True)
    floor = times["plain forward passes"]
    print(f"{args.model} on {args.dataset}: {len(a)} x {len(b)} = {points} grid points, batch {len(y)}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    print("| side | seconds | per point | / plain forward |")
    print("|---|---|---|---|")
    for name in names:
        print(f"| {name} | {times[name]:.2f} s | {1000 * times[name] / points:.1f} ms | {times[name] / floor:.2f}x |")


if __name__ == "__main__":
    main()
