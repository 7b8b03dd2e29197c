"""Property-based fuzzing of ``pruning.cli.main(argv)``: argument lists built from the real command
and flag names with values of the wrong type, out of range, not finite or overflowing, unknown and
malformed ``--set`` keys, duplicated flags and stray tokens.

The properties: the exit code is 0 or 2 (returned, or argparse's ``SystemExit`` for ``--help``),
never another exception; an exit 2 prints one ``error:`` line on stderr, no traceback, and leaves
the cache (``PRUNING_CACHE_DIR``, a fresh folder) exactly as it was. Valid runs stay cheap: the
digits dataset, the mlp, one epoch, and value pools whose valid values are small (a huge but valid
epoch count would be a long run, not a bug).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from pruning.cli import main
from pruning.models import build_model

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TINY = ["--dataset", "digits", "--model", "mlp", "--epochs", "1", "--json"]

# values of the wrong type, not finite, overflowing, out of range, or odd spellings of numbers
ODD = ["abc", "", " ", "nan", "inf", "-inf", "1e309", "-1", "-0", "0x10", "1_0", "1,5", "--json", "٣", "0.5.1"]
NUMBERS = ODD + ["0", "0.5", "1", "1.5", "2", "1e-12", "99999999999999999999", "-99999999999999999999"]
SMALL_COUNTS = ODD + ["0", "1", "2", "1.5"]  # counts whose large valid values would only be slow
SPARSITIES = ODD + ["0", "0.3", "0.5", "0.99", "1", "1.0001", "99999999999999999999"]


def flag(name: str, values: list[str]):
    return st.tuples(st.just(name), st.sampled_from(values))


def switch(name: str):
    return st.just((name,))


def set_pairs(keys: list[str], values: list[str]):
    """``--set`` arguments: known and unknown keys, malformed pairs."""
    pair = st.builds(lambda key, value: f"{key}={value}", st.sampled_from(keys + ["nope", "", " scope", "SCOPE"]),
                     st.sampled_from(values))
    return st.tuples(st.just("--set"), st.one_of(pair, st.sampled_from(["", "=", "scope", "=1", "a=b=c", "scope=="])))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Weights and masks to offer --weights/--mask: fitting, not fitting, damaged, missing, a folder."""
    folder = tmp_path_factory.mktemp("fuzz-files")
    torch.manual_seed(0)
    mlp = build_model("mlp", (1, 8, 8), 10).state_dict()
    torch.save(mlp, folder / "mlp.pt")
    save_file(mlp, folder / "mlp.safetensors")
    torch.save(build_model("mlp", (1, 28, 28), 10).state_dict(), folder / "other-shape.pt")
    save_file({"fc1.weight": torch.rand(300, 64) > 0.5}, folder / "mask.safetensors")
    torch.save({"fc1.weight": torch.full((300, 64), 2.0)}, folder / "bad-mask.pt")
    (folder / "damaged.safetensors").write_bytes((folder / "mlp.safetensors").read_bytes()[:-64])
    (folder / "text.pt").write_text("not tensors")
    (folder / "a-file").write_text("")
    paths = ["mlp.pt", "mlp.safetensors", "other-shape.pt", "mask.safetensors", "bad-mask.pt", "damaged.safetensors",
             "text.pt", "missing.pt", "."]
    return {"folder": folder, "paths": [str(folder / path) for path in paths], "file": str(folder / "a-file")}


@pytest.fixture(scope="module")
def seeded_cache(tmp_path_factory):
    """A cache holding the base experiment's dense model; each example starts from a copy of it,
    so every write an example makes shows (an upload stored by one example would hide the next)."""
    folder = tmp_path_factory.mktemp("fuzz-seed-cache")
    before = os.environ.get("PRUNING_CACHE_DIR")
    os.environ["PRUNING_CACHE_DIR"] = str(folder)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["prune", *TINY, "--sparsity", "0.5"]) == 0
    yield folder
    if before is None:
        os.environ.pop("PRUNING_CACHE_DIR", None)
    else:
        os.environ["PRUNING_CACHE_DIR"] = before


