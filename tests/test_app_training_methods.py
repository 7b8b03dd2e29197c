"""AppTest: methods that prune while training run behind a button on the Prune and Masks pages,
are cached, and show their history and mask evolution."""

import json

import pytest

from tests.app_driver import figure_starting, figures, metric, start


def choose_dns(at, key_prefix: str = "") -> None:
    at.selectbox(key=f"{key_prefix}method").set_value("dns").run()
    at.slider(key=f"{key_prefix}dns.epochs").set_value(2).run()
    at.slider(key=f"{key_prefix}dns.c_rate").set_value(1.0).run()


def test_dns_trains_behind_a_button_shows_its_history_and_is_cached(fresh_cache):
    at = start(dataset="digits", model="mlp", epochs=2)
    choose_dns(at)
    assert not at.exception
    assert "sparsity" not in [slider.key for slider in at.slider], "dns has no target sparsity"
    assert any("emerges" in caption.value for caption in at.caption), "no target sparsity for dns"
    assert not at.metric, "nothing is trained before the button is pressed"
    at.button(key="run_schedule").click().run()
    assert not at.exception
    sparsity = float(metric(at, "Sparsity achieved").rstrip("%")) / 100
    assert 0.3 < sparsity < 0.99
    history = figure_starting(at, "Sparsity and accuracy during the run")
    assert history["data"][0]["y"][0] == 0.0 and history["data"][0]["y"][-1] == pytest.approx(100 * sparsity, abs=0.01)
    details = at.json[0].value
    assert "spliced_total" in json.loads(details)

    again = start(dataset="digits", model="mlp", epochs=2)
    choose_dns(again)
    assert not again.exception
    assert float(metric(again, "Sparsity achieved").rstrip("%")) / 100 == pytest.approx(sparsity), \
        "a new session gets the cached run without pressing the button"


def test_masks_page_scrubs_through_the_mask_evolution_of_a_dns_run():
    at = start(dataset="digits", model="mlp", epochs=2)
    at.switch_page("views/masks.py").run()
    choose_dns(at, "masks.")
    at.button(key="masks.run").click().run()
    assert not at.exception
    turnover = figure_starting(at, "Mask turnover during the run")
    spliced = turnover["data"][1]["y"]
    changes = {spec["layout"]["meta"]["layer"]: spec for spec in figures(at) if spec["layout"].get("meta", {}).get("kind") == "change"}
    assert set(changes) == {"fc1", "fc2", "fc3"}
    slider = at.select_slider(key="masks.snapshot")
    assert slider.options[0].startswith("step 0"), "the run starts from the trained dense model"
    # the counts the cards show for a snapshot are the sum of the per-layer change maps
    for index in (1, len(slider.options) - 1):
        at.select_slider(key="masks.snapshot").set_value(index).run()
        assert not at.exception
        changes = [spec for spec in figures(at) if spec["layout"].get("meta", {}).get("kind") == "change"]
        newly = sum(spec["layout"]["meta"]["counts"]["newly pruned"] for spec in changes)
        back = sum(spec["layout"]["meta"]["counts"]["spliced back"] for spec in changes)
        assert metric(at, "Newly pruned") == f"{newly:,}"
        assert metric(at, "Spliced back") == f"{back:,}"
    assert len(spliced) == len(slider.options), "one turnover bar per snapshot"
