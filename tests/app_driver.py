"""Driving the app headless with AppTest: start it with sidebar choices, read its figures and metrics."""

import json
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

import compile_guard

compile_guard.install()  # AppTest compiles the scripts anew on every run, sessions of a test at once: see compile_guard
APP = Path(__file__).resolve().parent.parent / "app.py"


def start(wait_for_sweeps: bool = True, **choices) -> AppTest:
    """The app after its first run with these sidebar choices. The sidebar lives in app.py
    (the st.navigation entrypoint), whose widgets AppTest only lets a test set before the first
    run, through session state; changing them mid-session is covered by the browser test."""
    at = AppTest.from_file(str(APP), default_timeout=240)
    for key, value in choices.items():
        at.session_state[key] = value
    at.run()
    return settle(at) if wait_for_sweeps else at


def settle(at, tries: int = 240) -> AppTest:
    """Run ``at`` again until no sweep along the slider is computing (the pages poll it in a
    fragment on a timer, which AppTest does not run): then the scrubbers are drawn."""
    for _ in range(tries):
        if not any("along the slider" in (bar.proto.text or "") for bar in at.get("progress")):
            return at
        time.sleep(0.5)
        at.run()
    raise AssertionError("a sweep along the slider is still computing")


def open_page(view: str, **choices) -> AppTest:
    """The app started with these sidebar choices, switched to ``views/<view>.py``, showing no
    exception and no error."""
    at = start(**choices)
    assert not at.exception
    settle(at.switch_page(f"views/{view}.py").run())
    assert not at.exception and not at.error
    return at


def figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def figure_starting(at, title_start: str) -> dict:
    """The first figure whose title starts with ``title_start``."""
    for spec in figures(at):
        if spec["layout"]["title"]["text"].startswith(title_start):
            return spec
    raise AssertionError(f"no figure titled {title_start!r}...")


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)
