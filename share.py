"""Links that reopen a view: the URL's query string carries the experiment (the sidebar) and the
open page's choices (method, sparsity, the method's settings, the schedule), so a link sent to
someone else opens the same view.

Only values that differ from the defaults are written, under short names: ``?model=mlp&method=snip
&sparsity=0.9&granularity=structured``. The dense-training settings are ``train.<setting>`` and the
schedule's ``schedule.<setting>`` (methods that train have settings of the same names). Every value
read from a link is checked with the ``Param`` that declares it, and the widget's own range; a bad
value or an unknown name is reported in the page and the default is used.

A page calls :func:`restore` before its widgets (a link's values must be in session state when the
widgets are created) and :func:`follow` after its last choice widget, inside the same fragment, so the
URL and the sidebar's "Link to this view" follow a slider that reruns only its fragment.
:func:`experiment_only` does both for a page whose link carries only the experiment;
:func:`restore_experiment` is the sidebar's part. :func:`link_query` and :func:`page_link` build a
link to another page with preset choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import streamlit as st
from streamlit.errors import StreamlitInvalidLayoutContextError
from streamlit.runtime.scriptrunner import get_script_run_ctx

from pruning.data import DATASETS
from pruning.device import DEVICE_CHOICES
from pruning.errors import BadInputError
from pruning.models import MODELS
from pruning.params import Param
from pruning.registry import get_method, method_names
from pruning.schedules import SCHEDULES
from pruning.train import TRAIN_PARAMS

IMBALANCE_CHOICES = (1, 2, 5, 10, 20, 50, 100)
SIDEBAR = (  # the sidebar's widgets, keyed by these names (the training settings follow, keyed by their names)
    Param("dataset", "choice", "mnist-5k", "The dataset.", choices=tuple(DATASETS)),
    IMBALANCE := Param("imbalance", "choice", "1", "Most / least frequent class.",
                       choices=tuple(map(str, IMBALANCE_CHOICES))),
    Param("model", "choice", "lenet5", "The model.", choices=tuple(MODELS)),
    Param("seed", "int", 0, "The seed.", min=0, max=10_000),
    Param("device", "choice", "auto", "Where to compute.", choices=DEVICE_CHOICES),
)
TRAIN_PREFIX = "train."  # in the URL; the widget keys are the bare names
SCHEDULE_PREFIX = "schedule."  # in the URL and in the widget keys
KEPT_URLS = 3  # the URLs written last on this page: a rerun sent before the browser took the newest is not a link
_URLS, _NOTES, _INCOMING, _PAGE = "share.urls", "share.notes", "share.incoming", "share.page"


@dataclass(frozen=True)
class View:
    """What a page's link carries beyond the experiment, and its widgets' keys and defaults: the
    method picker is ``prefix + "method"``, the sparsity slider ``prefix + "sparsity"``, a method's
    setting ``prefix + "<method>.<setting>"``. ``method=None``: the link carries the experiment only."""

    prefix: str = ""
    method: str | None = None  # the picker's default
    sparsity: float | None = None  # the slider's default (None: no slider)
    max_sparsity: float = 0.99
    schedule: bool = False  # the schedule controls (widget keys "schedule.kind", "schedule.<setting>")
    one_shot_only: bool = False  # the picker leaves out methods that train

    def method_param(self) -> Param:
        names = [name for name in method_names() if not (self.one_shot_only and get_method(name).trains)]
        return Param("method", "choice", self.method, "The method.", choices=tuple(names))

    def sparsity_param(self) -> Param:
        return Param("sparsity", "float", self.sparsity, "Target sparsity.", min=0.0, max=self.max_sparsity)


SCHEDULE = Param("schedule", "choice", next(iter(SCHEDULES)), "The schedule.", choices=tuple(SCHEDULES))


def widget_value(param: Param, raw):
    """``raw`` (a link's text, or a widget's value) as the widget holds it: parsed and checked by
    ``param``, and inside the widget's narrower range (``ui_range``) when it has one."""
    value = param.parse(raw)
    if param.ui_range and not param.ui_range[0] <= value <= param.ui_range[1]:
        raise BadInputError(f"{param.name} must be in [{param.ui_range[0]}, {param.ui_range[1]}] here; got {raw!r}")
    return int(value) if param is IMBALANCE else value  # its select_slider's options are numbers


