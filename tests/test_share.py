"""Links that reopen a view (share.py), driven through the real app with AppTest: a link's query
string restores the sidebar and the page's choices, the URL follows the widgets, and a bad value in
a link is named in the page while the default is used, never an exception."""

from urllib.parse import urlencode

import pytest
from streamlit.testing.v1 import AppTest

from pruning.experiment import Experiment
from pruning.train import TrainConfig
from tests.app_driver import APP, metric, start

SMALL = {"model": "mlp", "train.epochs": "1"}  # the small model, trained once (cached) for these tests
PAGES = ("prune", "masks", "compare", "recall", "attributions", "valley", "limit", "about")


def open_link(query: dict, page: str = "prune") -> AppTest:
    """A fresh session opening ``views/<page>.py`` with this query string, as a browser opening a link."""
    at = AppTest.from_file(str(APP), default_timeout=240)
    if page != "prune":
        at.switch_page(f"views/{page}.py")
    at.query_params.update(query)
    at.run()
    assert not at.exception
    return at


def link_box(at) -> str:
    """The sidebar's "Link to this view" (AppTest has no browser URL: it shows the query alone)."""
    return at.sidebar.code[-1].value


def notes(at) -> str:
    return "\n".join(warning.value for warning in at.warning)


def test_a_link_restores_the_sidebar_and_the_prune_pages_choices():
    link = {"imbalance": "2", "model": "mlp", "train.epochs": "1", "train.optimizer": "adam", "method": "random",
            "sparsity": "0.5", "scope": "layerwise", "prune_output_layer": "false"}
    at = open_link(link)
    assert not at.error and not at.warning
    assert at.session_state["experiment"] == Experiment(model="mlp", imbalance=2, train=TrainConfig(epochs=1, optimizer="adam"))
    assert at.selectbox(key="model").value == "mlp" and at.select_slider(key="imbalance").value == 2
    assert at.slider(key="epochs").value == 1 and at.radio(key="optimizer").value == "adam"
    assert at.selectbox(key="method").value == "random" and at.slider(key="sparsity").value == 0.5
    assert at.radio(key="random.scope").value == "layerwise" and at.toggle(key="random.prune_output_layer").value is False
    # half of each hidden layer's weights, none of the output layer's: mlp is 784x300, 300x100, 100x10 (+ biases)
    weights, biases = 235_200 + 30_000 + 1_000, 300 + 100 + 10
    assert metric(at, "Compression") == f"{(weights + biases) / (weights + biases - (235_200 + 30_000) // 2):.2f}x"
    assert at.query_params == link, "the URL keeps the link: every value differs from the defaults"
    assert link_box(at) == "?" + urlencode(link), "in the order of the sidebar and the page"


def test_a_link_restores_the_schedule_and_its_settings():
    link = {**SMALL, "method": "snip", "sparsity": "0.6", "granularity": "structured", "schedule": "iterative",
            "schedule.rounds": "2", "schedule.finetune_epochs": "1"}
    at = open_link(link)
    assert not at.error and not at.warning
    assert at.radio(key="snip.granularity").value == "structured"
    assert at.radio(key="schedule.kind").value == "iterative"
    assert at.slider(key="schedule.rounds").value == 2 and at.slider(key="schedule.finetune_epochs").value == 1
    assert at.button(key="run_schedule").label == "Run schedule", "a schedule that trains waits for its button"
    assert at.query_params == link


def test_a_link_opens_another_page_with_its_choices():
    link = {**SMALL, "method": "random", "sparsity": "0.3", "granularity": "block", "block_size": "2"}
    at = open_link(link, "masks")
    assert not at.error and not at.warning
    assert at.selectbox(key="masks.method").value == "random" and at.slider(key="masks.sparsity").value == 0.3
    assert at.radio(key="masks.random.granularity").value == "block"
    assert at.slider(key="masks.random.block_size").value == 2
    assert at.query_params == link


def test_the_url_follows_the_widgets_and_keeps_only_what_differs_from_the_defaults():
    at = start(wait_for_sweeps=False, model="mlp", epochs=1)
    assert at.query_params == SMALL
    at.slider(key="sparsity").set_value(0.9).run()
    assert at.query_params == {**SMALL, "sparsity": "0.9"}
    at.selectbox(key="method").set_value("snip").run()
    at.radio(key="snip.granularity").set_value("block").run()
    assert at.query_params == {**SMALL, "method": "snip", "sparsity": "0.9", "granularity": "block"}
    at.slider(key="snip.block_size").set_value(8).run()
    assert at.query_params["block_size"] == "8"
    at.radio(key="snip.granularity").set_value("unstructured").run()  # back to the default: gone, with its block size
    assert at.query_params == {**SMALL, "method": "snip", "sparsity": "0.9"}
    at.radio(key="schedule.kind").set_value("gradual").run()
    assert at.query_params == {**SMALL, "method": "snip", "sparsity": "0.9", "schedule": "gradual"}
    assert link_box(at) == "?" + urlencode(at.query_params)
    assert not at.exception and not at.warning

    at.query_params.clear()  # what the browser does when the navigation opens another page
    at.switch_page("views/masks.py").run()
    assert at.query_params == SMALL, "the experiment stays; the Prune page's choices stay behind"
    at.slider(key="masks.sparsity").set_value(0.5).run()
    assert at.query_params == {**SMALL, "sparsity": "0.5"}
    assert not at.exception and not at.warning


