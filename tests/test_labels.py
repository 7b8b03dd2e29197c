"""Every declared setting speaks to a person (a label, not its key), and one that does not apply is
hidden in the app and ignored by the CLI (``Param.only_if``)."""

import json

import pytest

from pruning.cli import main
from pruning.registry import METHODS
from pruning.schedules import SCHEDULES
from pruning.train import TRAIN_PARAMS
from tests.app_driver import start

DECLARED = {
    **{f"method {name}": method.params for name, method in METHODS.items()},
    **{f"schedule {kind}": schedule.all_params() for kind, schedule in SCHEDULES.items()},
    "dense training": TRAIN_PARAMS,
}


@pytest.mark.parametrize("owner", list(DECLARED))
def test_every_setting_has_a_human_label(owner):
    params = DECLARED[owner]
    for param in params:
        assert param.label.strip() == param.label != "", f"{owner}: {param.name} has no label"
        assert param.label != param.name, f"{owner}: {param.name}'s label is just its key"
    labels = [param.label for param in params]
    assert len(set(labels)) == len(labels), f"{owner}: two settings share a label: {labels}"


@pytest.mark.parametrize("owner", list(DECLARED))
def test_only_if_names_a_setting_declared_before_it_and_one_of_its_values(owner):
    params = DECLARED[owner]
    for index, param in enumerate(params):
        if param.only_if is None:
            continue
        other, value = param.only_if
        earlier = {p.name: p for p in params[:index]}  # the widgets are drawn in order: the other comes first
        assert other in earlier, f"{owner}: {param.name} depends on {other!r}, not declared before it"
        choices = earlier[other].choices if earlier[other].type == "choice" else (True, False)
        for one in value if isinstance(value, tuple) else (value,):
            assert one in choices, f"{owner}: {param.name} applies with {other} = {one!r}, not one of {choices}"


def test_block_size_is_declared_for_block_granularity_only():
    for name, method in METHODS.items():
        declared = {param.name: param for param in method.params}
        if "block_size" in declared and "granularity" in declared:
            assert declared["block_size"].only_if == ("granularity", "block"), name
    assert "block_size" not in {param.name for param in METHODS["attr-conductance"].params}, "structured only"


def widget_keys(at) -> set[str]:
    return {widget.key for widget in [*at.slider, *at.number_input, *at.radio, *at.toggle]}


def test_block_size_widget_shows_for_block_granularity_only():
    at = start(dataset="digits", model="mlp", epochs=1)
    assert not at.exception
    assert at.radio(key="magnitude.granularity").value == "unstructured"
    assert at.radio(key="magnitude.granularity").label == "Granularity"
    assert "magnitude.block_size" not in widget_keys(at)
    at.radio(key="magnitude.granularity").set_value("block").run()
    assert not at.exception
    assert at.slider(key="magnitude.block_size").label == "Block size"
    at.radio(key="magnitude.granularity").set_value("structured").run()
    assert not at.exception and "magnitude.block_size" not in widget_keys(at)

    at.switch_page("views/compare.py").run()
    assert not at.exception
    assert "compare.block_size" not in widget_keys(at), "the sweep's block size shows for blocks only"
    at.radio(key="compare.granularity").set_value("block").run()
    assert not at.exception
    assert at.slider(key="compare.block_size").label == "Block size"


def test_cli_accepts_and_ignores_a_setting_that_does_not_apply(capsys):
    code = main(["prune", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--sparsity", "0.5",
                 "--set", "granularity=unstructured", "--set", "block_size=8", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["settings"]["granularity"] == "unstructured"
    assert report["settings"]["block_size"] == 4, "block_size applies only to block granularity: kept at its default"
