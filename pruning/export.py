"""Files other tools can load without this project's code: the physically smaller model as ONNX
(checked in onnxruntime) and as a ``torch.export`` program (``.pt2``), and the per-layer table as CSV.

ONNX goes through the ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``,
which needs onnxscript): the TorchScript one is deprecated since torch 2.9. Both files take any
batch size (the batch dimension is dynamic). Only a physically smaller model is exported: a
masked (unstructured or block) model in ONNX would be exactly as large and as slow as the dense
one, and ``model.pt`` already holds it.

Files are written from a CPU copy of a model on a GPU (and say so, ``exported_on``): their tensors
are CPU tensors, so a file written on a GPU machine loads on any machine.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from pruning.metrics import ModelStats
from pruning.physical.costs import RealCosts
from pruning.physical.latency import BATCH_SIZES, LATENCY_THREADS, latency_inputs, random_batch, time_in_turns
from pruning.physical.removal import PhysicalPruning

ONNX_FILE = "physical.onnx"
PROGRAM_FILE = "physical.pt2"
LAYERS_FILE = "layers.csv"
CHECK_BATCH = 3  # differs from the export example's batch of 2: shows the batch dimension is dynamic
EXPORT_DEVICE = "cpu"  # files hold CPU tensors: they load anywhere
PHYSICAL_COLUMNS = {  # layers.csv column -> PhysicalLayer field
    "out_channels": "out_channels", "masked_channels": "masked", "removed_channels": "removed",
    "physical_params": "params",
}


def _batch_dim():
    return ({0: torch.export.Dim("batch", min=1, max=4096)},)


def on_export_device(model: nn.Module) -> nn.Module:
    """``model`` itself when it is on the CPU, else a CPU copy of it (the model is not moved)."""
    on_cpu = all(tensor.device.type == EXPORT_DEVICE for tensor in [*model.parameters(), *model.buffers()])
    return model if on_cpu else copy.deepcopy(model).to(EXPORT_DEVICE)


def export_onnx(model: nn.Module, input_shape, path: str | Path) -> dict:
    """Write ``model`` (eval mode) as ONNX with input ``input`` and output ``logits``, then run it
    in onnxruntime against torch on a fresh batch of another size (``matches``: within float
    tolerance). A model on a GPU is exported from a CPU copy."""
    model.eval()
    model = on_export_device(model)
    path = Path(path)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (random_batch(input_shape, 2, 0),), str(path), dynamo=True, verbose=False,
                          input_names=["input"], output_names=["logits"], dynamic_shapes=_batch_dim(),
                          external_data=False)
    x = random_batch(input_shape, CHECK_BATCH, 1)
    with torch.inference_mode():
        expected = model(x).numpy()
    got = onnx_session(path).run(None, {"input": x.numpy()})[0]
    difference = float(abs(got - expected).max())
    return {"file": path.name, "exporter": "torch.onnx.export(dynamo=True)", "checked_with": "onnxruntime",
            "exported_on": EXPORT_DEVICE, "max_abs_difference": difference,
            "matches": difference <= 1e-4 * (1.0 + float(abs(expected).max()))}


def onnx_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session with a fixed number of intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_program(model: nn.Module, input_shape, path: str | Path) -> dict:
    """Write ``model`` (eval mode) with ``torch.export.save`` and load it back to check the round
    trip. A model on a GPU is exported from a CPU copy: a program holds its tensors' devices."""
    model.eval()
    model = on_export_device(model)
    path = Path(path)
    with warnings.catch_warnings(), torch.device(EXPORT_DEVICE):  # torch.export.load makes its tensors on the default device
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (random_batch(input_shape, 2, 0),), dynamic_shapes=_batch_dim())
        torch.export.save(program, str(path))
        loaded = torch.export.load(str(path)).module()
    x = random_batch(input_shape, CHECK_BATCH, 1)
    with torch.inference_mode():
        difference = float((loaded(x) - model(x)).abs().max())
    return {"file": path.name, "exporter": "torch.export.save", "exported_on": EXPORT_DEVICE,
            "max_abs_difference": difference}


