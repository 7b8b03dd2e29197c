"""safetensors in and out: ``--out`` writes model.safetensors, ``--weights``/``--mask`` and the
upload path (``use_weights``) read it, a malformed file is one line on stderr and exit 2.
Oracles: torch's own model.pt beside it, a forward pass written by hand from the file's tensors,
and the first run's pruned accuracy."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save, save_file

from pruning.cli import main
from pruning.data import load_dataset
from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.masks import Mask
from pruning.train import TrainConfig
from pruning.weights import stored_weights, use_weights

TINY = ["prune", "--dataset", "digits", "--model", "mlp", "--epochs", "1"]
EXPERIMENT = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))


def run_json(capsys, argv) -> dict:
    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def one_line_error(capsys, argv, pattern) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), captured.err


@pytest.fixture(scope="module")
def pruned_out(tmp_path_factory):
    """One pruning of a tiny model with --out, and its report."""
    out = tmp_path_factory.mktemp("out")
    assert main(TINY + ["--sparsity", "0.6", "--out", str(out), "--json"]) == 0
    return out, json.loads((out / "result.json").read_text())


def test_out_writes_model_safetensors_equal_to_model_pt(pruned_out):
    out, _ = pruned_out
    from_safetensors = load_file(out / "model.safetensors")
    from_torch = torch.load(out / "model.pt", weights_only=True)
    assert set(from_safetensors) == set(from_torch)
    for name, tensor in from_torch.items():
        assert from_safetensors[name].dtype == tensor.dtype and torch.equal(from_safetensors[name], tensor), name


def test_model_safetensors_runs_without_this_projects_code(pruned_out):
    """The README's recipe: load_file, then LeNet-300-100 written out with torch ops."""
    out, report = pruned_out
    weights = load_file(out / "model.safetensors")
    data = load_dataset("digits")
    x = data.x_test.flatten(1)
    for layer in ("fc1", "fc2"):
        x = torch.relu(x @ weights[f"{layer}.weight"].T + weights[f"{layer}.bias"])
    logits = x @ weights["fc3.weight"].T + weights["fc3.bias"]
    correct = int((logits.argmax(1) == data.y_test).sum())
    assert correct == round(report["pruned"]["accuracy"] * len(data.y_test))
    zeros = sum(int((weights[f"{layer}.weight"] == 0).sum()) for layer in ("fc1", "fc2", "fc3"))
    total = sum(weights[f"{layer}.weight"].numel() for layer in ("fc1", "fc2", "fc3"))
    assert zeros / total == pytest.approx(report["sparsity"])


def test_weights_and_mask_as_safetensors_round_trip_through_the_cli(pruned_out, tmp_path, capsys):
    out, report = pruned_out
    # the pruned model as the dense one: its accuracy is the first run's pruned accuracy
    again = run_json(capsys, TINY + ["--sparsity", "0.0", "--weights", str(out / "model.safetensors")])
    assert again["dense"]["accuracy"] == report["pruned"]["accuracy"]
    # the dense weights and the mask, both as safetensors: the same model once the mask is applied
    save_file(torch.load(out / "dense.pt", weights_only=True), tmp_path / "dense.safetensors")
    save_file(torch.load(out / "mask.pt", weights_only=True), tmp_path / "mask.safetensors")
    masked = run_json(capsys, TINY + ["--sparsity", "0.0", "--weights", str(tmp_path / "dense.safetensors"),
                                      "--mask", str(tmp_path / "mask.safetensors")])
    assert masked["dense"]["accuracy"] == report["pruned"]["accuracy"]
    assert Mask.load(tmp_path / "mask.safetensors").sparsity() == Mask.load(out / "mask.pt").sparsity()


def test_the_format_is_told_by_content_not_by_name(pruned_out, tmp_path):
    out, _ = pruned_out
    (tmp_path / "weights.pt").write_bytes((out / "model.safetensors").read_bytes())  # safetensors named .pt
    expected = torch.load(out / "model.pt", weights_only=True)
    uploaded = use_weights(EXPERIMENT, (tmp_path / "weights.pt").read_bytes())
    assert all(torch.equal(stored_weights(uploaded)[name], tensor) for name, tensor in expected.items())


