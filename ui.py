"""Streamlit helpers shared by app.py and the pages: the experiment sidebar, the dense-model
store, and widgets generated from a method's declared parameters.

The engine (``pruning/``) never imports streamlit; everything streamlit-specific is here or in views/
(not pages/: on a reload or deep link Streamlit would treat that folder as a legacy page list).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

from pruning import cache
from pruning.data import DATASETS, Dataset, DataUnavailableError
from pruning.errors import BadInputError
from pruning.experiment import DenseModel, Experiment, is_cached, train_dense
from pruning.methods import Method, get_method, method_names
from pruning.models import MODELS, build_model
from pruning.params import Param
from pruning.pipeline import ExperimentPruneResult, PruneResult, is_training_run_cached, prune_model, run_prune
from pruning.schedules import PRUNE_AT, REWIND_TO, SCHEDULE_INFO, SCHEDULES, Schedule
from pruning.selection import GRANULARITY_INFO
from pruning.train import Evaluation, TrainConfig, evaluate
from pruning.weights import max_upload_bytes, use_weights

IMBALANCE_CHOICES = (1, 2, 5, 10, 20, 50, 100)
USER_ERRORS = (BadInputError, DataUnavailableError)


def experiment_sidebar() -> None:
    """The experiment choice (dataset, imbalance, model, seed, training) in the sidebar;
    the result is kept in ``st.session_state["experiment"]`` for the pages. The widgets keep
    their values for the whole session (``persist_state``), whichever page is open."""
    defaults = TrainConfig()
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
        seed = st.number_input("Seed", min_value=0, max_value=10_000, value=0, step=1, key="seed", persist_state="session")
        with st.expander("Dense training"):
            epochs = st.slider("Epochs", 1, 30, defaults.epochs, key="epochs", persist_state="session")
            lr = st.select_slider(
                "Learning rate (SGD, momentum 0.9, cosine decay)",
                (0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
                value=defaults.lr,
                key="lr", persist_state="session",
            )
        with st.expander("Bring your own weights"):
            weights_file = st.file_uploader(
                "Trained state_dict of the chosen model (.pt)", type=["pt", "pth"], key="weights_file",
                help="torch.save(model.state_dict(), path). Read as plain tensors only (never run as code), "
                f"at most {max_upload_bytes() // 2**20} MB; keys and shapes must be the model's.",
            )
            mask_file = st.file_uploader(
                "Mask (optional: {name: 0/1 tensor}; masked weights set to zero)", type=["pt", "pth"], key="mask_file",
            )
    experiment = Experiment(
        dataset=dataset,
        model=model,
        imbalance=float(imbalance),
        seed=int(seed),
        train=TrainConfig(epochs=int(epochs), lr=float(lr)),
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


def cache_panel() -> None:
    """The disk cache's size against its cap, and a button to empty it."""
    with st.sidebar.expander("Cache"):
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


def current_experiment() -> Experiment:
    return st.session_state.get("experiment") or Experiment()


def param_widget(param: Param, key: str):
    """One widget for a declared parameter, of the kind its type calls for."""
    if param.type == "choice":
        return st.radio(param.name, param.choices, index=param.choices.index(param.default), key=key, help=param.help, horizontal=True)
    if param.type == "bool":
        return st.toggle(param.name, value=param.default, key=key, help=param.help)
    if param.type == "int":
        return st.slider(param.name, int(param.min), int(param.max), int(param.default), key=key, help=param.help)
    if param.step is not None and param.step < 0.01:
        return st.number_input(param.name, float(param.min), float(param.max), float(param.default), step=param.step,
                               format="%g", key=key, help=param.help)
    return st.slider(param.name, float(param.min), float(param.max), float(param.default), step=param.step, key=key,
                     help=param.help)


