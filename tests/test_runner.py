"""Sweeps on every backend (``pruning.runner``): in this process, on two local processes and as
Ray tasks on a local two-CPU instance, the rows are the same, each dense model is trained once,
and a failing cell is tried twice, then reported in its row while the others are kept.

Rows compare to the last digit because every run computes with one thread: the in-process run
under ``one_thread``, the two processes with ``cpus // 2`` threads on a machine taken as two
cores, each Ray task with one (``pruning.runner``'s docstring)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

import pruning.experiment
from pruning.cells import CellFailure
from pruning.cli import main
from pruning.experiment import Experiment
from pruning.pipeline import PruneResult
from pruning.registry import METHODS, register
from pruning.runner import Backend, run_cells
from pruning.sweep import sweep_cells, sweep_rows
from pruning.train import TrainConfig
from tests import runner_methods
from tests.runner_methods import FAILING, FailsAtHighSparsity

TINY = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))
SWEEP = {"methods": ["magnitude"], "sparsities": [0.5, 0.9], "seeds": [0, 1]}  # with random: 2 x 2 x 2 cells
BACKENDS = {"here": Backend(), "processes": Backend("local", workers=2), "ray": Backend("ray")}


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def as_two_cores():
    """``cpus // 2`` is one thread per process, whatever the machine (the runner reads ``os.cpu_count``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "cpu_count", lambda: 2)
        yield


@pytest.fixture(scope="module")
def failing_method(tmp_path_factory):
    """The failing method registered here; the workers get it with their cells."""
    attempts = tmp_path_factory.mktemp("attempts") / "log"
    method = register(FailsAtHighSparsity(str(attempts)))
    yield method
    del METHODS[FAILING]


@pytest.fixture(scope="module")
def ray_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ray-workers-cache")


@pytest.fixture(scope="module")
def local_ray(ray_cache):
    """One Ray instance with two CPUs for the module (it takes seconds to start); its workers
    inherit ``PRUNING_CACHE_DIR`` = ``ray_cache`` from the environment it starts in."""
    ray = pytest.importorskip("ray")
    # Ray's workers import from the driver's working folder, not tests/: the failing method travels by value.
    ray.cloudpickle.register_pickle_by_value(runner_methods)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRUNING_CACHE_DIR", str(ray_cache))
        patch.delenv("RAY_ADDRESS", raising=False)  # a new instance here, not a cluster the environment names
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(runner_methods)


def backend(name: str, request) -> Backend:
    if name == "ray":
        request.getfixturevalue("local_ray")
    return BACKENDS[name]


def cold_cache(name: str, tmp_path: Path, monkeypatch, ray_cache: Path) -> None:
    """An empty cache for this run: this process's and its spawned ones' (the environment), or
    the Ray workers' (their folder emptied: they read the variable they started with)."""
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path / f"cache-{name}"))
    if name == "ray":
        shutil.rmtree(ray_cache, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(one_thread, tmp_path_factory):
    """The sweep in this process on a cold cache, with an independent count of trainings (``fit`` calls)."""
    fits = []
    real_fit = pruning.experiment.fit
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRUNING_CACHE_DIR", str(tmp_path_factory.mktemp("reference-cache")))
        patch.setattr(pruning.experiment, "fit", lambda *args, **kwargs: fits.append(1) or real_fit(*args, **kwargs))
        run = run_cells(sweep_cells(TINY, **SWEEP), Backend())
    return run, len(fits)


def test_in_process_trains_each_dense_model_once_and_reports_every_cell(reference):
    run, fits = reference
    assert fits == 2 and run.dense_trainings == 2, "one training per seed, counted by the runner and by fit itself"
    assert all(isinstance(outcome, PruneResult) for outcome in run.outcomes) and len(run.outcomes) == 8
    order = [(row["seed"], row["method"], row["target_sparsity"]) for row in sweep_rows(run.outcomes)]
    assert order == [(seed, method, sparsity) for seed in (0, 1) for method in ("magnitude", "random") for sparsity in (0.5, 0.9)]


@pytest.mark.parametrize("name", ["processes", "ray"])
def test_every_backend_gives_the_same_rows_training_each_dense_model_once(
        name, reference, as_two_cores, request, tmp_path, monkeypatch, ray_cache):
    chosen = backend(name, request)
    cold_cache(name, tmp_path, monkeypatch, ray_cache)
    progress, finished = [], []
    run = run_cells(sweep_cells(TINY, **SWEEP), chosen, progress=lambda fraction, message: progress.append(fraction),
                    on_cell=lambda index, outcome: finished.append(index))
    assert run.dense_trainings == 2, "the dense model of each seed trained once, by one task, never by a cell"
    assert without_seconds(sweep_rows(run.outcomes)) == without_seconds(sweep_rows(reference[0].outcomes))
    assert sorted(finished) == list(range(8)) and progress[-1] == 1.0 and progress == sorted(progress)
    if name == "processes":
        assert len(list((tmp_path / f"cache-{name}" / "dense").glob("*.pt"))) == 2


@pytest.mark.parametrize("name", ["here", "processes", "ray"])
def test_a_failing_cell_is_tried_twice_then_reported_in_its_row(name, failing_method, one_thread, as_two_cores,
                                                                   request, tmp_path, monkeypatch, ray_cache):
    chosen = backend(name, request)
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path / "cache"))
    Path(failing_method.attempts).unlink(missing_ok=True)
    cells = sweep_cells(TINY, [FAILING], [0.5, 0.9], [0])
    outcomes = run_cells(cells, chosen).outcomes
    failed = [index for index, outcome in enumerate(outcomes) if isinstance(outcome, CellFailure)]
    assert [(cells[index].method, cells[index].sparsity) for index in failed] == [(FAILING, 0.9)]
    assert outcomes[failed[0]].error == "RuntimeError: this method never prunes to 0.9"
    assert len(Path(failing_method.attempts).read_text().splitlines()) == 2, "tried once more, no more"
    assert sum(isinstance(outcome, PruneResult) for outcome in outcomes) == 5, "the other cells are kept"
    rows = sweep_rows(outcomes)
    assert [row["error"] for row in rows] == [None if index not in failed else outcomes[index].error for index in range(6)]
    assert rows[failed[0]]["method"] == FAILING and rows[failed[0]]["accuracy_after_finetune"] is None


