"""Streamlit helpers shared by app.py and the pages: the experiment sidebar, the dense-model
store, and widgets generated from a method's declared parameters.

The engine (``pruning/``) never imports streamlit; everything streamlit-specific is here or in views/
(not pages/: on a reload or deep link Streamlit would treat that folder as a legacy page list).
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

import streamlit as st

import share
from pruning import cache
from pruning.data import DATASETS, Dataset, DataUnavailableError
from pruning.device import DEVICE_CHOICES, describe_device, resolve_device
from pruning.errors import BadInputError
from pruning.experiment import DenseModel, Experiment, is_cached, train_dense
from pruning.fidelity import claims_for
from pruning.methods.base import Method
from pruning.models import MODELS, build_model
from pruning.params import Param
from pruning.pipeline import PruneResult, prune_model, run_prune
from pruning.registry import get_method, method_names
from pruning.run_cache import is_training_run_cached
from pruning.schedules import SCHEDULES, OneShot, Schedule, make_schedule
from pruning.selection import GRANULARITY_INFO
from pruning.sparsity_sweep import SparsitySweep, sparsity_sweep
from pruning.train import TRAIN_PARAMS, Evaluation, TrainConfig, evaluate
from pruning.weights import max_upload_bytes, use_weights

IMBALANCE_CHOICES = share.IMBALANCE_CHOICES
USER_ERRORS = (BadInputError, DataUnavailableError)


def experiment_sidebar() -> None:
    """The experiment choice (dataset, imbalance, model, seed, training) in the sidebar;
    the result is kept in ``st.session_state["experiment"]`` for the pages. The widgets keep
    their values for the whole session (``persist_state``), whichever page is open; a link's values
    (``share``) go into them first."""
    share.restore_experiment()
    with st.sidebar:
        st.header("Experiment")
        dataset = st.selectbox(
            "Dataset", list(DATASETS), key="dataset", persist_state="session", help="mnist-5k is real MNIST, 5,000 digits, bundled."
        )
        imbalance = st.select_slider(
            "Class imbalance (most / least frequent class)",
            IMBALANCE_CHOICES,
            key="imbalance", persist_state="session",
            help="1 = balanced. Above 1 the training split becomes long-tailed (exponential profile); "
            "the test split is untouched.",
        )
        model = st.selectbox("Model", list(MODELS), index=list(MODELS).index("lenet5"), key="model", persist_state="session")
        if MODELS[model].recipe:
            st.caption(f"{model} trains well with its own recipe, set under Dense training: "
                       + ", ".join(f"{key} {value}" for key, value in MODELS[model].recipe.items()) + ".")
        seed = st.number_input("Seed", min_value=0, max_value=10_000, value=0, step=1, key="seed", persist_state="session")
        device = device_choice()
        with st.expander("Dense training", key="dense_training_panel"):
            training = declared_widgets(TRAIN_PARAMS, prefix="", persist_state="session")
        with st.expander("Bring your own weights", key="own_weights_panel"):
            weights_file = st.file_uploader(
                "Trained state_dict of the chosen model (.pt or .safetensors)", type=["pt", "pth", "safetensors"],
                key="weights_file",
                help="torch.save(model.state_dict(), path) or safetensors.torch.save_file(model.state_dict(), path). "
                "Read as plain tensors only (never run as code), "
                f"at most {max_upload_bytes() // 2**20} MB; keys and shapes must be the model's.",
            )
            mask_file = st.file_uploader(
                "Mask (optional: {name: 0/1 tensor}; masked weights set to zero)", type=["pt", "pth", "safetensors"],
                key="mask_file",
            )
    experiment = Experiment(
        dataset=dataset,
        model=model,
        imbalance=float(imbalance),
        seed=int(seed),
        train=TrainConfig.from_settings(training),
        device=device,
    )
    if weights_file is not None:
        try:
            experiment = use_weights(experiment, weights_file.getvalue(), mask_file.getvalue() if mask_file else None)
            st.sidebar.success(f"Using the uploaded weights ({weights_file.name}) instead of training.")
        except USER_ERRORS as error:
            st.sidebar.error(f"{error}. Using the trained model instead.")
    elif mask_file is not None:
        st.sidebar.warning("A mask applies to uploaded weights: upload the weights too.")
    st.session_state["experiment"] = experiment
    cache_panel()


def device_choice() -> str:
    """The sidebar's device: auto (the GPU when the server has one), cpu or cuda; a cuda choice on
    a server without a GPU is said in the sidebar and the CPU is used."""
    choice = st.selectbox("Device", DEVICE_CHOICES, key="device", persist_state="session",
                          help="Where training, pruning and every analysis compute. auto = the server's CUDA GPU when "
                          "it has one, else its CPU. A model trained on the GPU is cached apart from the CPU's.")
    try:
        device = resolve_device(choice)
    except BadInputError as error:
        st.error(f"{error}. Using the CPU.")
        device = "cpu"
    st.caption(f"Computing on {describe_device(device)}.")
    return device


def cache_panel() -> None:
    """The disk cache's size against its cap, and a button to empty it."""
    with st.sidebar.expander("Cache", key="cache_panel"):
        used = cache.usage()
        st.caption(f"{used.bytes / 2**20:.1f} MB in {used.files} files (cap {used.max_bytes / 2**20:.0f} MB, least "
                   f"recently used evicted first) in {used.folder}")
        if st.button("Clear the cache", key="clear_cache", help="Trained models and runs are rebuilt when next needed."):
            removed = cache.clear()
            st.success(f"Removed {removed} files.")


