"""Browser latency of the live pages: the client-side scrubber against the Streamlit slider.

One headless Chromium session against `streamlit run app.py` on the default experiment (lenet5 on
mnist-5k unless ``--model``). Per page (Prune, Masks, Recall, Loss valley):

- scrubber: time from the mouse press on the plotly slider's rail to the next animation frame
  painted after plotly's ``plotly_animated`` event, measured inside the page
  (``performance.now()``), over ``--moves`` clicks at alternating positions; the websocket must
  stay silent (a scrub that reached the server would be an error);
- Streamlit slider: time from the arrow key press to the server's last ``script_finished`` once
  the app is idle again (bench/load.py's measure), over ``--moves`` presses.

Before the server starts, the dense model is trained with the CLI into a fresh cache and the
magnitude sweep is built in-process from that empty sweep cache (the figure reported as "sweep
build"), for the chosen model and for mlp; the server then finds the sweep cached.

    python bench/browser_latency.py [--model lenet5] [--moves 20] [--pages Prune,Masks,Recall,"Loss valley"]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from load import ARGS, CHROMIUM, ROOT, SLIDER_LABEL, Session, app_pages, free_port, percentile, start_server, wait_idle  # noqa: E402

SCRUB_PROBE = """() => {
    const plot = [...document.querySelectorAll('.js-plotly-plot')].find(gd => gd._transitionData && gd._transitionData._frames
        && gd._transitionData._frames.length > 1);
    if (!plot) return false;
    plot.setAttribute('data-scrub', '1');
    window.__scrub = {start: null, painted: [], plot};
    document.addEventListener('mousedown', () => { window.__scrub.start = performance.now(); }, true);
    plot.on('plotly_animated', () => requestAnimationFrame(() => window.__scrub.painted.push(performance.now() - window.__scrub.start)));
    return true;
}"""


def build_sweeps(env: dict, models: list[str]) -> dict[str, float]:
    """Seconds to build the magnitude sweep of each model from an empty sweep cache (dense cached)."""
    seconds = {}
    for model in models:
        subprocess.run([sys.executable, "-m", "pruning", "prune", "--dataset", "mnist-5k", "--model", model,
                        "--method", "magnitude", "--sparsity", "0.8"], cwd=ROOT, env=env, check=True, capture_output=True)
        code = ("import time; from pruning.experiment import Experiment; from pruning.sparsity_sweep import sparsity_sweep;"
                f"t = time.perf_counter(); sparsity_sweep(Experiment(model={model!r}), 'magnitude');"
                "print(time.perf_counter() - t)")
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        seconds[model] = float(done.stdout.strip().splitlines()[-1])
    return seconds


async def scrub_times(page, session: Session, moves: int) -> list[float] | str:
    if not await page.evaluate(SCRUB_PROBE):
        return "no scrubber on this page"
    rail = page.locator("[data-scrub='1'] .slider-rail-rect").first
    await rail.scroll_into_view_if_needed()
    box = await rail.bounding_box()
    messages = session.finished
    times = []
    for index in range(moves):
        fraction = 0.2 + 0.6 * ((index * 7) % moves) / max(1, moves - 1)  # a different grid point each time
        before = await page.evaluate("() => window.__scrub.painted.length")
        await page.mouse.click(box["x"] + fraction * box["width"], box["y"] + box["height"] / 2)
        for _ in range(200):
            painted = await page.evaluate("() => window.__scrub.painted")
            if len(painted) > before:
                times.append(painted[-1] / 1000)
                break
            await asyncio.sleep(0.01)
    if session.finished != messages:
        return "a scrub reached the server"
    return times or "no frame was painted after a click"


async def slider_times(page, session: Session, moves: int, timeout: float) -> list[float] | str:
    slider = page.locator("[data-testid='stMain'] [data-testid='stSlider']", has_text=SLIDER_LABEL)
    if await slider.count() == 0:
        return "no Streamlit sparsity slider"
    handle = slider.first.get_by_role("slider")
    times = []
    for index in range(moves):
        after, started = session.finished, time.perf_counter()
        await handle.focus()
        await page.keyboard.press("ArrowLeft" if index % 2 else "ArrowRight")
        await wait_idle(page, session, after, timeout)
        times.append(session.finished_at - started)
    return times


def summary(values) -> str:
    if isinstance(values, str):
        return values
    return (f"p50 {1000 * percentile(values, 0.5):7.1f} ms  p95 {1000 * percentile(values, 0.95):7.1f} ms  "
            f"(n={len(values)})")


async def drive(url: str, pages: list[str], moves: int, timeout: float, model: str) -> dict:
    from playwright.async_api import async_playwright

    paths = dict(app_pages())
    results = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await context.new_page()
        session = Session(0)
        page.on("websocket", session.on_socket)
        for title in pages:
            await page.goto(url + paths[title])
            await wait_idle(page, session, session.finished, timeout)
            if model != "lenet5":
                await page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']", has_text="Model").click()
                await page.get_by_role("option", name=model, exact=True).click()
                await wait_idle(page, session, session.finished, timeout)
            await page.wait_for_timeout(500)
            results[title] = {"scrubber": await scrub_times(page, session, moves),
                              "streamlit slider": await slider_times(page, session, moves, timeout)}
            print(f"{title:12s} scrubber: {summary(results[title]['scrubber'])}", file=sys.stderr)
            print(f"{title:12s} slider:   {summary(results[title]['streamlit slider'])}", file=sys.stderr)
        await browser.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--pages", default="Prune,Masks,Recall,Loss valley")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="browser-latency-"))
    env = dict(os.environ, PRUNING_CACHE_DIR=str(cache))
    builds = build_sweeps(env, list(dict.fromkeys([args.model, "mlp"])))
    for model, seconds in builds.items():
        print(f"sweep build (magnitude, 50 points, empty sweep cache): {model} {seconds:.1f} s", file=sys.stderr)
    port = free_port()
    server = start_server(env, port, cache / "server.log")
    try:
        results = asyncio.run(drive(f"http://127.0.0.1:{port}/", args.pages.split(","), args.moves, args.timeout,
                                    args.model))
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\n{args.model} on mnist-5k, one browser session, {args.moves} moves per control")
    for model, seconds in builds.items():
        print(f"  sweep build {model}: {seconds:.1f} s")
    for title, rows in results.items():
        for control, values in rows.items():
            print(f"  {title:12s} {control:17s} {summary(values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