def test_the_cli_writes_every_row_and_exits_1_when_a_cell_failed(failing_method, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "sweep.csv"
    code = main(["sweep", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--methods", FAILING,
                 "--sparsities", "0.5,0.9", "--out", str(out)])
    assert code == 1
    table = pd.read_csv(out)
    assert len(table) == 6 and table["error"].notna().sum() == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"cell failed: seed 0, {FAILING} at sparsity 0.9: RuntimeError: this method never prunes to 0.9")


@pytest.mark.parametrize("flags, message", [
    (["--workers", "0"], "--workers must be a whole number of at least 1, got 0"),
    (["--workers", "two"], "argument --workers: invalid int value: 'two'"),
    (["--address", "auto"], "--address applies to the ray backend: add --backend ray"),
    (["--backend", "ray", "--workers", "2"], "--workers applies to the local backend"),
    (["--backend", "ray", "--address", "head node"], "bad Ray address 'head node'"),
    (["--backend", "ray", "--address", "head:99999"], "bad Ray address 'head:99999'"),
    (["--backend", "spark"], "argument --backend: invalid choice: 'spark'"),
    (["--backend", "ray", "--ray-missing"], 'the ray backend needs ray: pip install "ray>=2.40"'),
])
def test_backend_input_errors_exit_2_with_one_line_before_any_work(flags, message, tmp_path, monkeypatch, capsys):
    if "--ray-missing" in flags:
        flags.remove("--ray-missing")
        monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees where it is not installed
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "sweep.csv"
    code = main(["sweep", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--sparsities", "0.5",
                 "--out", str(out), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists() and not (tmp_path / "cache").exists(), "nothing ran"


def test_the_compare_page_offers_ray_only_with_an_address_and_shows_every_cell(monkeypatch):
    from pruning.runner import ray_installed
    from tests.app_driver import start

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    at = start(model="mlp", epochs=1)
    at.switch_page("views/compare.py").run()
    assert not at.exception
    assert len(at.radio(key="compare.backend").options) == 1, "no address: this machine only"
    assert any("ray start --head" in caption.value for caption in at.caption)
    at.text_input(key="compare.ray_address").set_value("auto").run()
    assert len(at.radio(key="compare.backend").options) == (2 if ray_installed() else 1)
    at.text_input(key="compare.ray_address").set_value("").run()
    at.text_input(key="compare.sparsities").set_value("0.5, 0.9")
    at.button[0].click().run()
    assert not at.exception and not at.error
    states = at.table[0].value
    assert list(states["cell"]) == [f"seed 0, {method} at sparsity {s}" for method in ("random", "magnitude") for s in (0.5, 0.9)]
    assert all(state.startswith("done: accuracy") for state in states["state"])
    assert len(at.dataframe[0].value) == 4
