"""Load benchmark: N concurrent browser sessions against one `streamlit run app.py`.

Each session is its own browser context (own cookies, own Streamlit session) in one headless
Chromium. All of them at once open the app, each on the URL of a different page (as a bookmark
or a reload does; ``--open-root`` opens all at the root instead), then for a number of rounds
visit every page app.py declares through the sidebar links and move the sparsity slider of the
pages that have one with the arrow keys.

Errors: a Streamlit exception element, an st.error alert, a console or page error from the app's
own origin, a timeout, a websocket reconnect, a traceback in the server's log, a page without its
title, the app's navigation or the Experiment sidebar, and wrong numbers. Wrong numbers are what
state shared between sessions produces, so they are looked for: the metric cards the Prune, Masks
and Recall pages show for the default method (magnitude) at each slider value are compared, after
the run, with what the engine computes for that sparsity alone.

Re-render time: from just before the key press or click until the server's last ``script_finished``
message (read off the session's websocket, so a full run and a fragment rerun both count, however
fast; a run stopped early for a rerun does not count: under load the rerun can start seconds
later; nor does a fragment's timer run, a page polling its background sweep, which under load goes
on for minutes and would end the wait before the action's own run), once the browser shows the
script as not running and nothing about a run has arrived for 300 ms (so a chained rerun is
waited for). Neither the status widget (it appears only after about
half a second of running) nor the ``data-test-script-state`` attribute (a fast run's running and
finished states can reach the DOM in one update, and the run is then never seen) is reliable alone.

    python bench/load.py [--sessions 8] [--rounds 2] [--moves 2] [--timeout 180] [--open-root] [--cold] [--browser-nice 10]

The dense lenet5 on mnist-5k (the app's default experiment) is trained first with the CLI into a
fresh PRUNING_CACHE_DIR, so the sessions measure re-rendering, not training; ``--cold`` skips that
and lets the sessions' first page loads train it. Needs /usr/bin/chromium and playwright (no
browser download). Prints a table per session and overall percentiles; exits 1 on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUIET_MS = 300
SLIDER_LABEL = "Sparsity (fraction"
SLIDER_PAGES = ("Prune", "Masks", "Recall", "Attributions", "Loss valley")  # pages whose settled view has that slider
TITLES = {"About": "Pruning Explorer"}  # a page's h1 is its link's name unless listed here
CHECKED_PAGES = ("Prune", "Masks", "Recall")  # pages whose cards show the default magnitude result
CARDS = ("Sparsity achieved", "Pruned accuracy", "Compression", "Speedup (FLOPs)")
# Opened on a page's own URL, Streamlit first asks <page>/_stcore/health and host-config (404),
# then the root ones: its frontend's base-path discovery, not an app error.
STREAMLIT_PROBE = re.compile(r"^/[^/]+/_stcore/(health|host-config|allowed-message-origins)$")
EXPECTED_ALERTS: tuple[str, ...] = ()  # regexes of st.error texts this flow may legitimately show: none

# the script is not running and no element still waits for its code to load (a lazily loaded widget draws a
# skeleton meanwhile: with 16 browsers on 2 cores that can outlast the run)
NOT_RUNNING = ("() => document.querySelector(\"[data-testid='stApp']\")?.getAttribute('data-test-script-state') === "
               "'notRunning' && !document.querySelector(\"[data-testid='stSkeleton']\")")


@dataclass
class Session:
    index: int
    timings: list[tuple[str, float]] = field(default_factory=list)  # (what, seconds)
    errors: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)  # not the app's: other origins (no network here), Streamlit's probe
    opened: float | None = None
    step: str = "open"
    shown: list[tuple[str, str, float, dict]] = field(default_factory=list)  # (what, page, slider value, cards)
    finished: int = 0  # script_finished messages received (full runs and fragment reruns)
    finished_at: float = 0.0  # perf_counter of the last one
    active_at: float = 0.0  # perf_counter of the last message about a run (start, delta, status, finish)
    running: bool = False  # the server's last word on whether a run is in progress
    recent: list[tuple[float, str]] = field(default_factory=list)  # the last messages, for error reports
    sockets: int = 0  # websocket connections opened (more than one: the session reconnected)
    timer_fragments: set = field(default_factory=set)  # fragments the server reruns on a timer (a page polling a sweep)
    server_ids: list[str] = field(default_factory=list)  # the server's session ids (one per websocket), for --trace

    def on_socket(self, socket) -> None:
        self.sockets += 1
        if self.sockets > 1:
            self.errors.append(f"{self.step}: the websocket reconnected (connection {self.sockets})")
        self.note(f"socket {self.sockets} open")
        socket.on("framereceived", self.on_frame)
        socket.on("close", lambda _: self.note("socket closed"))

    def note(self, text: str) -> None:
        self.recent = self.recent[-11:] + [(time.perf_counter(), text)]

    def history(self, since: float) -> str:
        return ", ".join(f"{at - since:.1f}s {text}" for at, text in self.recent if at >= since) or "none"

    def on_frame(self, payload) -> None:
        """Follow the runs of this session from the server's ForwardMsg frames."""
        if isinstance(payload, str):
            return
        message = ForwardMsg.FromString(payload)
        kind = message.WhichOneof("type")
        if kind in (None, "heartbeat_ack", "file_urls_response", "backend_operation_response"):
            return
        now = time.perf_counter()
        self.active_at = now
        if kind != "delta":
            self.note(kind if kind != "script_finished" else f"script_finished {message.script_finished}")
        if kind == "new_session":
            self.running = True
            server_id = message.new_session.initialize.session_id
            if server_id and server_id not in self.server_ids:
                self.server_ids.append(server_id)
        elif kind == "session_status_changed":
            self.running = message.session_status_changed.script_is_running
        elif kind == "auto_rerun":
            self.timer_fragments.add(message.auto_rerun.fragment_id)
        elif kind == "script_finished":
            ran = set(message.metadata.run.fragment_ids)
            if message.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN and not (ran - self.timer_fragments):
                # a full run stopped for a rerun that starts at once (under load its start can come seconds
                # later), or a timer's run. A run of a widget's fragment that ended while another run started
                # before its messages were sent also reads "early for rerun" (Streamlit's queue rewrites it);
                # its output did arrive, so it counts below.
                return
            if ran and ran <= self.timer_fragments:
                self.running = False  # a timer's run (the page polls its background sweep), not the one an action asked for
                return
            self.finished += 1
            self.finished_at = now
            self.running = False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pretrain(env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pruning", "prune", "--dataset", "mnist-5k", "--model", "lenet5",
                           "--method", "magnitude", "--sparsity", "0.8"], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"pre-training failed:\n{done.stderr}")
    return time.perf_counter() - started


