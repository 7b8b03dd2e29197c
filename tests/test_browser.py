"""The real thing: the app served by `streamlit run`, driven in headless Debian Chromium.

Needs /usr/bin/chromium (apt-get install chromium). Outside CI a missing browser skips this
test; in CI (CI=true) it fails, so a missing install step cannot hide behind a skip."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"


def require_browser():
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("CI"):
        pytest.fail(f"Chromium not found at {CHROMIUM}: .ci/run must install Debian's chromium package")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    port = free_port()
    env = dict(os.environ, PRUNING_CACHE_DIR=str(tmp_path_factory.mktemp("cache")))
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the streamlit server did not become healthy in 60 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def page(server):
    """A fresh headless Chromium page (its own browser session of the app at ``server``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser.new_page(viewport={"width": 1400, "height": 1100})
        browser.close()


def wait_for_run(page, timeout_ms=180_000):
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout_ms)


def open_expander(container, label: str) -> None:
    """Click an expander's header until it is open: a click that lands while the page redraws
    can be lost, as it can for a user, who then clicks again (at most three clicks)."""
    title = container.page.get_by_text(label, exact=True)
    header = container.locator("[data-testid='stExpander'] summary").filter(has=title)
    opened = container.locator("[data-testid='stExpander'] details[open]").filter(has=title)
    for _ in range(3):
        header.click()
        try:
            opened.wait_for(state="visible", timeout=5_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: click again
            continue
    raise AssertionError(f"the {label!r} expander did not open after three clicks")


def metric_value(page, label: str) -> str:
    card = page.locator("[data-testid='stMetric']", has_text=label).first
    return card.locator("[data-testid='stMetricValue']").inner_text()


def test_slider_reprunes_live_in_a_real_browser(server, page):
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(server)
    page.wait_for_selector("[data-testid='stMetric']", timeout=180_000)
    wait_for_run(page)
    assert page.locator("[data-testid='stException']").count() == 0
    before = metric_value(page, "Sparsity achieved")
    compression_before = metric_value(page, "Compression")
    assert before == "80.00%"

    sparsity = page.locator("[data-testid='stSlider']", has_text="Sparsity (fraction").get_by_role("slider")
    sparsity.focus()
    for _ in range(10):  # arrow keys move the slider by its step, 0.01
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"[data-testid='stMetric']\")]"
        ".some(e => e.innerText.includes('Sparsity achieved') && e.innerText.includes('90.00%'))",
        timeout=60_000,
    )
    wait_for_run(page)
    assert metric_value(page, "Sparsity achieved") == "90.00%"
    assert float(metric_value(page, "Compression").rstrip("x")) > float(compression_before.rstrip("x"))
    titles = page.locator(".js-plotly-plot .gtitle")
    # the sweep finishing in the background reruns the page once: let replaced charts go first
    page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot .gtitle')]"
                           ".filter(e => e.textContent.includes('Sparsity per layer')).length === 1", timeout=60_000)
    assert titles.filter(has_text="Sparsity per layer").count() == 1
    assert titles.filter(has_text="Recall per class").count() == 1
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(ARTIFACTS / "prune-page.png"), full_page=True)

    # a sidebar choice mid-session: the page follows, and the choice survives a page switch
    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']", has_text="Model").click()
    page.get_by_role("option", name="mlp", exact=True).click()
    page.wait_for_selector("text=mlp on mnist-5k", timeout=180_000)
    page.wait_for_selector("[data-testid='stMetric']", timeout=180_000)
    wait_for_run(page)
    assert metric_value(page, "Sparsity achieved") == "90.00%"
    page.get_by_role("link", name="About").click()
    page.wait_for_selector("text=An interactive laboratory", timeout=60_000)
    page.get_by_role("link", name="Prune").click()
    page.wait_for_selector("text=mlp on mnist-5k", timeout=60_000)
    wait_for_run(page)
    assert page.locator("[data-testid='stException']").count() == 0