def text(value) -> str:
    """A value as the URL writes it: short and exact enough to read back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def _experiment_fields():
    """(URL name, widget key, Param) of every sidebar choice a link carries."""
    return [(param.name, param.name, param) for param in SIDEBAR] + [
        (TRAIN_PREFIX + param.name, param.name, param) for param in TRAIN_PARAMS]


def _apply(query: Mapping[str, str], name: str, key: str, param: Param, notes: list[str]) -> bool:
    """Set widget ``key`` from the link's ``name`` (if there); a bad value is noted, the widget keeps its value."""
    if name not in query:
        return False
    try:
        st.session_state[key] = widget_value(param, query[name])
        return True
    except BadInputError as error:
        kept = st.session_state.get(key, param.default)
        notes.append(f"`{name}={query[name]}` in the link was not used: {error}. Using {name} = {text(kept)}.")
        return False


def _page() -> str:
    """The open page (its script's hash): a run on another page than the last came from a link or the navigation."""
    ctx = get_script_run_ctx()
    return ctx.page_script_hash if ctx else ""


def restore_experiment() -> None:
    """The sidebar's part of a link, before its widgets: when the URL is not one this session wrote
    (a link opened, a page link followed), its experiment values go into the widgets. A URL written
    last, or lately on this page (a rerun sent before the browser took the newest), is not a link."""
    state, query, page = st.session_state, st.query_params.to_dict(), _page()
    moved, recent = state.get(_PAGE) != page, state.get(_URLS, [])
    state[_PAGE], state[_INCOMING] = page, None
    if moved:
        state[_NOTES] = None  # a link's notes belong to the page it opened
    if (recent and query == recent[-1]) or (not moved and query in recent):
        return
    notes = []
    for name, key, param in _experiment_fields():
        _apply(query, name, key, param, notes)
    state[_INCOMING], state[_NOTES], state[_URLS] = query, {"notes": notes, "url": None}, [query]


def restore(view: View) -> None:
    """The page's part of a link, before its widgets: its method, sparsity, settings and schedule go
    into the widgets; then every note on the link (bad values, unknown names) is shown."""
    query = st.session_state.pop(_INCOMING, None)
    if query is not None:
        notes = st.session_state[_NOTES]["notes"]
        used = {name for name, _, _ in _experiment_fields()} | _apply_view(view, query, notes)
        where = _choices_named(view)
        for name in query:
            if name not in used:
                notes.append(f"`{name}={query[name]}` in the link was not used: this page has no choice named "
                             f"{name!r}{where}.")
    shown = st.session_state.get(_NOTES)
    if shown and shown["notes"] and shown["url"] in (None, current_query(view)):  # until a choice changes
        st.warning("This link had values that could not be used; the defaults stand in for them:\n\n"
                   + "\n".join(f"- {note}" for note in shown["notes"]), icon=":material/link_off:")


def _choices_named(view: View) -> str:
    """What decides a page's choices, for a note on a name it does not have: " with the method snip"."""
    if view.method is None:
        return ""
    method = get_method(st.session_state.get(view.prefix + "method", view.method))
    kind = st.session_state.get(SCHEDULE_PREFIX + "kind", SCHEDULE.default)
    return f" with the method {method.name}" + (f" and the {kind} schedule" if view.schedule and not method.trains else "")


def _apply_view(view: View, query: Mapping[str, str], notes: list[str]) -> set[str]:
    """Put the view's values from ``query`` into the widgets; returns the names it knows."""
    if view.method is None:
        return set()
    _apply(query, "method", view.prefix + "method", view.method_param(), notes)
    method = get_method(st.session_state.get(view.prefix + "method", view.method))
    used = {"method"}
    if view.sparsity is not None and "sparsity" in query:
        used.add("sparsity")
        if method.target_sparsity:
            _apply(query, "sparsity", view.prefix + "sparsity", view.sparsity_param(), notes)
        else:
            notes.append(f"`sparsity={query['sparsity']}` in the link was not used: {method.name} takes no target "
                         "sparsity (it emerges from its settings).")
    used |= _apply_settings(query, method.params, "", f"{view.prefix}{method.name}.", method.name, notes)
    if view.schedule and not method.trains:
        _apply(query, "schedule", SCHEDULE_PREFIX + "kind", SCHEDULE, notes)
        kind = st.session_state.get(SCHEDULE_PREFIX + "kind", SCHEDULE.default)
        used |= {"schedule"} | _apply_settings(query, SCHEDULES[kind].all_params(), SCHEDULE_PREFIX, SCHEDULE_PREFIX,
                                               f"the {kind} schedule", notes)
    return used