def start_server(env: dict, port: int, log: Path, trace: Path | None) -> subprocess.Popen:
    launcher = [sys.executable, str(ROOT / "bench" / "run_trace.py"), str(trace)] if trace else [sys.executable, "-m", "streamlit"]
    process = subprocess.Popen(
        [*launcher, "run", "app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    for _ in range(240):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok":
                return process
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"the streamlit server did not become healthy in 120 s; see {log}")


def app_pages() -> list[tuple[str, str]]:
    """``(title, url path)`` of every page app.py declares, in order; the default page is at "/"."""
    pages = []
    for match in re.finditer(r"st\.Page\(\s*\"views/(\w+)\.py\"([^)]*)\)", (ROOT / "app.py").read_text()):
        options = match.group(2)
        title = re.search(r'title="([^"]+)"', options)
        url_path = re.search(r'url_path="([^"]*)"', options)
        path = "" if "default=True" in options else (url_path.group(1) if url_path else match.group(1))
        pages.append((title.group(1) if title else match.group(1), path))
    return pages


async def check_title(page, session: Session, what: str, link: str, titles: list[str]) -> bool:
    """The page shows its own title, the app's navigation (page titles, not Streamlit's listing of
    the pages/ folder) and the Experiment sidebar that app.py draws around every page. False when
    the navigation is not the app's: the tour cannot go on."""
    heading = page.locator("[data-testid='stMain'] h1").first
    title = TITLES.get(link, link)
    if await heading.count() == 0 or title not in await heading.inner_text():
        session.errors.append(f"{what}: the page title is not {title!r}")
    links = nav_labels(await page.locator("[data-testid='stSidebarNav'] a").all_inner_texts())
    if sorted(links) != sorted(titles):
        session.errors.append(f"{what}: the sidebar lists {', '.join(links)}, not the app's pages "
                              f"({', '.join(titles)}): Streamlit's listing of the pages/ folder, app.py's navigation "
                              "not in effect; the session cannot reach the other pages and stops here")
        return False
    if await page.locator("[data-testid='stSidebar'] h2", has_text="Experiment").count() == 0:
        session.errors.append(f"{what}: no Experiment sidebar")
    return True


def nav_labels(texts: list[str]) -> list[str]:
    """A navigation link's text is its icon's ligature name, then its label: keep the label."""
    return [text.strip().splitlines()[-1].strip() for text in texts if text.strip()]


async def check_page(page, session: Session, what: str, artifacts: Path) -> None:
    """Record exception elements and unexpected st.error alerts now on the page."""
    found = []
    for element in await page.locator("[data-testid='stException']").all():
        found.append(f"{what}: exception: {(await element.inner_text()).strip()}")
    for element in await page.locator("[data-testid='stAlertContentError']").all():
        text = (await element.inner_text()).strip()
        if not any(re.search(pattern, text) for pattern in EXPECTED_ALERTS):
            found.append(f"{what}: st.error: {text}")
    if found:
        session.errors.extend(found)
        await screenshot(page, artifacts / f"session{session.index}-error{len(session.errors)}.png")


async def record_cards(page, session: Session, what: str, link: str) -> None:
    """Keep the metric cards a checked page shows, with its slider value, for the check after the run."""
    if link not in CHECKED_PAGES:
        return
    slider = page.locator("[data-testid='stMain'] [data-testid='stSlider']", has_text=SLIDER_LABEL)
    if await slider.count() == 0:
        return
    value = float(await slider.first.get_by_role("slider").input_value())
    cards = {}
    for card in await page.locator("[data-testid='stMain'] [data-testid='stMetric']").all():
        label = (await card.locator("[data-testid='stMetricLabel']").inner_text()).strip()
        if label in CARDS:
            cards[label] = (await card.locator("[data-testid='stMetricValue']").inner_text()).strip()
    session.shown.append((what, link, value, cards))


async def wait_idle(page, session: Session, after: int, timeout: float) -> None:
    """Until a run finished after ``after`` runs, none is going on, the server has been quiet for
    QUIET_MS and the browser shows the script as not running."""
    deadline = time.perf_counter() + timeout
    while True:
        now = time.perf_counter()
        if (session.finished > after and not session.running and now - session.active_at > QUIET_MS / 1000
                and await page.evaluate(NOT_RUNNING)):
            return
        if now > deadline:
            raise TimeoutError(f"not idle after {timeout:.0f} s: {session.finished - after} runs finished since, "
                               f"server says running={session.running}, quiet for {now - session.active_at:.1f} s")
        await asyncio.sleep(0.05)


async def screenshot(page, path: Path) -> None:
    """Best effort: under load the browser can take longer than its 30 s to wait for fonts, and a
    missing picture must not end the whole run (the error is already recorded)."""
    try:
        await page.screenshot(path=str(path), full_page=True, timeout=15_000)
    except Exception as error:
        print(f"(no screenshot {path.name}: {type(error).__name__})", file=sys.stderr)


async def interact(page, session: Session, what: str, action, timeout: float, artifacts: Path) -> bool:
    """Run ``action`` and wait until the app is idle again; record the time, or the failure (False)."""
    session.step = what
    after, started = session.finished, time.perf_counter()
    try:
        await action()
        await wait_idle(page, session, after, timeout)
    except Exception as error:  # a timeout or a vanished element: both are failures of this interaction
        session.errors.append(f"{what} (at {time.time() - (time.perf_counter() - started):.3f}): "
                              f"{type(error).__name__}: {str(error).splitlines()[0]} "
                              f"[server messages since the action: {session.history(started)}]")
        await screenshot(page, artifacts / f"session{session.index}-error{len(session.errors)}.png")
        return False
    session.timings.append((what, session.finished_at - started))
    await check_page(page, session, what, artifacts)
    return True


async def run_session(browser, url: str, session: Session, args, artifacts: Path) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.on("websocket", session.on_socket)
    origin = url.rstrip("/")

    def on_console(message):
        if message.type != "error":
            return
        source = (message.location or {}).get("url", "")
        if source and not source.startswith(origin):
            session.external.append(f"{session.step}: {message.text} ({source})")
        elif STREAMLIT_PROBE.match(source[len(origin):]):
            session.external.append(f"{session.step}: {message.text} (Streamlit's base-path probe, "
                                    f"streamlit/streamlit#7074: {source[len(origin):]})")
        else:
            session.errors.append(f"{session.step}: console error: {message.text}" + (f" ({source})" if source else ""))

    page.on("console", on_console)
    page.on("pageerror", lambda error: session.errors.append(f"{session.step}: page error: {error}"))
    timeout_ms = int(args.timeout * 1000)
    started = time.perf_counter()
    pages = app_pages()
    # each session opens the app on another page (as a bookmark would) and starts its tour there,
    # so different pages run side by side from the first moment
    shift = session.index % len(pages)
    pages = pages[shift:] + pages[:shift]
    current, path = pages[0]
    if args.open_root:
        current, path = app_pages()[0]
    try:
        await page.goto(url + path, timeout=timeout_ms)
        await wait_idle(page, session, 0, args.timeout)
        session.opened = time.perf_counter() - started
    except Exception as error:
        session.errors.append(f"open {current}: {type(error).__name__}: {str(error).splitlines()[0]}")
        await context.close()
        return
    titles = [title for title, _ in pages]
    navigable = await check_title(page, session, f"open {current}", current, titles)
    await check_page(page, session, f"open {current}", artifacts)
    await record_cards(page, session, f"open {current}", current)
    links = titles if navigable else []
    for round_index in range(args.rounds if navigable else 0):
        for link in links:
            if link != current:
                what = f"go to {link}"
                # the link whose label is exactly this title (after its icon's ligature name)
                target = page.locator("[data-testid='stSidebarNav'] a", has_text=re.compile(re.escape(link) + "$"))

                async def click(target=target, link=link):
                    if await target.count() == 0:
                        labels = nav_labels(await page.locator("[data-testid='stSidebarNav'] a").all_inner_texts())
                        raise LookupError(f"no sidebar link labelled {link!r} (the sidebar lists {', '.join(labels)})")
                    await target.first.click(timeout=timeout_ms)

                if not await interact(page, session, what, click, args.timeout, artifacts):
                    continue  # still on the previous page: nothing to check or move here
                current = link
                if not await check_title(page, session, what, link, titles):
                    await context.close()
                    return
                await record_cards(page, session, what, link)
            slider = page.locator("[data-testid='stMain'] [data-testid='stSlider']", has_text=SLIDER_LABEL)
            if await slider.count() == 0:
                if link in SLIDER_PAGES:
                    session.errors.append(f"{link}: the page settled without its sparsity slider")
                    await screenshot(page, artifacts / f"session{session.index}-error{len(session.errors)}.png")
                continue
            slider = slider.first.get_by_role("slider")
            # alternate directions between sessions and rounds so the value stays near the default
            key = "ArrowRight" if (session.index + round_index) % 2 == 0 else "ArrowLeft"
            for _ in range(args.moves):
                async def press(slider=slider, key=key):
                    # a click on the empty header first, as a user's click gives the window focus: in headless
                    # Chromium a page opened by its URL and never clicked drops its first key press
                    await page.mouse.click(640, 5)
                    await slider.focus()
                    await page.keyboard.press(key)
                what = f"{link}: slider {key}"
                await interact(page, session, what, press, args.timeout, artifacts)
                await record_cards(page, session, what, link)
    session.step = "done"
    await context.close()


def niced_browser(nice: int, folder: Path) -> str:
    """Chromium started at a lower CPU priority (``nice``): the sessions' browsers stand in for the
    users' own machines, yet here they share the server's cores; sixteen renderers drawing
    fifty-frame figures otherwise take most of the two cores (py-spy and top show the server idle
    while the renderers run), and the bench would measure the browsers instead of the server."""
    if nice <= 0:
        return CHROMIUM
    wrapper = folder / "chromium-niced"
    wrapper.write_text(f'#!/bin/sh\nexec nice -n {nice} "{CHROMIUM}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


async def drive(url: str, args, artifacts: Path) -> list[Session]:
    from playwright.async_api import async_playwright

    sessions = [Session(index) for index in range(args.sessions)]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=niced_browser(args.browser_nice, artifacts), args=ARGS)
        await asyncio.gather(*(run_session(browser, url, session, args, artifacts) for session in sessions))
        await browser.close()
    return sessions


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def server_tracebacks(log: Path) -> list[str]:
    """Traceback blocks in the server's output (errors a page may never show)."""
    blocks, current = [], None
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("Traceback"):
            current = [line]
            blocks.append(current)
        elif current is not None:
            current.append(line)
            if line and not line.startswith((" ", "\t")):
                current = None
    return ["\n".join(block) for block in blocks]


def check_numbers(sessions: list[Session]) -> None:
    """Compare every recorded card with the engine's own result for that sparsity (the app's
    default experiment and method, pruned here in one thread, alone)."""
    sys.path.insert(0, str(ROOT))
    from pruning.experiment import Experiment, train_dense
    from pruning.pipeline import prune_model

    experiment = Experiment(dataset="mnist-5k", model="lenet5")
    dense, data = train_dense(experiment).model, experiment.load_data()
    expected: dict[float, dict[str, str]] = {}
    for session in sessions:
        for what, link, value, cards in session.shown:
            if value not in expected:
                result = prune_model(dense, data, "magnitude", value, seed=experiment.seed)
                expected[value] = {
                    "Sparsity achieved": f"{100 * result.stats.sparsity:.2f}%",
                    "Pruned accuracy": f"{100 * result.pruned.accuracy:.2f}%",
                    "Compression": f"{result.stats.compression:.2f}x",
                    "Speedup (FLOPs)": f"{result.stats.speedup:.2f}x",
                }
            wrong = {label: text for label, text in cards.items() if text != expected[value][label]}
            if wrong:
                session.errors.append(
                    f"{what}: at sparsity {value:.2f} the {link} page shows "
                    + ", ".join(f"{label} {text} (engine alone: {expected[value][label]})" for label, text in wrong.items())
                )


def report(sessions: list[Session], tracebacks: list[str], args, wall: float, pretrained: float | None) -> int:
    print(f"{args.sessions} concurrent sessions opened at "
          + ("the root URL" if args.open_root else "each its own first page's URL")
          + f", {args.rounds} rounds, {args.moves} slider moves per page; "
          f"{os.cpu_count()} CPU cores; browsers at nice {args.browser_nice}; wall {wall:.0f} s"
          + (f"; dense model pre-trained by the CLI in {pretrained:.0f} s" if pretrained is not None else "; cold cache"))
    print()
    print("| session | open (s) | interactions | errors | slowest re-render (s) | slowest interaction |")
    print("|---|---|---|---|---|---|")
    for session in sessions:
        slowest = max(session.timings, key=lambda item: item[1], default=None)
        opened = f"{session.opened:.1f}" if session.opened is not None else "-"
        worst = f"{slowest[1]:.2f} | {slowest[0]}" if slowest else "- | -"
        print(f"| {session.index} | {opened} | {len(session.timings)} | {len(session.errors)} | {worst} |")
    times = [seconds for session in sessions for _, seconds in session.timings]
    errors = sum(len(session.errors) for session in sessions) + len(tracebacks)
    print()
    if times:
        print(f"re-render over {len(times)} interactions: p50 {percentile(times, 0.5):.2f} s, "
              f"p95 {percentile(times, 0.95):.2f} s, max {max(times):.2f} s")
        by_kind: dict[str, list[float]] = {}
        for session in sessions:
            for what, seconds in session.timings:
                by_kind.setdefault("page switch" if what.startswith("go to") else "slider move", []).append(seconds)
        for kind, values in sorted(by_kind.items()):
            print(f"  {kind}: {len(values)}, p50 {statistics.median(values):.2f} s, max {max(values):.2f} s")
    if args.verbose:
        for session in sessions:
            print(f"session {session.index}: " + "; ".join(f"{what} {seconds:.2f}" for what, seconds in session.timings))
    checked = sum(len(session.shown) for session in sessions)
    print(f"total errors: {errors} ({len(tracebacks)} server tracebacks); {checked} card sets checked against the engine")
    for session in sessions:
        for error in session.errors:
            print(f"  session {session.index}" + (f" (server id {', '.join(session.server_ids)})" if args.trace else "")
                  + f": {error[:2000]}")
    for block in tracebacks:
        print(block)
    external = sorted({item.split(": ", 1)[1] for session in sessions for item in session.external})
    if external:
        print(f"console errors not counted (other origins, unreachable without network; Streamlit's own probes): "
              f"{len(external)} distinct")
        for item in external[:4]:
            print(f"  {item}")
        if len(external) > 4:
            print(f"  ... and {len(external) - 4} more like these")
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8, help="concurrent browser sessions")
    parser.add_argument("--rounds", type=int, default=2, help="passes over all pages per session")
    parser.add_argument("--moves", type=int, default=2, help="slider key presses per page with a slider, per round")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds an interaction may take before it counts as an error")
    parser.add_argument("--cold", action="store_true", help="no pre-training: the sessions' first page load trains the dense model")
    parser.add_argument("--open-root", action="store_true",
                        help="open every session at the app's root (the default page) instead of its first page's URL")
    parser.add_argument("--browser-nice", type=int, default=10, metavar="N",
                        help="run the browsers at nice N (0: the same priority as the server; see niced_browser)")
    parser.add_argument("--verbose", action="store_true", help="print every interaction with its time")
    parser.add_argument("--trace", type=Path, default=None, metavar="FILE",
                        help="serve through bench/run_trace.py: every session's rerun requests and runs go to FILE")
    parser.add_argument("--artifacts", type=Path, default=None, help="folder for screenshots of errors (default: the temp folder)")
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    work = Path(tempfile.mkdtemp(prefix="pruning-load-"))
    artifacts = args.artifacts or work
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PRUNING_CACHE_DIR=str(work / "cache"))
    os.environ["PRUNING_CACHE_DIR"] = env["PRUNING_CACHE_DIR"]  # the number check reads the same dense model
    pretrained = None if args.cold else pretrain(env)
    port = free_port()
    log = work / "server.log"
    server = start_server(env, port, log, args.trace)
    try:
        started = time.perf_counter()
        sessions = asyncio.run(drive(f"http://127.0.0.1:{port}/", args, artifacts))
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    check_numbers(sessions)
    code = report(sessions, server_tracebacks(log), args, wall, pretrained)
    print(f"server log and screenshots: {work}" if artifacts == work else f"server log: {log}; screenshots: {artifacts}")
    return code


if __name__ == "__main__":
    sys.exit(main())
