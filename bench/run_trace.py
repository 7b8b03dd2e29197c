"""`streamlit run` with a trace of every session's rerun requests and script runs, for load benches.

    python bench/run_trace.py TRACE_FILE run app.py [streamlit options ...]

Appends one tab-separated line per event to TRACE_FILE: the wall time, the session id, then
``request`` (what the browser asked: fragment id or ``full``, auto or user, whether the fragment
was still known, the widgets whose values the request carries) or the runner's event
(``SCRIPT_STARTED``, ``SCRIPT_STOPPED_FOR_RERUN``, ...) with the fragments that run covered.
Why: a slider move that never reaches the page under load leaves no trace in the browser; here
one sees whether its request arrived, was dropped or was folded into another run."""

import sys
import threading
import time

from streamlit.runtime.app_session import AppSession
from streamlit.runtime.scriptrunner import ScriptRunnerEvent
from streamlit.web.cli import main as streamlit_main


def install(path: str) -> None:
    lock = threading.Lock()
    out = open(path, "a", buffering=1)

    def write(session_id: str, *fields) -> None:
        with lock:
            out.write("\t".join([f"{time.time():.3f}", session_id, *map(str, fields)]) + "\n")

    request_rerun = AppSession.request_rerun
    on_event = AppSession._handle_scriptrunner_event_on_event_loop

    def traced_request(self, client_state):
        if client_state is None:
            write(self.id, "request", "full", "server")
        else:
            fragment = client_state.fragment_id
            widgets = ",".join(state.id.rsplit("-", 1)[-1] for state in client_state.widget_states.widgets)
            write(self.id, "request", fragment or "full", "auto" if client_state.is_auto_rerun else "user",
                  "known" if not fragment or self.has_fragment(fragment) else "UNKNOWN-FRAGMENT", widgets)
        return request_rerun(self, client_state)

    def traced_event(self, sender, event, forward_msg=None, exception=None, client_state=None,
                     page_script_hash=None, fragment_ids_this_run=None, *rest):
        if event != ScriptRunnerEvent.ENQUEUE_FORWARD_MSG:
            write(self.id, event.value, ",".join(fragment_ids_this_run or []) or "-",
                  "current" if sender is self._scriptrunner else "OLD-RUNNER")
        return on_event(self, sender, event, forward_msg, exception, client_state, page_script_hash,
                        fragment_ids_this_run, *rest)

    AppSession.request_rerun = traced_request
    AppSession._handle_scriptrunner_event_on_event_loop = traced_event


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    install(sys.argv[1])
    sys.argv = ["streamlit", *sys.argv[2:]]
    sys.exit(streamlit_main())
