"""AppTest: the app's pages run headless, react to their widgets, and show user errors as messages."""

import json

import pytest

from tests.app_driver import metric, start


def percent(text: str) -> float:
    return float(text.rstrip("%")) / 100


def figure(at, title: str) -> dict:
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if spec["layout"]["title"]["text"] == title:
            return spec
    raise AssertionError(f"no figure titled {title!r}")


@pytest.fixture
def app():
    """The app on a small, fast experiment: mlp on mnist-5k, 2 epochs."""
    at = start(model="mlp", epochs=2)
    assert not at.exception
    return at


def test_prune_page_follows_the_sparsity_slider(app):
    assert percent(metric(app, "Sparsity achieved")) == pytest.approx(0.80)
    results = {}
    for sparsity in (0.5, 0.9, 0.99):
        app.slider(key="sparsity").set_value(sparsity).run()
        assert not app.exception
        results[sparsity] = (
            percent(metric(app, "Sparsity achieved")),
            float(metric(app, "Compression").rstrip("x")),
            float(metric(app, "Speedup (FLOPs)").rstrip("x")),
            percent(metric(app, "Pruned accuracy")),
        )
        assert results[sparsity][0] == pytest.approx(sparsity, abs=1e-4)
    compressions = [results[s][1] for s in (0.5, 0.9, 0.99)]
    assert compressions == sorted(compressions) and compressions[-1] > 10 * compressions[0] / 2
    assert results[0.99][3] < results[0.5][3], "pruning 99% of the weights costs accuracy"
    dense = percent(metric(app, "Dense accuracy"))
    assert dense > 0.8
    recall = figure(app, "Recall per class")
    assert [trace["name"] for trace in recall["data"]] == ["dense", "pruned"]
    assert len(recall["data"][0]["x"]) == 10


def test_layerwise_scope_prunes_every_layer_to_the_target(app):
    app.slider(key="sparsity").set_value(0.7).run()
    app.radio(key="magnitude.scope").set_value("layerwise").run()
    assert not app.exception
    bars = figure(app, "Sparsity per layer")["data"][0]
    assert bars["x"] == ["fc1", "fc2", "fc3"]
    assert bars["y"] == pytest.approx([70.0, 70.0, 70.0], abs=0.1)
    app.radio(key="magnitude.scope").set_value("global").run()
    bars = figure(app, "Sparsity per layer")["data"][0]
    assert max(bars["y"]) - min(bars["y"]) > 5, "global scope gives layers different sparsities"


def test_random_pruning_is_worse_than_magnitude(app):
    app.slider(key="sparsity").set_value(0.95).run()
    magnitude = percent(metric(app, "Pruned accuracy"))
    app.selectbox(key="method").set_value("random").run()
    assert not app.exception
    random = percent(metric(app, "Pruned accuracy"))
    assert random < magnitude - 0.1


def test_a_model_that_does_not_fit_the_data_shows_a_message_not_a_traceback():
    at = start(dataset="digits", model="lenet5", epochs=2)
    assert not at.exception
    assert any("lenet5 needs inputs of at least 16x16" in error.value for error in at.error)
    at.switch_page("views/about.py").run()  # the rest keeps working
    assert not at.exception and not at.error
    at = start(dataset="digits", model="mlp", epochs=2)
    assert not at.exception and not at.error
    assert percent(metric(at, "Sparsity achieved")) == pytest.approx(0.80)


def test_missing_download_shows_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_DATA_DIR", str(tmp_path))
    at = start(dataset="fashion-mnist", model="mlp")
    assert not at.exception
    assert any(str(tmp_path) in error.value for error in at.error)


def test_about_page_renders(app):
    app.switch_page("views/about.py").run()
    assert not app.exception
    assert "compression" in app.markdown[0].value


def test_a_schedule_that_trains_runs_behind_a_button_and_reports_before_and_after_finetuning(app):
    app.slider(key="sparsity").set_value(0.9).run()
    app.radio(key="schedule.kind").set_value("iterative").run()
    app.slider(key="schedule.rounds").set_value(2).run()
    assert not app.exception
    preview = figure(app, "Planned sparsity")
    assert max(preview["data"][0]["y"]) == pytest.approx(90.0)
    assert not app.metric, "nothing is trained before the button is pressed"
    app.slider(key="schedule.finetune_epochs").set_value(1).run()
    app.button(key="run_schedule").click().run()
    assert not app.exception
    assert percent(metric(app, "Sparsity achieved")) == pytest.approx(0.9, abs=1e-4)
    assert any("before fine-tuning" in caption.value for caption in app.caption)
    history = figure(app, "Sparsity and accuracy during the run")
    sparsities = history["data"][0]["y"]
    assert sparsities == sorted(sparsities) and sparsities[-1] == pytest.approx(90.0, abs=0.01)


def test_the_chosen_granularity_is_explained_with_its_formula(app):
    app.radio(key="magnitude.granularity").set_value("structured").run()
    assert not app.exception
    assert any("channel ratio" in markdown.value for markdown in app.markdown)
    assert any(r"S_f" in latex.value for latex in app.latex)


def test_schedule_widgets_are_generated_and_settings_that_do_not_apply_are_hidden(app):
    keys = {widget.key for widget in [*app.slider, *app.radio]}
    assert "schedule.prune_at" in keys and "schedule.early_epochs" not in keys, "early epochs only with prune_at early"
    app.radio(key="schedule.prune_at").set_value("early").run()
    assert app.slider(key="schedule.early_epochs").label == "Epochs before pruning"
    app.radio(key="schedule.kind").set_value("gradual").run()
    assert not app.exception
    keys = {widget.key for widget in [*app.slider, *app.radio]}
    assert {"schedule.gradual_epochs", "schedule.frequency", "schedule.finetune_epochs"} <= keys
    assert "schedule.rounds" not in keys and "schedule.prune_at" not in keys
    app.slider(key="schedule.frequency").set_value(5).run()
    assert not app.exception
    preview = figure(app, "Planned sparsity")["data"][0]["x"]
    assert preview[1] == pytest.approx(5 / 63), "the preview follows the mask-update frequency (63 steps per epoch)"