def test_uploaded_safetensors_weights_and_mask_are_used(pruned_out):
    out, _ = pruned_out
    dense = torch.load(out / "dense.pt", weights_only=True)
    mask = {"fc2.weight": torch.rand(dense["fc2.weight"].shape, generator=torch.Generator().manual_seed(1)) > 0.5}
    uploaded = use_weights(EXPERIMENT, save(dense), save(mask))
    loaded = stored_weights(uploaded)
    assert torch.equal(loaded["fc2.weight"], dense["fc2.weight"] * mask["fc2.weight"])
    assert torch.equal(loaded["fc1.weight"], dense["fc1.weight"])
    assert use_weights(EXPERIMENT, (out / "dense.pt").read_bytes()) != uploaded  # the mask is part of the name


def damaged(content: bytes) -> bytes:
    return content[:-100]  # the header promises more tensor bytes than there are


@pytest.mark.parametrize("flag", ["--weights", "--mask"])
@pytest.mark.parametrize("content, pattern", [
    (b"not a safetensors file at all", r"is not a safetensors file: its first 8 bytes give a \d+-byte header"),
    (b"\x04\x00\x00\x00\x00\x00\x00\x00[1,2]", r"is not a safetensors file: its header is not a JSON object"),
    (b"", r"is not a safetensors file: it has 0 bytes"),
    ("damaged", r"damaged safetensors file: .*"),
], ids=["not-safetensors", "header-not-an-object", "empty", "truncated-data"])
def test_a_malformed_safetensors_file_is_one_line_and_exit_2(pruned_out, tmp_path, capsys, flag, content, pattern):
    out, _ = pruned_out
    good = tmp_path / "good.safetensors"
    save_file(torch.load(out / "model.pt", weights_only=True), good)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(damaged(good.read_bytes()) if content == "damaged" else content)
    files = ["--weights", str(bad)] if flag == "--weights" else ["--weights", str(good), "--mask", str(bad)]
    one_line_error(capsys, TINY + ["--sparsity", "0.5"] + files, pattern)


def test_malformed_uploads_get_a_clear_error(pruned_out):
    out, _ = pruned_out
    with pytest.raises(BadInputError, match=r"damaged safetensors file"):
        use_weights(EXPERIMENT, damaged((out / "model.safetensors").read_bytes()))
    with pytest.raises(BadInputError, match=r"cannot be read as a torch file .* nor as a safetensors file \(its first"):
        use_weights(EXPERIMENT, (out / "dense.pt").read_bytes()[:5000])  # a truncated torch file


def test_cli_weights_never_reach_the_cache_and_a_late_bad_input_leaves_it_as_it_was(pruned_out, fresh_cache, capsys):
    out, report = pruned_out
    weights = str(out / "model.safetensors")
    one_line_error(capsys, TINY + ["--sparsity", "0.5", "--weights", weights, "--method", "nope"], r"unknown method 'nope'")
    one_line_error(capsys, TINY + ["--sparsity", "0.5", "--weights", weights, "--set", "nope=1"], r"unknown setting 'nope'")
    assert not any(path.is_file() for path in fresh_cache.rglob("*"))
    assert run_json(capsys, TINY + ["--sparsity", "0.0", "--weights", weights])["dense"]["accuracy"] == report["pruned"]["accuracy"]
    assert not (fresh_cache / "uploads").exists()  # held by the process for its run, not stored


def test_the_same_file_for_another_dataset_is_checked_again(pruned_out):
    out, _ = pruned_out
    content = (out / "model.safetensors").read_bytes()
    assert use_weights(EXPERIMENT, content).weights
    with pytest.raises(BadInputError, match=r"fc1\.weight has shape \(300, 64\), the model's is \(300, 784\)"):
        use_weights(Experiment(dataset="mnist-5k", model="mlp"), content)
