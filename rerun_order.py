"""A rerun request that arrives just after a script run ended waits for that run's last messages.

Why: a Streamlit session hands each script run's output (its deltas, then "finished") from the
script thread to the server's event loop, one callback per message. When the run ends and no
request is pending, its ScriptRunner stops. A rerun request that the event loop handles after that
moment, but before the stopped runner's queued callbacks, finds the runner unable to take it,
starts a new ScriptRunner, and from then on ``AppSession`` drops every event of the old runner
("Ignoring event from non-current ScriptRunner"), including the deltas of the run that had just
finished. The page then never shows that run: a slider moved inside a fragment keeps the old
cards, and the browser never hears the run finished. Our pages poll their background sweeps with
a fragment on a 0.5 s timer, so with 16 sessions on 2 cores (the event loop behind by seconds)
this happened to about one slider move in three (``bench/load.py --trace``). Streamlit guards only
the case of a fragment that no longer exists (streamlit/streamlit#9921).

What: :func:`install` wraps ``AppSession.request_rerun``: when the session's ScriptRunner has
already stopped, the request is handled on the event loop's next turn instead of now. Every
callback the stopped runner queued was queued before it stopped, so the event loop (first in,
first out) delivers them first; then the request starts the new runner as before. Requests to a
running runner, or with no runner, go through at once, unchanged.

Where: app.py installs it with the compile guard. It reads two private attributes
(``AppSession._scriptrunner``, ``ScriptRunner._requests._state``); where a Streamlit version lacks
them, requests go through unchanged (:func:`runner_has_stopped` is False).
"""

from __future__ import annotations

import functools
import threading

from streamlit.runtime.app_session import AppSession
from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

_install_lock = threading.Lock()


def runner_has_stopped(session: AppSession) -> bool:
    """Whether the session's ScriptRunner exists but can no longer take a rerun (it stopped)."""
    runner = getattr(session, "_scriptrunner", None)
    requests = getattr(runner, "_requests", None)
    return getattr(requests, "_state", None) == ScriptRequestType.STOP


def deferring(immediate):
    """``immediate`` (``AppSession.request_rerun``) deferred one event-loop turn behind a stopped runner."""

    @functools.wraps(immediate)
    def request_rerun(self, client_state):
        loop = getattr(self, "_event_loop", None)
        if loop is not None and runner_has_stopped(self):
            loop.call_soon_threadsafe(immediate, self, client_state)
            return
        immediate(self, client_state)

    request_rerun.immediate = immediate
    return request_rerun


def install() -> None:
    """Make ``AppSession.request_rerun`` wait one event-loop turn behind a stopped runner (idempotent)."""
    with _install_lock:
        if not is_installed():
            AppSession.request_rerun = deferring(AppSession.request_rerun)


def is_installed() -> bool:
    return hasattr(AppSession.request_rerun, "immediate")
