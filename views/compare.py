"""Compare page: methods over a sparsity sweep, ShrinkBench-style, behind a "Run sweep" button.
The cells run in this server, on local worker processes, or as Ray tasks on a cluster."""

import os
import re

import pandas as pd
import streamlit as st

import share
import ui
from pruning.cells import CellFailure
from pruning.errors import BadInputError
from pruning.plots.compare import sweep_accuracy_figure
from pruning.registry import get_method, method_names
from pruning.runner import check_backend, ray_installed, run_cells
from pruning.schedules import SCHEDULES, make_schedule
from pruning.selection import check_sparsity
from pruning.sweep import BASELINES, sweep_cells, sweep_rows

DEFAULT_SPARSITIES = "0.5, 0.75, 0.9, 0.95, 0.98"
MAX_SEEDS = 3
SELECTION = {param.name: param for param in get_method("magnitude").params}
TABLE_COLUMNS = ("method", "seed", "target_sparsity", "sparsity", "compression", "theoretical_speedup",
                 "accuracy_before_finetune", "accuracy_after_finetune", "dense_accuracy", "granularity", "schedule",
                 "finetune_epochs", "seconds")


def parse_sparsities(text: str) -> list[float]:
    """A list such as "0.5, 0.9, 95%" as sorted distinct fractions in [0, 1)."""
    parts = [part for part in re.split(r"[,;\s]+", text.strip()) if part]
    if not parts:
        raise BadInputError("enter at least one sparsity, for example 0.5, 0.9")
    values = []
    for part in parts:
        number = part.removesuffix("%")
        try:
            value = float(number) / (100 if part.endswith("%") else 1)
        except ValueError:
            raise BadInputError(f"{part!r} is not a number: sparsities are fractions in [0, 1), e.g. 0.9") from None
        values.append(check_sparsity(value))
    return sorted(set(values))


def compression_note(sparsities: list[float]) -> str:
    return ", ".join(f"{s:g} → {1 / (1 - s):.3g}×" for s in sparsities)


def run_with_progress(experiment, methods, sparsities, seeds, overrides, schedule, backend) -> list[dict]:
    """The sweep's rows; while it runs, a progress bar (cells done / total, the last one finished)
    and a table of every cell's state."""
    cells = sweep_cells(experiment, methods, sparsities, seeds, overrides, schedule)
    total = len(cells)
    with ui.progress_status(f"Running the sweep: {total} prunings on {backend.describe()}",
                            done=f"Sweep done: {total} prunings", failed="The sweep stopped") as report:
        states = {"cell": [cell.label() for cell in cells], "state": ["waiting"] * total}
        table = st.empty()
        table.table(pd.DataFrame(states))

        def show_cell(index: int, outcome) -> None:
            states["state"][index] = (f"failed: {outcome.error}" if isinstance(outcome, CellFailure)
                                      else f"done: accuracy {outcome.accuracy_after_finetune:.4f}")
            table.table(pd.DataFrame(states))

        outcomes = run_cells(cells, backend, progress=report, on_cell=show_cell).outcomes
    return sweep_rows(outcomes)