def test_uploaded_weights_are_used_a_pickle_is_refused_and_the_cache_clears(server, page, tmp_path):
    """Bring your own weights through the sidebar's upload widget, as a user does."""
    import pickle

    import torch

    from pruning.models import build_model

    torch.manual_seed(123)
    untrained = build_model("lenet5", (1, 28, 28), 10)  # about chance accuracy: unlike the trained model
    torch.save(untrained.state_dict(), tmp_path / "mine.pt")
    marker = tmp_path / "code-ran"

    class RunsCode:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"conv1.weight": RunsCode()}, protocol=2))
    page.goto(server)
    page.wait_for_selector("[data-testid='stMetric']", timeout=180_000)
    wait_for_run(page)
    trained = metric_value(page, "Dense accuracy")
    sidebar = page.locator("[data-testid='stSidebar']")
    open_expander(sidebar, "Bring your own weights")
    uploads = sidebar.locator("input[type='file']")
    uploads.first.set_input_files(str(tmp_path / "mine.pt"))
    page.wait_for_selector("text=Using the uploaded weights", timeout=120_000)
    page.wait_for_selector("[data-testid='stMetric']", timeout=120_000)
    wait_for_run(page)
    uploaded = metric_value(page, "Dense accuracy")
    assert uploaded != trained and float(uploaded.rstrip("%")) < 30
    assert page.locator("[data-testid='stException']").count() == 0

    uploads.first.set_input_files(str(tmp_path / "evil.pt"))
    page.wait_for_selector("text=refused", timeout=120_000)
    wait_for_run(page)
    assert metric_value(page, "Dense accuracy") == trained  # back on the trained model, still working
    assert not marker.exists()
    assert page.locator("[data-testid='stException']").count() == 0

    wait_for_run(page)
    open_expander(sidebar, "Cache")
    sidebar.get_by_role("button", name="Clear the cache").click()
    page.wait_for_selector("text=/Removed [1-9][0-9]* files/", timeout=60_000)
    wait_for_run(page)
    assert page.locator("[data-testid='stException']").count() == 0


def test_a_deep_link_or_reload_keeps_the_apps_navigation_and_sidebar(server, page):
    """Opening a page's own URL (a bookmark, a reload) gets the app's navigation, not a page list."""
    page.goto(f"{server}/about")
    page.wait_for_selector("text=An interactive laboratory", timeout=120_000)
    wait_for_run(page)
    sidebar = page.locator("[data-testid='stSidebar']")
    assert sidebar.get_by_role("link", name="Loss valley").count() == 1
    assert sidebar.get_by_text("Experiment", exact=True).count() == 1
    page.reload()
    page.wait_for_selector("text=An interactive laboratory", timeout=120_000)
    assert sidebar.get_by_role("link", name="Loss valley").count() == 1
    assert page.locator("[data-testid='stException']").count() == 0


def test_the_app_loads_without_the_network(server, page):
    """No request leaves the machine: the page icon is a bundled image (a ":material/...:" page icon
    would be fetched from a font host) and the navigation's icons use the font Streamlit serves."""
    from urllib.parse import urlparse

    requested, failed, errors = [], [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on("console", lambda message: errors.append((message.text, message.location.get("url")))
            if message.type == "error" and "/_stcore/" not in message.location.get("url", "") else None)
    # (a deep link's first requests probe for the server's base path, "/about/_stcore/health": 404s of no concern)
    page.goto(f"{server}/about")
    page.wait_for_selector("text=An interactive laboratory", timeout=120_000)
    wait_for_run(page)
    page.wait_for_function("() => document.fonts.status === 'loaded'", timeout=30_000)
    page.wait_for_timeout(1000)  # the favicon is set after the first messages
    elsewhere = [url for url in requested if urlparse(url).scheme in ("http", "https", "ws", "wss")
                 and urlparse(url).hostname != "127.0.0.1"]
    assert not elsewhere, f"requests left the machine: {elsewhere}"
    assert not failed and not errors, (failed, errors)
    icon = page.eval_on_selector("link[rel~='icon']", "link => link.href")
    assert urlparse(icon).hostname == "127.0.0.1" and "/media/" in icon, icon
    assert page.evaluate("() => document.fonts.check('24px \"Material Symbols Rounded\"')")
    nav_icon = page.locator("[data-testid='stSidebarNav'] [data-testid='stIconMaterial']").first
    width = nav_icon.bounding_box()["width"]
    assert width < 40, f"a nav icon {width:.0f} px wide: its name drawn as text, the icon font missing"
    assert page.locator("[data-testid='stException']").count() == 0


def test_the_scrubber_redraws_in_the_browser_without_a_server_run(server, page):
    """The Prune page's scrubber: clicking its rail moves to another grid sparsity and every panel
    follows, while nothing goes to the server (no websocket message, no script run)."""
    sent = []
    page.on("websocket", lambda socket: socket.on("framesent", lambda payload: sent.append(payload)))
    page.goto(server)
    page.wait_for_selector("[data-testid='stMetric']", timeout=180_000)
    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']", has_text="Model").click()
    page.get_by_role("option", name="mlp", exact=True).click()
    page.wait_for_selector("text=mlp on mnist-5k", timeout=180_000)
    scrubbers = page.locator(".st-key-prune-scrub .js-plotly-plot", has_text="Along the slider")
    scrubbers.last.wait_for(timeout=180_000)  # drawn once the sweep is ready (the page polls it)
    wait_for_run(page)
    scrubber = scrubbers.last  # a replaced chart can linger for a moment beside the new one
    label = scrubber.locator("text.slider-label").first  # the current value, before the step labels
    numbers = scrubber.locator("text.number")
    before = (label.text_content(), [numbers.nth(index).text_content() for index in range(4)])
    assert "80" in before[0] or "79" in before[0] or "81" in before[0], before  # starts near the page's 80%
    messages = len(sent)

    rail = scrubber.locator(".slider-rail-rect").first
    box = rail.bounding_box()
    page.mouse.click(box["x"] + 0.15 * box["width"], box["y"] + box["height"] / 2)
    page.wait_for_function(
        "(old) => [...document.querySelectorAll('.js-plotly-plot text.slider-label')].some(e => e.textContent.startsWith("
        "'Sparsity (scrubs') && e.textContent !== old)",
        arg=before[0], timeout=10_000)
    after = (label.text_content(), [numbers.nth(index).text_content() for index in range(4)])
    shown = float(after[0].split(":")[-1].strip().rstrip("%"))
    assert shown < 40, after
    assert after[1][0] != before[1][0], "the accuracy panel followed the scrubber"
    assert float(after[1][1].rstrip("%")) == pytest.approx(shown, abs=0.06), "the sparsity panel shows the scrubbed point"
    page.wait_for_timeout(500)
    assert len(sent) == messages, "scrubbing sent nothing to the server"
    assert page.locator("[data-testid='stApp']").get_attribute("data-test-script-state") == "notRunning"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "prune-scrubber.png"), full_page=True)


