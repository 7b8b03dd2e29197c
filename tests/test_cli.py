"""``python -m pruning`` end to end, as a user runs it (subprocesses, real exit codes and streams).

Starting Python + torch costs about 2 s of CPU per process, so every command that runs as a
subprocess is launched once, concurrently, by the module fixture ``runs``; the tests then check
the results. Bad input is checked in this process through ``pruning.cli.main`` (its return code and
stderr), and once as a subprocess, to show that ``python -m pruning`` itself prints one line and
exits with code 2.
"""

import json
import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from pruning.analysis.recall import intensification
from pruning.cli import main
from pruning.data import load_dataset
from pruning.models import MODELS, build_model, prunable_weight_names
from pruning.registry import METHODS
from pruning.train import evaluate

REPO = Path(__file__).resolve().parent.parent
FAST = ["--dataset", "mnist-5k", "--model", "mlp", "--epochs", "1"]
SPARSITY = 0.8

# name: (arguments, regular expression the one error line must match)
BAD_INPUTS = {
    "unknown_dataset": (["prune", "--dataset", "nope", "--model", "mlp", "--epochs", "1", "--sparsity", "0.5"], r"unknown dataset 'nope'"),
    "unknown_model": (["prune", "--dataset", "mnist-5k", "--model", "nope", "--epochs", "1", "--sparsity", "0.5"], r"unknown model 'nope'"),
    "unknown_method": (["prune", *FAST, "--method", "nope", "--sparsity", "0.5"], r"unknown method 'nope'"),
    "sparsity_one": (["prune", *FAST, "--sparsity", "1.0"], r"sparsity"),
    "sparsity_negative": (["prune", *FAST, "--sparsity", "-0.1"], r"sparsity"),
    "sparsity_nan": (["prune", *FAST, "--sparsity", "nan"], r"sparsity"),
    "sparsity_abc": (["prune", *FAST, "--sparsity", "abc"], r"sparsity.*'abc'"),
    "set_unknown_key": (["prune", *FAST, "--sparsity", "0.5", "--set", "bogus=1"], r"unknown setting 'bogus'"),
    "set_bad_scope": (["prune", *FAST, "--sparsity", "0.5", "--set", "scope=sideways"], r"scope.*'sideways'"),
    "set_without_equals": (["prune", *FAST, "--sparsity", "0.5", "--set", "scope"], r"KEY=VALUE"),
    "missing_sparsity": (["prune", *FAST], r"--sparsity"),
    "lenet5_on_digits": (["prune", "--dataset", "digits", "--model", "lenet5", "--epochs", "1", "--sparsity", "0.5"], r"lenet5.*8x8"),
    "unknown_subcommand": (["frobnicate"], r"frobnicate"),
    "imbalance_below_one": (["prune", *FAST, "--imbalance", "0.5", "--sparsity", "0.5"], r"imbalance"),
    "dns_with_a_target": (["prune", *FAST, "--method", "dns", "--sparsity", "0.9"], r"dns.*emerges"),
    "dns_on_a_schedule": (["prune", *FAST, "--method", "dns", "--schedule", "iterative"], r"dns.*own schedule"),
    "lomp_without_target": (["prune", *FAST, "--method", "lomp"], r"--sparsity.*lomp"),
    "dns_bad_c_rate": (["prune", *FAST, "--method", "dns", "--set", "c_rate=99"], r"c_rate"),
}

# Inputs that only fail deep inside torch or after training unless checked up front.
LATE_FAILURES = {
    "huge_seed": (["prune", *FAST, "--seed", "99999999999999999999", "--sparsity", "0.5"], r"seed"),
    "out_is_not_a_folder": (["prune", *FAST, "--sparsity", "0.5", "--out", "{blocker}/sub"], r"sub"),
}


