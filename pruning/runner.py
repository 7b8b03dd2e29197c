"""Run sweep cells on a backend: in this process, on local worker processes, or as Ray tasks.

Every backend does the same two stages: each distinct dense model is trained once (one task per
experiment, from the cache where it is there), then the cells run in parallel, each handed its
dense model. A cell that fails is tried once more, then its error takes its place among the
results; the others are kept. User errors (``BadInputError``, a missing dataset, a training that
diverged) are not tried again: they stop the run, as bad input does before it starts (every try,
and mostly every cell, would fail alike). The results are
in the order of the cells on every backend; ``progress(fraction, message)`` and
``on_cell(index, outcome)`` are called, in the caller's thread, as cells finish.

Threads: the ``local`` backend with one worker runs in the caller's process with the caller's
``torch.get_num_threads()``; with N workers each process gets ``max(1, cpus // N)`` threads; a
Ray task gets one CPU and one thread. Float sums depend on the thread count, so rows match
across backends to the last digit only at equal thread counts: on 2 cores, call
``torch.set_num_threads(1)`` (or set ``OMP_NUM_THREADS=1``) before an in-process run to compare
it with 2 workers or with Ray.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable

import torch

from pruning.cells import (
    TRIES,
    USER_ERRORS,
    Cell,
    CellFailure,
    CellOutcome,
    DenseEntry,
    dense_entry,
    dense_failure,
    describe_error,
    experiments_of,
    prune_cell,
    run_cell,
)
from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.registry import get_method
from pruning.train import Progress

BACKENDS = ("local", "ray")
ADDRESS = re.compile(r"^(auto|local|(ray://)?[A-Za-z0-9_.-]+:(\d{1,5}))$")
CellCallback = Callable[[int, CellOutcome], None]


@dataclass(frozen=True)
class Backend:
    """Where cells run: ``local`` with ``workers`` processes (1 = this process), or ``ray`` at
    ``address`` (None: ``RAY_ADDRESS``, else a Ray instance started on this machine)."""

    kind: str = "local"
    workers: int = 1
    address: str | None = None

    def describe(self) -> str:
        if self.kind == "ray":
            return f"Ray ({self.address or os.environ.get('RAY_ADDRESS') or 'a local instance'})"
        return "this process" if self.workers == 1 else f"{self.workers} local processes"


@dataclass
class CellRun:
    """The outcomes in the order of the cells, and how many dense models were trained on the way
    (by the dense stage, and by any cell that did not find its dense model: it should be none)."""

    outcomes: list[CellOutcome]
    dense_trainings: int = 0
    failures: list[CellFailure] = field(default_factory=list)


def ray_installed() -> bool:
    """Whether ``import ray`` can work, without importing it (that takes a second or more)."""
    return importlib.util.find_spec("ray") is not None


def add_backend_arguments(parser, workers_do: str = "") -> None:
    """A bench's ``--backend``, ``--workers`` and ``--address`` (``workers_do``: what the processes run);
    :func:`check_backend` checks them."""
    parser.add_argument("--backend", choices=BACKENDS, default="local", help="local (this machine) or ray")
    parser.add_argument("--workers", type=int, help=f"local: N processes{workers_do} (default 1: this one)")
    parser.add_argument("--address", help="ray: auto, HOST:PORT or ray://HOST:PORT (default RAY_ADDRESS, else local)")


def check_backend(kind: str = "local", workers: int | None = None, address: str | None = None) -> Backend:
    """The backend asked for, checked before any work: a known kind, workers >= 1 for ``local``
    only, an address for ``ray`` only and well formed (auto, local, HOST:PORT, ray://HOST:PORT),
    ``ray`` installed."""
    if kind not in BACKENDS:
        raise BadInputError(f"unknown backend {kind!r}; choose one of: {', '.join(BACKENDS)}")
    if kind == "ray":
        if workers is not None:
            raise BadInputError("--workers applies to the local backend; Ray runs as many cells at once as the cluster has CPUs")
        if not ray_installed():
            raise BadInputError('the ray backend needs ray: pip install "ray>=2.40" (see the README, "Sweeps on a Ray cluster")')
        if address is not None:
            address = address.strip()
            match = ADDRESS.match(address)
            if match is None or match.group(3) is not None and not 0 < int(match.group(3)) < 65536:
                raise BadInputError(f"bad Ray address {address!r}: give auto, local, HOST:PORT or ray://HOST:PORT")
        return Backend("ray", 1, address)
    if address is not None:
        raise BadInputError("--address applies to the ray backend: add --backend ray")
    workers = 1 if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BadInputError(f"--workers must be a whole number of at least 1, got {workers}")
    return Backend("local", workers)


def run_cells(cells: list[Cell], backend: Backend = Backend(), progress: Progress | None = None,
              on_cell: CellCallback | None = None) -> CellRun:
    """Every cell on ``backend`` (see the module's docstring), the dense models first."""
    tracker = Tracker(cells, progress, on_cell)
    if backend.kind == "ray":
        from pruning.ray_backend import run_on_ray

        trainings = run_on_ray(cells, backend.address, tracker)
    elif backend.workers == 1:
        trainings = _run_here(cells, tracker)
    else:
        trainings = _run_on_processes(cells, backend.workers, tracker)
    return tracker.finish(trainings)


class Tracker:
    """Collects the outcomes in the cells' order and reports each as it comes (any backend)."""

    def __init__(self, cells: list[Cell], progress: Progress | None, on_cell: CellCallback | None):
        self.cells, self.progress, self.on_cell = cells, progress, on_cell
        self.outcomes: list[CellOutcome | None] = [None] * len(cells)
        self.done = 0

    def note(self, message: str) -> None:
        if self.progress:
            self.progress(self.done / max(len(self.cells), 1), message)

    def finished(self, index: int, outcome: CellOutcome | str) -> None:
        """A cell's result, or its error (a line)."""
        if isinstance(outcome, str):
            outcome = CellFailure(self.cells[index], outcome)
        self.outcomes[index] = outcome
        self.done += 1
        state = f"failed ({outcome.error})" if isinstance(outcome, CellFailure) else "done"
        self.note(f"{self.done}/{len(self.cells)} cells; {self.cells[index].label()} {state}")
        if self.on_cell:
            self.on_cell(index, outcome)

    def finish(self, trainings: int) -> CellRun:
        if self.progress:
            self.progress(1.0, "done")
        outcomes = list(self.outcomes)
        return CellRun(outcomes, trainings, [outcome for outcome in outcomes if isinstance(outcome, CellFailure)])


def _run_here(cells: list[Cell], tracker: Tracker) -> int:
    """In this process, one cell after another (the dense models first, as elsewhere)."""
    entries, trainings = {}, 0
    for experiment in experiments_of(cells):
        tracker.note(f"dense model of seed {experiment.seed}")
        entries[experiment] = _tried(lambda: dense_entry(experiment))
        trainings += isinstance(entries[experiment], DenseEntry) and entries[experiment].trained
    for index, cell in enumerate(cells):
        entry = entries[cell.experiment]
        tracker.finished(index, dense_failure(entry) if isinstance(entry, str) else _tried(lambda: prune_cell(cell)))
    return trainings


def _tried(job):
    """``job()``, tried once more if it raises; the last error as a line if every try failed.
    A user error is raised at once."""
    error = None
    for _ in range(TRIES):
        try:
            return job()
        except USER_ERRORS:
            raise
        except Exception as raised:
            error = describe_error(raised)
    return error


# --- local worker processes -------------------------------------------------------------------

def _start_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _pool(processes: int, threads: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(threads,))


def _run_on_processes(cells: list[Cell], workers: int, tracker: Tracker) -> int:
    """``workers`` spawned processes: the dense models (one job each), then the cells."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    entries: dict[Experiment, DenseEntry | str] = {}
    for experiment in experiments_of(cells):
        if experiment.weights is not None:  # held by this process (the CLI's): they travel from here
            entries[experiment] = dense_entry(experiment)
    methods = {name: get_method(name) for name in {cell.method for cell in cells}}  # plug-ins travel too
    trainings, pool = 0, _pool(workers, threads)
    try:
        dense_jobs = {experiment: (dense_entry, experiment) for experiment in experiments_of(cells) if experiment not in entries}

        def dense_done(experiment: Experiment, entry: DenseEntry | str) -> None:
            nonlocal trainings
            entries[experiment] = entry
            trainings += isinstance(entry, DenseEntry) and entry.trained
            tracker.note(f"dense model of seed {experiment.seed}: "
                         + (entry if isinstance(entry, str) else "trained" if entry.trained else "from the cache"))

        if _run_jobs(pool, threads, dense_jobs, dense_done):  # a process died and took the pool with it
            pool.shutdown()
            pool = _pool(workers, threads)
        jobs = {}
        for index, cell in enumerate(cells):
            entry = entries[cell.experiment]
            if isinstance(entry, str):
                tracker.finished(index, dense_failure(entry))
            else:
                jobs[index] = (run_cell, cell, methods[cell.method], entry)

        def cell_done(index: int, outcome: tuple | str) -> None:
            nonlocal trainings
            if isinstance(outcome, tuple):
                outcome, retrained = outcome
                trainings += retrained
            tracker.finished(index, outcome)

        _run_jobs(pool, threads, jobs, cell_done)
    finally:
        pool.shutdown(cancel_futures=True)
    return trainings


def _run_jobs(pool: ProcessPoolExecutor, threads: int, jobs: dict, done: Callable) -> bool:
    """Each job ``(function, *arguments)`` on ``pool``; ``done(key, value or error line)`` as each
    settles. A job that raised is tried once more on the pool. A process that dies takes the pool
    with it: the jobs it shared the pool with, and the job that killed it, are then tried alone,
    one at a time, so such a job costs the others a try, never their result. A user error stops
    everything. Returns whether ``pool`` broke."""
    again, broken = _round(pool, jobs, list(jobs), done, final=False)
    if not broken:
        again, broken = _round(pool, jobs, again, done, final=True)
    _run_alone(threads, jobs, sorted(again, key=list(jobs).index), done)
    return broken


def _round(pool: ProcessPoolExecutor, jobs: dict, keys: list, done: Callable, final: bool) -> tuple[list, bool]:
    """One try of each job of ``keys``: the keys to try again (in a final round, only those whose
    pool broke: the other errors are their outcome), and whether the pool broke."""
    futures = {pool.submit(*jobs[key]): key for key in keys}
    again, broken = [], False
    for future in as_completed(futures):
        key = futures[future]
        try:
            value = future.result()
        except USER_ERRORS:
            pool.shutdown(cancel_futures=True)
            raise
        except BrokenProcessPool:
            again.append(key)
            broken = True
            continue
        except Exception as error:
            if not final:
                again.append(key)
                continue
            value = describe_error(error)
        done(key, value)
    return again, broken


def _run_alone(threads: int, jobs: dict, keys: list, done: Callable) -> None:
    """The last try of each job of ``keys``, alone in a one-process pool (a new one after a death)."""
    single = None
    try:
        for key in keys:
            single = single or _pool(1, threads)
            try:
                outcome = single.submit(*jobs[key]).result()
            except USER_ERRORS:
                raise
            except Exception as error:
                if isinstance(error, BrokenProcessPool):
                    single.shutdown()
                    single = None
                outcome = describe_error(error)
            done(key, outcome)
    finally:
        if single is not None:
            single.shutdown()
