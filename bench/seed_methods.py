"""The seed papers' methods against the baselines they claim to beat, on mnist-5k, side by side:

    python bench/seed_methods.py --parts dns,grda,undecayed,seqattn [--seeds 0,1,2] [--out-dir bench]

- dns: Dynamic Network Surgery (c_rate 2.5, 30 epochs) on mlp and lenet5, beside one-shot global
  magnitude pruning to the same sparsity + the same number of fine-tuning epochs. Goal: >= 20x
  compression within 1 point of dense accuracy on mlp.
- grda: gRDA and sDprun (their defaults) against the same optimizer with c = 0 (plain SGD without
  momentum, same learning rate and epochs): sparsity and accuracy.
- undecayed: undecayed pruning against global magnitude, both inside the same iterative pruning
  with rewinding (levels of at most 20%), mlp at sparsity 0.9.
- seqattn: SequentialAttention++ against layerwise block-magnitude pruning at the same block size
  and sparsity, fine-tuned for as many epochs as SequentialAttention++ trains.

Each part writes ``seed_<part>.csv`` and prints a table of means over seeds.
"""

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruning.experiment import Experiment  # noqa: E402
from pruning.methods.undecayed import levels_for  # noqa: E402
from pruning.pipeline import run_prune  # noqa: E402
from pruning.registry import get_method  # noqa: E402
from pruning.report import result_json  # noqa: E402
from pruning.schedules import Iterative, OneShot  # noqa: E402

DNS_SETTINGS = {"c_rate": 2.5, "epochs": 30}
UNDECAYED_SPARSITY = 0.9
SEQATTN_SPARSITY = 0.9
SEQATTN_BLOCK = 4


def row(label: str, seed: int, outcome) -> dict:
    report = result_json(outcome)
    return {"model": report["model"], "seed": seed, "method": label, "sparsity": report["sparsity"],
            "compression": report["compression"], "dense_accuracy": report["dense"]["accuracy"],
            "accuracy": report["pruned"]["accuracy"], "seconds": report["seconds"],
            "spliced_total": report["details"].get("spliced_total")}


def dns_part(seeds):
    rows = []
    for model in ("mlp", "lenet5"):
        for seed in seeds:
            experiment = Experiment(dataset="mnist-5k", model=model, seed=seed)
            dns = run_prune(experiment, "dns", None, DNS_SETTINGS)
            rows.append(row("dns", seed, dns))
            masked = dns.mask.sparsity()
            magnitude = run_prune(experiment, "magnitude", masked, schedule=OneShot(finetune_epochs=DNS_SETTINGS["epochs"]))
            rows.append(row(f"magnitude + {DNS_SETTINGS['epochs']} epochs fine-tuning", seed, magnitude))
    return rows


def grda_part(seeds):
    rows = []
    for model in ("mlp", "lenet5"):
        for seed in seeds:
            experiment = Experiment(dataset="mnist-5k", model=model, seed=seed)
            for name in ("grda", "sdprun"):
                rows.append(row(name, seed, run_prune(experiment, name, None)))
            plain = get_method("grda").settings({"c": 0.0})
            rows.append(row("plain SGD (grda, c = 0)", seed, run_prune(experiment, "grda", None, plain)))
    return rows


def undecayed_part(seeds):
    rows = []
    levels = levels_for(UNDECAYED_SPARSITY, 0.2)
    for seed in seeds:
        experiment = Experiment(dataset="mnist-5k", model="mlp", seed=seed)
        rows.append(row("undecayed", seed, run_prune(experiment, "undecayed", UNDECAYED_SPARSITY)))
        schedule = Iterative(rounds=levels)
        rows.append(row(f"magnitude, iterative ({levels} levels)", seed,
                        run_prune(experiment, "magnitude", UNDECAYED_SPARSITY, schedule=schedule)))
    return rows


def seqattn_part(seeds):
    rows = []
    method = get_method("seqattn")
    settings = method.settings({"block_size": SEQATTN_BLOCK})
    epochs = 3 * settings["cycles"] * settings["phase_epochs"] + settings["finetune_epochs"]
    for model in ("mlp", "lenet5"):
        for seed in seeds:
            experiment = Experiment(dataset="mnist-5k", model=model, seed=seed)
            rows.append(row("seqattn", seed, run_prune(experiment, "seqattn", SEQATTN_SPARSITY, settings)))
            block = {"granularity": "block", "block_size": SEQATTN_BLOCK, "scope": "layerwise"}
            rows.append(row(f"block magnitude + {epochs} epochs fine-tuning", seed,
                            run_prune(experiment, "magnitude", SEQATTN_SPARSITY, block, schedule=OneShot(finetune_epochs=epochs))))
    return rows


PARTS = {"dns": dns_part, "grda": grda_part, "undecayed": undecayed_part, "seqattn": seqattn_part}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for part in args.parts.split(","):
        started = time.perf_counter()
        table = pd.DataFrame(PARTS[part](seeds))
        table.to_csv(args.out_dir / f"seed_{part}.csv", index=False)
        summary = table.groupby(["model", "method"], sort=False)[["sparsity", "compression", "dense_accuracy", "accuracy"]].mean()
        summary[["sparsity", "dense_accuracy", "accuracy"]] *= 100
        print(f"\n== {part} ({len(seeds)} seeds, {time.perf_counter() - started:.0f} s)")
        print(summary.round(2).to_string())
        if part == "dns":
            for model, group in table[table["method"] == "dns"].groupby("model"):
                gap = 100 * (group["dense_accuracy"] - group["accuracy"]).mean()
                print(f"{model}: dns {group['compression'].mean():.1f}x, {gap:+.2f} points below dense "
                      f"-> {'goal met' if group['compression'].mean() >= 20 and gap <= 1 else 'goal not met'} (goal on mlp)")


if __name__ == "__main__":
    main()