@dataclass
class DenseState:
    """A trained dense model with its data and test evaluation. Shared by every session:
    never modified (pruning goes through ``torch.func.functional_call``)."""

    dense: DenseModel
    data: Dataset
    evaluation: Evaluation


@st.cache_resource
def _dense_store() -> dict:
    return {"lock": threading.Lock(), "states": {}, "building": {}}


def dense_state(experiment: Experiment) -> DenseState:
    """The experiment's dense model: from memory, from the disk cache, or trained now with a
    progress bar. A choice that cannot work shows a message and stops the page, nothing else.
    Sessions asking for the same model at once wait for one training instead of each running one."""
    store = _dense_store()
    if experiment in store["states"]:
        return store["states"][experiment]
    with store["lock"]:
        building = store["building"].setdefault(experiment, threading.Lock())
    if not building.acquire(blocking=False):
        with st.spinner("Another session is training this model; waiting for it..."):
            building.acquire()
    try:
        if experiment in store["states"]:
            return store["states"][experiment]
        try:
            data = experiment.load_data()
            build_model(experiment.model, data.input_shape, data.num_classes)  # fails fast on a bad pair
            if is_cached(experiment):
                with st.spinner("Loading the cached dense model..."):
                    dense = train_dense(experiment)
            else:
                dense = _train_with_progress(experiment)
        except USER_ERRORS as error:
            st.error(str(error))
            st.stop()
        state = DenseState(dense, data, evaluate(dense.model, data.x_test, data.y_test, data.num_classes))
        with store["lock"]:
            store["states"][experiment] = state
        return state
    finally:
        building.release()


@contextmanager
def progress_status(label: str, done: str, failed: str | None = None):
    """A status box with a progress bar around a long computation; yields the ``(fraction,
    message)`` callback the engine reports to (fraction clamped to [0, 1], the bar redrawn only
    when the percent or the message changes). On success the box collapses under ``done``; if
    an error escapes it is marked failed (under ``failed`` when given)."""
    with st.status(label, expanded=True) as status:
        bar = st.progress(0.0, text="starting")
        shown = {"text": None}

        def report(fraction: float, message: str) -> None:
            fraction = min(max(fraction, 0.0), 1.0)
            text = f"{message} ({int(100 * fraction)}%)"
            if text != shown["text"]:
                shown["text"] = text
                bar.progress(fraction, text=text)

        try:
            yield report
        except Exception:
            status.update(label=failed or label, state="error", expanded=False)
            raise
        status.update(label=done, state="complete", expanded=False)