def show_results(rows: list[dict], key) -> None:
    ran_on, methods, sparsities, seeds, settings, schedule, backend = key
    if ran_on != experiment:
        st.warning(f"These results are for {ran_on.model} on {ran_on.dataset} (imbalance {ran_on.imbalance:g}, "
                   f"{ran_on.train.epochs} epochs), not the experiment now chosen in the sidebar: run the sweep again.")
    st.caption(
        f"Methods {', '.join(methods)} · sparsities {', '.join(f'{s:g}' for s in sparsities)} · seeds "
        f"{', '.join(map(str, seeds))} · " + ", ".join(f"{name} {value}" for name, value in settings)
        + f" · schedule {schedule.kind}, {schedule.finetune_epochs} fine-tuning epochs · ran on {backend.describe()}. "
        "Points are means over seeds; error bars span min to max."
    )
    failed = [row for row in rows if row.get("error")]
    if failed:
        def cell(row: dict) -> str:
            at = "" if row["target_sparsity"] is None else f" at sparsity {row['target_sparsity']:g}"
            return f"seed {row['seed']}, {row['method']}{at}: {row['error']}"

        st.warning(f"{len(failed)} of {len(rows)} cells failed twice and are left out of the plots (the table's error "
                   "column says why): " + "; ".join(map(cell, failed[:3])) + ("; ..." if len(failed) > 3 else ""))
    plotted = [row for row in rows if not row.get("error")]
    if plotted:
        left, right = st.columns(2, gap="medium")
        left.plotly_chart(sweep_accuracy_figure(plotted, "compression"), key="compare.vs_compression")
        right.plotly_chart(sweep_accuracy_figure(plotted, "theoretical_speedup"), key="compare.vs_speedup")
    frame = pd.DataFrame(rows)
    shown = [column for column in TABLE_COLUMNS if column in frame] + [c for c in frame if c not in TABLE_COLUMNS]
    percent = st.column_config.NumberColumn(format="%.4f")
    st.dataframe(
        frame[shown],
        hide_index=True,
        column_config={
            "target_sparsity": percent, "sparsity": percent,
            "compression": st.column_config.NumberColumn(format="%.2f×"),
            "theoretical_speedup": st.column_config.NumberColumn(format="%.2f×"),
            "accuracy_before_finetune": percent, "accuracy_after_finetune": percent, "dense_accuracy": percent,
            "seconds": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    st.download_button(
        "Download CSV", frame[shown].to_csv(index=False), file_name=f"sweep-{ran_on.model}-{ran_on.dataset}.csv",
        mime="text/csv", key="compare.download", icon=":material/download:", on_click="ignore",
    )


experiment = ui.current_experiment()
st.title("Compare")
st.caption(f"{experiment.model} on {experiment.dataset} · imbalance {experiment.imbalance:g} · seed {experiment.seed}")
share.experiment_only()  # a link to this page carries the experiment
st.markdown(
    "Prune the dense model with several methods at several sparsities and compare accuracy against "
    "compression (all parameters / nonzero parameters) and theoretical speedup (dense FLOPs / FLOPs of the "
    "nonzero weights), as ShrinkBench reports them. The **random** and **magnitude** baselines always run. "
    "A sparsity s keeps a fraction 1 − s of the prunable weights: compression of those weights is 1 / (1 − s)."
)
state = ui.dense_state(experiment)

# Outside the form: a form would only learn of a new granularity on submit, and the block size shows for blocks only.
granularity_column, scope_column, block_column = st.columns(3, gap="large")
with granularity_column:
    granularity = ui.param_widget(SELECTION["granularity"], key="compare.granularity")
with scope_column:
    scope = ui.param_widget(SELECTION["scope"], key="compare.scope")
selection = {"scope": scope, "granularity": granularity}
if SELECTION["block_size"].applies(selection):
    with block_column:
        selection["block_size"] = int(ui.param_widget(SELECTION["block_size"], key="compare.block_size"))

# Where the cells run, outside the form too: the workers' number shows for the local backend only.
backend_column, workers_column, address_column = st.columns(3, gap="large")
with address_column:
    ray_address = st.text_input(
        "Ray cluster address", os.environ.get("RAY_ADDRESS", ""), key="compare.ray_address", disabled=not ray_installed(),
        help="auto on a node of the cluster, HOST:6379, or ray://HOST:10001 from another machine; empty: no Ray.",
    ).strip()
    if not ray_installed():
        st.caption('To run the cells on a Ray cluster: `pip install "ray>=2.40"`, start one with `ray start --head`, '
                   "and restart the app (the README says how).")
    elif not ray_address:
        st.caption("Start a cluster with `ray start --head` (and `ray start --address=HEAD:6379` on other machines), "
                   "then enter its address here or set RAY_ADDRESS before starting the app.")
with backend_column:
    backend_kind = st.radio(
        "Run the cells", ["local", "ray"] if ray_installed() and ray_address else ["local"], key="compare.backend",
        horizontal=True, format_func={"local": "on this machine", "ray": "on the Ray cluster"}.get,
        help="On this machine: in this server, or on worker processes. On the Ray cluster: one task per cell; "
        "each seed's dense model is trained once and sent to the workers.",
    )
workers = 1
if backend_kind == "local":
    with workers_column:
        workers = int(st.number_input(
            "Worker processes", 1, os.cpu_count() or 1, 1, key="compare.workers",
            help="1: in this server. N > 1: N processes, each with cpus / N threads; each takes a few seconds to start, "
            "so they pay off for sweeps of many cells or cells that train.",
        ))

with st.form("compare.form"):
    left, right = st.columns(2, gap="large")
    with left:
        extra = st.multiselect(
            "Methods (random and magnitude always run too)",
            [name for name in method_names() if name not in BASELINES],
            key="compare.methods",
            format_func=ui.method_label,
            help="The baselines are added to whatever is chosen here, so an empty choice compares the two baselines. "
            "Methods marked (trains) run their own training for every point (once per seed where their sparsity "
            "emerges from their settings) and ignore the schedule; their runs are cached.",
        )
        sparsity_text = st.text_input(
            "Sparsities (fractions pruned, comma-separated)", DEFAULT_SPARSITIES, key="compare.sparsities",
            help="Each in [0, 1); 95% also works. Compression of the prunable weights is 1 / (1 − s): "
            "0.5 → 2×, 0.75 → 4×, 0.9 → 10×, 0.95 → 20×, 0.98 → 50×.",
        )
        seed_count = st.slider(
            "Number of seeds", 1, MAX_SEEDS, 1, key="compare.seeds",
            help=f"Seeds {experiment.seed}, {experiment.seed + 1}, ...: each seed trains its own dense model (cached).",
        )
    with right:
        kind = st.selectbox(
            "Schedule", list(SCHEDULES), key="compare.schedule",
            help=" ".join(f"{kind}: {schedule.description.split('. ')[0]}." for kind, schedule in SCHEDULES.items())
            + " Anything but oneshot without fine-tuning trains for every point of the sweep.",
        )
        finetune = st.slider("Fine-tuning epochs (mask kept, a tenth of the learning rate)", 0, 10, 0, key="compare.finetune")
    submitted = st.form_submit_button("Run sweep", type="primary", icon=":material/play_arrow:")

try:
    st.caption(f"Compression of the prunable weights for these sparsities: "
               f"{compression_note(parse_sparsities(st.session_state.get('compare.sparsities', DEFAULT_SPARSITIES)))}")
except BadInputError:
    pass

def sweep_choices() -> tuple:
    """The sweep the form asks for, as a key: (experiment, methods, sparsities, seeds, settings, schedule, backend)."""
    methods = list(dict.fromkeys([*BASELINES, *extra]))
    seeds = [experiment.seed + offset for offset in range(int(seed_count))]
    schedule = make_schedule(kind, {"finetune_epochs": int(finetune)})
    backend = (check_backend("ray", address=ray_address) if backend_kind == "ray" else check_backend("local", workers))
    return (experiment, tuple(methods), tuple(parse_sparsities(sparsity_text)), tuple(seeds), tuple(selection.items()),
            schedule, backend)


def run_chosen() -> list[dict]:
    ran_on, methods, sparsities, seeds, overrides, schedule, backend = choices
    return run_with_progress(ran_on, list(methods), list(sparsities), list(seeds), dict(overrides), schedule, backend)


choices = None
if submitted:
    try:
        choices = sweep_choices()
    except ui.USER_ERRORS as error:
        st.error(str(error))
shown = ui.kept_run("compare.results", choices, run_chosen, clicked=choices is not None)
if shown is not None:
    show_results(*shown)
elif not submitted:
    st.info("Choose the sweep above and press **Run sweep**. One-shot pruning without fine-tuning takes about a "
            "second per point on the small models; schedules that train take as long as training.")