def snapshot(folder: Path) -> dict[str, str]:
    """Every file in the cache with a digest of its content (reading an entry touches its time only)."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def check(argv: list[str], seed: Path) -> int:
    """Run the CLI on a fresh copy of the seeded cache; assert the properties; return the exit code."""
    with tempfile.TemporaryDirectory() as work:
        cache = Path(work) / "cache"
        shutil.copytree(seed, cache)
        os.environ["PRUNING_CACHE_DIR"] = str(cache)
        try:
            before = snapshot(cache)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(argv)
                except SystemExit as leaving:  # argparse's --help
                    code = leaving.code
            stderr = err.getvalue()
            assert code in (0, 2), f"exit {code!r} for {argv}\n{stderr}"
            assert "Traceback" not in stderr, f"{argv}\n{stderr}"
            if code == 2:
                errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
                assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], f"{argv}\n{stderr}"
                assert snapshot(cache) == before, f"exit 2 but the cache changed: {argv}\n{stderr}"
        finally:
            os.environ["PRUNING_CACHE_DIR"] = str(seed)
    return code


def experiment_flags(files: dict, weights: bool = True) -> list:
    entries = [
        flag("--dataset", ["digits", "nope", "", "DIGITS", "mnist"]),
        flag("--model", ["mlp", "lenet5", "nope", ""]),
        flag("--imbalance", NUMBERS),
        flag("--seed", NUMBERS),
        flag("--epochs", SMALL_COUNTS),
        flag("--lr", NUMBERS),
        flag("--momentum", NUMBERS),
        flag("--weight-decay", NUMBERS),
        flag("--batch-size", ODD + ["0", "16", "99999999999999999999"]),
        flag("--optimizer", ["sgd", "adam", "nope", ""]),
    ]
    if weights:
        entries += [flag("--weights", files["paths"]), flag("--mask", files["paths"])]
    return entries


def pruning_flags() -> list:
    return [
        flag("--scope", ["global", "layerwise", "erk", "nope", ""]),
        flag("--granularity", ["unstructured", "structured", "block", "nope"]),
        flag("--schedule", ["oneshot", "iterative", "gradual", "gradflow", "nope"]),
        flag("--prune-at", ["after", "init", "early", "nope"]),
        flag("--rewind-to", ["init", "epoch", "nope"]),
        *(flag(name, SMALL_COUNTS) for name in ("--rounds", "--early-epochs", "--rewind-epoch", "--gradual-epochs",
                                                 "--finetune-epochs")),
        flag("--frequency", ODD + ["0", "5", "99999999999999999999"]),
        set_pairs(["scope", "granularity", "block_size", "max_layer_sparsity", "prune_output_layer", "allow_empty_layers",
                   "samples_per_class", "owl_lambda", "nm_pattern", "rounds"],
                  ODD + ["0", "1", "2", "0.5", "true", "false", "global", "structured", "2:4", "99999999999999999999"]),
    ]


def argv_of(command: str, base: list[str], entries: list):
    """``command``, the cheap base flags, then 0-6 generated flags (repeats allowed) and, one time in three,
    a stray token."""
    generated = st.lists(st.one_of(*entries), max_size=6)
    stray = st.sampled_from([[]] * 12 + [[token] for token in ("--nope", "extra", "-", "--", "-x", "--json")])
    return st.builds(lambda flags, extra: [command, *base, *[part for entry in flags for part in entry], *extra],
                     generated, stray)


@FUZZ
@given(data=st.data())
def test_list_and_stray_commands(data, seeded_cache):
    argv = data.draw(st.one_of(
        st.lists(st.sampled_from(["list", "--json", "--help", "nope", "prune", "-h", "", "--dataset"]), max_size=3),
        argv_of("list", [], [switch("--json"), flag("--json", ["1", "x"])]),
    ))
    check(argv, seeded_cache)


@FUZZ
@given(data=st.data())
def test_prune(data, files, seeded_cache):
    entries = experiment_flags(files) + pruning_flags() + [
        flag("--method", ["magnitude", "random", "snip", "nope", "", "dns"]),
        flag("--sparsity", SPARSITIES),
        flag("--out", [str(files["folder"] / "out"), files["file"], "/proc/version/out", ""]),
    ]
    argv = data.draw(argv_of("prune", TINY + ["--sparsity", "0.5"], entries))
    check(argv, seeded_cache)


@FUZZ
@given(data=st.data())
def test_sweep(data, files, seeded_cache):
    entries = experiment_flags(files) + pruning_flags() + [
        flag("--methods", ["magnitude", "random,snip", "nope", "", ",", "magnitude,magnitude", "dns"]),
        flag("--sparsities", ["0.5", "0.5,0.9", "nan", "1", "-0.1", "", ",", "a,b", "0.5,,0.6", "1e309"]),
        flag("--seeds", ["0", "0,1", "-1", "99999999999999999999", "x", "", ",", "1.5"]),
        flag("--out", [str(files["folder"] / "sweep.csv"), str(files["folder"]), "/proc/version/x.csv", ""]),
    ]
    argv = data.draw(argv_of("sweep", TINY + ["--sparsities", "0.5", "--out", str(files["folder"] / "sweep.csv")], entries))
    check(argv, seeded_cache)


@FUZZ
@given(data=st.data())
def test_landscape_and_sensitivity(data, files, seeded_cache):
    command = data.draw(st.sampled_from(["landscape", "sensitivity"]))
    entries = experiment_flags(files) + pruning_flags()[:2] + [pruning_flags()[-1]] + [
        flag("--method", ["magnitude", "random", "nope", "", "dns"]),
    ]
    if command == "landscape":
        base = TINY + ["--sparsity", "0.5", "--grid", "2", "--batch-size-eval", "16"]
        entries += [flag("--sparsity", SPARSITIES), flag("--grid", ODD + ["0", "1", "2", "3"]),
                    flag("--batch-size-eval", ODD + ["0", "1", "16", "99999999999999999999"]),
                    flag("--levels", ODD + ["0", "1"]), switch("--restrict")]
    else:
        base = TINY + ["--sparsities", "0.5"]
        entries += [flag("--sparsities", ["0.5", "0.5,0.9", "nan", "1", "-0.1", "", ",", "a", "1e309"]),
                    flag("--split", ["test", "train", "nope"])]
    argv = data.draw(argv_of(command, base, entries))
    check(argv, seeded_cache)


@FUZZ
@given(data=st.data())
def test_limit(data, files, seeded_cache):
    cheap = ["--set", "lanczos_steps=4", "--set", "row_probes=1", "--set", "hessian_samples=64", "--set", "bins=10",
             "--set", "grid_step=0.5"]
    entries = experiment_flags(files, weights=False) + [
        set_pairs(["l1", "zero_tolerance", "sigma", "g_sigma", "seed", "tolerance"], NUMBERS),
        set_pairs(["lanczos_steps", "probes", "row_probes", "hessian_samples", "hessian_batch", "bins"],
                  ODD + ["0", "1", "2", "9", "10"]),
        set_pairs(["grid_step"], ODD + ["0", "0.5", "0.6"]),  # a tiny valid step would only be slow
        flag("--weights", files["paths"]),
    ]
    argv = data.draw(argv_of("limit", TINY + cheap, entries))
    check(argv, seeded_cache)