def _train_with_progress(experiment: Experiment) -> DenseModel:
    label = f"Training {experiment.model} on {experiment.dataset} ({experiment.train.epochs} epochs)"
    with progress_status(label, done=f"Trained and cached: {experiment.model} on {experiment.dataset}") as report:
        return train_dense(experiment, progress=report)


SWEEPS_KEPT = 8  # sweeps held in memory per server (each holds 50 masks); older ones are read from disk again
SWEEP_RETRY_S = 30  # a failed sweep is asked again after this long
_STOPPING = threading.Event()  # set at exit: a running sweep stops at its next grid point
_SWEEP_THREADS: set[threading.Thread] = set()


@atexit.register
def _stop_sweeps() -> None:
    """At interpreter exit, stop the sweeps still computing and wait for them (briefly): a thread
    left inside torch while the interpreter finalises aborts the process."""
    _STOPPING.set()
    for thread in list(_SWEEP_THREADS):
        thread.join(timeout=30)


@st.cache_resource
def _sweep_store() -> dict:
    return {"lock": threading.Lock(), "sweeps": OrderedDict(), "jobs": {}, "figures": {}}


@dataclass
class SweepJob:
    """A sweep computing in a background thread: the pages never wait for it (a widget must stay
    live while it runs), they poll it; every session asking for the same sweep shares the job."""

    fraction: float = 0.0
    message: str = "starting"
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    finished_at: float = 0.0


def sweep_key(experiment: Experiment, method: Method, settings: dict) -> tuple:
    return experiment, method.name, tuple(sorted(settings.items()))


def live_sweep(experiment: Experiment, state: DenseState, method: Method, settings: dict) -> SparsitySweep | None:
    """The method's results along the whole sparsity slider, for the pages' scrubbers: from
    memory, from the disk cache, or computed once per server in a background thread. Never
    waits: None, with a progress bar (or the error) shown, while it computes; None for a method
    that trains (its run is scrubbed instead). ``scrubber`` polls it."""
    if method.trains:
        return None
    key = sweep_key(experiment, method, settings)
    store = _sweep_store()
    with store["lock"]:
        if key in store["sweeps"]:
            store["sweeps"].move_to_end(key)
            return store["sweeps"][key]
        job = store["jobs"].get(key)
        if job is not None and job.error and time.monotonic() - job.finished_at > SWEEP_RETRY_S:
            job = None  # a failure may have passed (a cache folder that was missing): try again
        if job is None:
            thread = threading.Thread(target=_build_sweep, args=(store, key, experiment, state.dense.model, method.name,
                                                                 settings), daemon=True)
            job = store["jobs"][key] = SweepJob()
            _SWEEP_THREADS.add(thread)
            thread.start()
    if job.error:  # kept a while: polling must not restart a failing sweep twice a second
        st.error(job.error)
    else:
        st.progress(min(max(job.fraction, 0.0), 1.0),
                    text=f"Computing {method.name} along the slider, once for every session: {job.message}")
    return None


def _build_sweep(store, key, experiment, dense, method_name, settings) -> None:
    job = store["jobs"][key]

    def report(fraction, message):
        if _STOPPING.is_set():
            raise RuntimeError("the server is stopping")
        job.fraction, job.message = fraction, message

    try:
        sweep = sparsity_sweep(experiment, method_name, settings, dense=dense, progress=report)
        with store["lock"]:
            store["sweeps"][key] = sweep
            store["jobs"].pop(key, None)
            while len(store["sweeps"]) > SWEEPS_KEPT:
                old, _ = store["sweeps"].popitem(last=False)
                for name in [name for name in store["figures"] if name[1] == old]:
                    del store["figures"][name]
    except USER_ERRORS as error:
        job.error = str(error)
    except Exception as error:  # shown in the pages that poll it; the server goes on
        job.error = f"computing along the slider failed: {error}"
    finally:
        job.finished_at = time.monotonic()
        job.done.set()
        _SWEEP_THREADS.discard(threading.current_thread())


