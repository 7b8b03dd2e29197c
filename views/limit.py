"""Limit page: how far one-shot magnitude pruning of an L1-trained network can go without losing
accuracy, predicted from the Hessian spectrum and the weight magnitudes, and measured."""

import streamlit as st

import share
import ui
from pruning.analysis.limit import LimitSettings, fundamental_limit, is_limit_cached
from pruning.errors import BadInputError
from pruning.methods.lomp import L1_EPOCHS_UI_MAX
from pruning.plots.limit import limit_accuracy_figure, limit_crossing_figure, spectral_density_figure

experiment = ui.current_experiment()
st.title("Limit")
st.caption(f"{experiment.model} on {experiment.dataset} · imbalance {experiment.imbalance:g} · seed {experiment.seed}")
share.experiment_only()  # a link to this page carries the experiment
st.markdown(
    "How sparse can the network get before it loses accuracy? Following Zhang et al. (*How Sparse Can We Prune a "
    "Deep Network*), the model is trained with cross-entropy plus λ‖w‖₁ and then pruned globally by magnitude in "
    "one shot, without fine-tuning (LOMP). Pruning a fraction p moves the weights by **R(p) = ‖w\\* − wᵖ‖₂**. "
    "Along a Hessian eigendirection with eigenvalue λ, the loss stays within **ε** of its minimum for a step up to "
    "r = √(2ε/|λ|); ε is the standard deviation of the per-batch training loss, the noise level below which a loss "
    "change is indistinguishable from training noise. **G(R)** is the fraction of directions that can absorb a step "
    "of length R, weighted by the spectral density; the predicted limit is where G(R(p)) = p. **Flat directions** "
    "(small or zero eigenvalues) and **small weights** (small R) both allow more pruning."
)
st.latex(r"G(R) = \frac{\sum_\lambda \rho(\lambda)\, \frac{r_\lambda^2}{R^2 + r_\lambda^2}}{\sum_\lambda \rho(\lambda)},"
         r"\qquad r_\lambda^2 = \frac{2\varepsilon}{|\lambda|},\qquad \hat p:\ G(R(\hat p)) = \hat p")
state = ui.dense_state(experiment)

controls, results = st.columns([1, 3], gap="large")
with controls:
    preset = st.radio("Recipe", ("quick", "paper"), horizontal=True, key="limit.preset",
                      help="quick: L1 training with the experiment's recipe, the Hessian on 1,000 training samples, a "
                      "0.01 grid (minutes). paper: the reference's L1 recipe (constant lr 0.01, batch 128, 200 epochs "
                      "by default), the Hessian over the whole training split, a 0.001 grid (an hour or more on a CPU).")
    defaults = LimitSettings(preset=preset)
    l1 = st.number_input("L1 strength λ", 0.0, 0.01, defaults.l1, step=1e-6, format="%g", key="limit.l1",
                         help="LOMP's L1 term on the prunable weights; larger drives more weights to zero.")
    l1_epochs = defaults.l1_epochs
    if preset == "paper":
        l1_epochs = st.number_input("L1 training epochs", 1, L1_EPOCHS_UI_MAX, defaults.l1_epochs, step=50, key="limit.l1_epochs",
                                    help="Epochs of the paper recipe's L1 training (the reference: 200 on full MNIST). On "
                                    "mnist-5k the L1 objective is still falling at 200; lenet5 needed 1,000 for the "
                                    "prediction to come within 5 points (bench/FIDELITY.md).")
    hessian_samples = st.select_slider(
        "Hessian samples (training)", [500, 1000, 2000, 0], value=defaults.hessian_samples,
        format_func=lambda n: "whole split" if n == 0 else f"{n:,}", key=f"limit.hessian_samples.{preset}",
        help="Training samples whose loss Hessian is analysed (products streamed in chunks of 128).")
    lanczos_steps = st.slider("Lanczos steps", 10, 200, defaults.lanczos_steps, 2, key=f"limit.lanczos_steps.{preset}",
                              help="Steps of stochastic Lanczos quadrature: more resolve the spectrum finer.")
    probes = st.slider("SLQ probes", 1, 5, defaults.probes, key="limit.probes",
                       help="Random start vectors of the spectral density estimate, averaged.")
    grid_step = st.number_input("Grid step of the actual limit", 0.001, 0.1, defaults.grid_step, step=0.001, format="%g",
                                key=f"limit.grid_step.{preset}",
                                help="The pruned fractions measured: 0, step, 2 step, ... up to 0.99, on the whole test split.")
    tolerance = st.number_input("Tolerance (accuracy points)", 0.0, 10.0, 100 * defaults.tolerance, step=0.1, format="%g",
                                key="limit.tolerance",
                                help="The actual limit is the largest fraction whose accuracy is within this of the unpruned "
                                "model's (0: no loss at all).")
    try:
        settings = LimitSettings(preset=preset, l1=l1, l1_epochs=l1_epochs, hessian_samples=hessian_samples,
                                 lanczos_steps=lanczos_steps, probes=probes, grid_step=grid_step, tolerance=tolerance / 100)
    except BadInputError as error:
        st.error(str(error))
        st.stop()

results_store = st.session_state.setdefault("limit_results", {})
run_key = (experiment, settings)
with results:
    try:
        if run_key not in results_store and is_limit_cached(experiment, settings):
            results_store[run_key] = fundamental_limit(experiment, settings)
        if run_key not in results_store and st.button("Compute the limit", type="primary", key="limit.run"):
            with ui.progress_status("L1 training, accuracy sweep and Hessian spectrum",
                                    done="Done: limit computed (cached on disk)") as report:
                results_store[run_key] = fundamental_limit(experiment, settings, progress=report)
    except ui.USER_ERRORS as error:
        st.error(str(error))
        st.stop()
    result = results_store.get(run_key)
    if result is None:
        st.info("Press the button: it trains the L1-regularised model (cached), sweeps the pruned fraction and "
                "estimates the Hessian spectrum. The result is kept for the session and cached on disk.")
        st.stop()
    cards = st.columns(5)
    cards[0].metric("Predicted limit", f"{100 * result.predicted:.1f}%", help="p where G(R(p)) = p")
    cards[1].metric("Actual limit", f"{100 * result.actual:.0f}%",
                    f"{100 * (result.predicted - result.actual):+.1f} pts predicted − actual", delta_color="off",
                    help="largest pruned fraction whose test accuracy is at least the unpruned L1-trained model's")
    cards[2].metric("Unpruned accuracy", f"{100 * result.dense_accuracy:.2f}%",
                    help=f"L1-trained; the normally trained dense model has {100 * state.evaluation.accuracy:.2f}%")
    cards[3].metric("ε (loss noise)", f"{result.eps:.3g}", help="std of the per-batch training loss at w*")
    cards[4].metric("Zero eigenvalues", f"{100 * result.zero_mass:.1f}%",
                    help="weights whose Hessian row is zero on the batch: exact flat directions, G weight 1")
    left, right = st.columns(2)
    left.plotly_chart(limit_crossing_figure(result.fractions, result.removable, result.predicted), key="limit_crossing")
    right.plotly_chart(limit_accuracy_figure(result.fractions, result.accuracy, result.dense_accuracy,
                                             result.predicted, result.actual), key="limit_accuracy")
    st.plotly_chart(spectral_density_figure(result.density_grid, result.density, result.zero_mass), key="limit_density")
    with st.expander("Details"):
        st.json({key: value for key, value in result.details.items() if key != "l1_history"})