def launch(args, cache, timeout=240):
    env = {**os.environ, "PRUNING_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pruning", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {"cache": root / "cache", "bad": root / "bad-cache", "out": root / "out"}


@pytest.fixture(scope="module")
def runs(folders):
    """Every command of this module, run concurrently (one intra-op thread each, one process per core)."""
    good = {
        "prune": ["prune", *FAST, "--method", "magnitude", "--sparsity", str(SPARSITY), "--json", "--out", str(folders["out"])],
        "layerwise": ["prune", *FAST, "--method", "magnitude", "--sparsity", str(SPARSITY), "--scope", "layerwise", "--json"],
        "list": ["list", "--json"],
        "dns": ["prune", *FAST, "--method", "dns", "--set", "epochs=1", "--set", "c_rate=1", "--json"],
    }
    jobs = {name: (args, folders["cache"]) for name, args in good.items()}
    jobs["bad_input"] = (BAD_INPUTS["sparsity_one"][0], folders["bad"])  # its own empty cache: it trains nothing
    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        futures = {name: pool.submit(launch, args, cache) for name, (args, cache) in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def one_json_object(completed):
    assert completed.returncode == 0, completed.stderr
    text = completed.stdout.strip()
    assert text.count("\n") == 0, "stdout must hold exactly one line: the JSON object"
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


# --- list ---


def test_list_json_is_one_object_with_datasets_models_and_methods(runs):
    listing = one_json_object(runs["list"])
    assert set(listing) == {"datasets", "models", "methods", "devices"}
    assert [entry["name"] for entry in listing["models"]] == list(MODELS)
    dataset_names = [entry["name"] for entry in listing["datasets"]]
    assert "mnist-5k" in dataset_names and "digits" in dataset_names
    methods = {entry["name"]: entry for entry in listing["methods"]}
    assert {"magnitude", "random"} <= set(methods)
    assert set(methods) == set(METHODS)
    assert methods["magnitude"]["params"] and methods["random"]["params"]
    for method in listing["methods"]:
        assert method["description"].strip()
        assert isinstance(method["params"], list)
        for param in method["params"]:
            assert {"name", "type", "default", "min", "max", "help"} <= set(param)
            assert param["type"] in {"float", "int", "bool", "choice", "text"}
            assert param["help"].strip()
    scope = {param["name"]: param for param in methods["magnitude"]["params"]}["scope"]
    assert scope["default"] == "global" and set(scope["choices"]) == {"global", "layerwise", "erk", "owl", "sensitivity"}


# --- prune ---


def test_a_method_that_trains_reports_its_history_and_dns_its_splicing(runs):
    report = one_json_object(runs["dns"])
    assert report["method"] == "dns" and report["target_sparsity"] is None and report["schedule"] == "built-in"
    history = report["history"]
    assert history[0]["step"] == 0 and history[0]["sparsity"] == 0.0
    assert all({"step", "sparsity", "accuracy"} <= set(row) for row in history)
    assert [row["step"] for row in history] == sorted(row["step"] for row in history)
    assert history[-1]["sparsity"] == pytest.approx(report["sparsity"], abs=1e-3)  # biases are not masked
    assert isinstance(report["details"]["spliced_total"], int) and report["details"]["spliced_total"] >= 0


@pytest.fixture(scope="module")
def report(runs):
    return one_json_object(runs["prune"])


def test_prune_json_has_the_documented_fields(report):
    assert report["dataset"] == "mnist-5k"
    assert report["model"] == "mlp"
    assert report["method"] == "magnitude"
    assert report["seed"] == 0
    assert report["target_sparsity"] == SPARSITY
    assert abs(report["sparsity"] - SPARSITY) <= 1e-6
    assert report["compression"] > 1
    assert report["compression"] == pytest.approx(report["params_total"] / report["params_nonzero"])
    assert report["params_total"] == 266_610
    assert report["flops_dense"] == 532_400
    assert 0 < report["flops_pruned"] < report["flops_dense"]
    assert report["theoretical_speedup"] == pytest.approx(report["flops_dense"] / report["flops_pruned"])
    for part in ("dense", "pruned"):
        summary = report[part]
        assert {"accuracy", "loss", "per_class_recall"} <= set(summary)
        assert 0.0 <= summary["accuracy"] <= 1.0 and math.isfinite(summary["loss"])
        assert len(summary["per_class_recall"]) == 10
        assert all(0.0 <= r <= 1.0 for r in summary["per_class_recall"])
    assert report["dense"]["accuracy"] > 0.5  # one epoch of mlp on mnist-5k
    shift = intensification(report["dense"]["per_class_recall"], report["dense"]["accuracy"],
                            report["pruned"]["per_class_recall"], report["pruned"]["accuracy"])
    assert report["intensification"] == pytest.approx(shift.to_json())
    layers = report["layers"]
    assert [layer["name"] for layer in layers] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert [layer["params"] for layer in layers] == [235_200, 30_000, 1_000]
    assert all({"name", "params", "sparsity"} <= set(layer) for layer in layers)
    pruned = sum(layer["params"] * layer["sparsity"] for layer in layers)
    assert pruned / sum(layer["params"] for layer in layers) == pytest.approx(SPARSITY, abs=1e-6)
    assert report["seconds"] > 0


def test_layerwise_scope_prunes_every_layer_to_the_sparsity(runs):
    layerwise = one_json_object(runs["layerwise"])
    assert layerwise["settings"]["scope"] == "layerwise"
    assert abs(layerwise["sparsity"] - SPARSITY) <= 1e-3
    for layer in layerwise["layers"]:
        assert abs(layer["sparsity"] - SPARSITY) <= 1 / layer["params"] + 1e-12, layer


def test_global_scope_gives_layers_different_sparsities(report):
    assert report["settings"]["scope"] == "global"
    sparsities = [layer["sparsity"] for layer in report["layers"]]
    assert max(sparsities) - min(sparsities) > 0.01


def test_out_writes_loadable_plain_files_consistent_with_the_report(folders, report):
    out = folders["out"]
    assert sorted(p.name for p in out.iterdir()) == ["dense.pt", "mask.pt", "model.pt", "model.safetensors", "result.json"]
    dense = torch.load(out / "dense.pt", weights_only=True)
    pruned = torch.load(out / "model.pt", weights_only=True)
    mask = torch.load(out / "mask.pt", weights_only=True)

    assert not any(key.endswith(("weight_orig", "weight_mask")) for key in pruned)
    fresh = build_model("mlp", (1, 28, 28), 10)
    fresh.load_state_dict(pruned, strict=True)
    build_model("mlp", (1, 28, 28), 10).load_state_dict(dense, strict=True)
    assert set(mask) == set(prunable_weight_names(fresh))
    for name, tensor in pruned.items():
        if name in mask:
            keep = mask[name]
            assert keep.dtype == torch.bool and keep.shape == tensor.shape
            assert torch.all(tensor[~keep] == 0)
            assert torch.equal(tensor[keep], dense[name][keep])
        else:
            assert torch.equal(tensor, dense[name])  # biases are never pruned
    pruned_count = sum(int((~keep).sum()) for keep in mask.values())
    assert pruned_count / sum(keep.numel() for keep in mask.values()) == pytest.approx(SPARSITY, abs=1e-6)

    saved = json.loads((out / "result.json").read_text())
    for key in ("dataset", "model", "method", "seed", "target_sparsity", "sparsity", "compression", "flops_dense", "flops_pruned", "dense", "pruned", "layers"):
        assert saved[key] == report[key], key
    assert saved == report

    # the files reproduce the reported accuracies
    data = load_dataset("mnist-5k")
    assert evaluate(fresh, data.x_test, data.y_test, 10).accuracy == pytest.approx(report["pruned"]["accuracy"], abs=1e-9)
    dense_model = build_model("mlp", (1, 28, 28), 10)
    dense_model.load_state_dict(dense)
    assert evaluate(dense_model, data.x_test, data.y_test, 10).accuracy == pytest.approx(report["dense"]["accuracy"], abs=1e-9)


def test_the_dense_model_is_cached_once_for_both_prune_runs(folders, runs):
    assert runs["prune"].returncode == 0 and runs["layerwise"].returncode == 0
    dense = [p for p in (folders["cache"] / "dense").iterdir()]
    assert len(dense) == 1 and dense[0].name.startswith("mnist-5k-mlp-") and dense[0].suffix == ".pt"
    assert not any(p.name.endswith(".tmp") for p in folders["cache"].rglob("*"))


# --- bad input ---


def check_one_line_error(code, stdout, stderr, pattern):
    assert code == 2, (code, stderr[-2000:])
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert stderr.strip() == lines[0]
    assert lines[0].startswith("error: ") and len(lines[0]) > len("error: ") + 5
    assert stdout == ""
    assert re.search(pattern, lines[0]), lines[0]


def run_in_process(capsys, args):
    """``python -m pruning ARGS`` through ``pruning.cli.main`` in this process: (code, stdout, stderr)."""
    try:
        code = main(args)
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_python_m_pruning_itself_prints_one_line_and_exits_2(folders, runs):
    completed = runs["bad_input"]
    check_one_line_error(completed.returncode, completed.stdout, completed.stderr, BAD_INPUTS["sparsity_one"][1])
    assert not any(path.is_file() for path in folders["bad"].rglob("*")), "trained (and cached) a model first"


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_on_stderr_and_exit_code_2_before_any_training(fresh_cache, capsys, case):
    args, pattern = BAD_INPUTS[case]
    check_one_line_error(*run_in_process(capsys, args), pattern)
    assert not any(path.is_file() for path in fresh_cache.rglob("*")), "trained (and cached) a model first"


@pytest.mark.parametrize("case", list(LATE_FAILURES))
def test_input_that_would_fail_late_is_a_one_line_error_up_front(fresh_cache, tmp_path, capsys, case):
    (tmp_path / "blocker").write_text("a file where a folder is expected")
    args, pattern = LATE_FAILURES[case]
    args = [arg.replace("{blocker}", str(tmp_path / "blocker")) for arg in args]
    check_one_line_error(*run_in_process(capsys, args), pattern)
    assert not any(path.is_file() for path in fresh_cache.rglob("*")), "trained (and cached) a model first"


# --- real size and speed: physical removal, measured latency, exports ---


def test_prune_json_reports_measured_latency_and_why_an_unstructured_mask_stays_masked(report):
    for kind in ("dense", "masked"):
        assert set(report["latency_ms"][kind]) == {"1", "64"} and all(ms > 0 for ms in report["latency_ms"][kind].values())
    assert report["latency_ms"]["physical"] is None and report["physical"] is None
    assert "cannot be applied physically" in report["physical_note"]
    assert report["latency_settings"]["threads"] >= 1 and report["costs_note"]
    assert report["exports"]["files"] == []  # --out wrote only the five files above


def test_structured_out_writes_the_smaller_model_loadable_without_our_code(folders, runs):
    import onnxruntime

    assert runs["prune"].returncode == 0  # the dense model is cached: no training here
    out = folders["out"].parent / "structured"
    completed = launch(["prune", *FAST, "--granularity", "structured", "--sparsity", "0.5", "--json", "--out", str(out)],
                       folders["cache"])
    result = one_json_object(completed)
    assert set(result["latency_ms"]) == {"dense", "masked", "physical"}
    assert all(set(result["latency_ms"][kind]) == {"1", "64"} for kind in result["latency_ms"])
    physical = result["physical"]
    assert physical["removed_channels"] == physical["masked_channels"] > 0  # an MLP has nothing coupled
    assert physical["params"] < result["params_nonzero"] < result["params_total"]  # the next layer's inputs go too
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["dense.pt", "mask.pt", "model.pt", "model.safetensors", "result.json", "physical.onnx", "physical.pt2", "layers.csv"])
    assert json.loads((out / "result.json").read_text()) == result
    assert result["exports"]["onnx"]["matches"]

    masked = build_model("mlp", (1, 28, 28), 10)
    masked.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    x = torch.randn(7, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = masked.eval()(x)
    session = onnxruntime.InferenceSession(str(out / "physical.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    assert torch.allclose(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-5)
    program = torch.export.load(str(out / "physical.pt2")).module()
    assert torch.allclose(program(x), expected, rtol=1e-4, atol=1e-5)
    layers = (out / "layers.csv").read_text().splitlines()
    assert layers[0].startswith("layer,params,nonzero,sparsity") and len(layers) == 1 + len(result["layers"])