def scrub_figure(name: str, sweep: SparsitySweep, build, key: tuple):
    """A page's scrubber figure of ``sweep``, built once per server by ``build(sweep)`` (fifty
    frames take a few hundred milliseconds: the Streamlit slider's reruns must not pay for it
    again); ``key`` is the sweep's. The figure is only read afterwards (``st.plotly_chart`` copies it)."""
    store = _sweep_store()
    with store["lock"]:
        figure = store["figures"].get((name, key))
    if figure is None:
        figure = build(sweep)
        with store["lock"]:
            figure = store["figures"].setdefault((name, key), figure)
    return figure


def sweep_note(sweep: SparsitySweep) -> str:
    """How a sweep was computed, for the caption under a scrubber."""
    return (f"Computed once at {len(sweep.points)} sparsities"
            + (" (scored once, cut at each)" if sweep.nested else " (pruned anew at each: an iterative criterion)")
            + (f"; the grid {sweep.stopped}" if sweep.stopped else ""))


def scrubber(name: str, experiment: Experiment, state: DenseState, method: Method, settings: dict, build,
             note: str, place=None) -> None:
    """A page's scrubber: the method's sweep (``live_sweep``), its figure ``build(sweep)`` made once
    per server (``scrub_figure``; ``place(figure, sweep)``, if given, opens it elsewhere per run),
    drawn with key ``name + ".scrub"`` and a caption ending in ``note``. While the sweep computes,
    a fragment polls it twice a second (the page's own widgets stay live), then the whole page
    runs once more to draw it."""
    key = sweep_key(experiment, method, settings)
    pending = not method.trains and key not in _sweep_store()["sweeps"]

    def draw() -> None:
        sweep = live_sweep(experiment, state, method, settings)
        if sweep is None:
            return
        if pending:
            st.rerun(scope="app")  # ready: draw it in a run that does not poll
        figure = scrub_figure(name, sweep, build, key)
        st.plotly_chart(place(figure, sweep) if place else figure, key=f"{name}.scrub")
        st.caption(f"{sweep_note(sweep)}: the scrubber redraws in the browser, with no server run. {note}")

    st.fragment(draw, run_every=0.5 if pending else None)()


def current_experiment() -> Experiment:
    return st.session_state.get("experiment") or Experiment()


def param_widget(param: Param, key: str, **options):
    """One widget for a declared parameter, of the kind its type calls for (``options`` go to
    the widget, e.g. ``persist_state``)."""
    label = param.label or param.name
    if param.type == "choice":
        return st.radio(label, param.choices, index=param.choices.index(param.default), key=key, help=param.help,
                        horizontal=True, **options)
    if param.type == "text":
        return st.text_input(label, value=param.default, key=key, help=param.help, **options)
    if param.type == "bool":
        return st.toggle(label, value=param.default, key=key, help=param.help, **options)
    low, high = param.ui_range or (param.min, param.max)
    unbounded = low is None or high is None
    if param.type == "int":
        if unbounded:
            return st.number_input(label, param.min, param.max, param.default, step=1, key=key, help=param.help, **options)
        return st.slider(label, int(low), int(high), int(param.default), key=key, help=param.help, **options)
    if unbounded or (param.step is not None and param.step < 0.01):
        bounds = [None if bound is None else float(bound) for bound in (param.min, param.max)]
        return st.number_input(label, *bounds, float(param.default), step=param.step, format="%g", key=key,
                               help=param.help, **options)
    return st.slider(label, float(low), float(high), float(param.default), step=param.step, key=key,
                     help=param.help, **options)