def layer_rows(stats: ModelStats, physical: PhysicalPruning | None) -> list[dict]:
    """The per-layer table: size, sparsity and FLOPs under the mask, and what the physical
    model kept (empty where there is none)."""
    removal = {layer.name: layer for layer in (physical.layers if physical else [])}
    rows = []
    for layer in stats.layers:
        row = {"layer": layer.name, "params": layer.params, "nonzero": layer.nonzero, "sparsity": layer.sparsity,
               "flops_dense": layer.flops_dense, "flops_pruned": layer.flops_pruned}
        physical_layer = removal.get(layer.name)
        for column, attribute in PHYSICAL_COLUMNS.items():
            row[column] = getattr(physical_layer, attribute) if physical_layer else None
        rows.append(row)
    return rows


def layers_csv(stats: ModelStats, physical: PhysicalPruning | None) -> str:
    rows = layer_rows(stats, physical)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["layer"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def _attempt(export, *args) -> dict:
    """One export; a failure is reported (exports are extras: the results stand without them)."""
    try:
        return export(*args)
    except Exception as error:  # noqa: BLE001 (an exporter's limits are not the user's fault)
        return {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"}


def _export_models(costs: RealCosts, folder: Path) -> dict[str, dict]:
    """The physical model written as each file into ``folder``: file name -> what the export said."""
    exports = {ONNX_FILE: export_onnx, PROGRAM_FILE: export_program}
    return {name: _attempt(export, costs.physical.model, costs.input_shape, folder / name)
            for name, export in exports.items()}


def write_exports(folder: str | Path, costs: RealCosts, stats: ModelStats) -> dict:
    """Write the physical model as ONNX and ``.pt2`` and the per-layer CSV into ``folder``; returns
    what was written (for result.json). Without a physical model nothing is written, and the
    answer says why."""
    folder = Path(folder)
    if costs.physical is None:
        return {"files": [], "note": "No physical model to export: " + costs.physical_note}
    folder.mkdir(parents=True, exist_ok=True)
    outcomes = _export_models(costs, folder)
    (folder / LAYERS_FILE).write_text(layers_csv(stats, costs.physical))
    files = [name for name in (ONNX_FILE, PROGRAM_FILE, LAYERS_FILE) if (folder / name).exists()]
    return {"files": files, "onnx": outcomes[ONNX_FILE], "pt2": outcomes[PROGRAM_FILE],
            "input": {"name": "input", "shape": ["batch", *costs.input_shape]}, "output": "logits"}


def export_bytes(costs: RealCosts) -> dict[str, bytes | str]:
    """The physical model's ONNX and ``.pt2`` files as bytes (for download buttons), or the
    reason a file could not be made; empty without a physical model."""
    if costs.physical is None:
        return {}
    with tempfile.TemporaryDirectory() as folder:
        outcomes = _export_models(costs, Path(folder))
        return {name: outcome["error"] if "error" in outcome else (Path(folder) / name).read_bytes()
                for name, outcome in outcomes.items()}


def onnx_latency(paths: dict[str, str | Path], input_shape, batch_sizes=BATCH_SIZES, threads: int = LATENCY_THREADS,
                 repeats: int = 7, budget_seconds: float = 3.0) -> dict[str, dict[int, float]]:
    """Median wall time (ms) of one onnxruntime run of each ONNX file per batch size, timed like
    ``latency.measure_latency`` times torch (``latency.time_in_turns``, the same inputs)."""
    sessions = {name: onnx_session(path, threads) for name, path in paths.items()}
    runners = {name: (lambda x, session=session: session.run(None, {"input": x})) for name, session in sessions.items()}
    inputs = {batch: x.numpy() for batch, x in latency_inputs(input_shape, batch_sizes).items()}
    return time_in_turns(runners, inputs, repeats, budget_seconds)
