"""rerun_order: a rerun request that meets a stopped ScriptRunner is handled after the callbacks
that runner queued before it stopped (its last deltas), on a real asyncio event loop, with
Streamlit's own request state. The race itself, under load, is measured by
`python bench/load.py --sessions 16 --trace FILE` (bench/RESULTS.md)."""

import asyncio
import threading

from streamlit.runtime.app_session import AppSession
from streamlit.runtime.scriptrunner.script_runner import ScriptRunner
from streamlit.runtime.scriptrunner_utils.script_requests import RerunData, ScriptRequests

import rerun_order
from tests.app_driver import start


def session_with_runner(loop, stopped: bool) -> AppSession:
    """An AppSession whose ScriptRunner holds Streamlit's request state: running (a rerun is
    pending) or stopped (its run ended and nothing was pending)."""
    requests = ScriptRequests()
    requests.request_rerun(RerunData())
    if stopped:
        assert requests.on_scriptrunner_ready().type.name == "RERUN"  # the runner took the run...
        assert requests.on_scriptrunner_ready().type.name == "STOP"  # ...finished it, and stopped
    runner = ScriptRunner.__new__(ScriptRunner)
    runner._requests = requests
    session = AppSession.__new__(AppSession)
    session._event_loop, session._scriptrunner = loop, runner
    return session


def drive(stopped: bool) -> list:
    """What happens, in order, when the script thread queued its last delta on the event loop and
    then a rerun request is handled on the loop."""
    loop = asyncio.new_event_loop()
    seen = []
    try:
        session = session_with_runner(loop, stopped)
        script_thread = threading.Thread(target=loop.call_soon_threadsafe, args=(seen.append, "the run's last delta"))
        script_thread.start()
        script_thread.join()
        request_rerun = rerun_order.deferring(lambda self, client_state: seen.append(("rerun", client_state)))
        request_rerun(session, "client state")
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        loop.close()
    return seen


def test_a_request_to_a_stopped_runner_waits_for_the_deltas_it_queued():
    assert drive(stopped=True) == ["the run's last delta", ("rerun", "client state")]


def test_a_request_to_a_running_runner_goes_through_at_once():
    assert drive(stopped=False) == [("rerun", "client state"), "the run's last delta"]


def test_the_app_installs_it():
    if rerun_order.is_installed():  # an earlier test's app run: take it out, so this run must put it back
        AppSession.request_rerun = AppSession.request_rerun.immediate
    assert not rerun_order.is_installed()
    start(wait_for_sweeps=False)
    assert rerun_order.is_installed()