def declared_widgets(params: tuple[Param, ...], prefix: str, **options) -> dict:
    """A widget per declared parameter (key ``prefix + name``), in order, leaving out those that
    do not apply to the values chosen above them (``Param.only_if``); returns the raw values."""
    values = {}
    for param in params:
        if param.applies(values):
            values[param.name] = param_widget(param, key=f"{prefix}{param.name}", **options)
    return values


def method_settings(method: Method, prefix: str = "", leave_out: tuple[str, ...] = ()) -> dict:
    """Widgets for the method's declared parameters (keys ``prefix + method.param``) but those in
    ``leave_out`` (their defaults apply), with the chosen granularity explained; returns the
    validated settings."""
    values = declared_widgets(tuple(param for param in method.params if param.name not in leave_out),
                              prefix=f"{prefix}{method.name}.")
    if "granularity" in values:
        description, formula, reference = GRANULARITY_INFO[values["granularity"]]
        with st.expander(f"About {values['granularity']} granularity"):
            st.write(description)
            st.latex(formula)
            st.caption(f"Reference: {reference}")
    return method.settings(values)


def kept_run(store: str, key, run, clicked: bool):
    """Work behind a button, remembered per choice: ``run()`` when ``clicked`` and ``key`` has no
    result yet in this session's ``st.session_state[store]``; the last clicked key is shown until
    another is. Returns ``(result, key)`` of the last run, or None; a user error is shown in the page."""
    results = st.session_state.setdefault(store, {})
    if clicked:
        try:
            if key not in results:
                results[key] = run()
            st.session_state[f"{store}.last"] = key
        except USER_ERRORS as error:
            st.error(str(error))
    last = st.session_state.get(f"{store}.last")
    return (results[last], last) if last in results else None


def pruning_run(experiment: Experiment, method: Method, sparsity: float | None, settings: dict, schedule: Schedule,
                key: str) -> PruneResult | None:
    """A run that trains (a schedule, or a method that prunes while training) behind a button,
    with progress; kept for the session, and read from the disk cache without a press when a
    training-time method ran with these exact choices before. None until it has run; a user
    error is shown in the page."""
    runs = st.session_state.setdefault("pruning_runs", {})
    run_key = (experiment, method.name, sparsity, tuple(sorted(settings.items())), schedule)
    try:
        if run_key not in runs and method.trains and is_training_run_cached(experiment, method, sparsity, settings):
            with st.spinner("Loading the cached run..."):
                runs[run_key] = run_prune(experiment, method.name, sparsity, settings, schedule=schedule)
        label = "Train and prune" if method.trains else "Run schedule"
        if run_key not in runs and st.button(label, type="primary", key=key):
            what = f"{method.name}" if method.trains else f"{schedule.kind} pruning with {method.name}"
            with progress_status(what, done=f"Done: {what}") as report:
                runs[run_key] = run_prune(experiment, method.name, sparsity, settings, schedule=schedule, progress=report)
    except USER_ERRORS as error:
        st.error(str(error))
        return None
    if run_key not in runs:
        st.info(f"{'This method prunes while it trains' if method.trains else 'This schedule trains'}: press the "
                "button. The run is kept for this session" + (" and cached on disk." if method.trains else "."))
    return runs.get(run_key)


PRUNED_KEPT = 8  # one-shot results held per server (each holds a copy of the model's tensors)


@st.cache_resource
def _pruned_store() -> dict:
    return {"lock": threading.Lock(), "results": OrderedDict(), "computing": {}}