def _apply_settings(query, params, url_prefix: str, key_prefix: str, owner: str, notes: list[str]) -> set[str]:
    """Declared settings from ``query`` (``url_prefix + name``) into their widgets (``key_prefix + name``);
    one that matters only with another's value (``Param.only_if``) is noted when that value is not chosen."""
    chosen = {}
    for param in params:
        if _apply(query, url_prefix + param.name, key_prefix + param.name, param, notes):
            chosen[param.name] = st.session_state[key_prefix + param.name]
    values = {param.name: st.session_state.get(key_prefix + param.name, param.default) for param in params}
    for param in params:
        if param.name in chosen and not param.applies(values):
            other, wanted = param.only_if
            notes.append(f"`{url_prefix}{param.name}={query[url_prefix + param.name]}` in the link was not used: "
                         f"{owner}'s {param.name} matters only with {other} = {wanted}.")
    return {url_prefix + param.name for param in params}


def current_query(view: View) -> dict[str, str]:
    """The URL's query for the widgets' current values: those that differ from the defaults, in
    the order of the sidebar and the page."""
    state = st.session_state
    query = {name: text(state[key]) for name, key, param in _experiment_fields()
             if key in state and text(state[key]) != text(param.default)}
    if view.method is None:
        return query
    method = get_method(state.get(view.prefix + "method", view.method))
    if method.name != view.method:
        query["method"] = method.name
    sparsity = state.get(view.prefix + "sparsity", view.sparsity)
    if view.sparsity is not None and method.target_sparsity and text(sparsity) != text(view.sparsity):
        query["sparsity"] = text(sparsity)
    query.update(_changed(method.params, "", f"{view.prefix}{method.name}."))
    if view.schedule and not method.trains:
        kind = state.get(SCHEDULE_PREFIX + "kind", SCHEDULE.default)
        if kind != SCHEDULE.default:
            query["schedule"] = kind
        query.update(_changed(SCHEDULES[kind].all_params(), SCHEDULE_PREFIX, SCHEDULE_PREFIX))
    return query


def _changed(params, url_prefix: str, key_prefix: str) -> dict[str, str]:
    values = {param.name: st.session_state.get(key_prefix + param.name, param.default) for param in params}
    return {url_prefix + param.name: text(values[param.name]) for param in params
            if param.applies(values) and text(values[param.name]) != text(param.default)}


def follow(view: View) -> None:
    """After the page's choice widgets (inside the fragment that holds the last of them): the URL
    takes their values, and the sidebar shows the link to copy. Call it once per run."""
    query = current_query(view)
    if st.query_params.to_dict() != query:
        st.query_params.from_dict(query)
    st.session_state[_URLS] = [*st.session_state.get(_URLS, []), query][-KEPT_URLS:]
    notes = st.session_state.get(_NOTES)
    if notes and notes["url"] is None:
        notes["url"] = query  # the link's notes stay up until a choice changes the URL
    try:
        sidebar = st.sidebar.container()
        sidebar.markdown("**Link to this view**", help="Opens this page with the same experiment and choices. "
                         "The address bar holds the same link.")
        sidebar.code(full_url(query), language=None, wrap_lines=True)
        if st.session_state.get("weights_file") is not None:
            sidebar.caption("Uploaded weights are not part of a link: whoever opens it gets the trained model.")
    except StreamlitInvalidLayoutContextError:
        # A fragment rerun may write to the sidebar only where its last full-run pass did (Streamlit reserves
        # the place then); one that ended early there cannot: the address bar above still holds the link.
        pass


def experiment_only() -> None:
    """:func:`restore` and :func:`follow` at once, for a page whose link carries only the experiment."""
    restore(View())
    follow(View())


def full_url(query: Mapping[str, str]) -> str:
    """The page's address (``st.context.url``: without a query) with ``query``."""
    base = st.context.url or ""
    if base and not urlsplit(base).path:
        base += "/"
    return base + ("?" + urlencode(query) if query else "")


def link_query(choices: Mapping[str, object] | None = None) -> dict[str, str]:
    """A query for a link to another page: the current experiment and ``choices`` in the URL's
    names (``{"method": "snip", "sparsity": 0.9, "scope": "layerwise"}``). The page it opens checks them."""
    return {**current_query(View()), **{name: text(value) for name, value in (choices or {}).items()}}


def page_link(page: str, label: str, choices: Mapping[str, object] | None = None, **options) -> None:
    """``st.page_link`` to ``page`` (``"views/prune.py"``) opening it with the current experiment and
    ``choices`` (see :func:`link_query`); ``st.switch_page(page, query_params=link_query(...))`` does the same."""
    st.page_link(page, label=label, query_params=link_query(choices), **options)
