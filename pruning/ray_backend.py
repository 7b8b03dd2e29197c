"""Sweep cells as Ray tasks, on a Ray instance started here or on a cluster at an address.

One task per distinct dense experiment trains its model (or reads its worker's cache) and
returns its state dict, CPU tensors, into the object store; each cell is one task that takes it
from there and puts it into its own worker's cache before pruning (``pruning.cells.run_cell``),
so a worker on another machine never trains it again. Each task gets one CPU (and one GPU for an
experiment on ``cuda``) and runs with one thread. A task that fails, by an exception or a lost
worker, is run once more by Ray (``max_retries=1, retry_exceptions=True``); then its error is
the cell's outcome. A user error is returned by the task rather than raised, so Ray does not try
it again (every try would fail alike), and stops the run. On a cluster the code travels as the
job's ``working_dir`` (this checkout, without its caches); each worker keeps its own disk cache
(``PRUNING_CACHE_DIR`` on its machine, else ``.cache/pruning`` beside the code it runs).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import torch

from pruning.cells import (
    TRIES,
    USER_ERRORS,
    Cell,
    DenseEntry,
    dense_entry,
    dense_failure,
    describe_error,
    experiments_of,
    run_cell,
)
from pruning.errors import BadInputError
from pruning.registry import get_method

CODE_ROOT = Path(__file__).resolve().parent.parent
NOT_SHIPPED = [".git", ".cache", "data/torchvision", "test-artifacts", "**/__pycache__", "bench/*.csv"]
TASK_OPTIONS = {"num_cpus": 1, "max_retries": TRIES - 1, "retry_exceptions": True}
PROBE_SECONDS = 5.0
_connection = {"address": None}


def connect(address: str | None):
    """The ``ray`` module, connected: to ``address``, else to ``RAY_ADDRESS``, else to a new
    instance on this machine; a connection the caller made first (``ray.init``) is used as it is
    when no address is asked for. A cluster that cannot be reached is a ``BadInputError``."""
    try:
        import ray
    except ImportError:
        raise BadInputError('the ray backend needs ray: pip install "ray>=2.40"') from None
    if ray.is_initialized():
        if address is None or address == _connection["address"]:
            return ray
        ray.shutdown()
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target not in (None, "auto", "local"):
        probe(target)
    options = {"logging_level": logging.WARNING}
    if target and target != "local":  # a cluster: its workers may be on machines without this code
        options["runtime_env"] = {"working_dir": str(CODE_ROOT), "excludes": NOT_SHIPPED}
    else:
        options["include_dashboard"] = False
    try:
        ray.init(address=target, **options)
    except Exception as error:  # unreachable, refused, another Ray version: one line, exit 2
        raise BadInputError(f"cannot start or reach Ray at {target or 'a local instance'}: {describe_error(error)}") from None
    _connection["address"] = address
    return ray


def probe(address: str) -> None:
    """Fail at once if nothing listens at ``address`` (HOST:PORT or ray://HOST:PORT): Ray itself
    retries an unreachable cluster for minutes before it gives up."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else describe_error(error)
        raise BadInputError(f"cannot reach a Ray cluster at {address}: {reason}") from None


def _dense_task(experiment):
    """(trained, entry), or (the user error, None)."""
    torch.set_num_threads(1)
    try:
        entry = dense_entry(experiment)
    except USER_ERRORS as error:
        return error, None
    return entry.trained, entry


def _cell_task(cell: Cell, method, entry: DenseEntry):
    """(result, retrained), or the user error."""
    torch.set_num_threads(1)
    try:
        return run_cell(cell, method, entry)
    except USER_ERRORS as error:
        return error


def _raise_user_error(value):
    if isinstance(value, BaseException):
        raise value
    return value


def _cause(error: BaseException) -> BaseException:
    """The exception a task raised, out of Ray's wrapper (a lost worker has none: the wrapper)."""
    return getattr(error, "cause", None) or error


def _placement(experiment) -> dict:
    return {**TASK_OPTIONS, "num_gpus": 1 if experiment.device == "cuda" else 0}


def run_on_ray(cells: list[Cell], address: str | None, tracker) -> int:
    """The cells as Ray tasks, outcomes reported to ``tracker`` (``pruning.runner.Tracker``) as
    they finish; returns how many dense models were trained."""
    ray = connect(address)
    from ray.exceptions import RayError

    dense_task, cell_task = ray.remote(_dense_task), ray.remote(_cell_task)
    entries, flags, pending, trainings = {}, {}, [], 0
    try:
        for experiment in experiments_of(cells):
            if experiment.weights is not None:  # held by this process: they travel from here
                entries[experiment] = ray.put(dense_entry(experiment))
                continue
            trained, entries[experiment] = dense_task.options(num_returns=2, **_placement(experiment)).remote(experiment)
            flags[trained] = experiment
        pending = list(flags)
        while pending:
            (ready,), pending = ray.wait(pending, num_returns=1)
            experiment = flags[ready]
            try:
                trained = _raise_user_error(ray.get(ready))
            except RayError as error:
                entries[experiment] = describe_error(_cause(error))
                tracker.note(f"dense model of seed {experiment.seed}: {entries[experiment]}")
                continue
            trainings += trained
            tracker.note(f"dense model of seed {experiment.seed}: {'trained' if trained else 'from the cache'}")
        methods = {name: ray.put(get_method(name)) for name in {cell.method for cell in cells}}  # plug-ins travel too
        refs = {}
        for index, cell in enumerate(cells):
            entry = entries[cell.experiment]
            if isinstance(entry, str):
                tracker.finished(index, dense_failure(entry))
            else:
                refs[cell_task.options(**_placement(cell.experiment)).remote(cell, methods[cell.method], entry)] = index
        pending = list(refs)
        while pending:
            (ready,), pending = ray.wait(pending, num_returns=1)
            try:
                result, retrained = _raise_user_error(ray.get(ready))
            except RayError as error:
                tracker.finished(refs[ready], describe_error(_cause(error)))
                continue
            trainings += retrained
            tracker.finished(refs[ready], result)
    finally:
        for ref in pending:  # stopped early (a user error, an interrupt): what is left is not needed
            try:
                ray.cancel(ref)
            except Exception:  # finished or gone meanwhile
                pass
    return trainings