def shared_prune(experiment: Experiment, state: DenseState, method: Method, sparsity: float, settings: dict) -> PruneResult:
    """``prune_model`` once per (experiment, method, sparsity, settings) on a server: sessions looking
    at the same view at once wait for one computation instead of each running it (16 sessions on
    2 cores otherwise queue the same pruning 16 times); the last ``PRUNED_KEPT`` are kept. The
    result is shared: pages read it, never change it."""
    store = _pruned_store()
    key = (experiment, method.name, sparsity, tuple(sorted((name, repr(value)) for name, value in settings.items())))
    with store["lock"]:
        if key in store["results"]:
            store["results"].move_to_end(key)
            return store["results"][key]
        computing = store["computing"].setdefault(key, threading.Lock())
    with computing:
        with store["lock"]:
            if key in store["results"]:
                return store["results"][key]
        result = prune_model(state.dense.model, state.data, method.name, sparsity, settings, seed=experiment.seed)
        with store["lock"]:
            store["results"][key] = result
            while len(store["results"]) > PRUNED_KEPT:
                store["results"].popitem(last=False)
            store["computing"].pop(key, None)
    return result


def pruned_result(experiment: Experiment, state: DenseState, method: Method, sparsity: float | None, settings: dict,
                  key: str) -> PruneResult | None:
    """The pruned model for a page that looks at one: one-shot methods prune live (shared between
    sessions, ``shared_prune``), methods that train run behind a button (``pruning_run``). None, with
    a message shown, until there is one."""
    try:
        if method.trains:
            return pruning_run(experiment, method, sparsity, settings, OneShot(), key=key)
        return shared_prune(experiment, state, method, sparsity, settings)
    except USER_ERRORS as error:
        st.error(str(error))
        return None


def method_label(name: str) -> str:
    """A method's name in pickers, marked when it trains (it runs behind a button, not live)."""
    return f"{name} (trains)" if get_method(name).trains else name


def method_picker(prefix: str, default: str = "magnitude") -> Method:
    """A page's method selectbox (every method, key ``prefix + "method"``) with the chosen one's description."""
    names = method_names()
    method = get_method(st.selectbox("Method", names, index=names.index(default), key=f"{prefix}method",
                                     format_func=method_label))
    method_help(method)
    return method


def method_and_sparsity(prefix: str, label: str, value: float, maximum: float = 0.99, step: float = 0.01,
                        default: str = "magnitude", help: str | None = None) -> tuple[Method, float | None]:
    """A page's method selectbox (every method, with the chosen one's description; key
    ``prefix + "method"``) and, for a method that takes a target, its sparsity slider (key
    ``prefix + "sparsity"``); the sparsity is None for methods whose sparsity emerges."""
    method = method_picker(prefix, default)
    if not method.target_sparsity:
        return method, None
    return method, st.slider(label, 0.0, maximum, value, step, key=f"{prefix}sparsity", help=help)


def checked_settings(method: Method, prefix: str = "") -> dict | None:
    """:func:`method_settings`, or None with the message shown in the page when they are invalid."""
    try:
        return method_settings(method, prefix)
    except USER_ERRORS as error:
        st.error(str(error))
        return None


def method_help(method: Method) -> None:
    with st.expander(f"About {method.name}", expanded=False):
        st.write(method.description)
        if method.formula:
            st.latex(method.formula)
        st.caption(f"Reference: {method.reference}")
        claims = claims_for(method.name)
        if claims:
            st.markdown("**Does it reproduce here?** The paper's claims with its authors' recipe, "
                        "at this tool's scale (bench/FIDELITY.md):")
            st.table([{"claim": claim.claim, "paper": claim.paper_figure, "here": claim.ours, "verdict": claim.verdict}
                      for claim in claims])


def schedule_controls() -> Schedule:
    """Widgets for when and how fast sparsity grows, generated from the chosen schedule's
    declared settings, with its description."""
    with st.expander("Schedule and fine-tuning", expanded=False):
        kind = st.radio("Schedule", list(SCHEDULES), key="schedule.kind", horizontal=True)
        chosen = SCHEDULES[kind]
        st.caption(chosen.description)
        st.latex(chosen.formula)
        st.caption(f"Reference: {chosen.reference}")
        return make_schedule(kind, declared_widgets(chosen.all_params(), prefix="schedule."))