def method_settings(method: Method, prefix: str = "") -> dict:
    """Widgets for the method's declared parameters (keys ``prefix + method.param``), with the
    chosen granularity explained; returns the validated settings."""
    values = {param.name: param_widget(param, key=f"{prefix}{method.name}.{param.name}") for param in method.params}
    if "granularity" in values:
        description, formula, reference = GRANULARITY_INFO[values["granularity"]]
        with st.expander(f"About {values['granularity']} granularity"):
            st.write(description)
            st.latex(formula)
            st.caption(f"Reference: {reference}")
    return method.settings(values)


def pruning_run(experiment: Experiment, method: Method, sparsity: float | None, settings: dict, schedule: Schedule,
                key: str) -> ExperimentPruneResult | None:
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


def pruned_result(experiment: Experiment, state: DenseState, method: Method, sparsity: float | None, settings: dict,
                  key: str) -> PruneResult | None:
    """The pruned model for a page that looks at one: one-shot methods prune live, methods that
    train run behind a button (``pruning_run``). None, with a message shown, until there is one."""
    try:
        if method.trains:
            run = pruning_run(experiment, method, sparsity, settings, Schedule(), key=key)
            return run.result if run is not None else None
        return prune_model(state.dense.model, state.data, method.name, sparsity, settings, seed=experiment.seed)
    except USER_ERRORS as error:
        st.error(str(error))
        return None


def method_label(name: str) -> str:
    """A method's name in pickers, marked when it trains (it runs behind a button, not live)."""
    return f"{name} (trains)" if get_method(name).trains else name


def method_and_sparsity(prefix: str, label: str, value: float, maximum: float = 0.99, step: float = 0.01,
                        default: str = "magnitude", help: str | None = None) -> tuple[Method, float | None]:
    """A page's method selectbox (every method, with the chosen one's description; key
    ``prefix + "method"``) and, for a method that takes a target, its sparsity slider (key
    ``prefix + "sparsity"``); the sparsity is None for methods whose sparsity emerges."""
    names = method_names()
    method = get_method(st.selectbox("Method", names, index=names.index(default), key=f"{prefix}method",
                                     format_func=method_label))
    method_help(method)
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


def schedule_controls(experiment: Experiment) -> Schedule:
    """Widgets for when and how fast sparsity grows, with the chosen schedule's description."""
    defaults = Schedule()
    with st.expander("Schedule and fine-tuning", expanded=False):
        kind = st.radio("Schedule", SCHEDULES, key="schedule.kind", horizontal=True)
        description, formula, reference = SCHEDULE_INFO[kind]
        st.caption(description)
        st.latex(formula)
        st.caption(f"Reference: {reference}")
        values = {"kind": kind}
        if kind == "oneshot":
            values["prune_at"] = st.radio("Prune", PRUNE_AT, key="schedule.prune_at", horizontal=True,
                                          help="after training, at initialisation, or early (after a few epochs)")
            if values["prune_at"] == "early":
                values["early_epochs"] = st.slider("Epochs before pruning", 1, max(1, experiment.train.epochs - 1),
                                                   defaults.early_epochs, key="schedule.early_epochs")
        if kind in ("iterative", "gradflow"):
            values["rounds"] = st.slider("Rounds", 1, 10, defaults.rounds, key="schedule.rounds")
        if kind == "iterative":
            values["rewind_to"] = st.radio("Rewind survivors to", REWIND_TO, key="schedule.rewind_to", horizontal=True)
            if values["rewind_to"] == "epoch":
                values["rewind_epoch"] = st.slider("Rewind epoch", 1, max(1, experiment.train.epochs),
                                                   defaults.rewind_epoch, key="schedule.rewind_epoch")
        if kind == "gradual":
            values["gradual_epochs"] = st.slider("Epochs while pruning", 1, 20, defaults.gradual_epochs, key="schedule.gradual_epochs")
        values["finetune_epochs"] = st.slider("Fine-tuning epochs (mask enforced)", 0, 20, defaults.finetune_epochs,
                                              key="schedule.finetune_epochs")
    return Schedule(**values)