@pytest.mark.parametrize("name, value, key, default", [
    ("dataset", "imagenet", "dataset", "mnist-5k"),
    ("model", "gpt-2", "model", "lenet5"),
    ("imbalance", "3", "imbalance", 1),
    ("seed", "abc", "seed", 0),
    ("seed", "1.5", "seed", 0),
    ("seed", "-1", "seed", 0),
    ("train.epochs", "100", "epochs", 6),
    ("train.lr", "-1", "lr", 0.05),
    ("train.optimizer", "rmsprop", "optimizer", "sgd"),
    ("device", "tpu", "device", "auto"),
    ("colour", "red", None, None),
])
def test_a_bad_experiment_value_in_a_link_is_named_and_the_default_used(name, value, key, default):
    at = open_link({name: value}, "about")  # the sidebar is on every page; About trains nothing
    assert not at.error
    assert f"{name}={value}" in notes(at)
    if key:
        assert at.session_state[key] == default
    assert at.query_params == {}, "the bad value left the URL"


@pytest.mark.parametrize("name, value, key, default", [
    ("method", "nope", "method", "magnitude"),
    ("sparsity", "abc", "sparsity", 0.8),
    ("sparsity", "1.5", "sparsity", 0.8),
    ("sparsity", "nan", "sparsity", 0.8),
    ("granularity", "diagonal", "magnitude.granularity", "unstructured"),
    ("max_layer_sparsity", "2", "magnitude.max_layer_sparsity", 1.0),
    ("prune_output_layer", "maybe", "magnitude.prune_output_layer", True),
    ("block_size", "8", "magnitude.block_size", None),  # only with granularity=block
    ("rounds", "2", "magnitude.rounds", None),  # synflow's setting, not magnitude's
    ("schedule", "weekly", "schedule.kind", "oneshot"),
    ("schedule.rounds", "3", "schedule.rounds", None),  # not a setting of the one-shot schedule
])
def test_a_bad_page_value_in_a_link_is_named_and_the_default_used(name, value, key, default):
    at = open_link({**SMALL, name: value})
    assert not at.error
    assert f"{name}={value}" in notes(at)
    widgets = {widget.key: widget.value for kind in ("selectbox", "slider", "radio", "toggle") for widget in at.get(kind)}
    assert widgets.get(key) == default
    assert at.query_params == SMALL, "the bad value left the URL"
    assert metric(at, "Sparsity achieved") == "80.00%", "the page works on the defaults"


def test_a_sparsity_for_a_method_without_a_target_and_a_method_a_page_does_not_offer_are_named():
    at = open_link({**SMALL, "method": "dns", "sparsity": "0.5"})
    assert "sparsity=0.5" in notes(at) and "dns takes no target sparsity" in notes(at)
    assert at.query_params == {**SMALL, "method": "dns"}
    at = open_link({**SMALL, "method": "dns"}, "recall")  # the Recall page's picker is one-shot only
    assert "method=dns" in notes(at) and at.selectbox(key="recall.method").value == "magnitude"


def test_the_note_stays_until_a_choice_changes_the_url():
    at = open_link({**SMALL, "sparsity": "abc"})
    at.run()  # a rerun that changes nothing (a finished sweep reruns the page)
    assert "sparsity=abc" in notes(at)
    at.slider(key="sparsity").set_value(0.7).run()
    assert not at.warning


def test_a_page_link_carries_the_experiment_and_preset_choices():
    def script():
        from pathlib import Path

        import streamlit as st

        import share

        views = Path(share.__file__).resolve().parent / "views"
        st.navigation([st.Page(str(views / "prune.py"), default=True), st.Page(str(views / "about.py"))], position="hidden")
        share.page_link(str(views / "prune.py"), "Prune it", {"method": "snip", "sparsity": 0.9, "scope": "layerwise"})

    at = AppTest.from_function(script, default_timeout=60)
    at.session_state["model"] = "mlp"
    at.session_state["epochs"] = 1
    at.run()
    assert not at.exception
    query = at.get("page_link")[0].proto.query_string
    assert query == "model=mlp&train.epochs=1&method=snip&sparsity=0.9&scope=layerwise"
    opened = open_link(dict(pair.split("=") for pair in query.split("&")))
    assert not opened.warning
    assert opened.selectbox(key="method").value == "snip" and opened.radio(key="snip.scope").value == "layerwise"


def test_every_page_without_a_link_writes_only_the_experiment():
    """Each page's declared defaults are its widgets' defaults: opened plainly, no page choice is in the URL."""
    at = start(wait_for_sweeps=False, model="mlp", epochs=1)
    for page in PAGES:
        at.query_params.clear()
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception and not at.warning, page
        assert at.query_params == SMALL, page
        assert link_box(at) == "?" + urlencode(SMALL), page