def test_a_link_reopens_the_view_and_the_url_follows_the_widgets(server, page):
    """A link with a query string opens the page with those choices in its widgets; moving the
    sparsity slider (a fragment rerun) updates the address bar and the sidebar's link; a bad value
    in a link is named in the page, never an exception."""
    page.goto(f"{server}/?model=mlp&train.epochs=1&method=random&sparsity=0.5&scope=layerwise")
    page.wait_for_selector("[data-testid='stMetric']", timeout=180_000)
    wait_for_run(page)
    sidebar = page.locator("[data-testid='stSidebar']")
    assert sidebar.get_by_role("combobox", name="Model").input_value() == "mlp"
    assert page.get_by_role("combobox", name="Method", exact=True).input_value() == "random"
    assert page.get_by_role("radio", name="layerwise").is_checked()
    sparsity = page.locator("[data-testid='stSlider']", has_text="Sparsity (fraction").get_by_role("slider")
    assert sparsity.input_value() == "0.5"
    assert metric_value(page, "Sparsity achieved") == "50.00%"
    assert "model=mlp" in page.url and "scope=layerwise" in page.url

    sparsity.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.wait_for_url("**sparsity=0.55**", timeout=60_000)
    wait_for_run(page)
    link = sidebar.locator("[data-testid='stCode']").last
    page.wait_for_function("() => [...document.querySelectorAll(\"[data-testid='stSidebar'] [data-testid='stCode']\")]"
                           ".some(e => e.innerText.includes('sparsity=0.55'))", timeout=30_000)
    assert link.inner_text().strip().startswith(server)
    assert "method=random" in page.url and "model=mlp" in page.url
    sidebar.locator("[data-testid='stNumberInput']", has_text="Seed").locator("[data-testid='stNumberInputStepUp']").click()
    page.wait_for_url("**seed=1**", timeout=60_000)  # a sidebar choice too (the model trains again, one epoch)
    wait_for_run(page)
    assert "sparsity=0.55" in page.url
    assert page.locator("[data-testid='stException']").count() == 0

    page.goto(f"{server}/?model=mlp&train.epochs=1&sparsity=abc&colour=red")
    page.wait_for_selector("text=sparsity=abc", timeout=180_000)
    wait_for_run(page)
    assert page.get_by_text("colour=red").count() == 1
    assert page.locator("[data-testid='stSlider']", has_text="Sparsity (fraction").get_by_role("slider").input_value() == "0.8"
    assert "sparsity" not in page.url and "colour" not in page.url
    assert page.locator("[data-testid='stException']").count() == 0
