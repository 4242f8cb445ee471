"""``make screenshots``: the faces people read, as PNGs at 1280 px in ``reports/screenshots/``
(generated, not committed), for a person to look at after a change.

Each page has a function that makes its own data in a temporary folder — the configured
database is never touched — and captures it with headless Chromium (the system's
``/usr/bin/chromium`` driven by playwright; no browser is downloaded).
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import uvicorn

from perflib.config import Settings
from tools.loadtest import free_port

CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = Path("reports") / "screenshots"
WIDTH, HEIGHT = 1280, 900
PHONE = {"width": 390, "height": 844}
START_TIMEOUT_S = 30.0


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve the ASGI `app` with uvicorn on a free loopback port in this process; yields its
    base URL and stops it afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="perflib-screenshots-server",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the service did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium browser (playwright driving the system's chromium)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


def dashboard(folder: Path) -> list[Path]:
    """The live dashboard of a simulated farm mid-shift (:mod:`perflib.sim.demo_live`) at 1280 px,
    whole page, and on a phone."""
    from perflib.sim.demo_live import seed_live_farm
    from perflib.serve import create_app
    from perflib.store import Store

    work = Path(tempfile.mkdtemp(prefix="perflib-screenshots-"))
    settings = Settings(spool_dir=work / "spool", heartbeat_seconds=0)
    store = Store(f"sqlite:///{work / 'farm.db'}", settings)
    seed_live_farm(store)
    shots = [folder / "dashboard-1280.png", folder / "dashboard-phone.png"]
    with serving(create_app(store, settings)) as url, chromium() as browser:
        for path, viewport in zip(shots, ({"width": WIDTH, "height": HEIGHT}, PHONE)):
            page = browser.new_page(viewport=viewport)
            page.goto(f"{url}/dashboard")
            page.wait_for_selector("#gpus .lane")
            page.wait_for_selector("#jobs-per-hour rect.bar", state="attached")
            page.screenshot(path=str(path), full_page=True)
            page.close()
    return shots


def report(folder: Path) -> list[Path]:
    """The weekly report as ``make report`` renders it on a fresh clone — eight simulated weeks
    with the default incidents (a video driver regression ten days before the end), models
    trained on them — here on four GPUs over two hosts, whole page at 1280 px."""
    from perflib.sim.demo_data import seed_if_empty
    from perflib.report.render import render_report
    from perflib.store import Store

    work = Path(tempfile.mkdtemp(prefix="perflib-screenshots-"))
    url = f"sqlite:///{work / 'history.db'}"
    seed_if_empty(Store(url, Settings(spool_dir=work / "spool")), gpus=4, gpus_per_host=2)
    html = render_report(1, url, output_dir=work)
    shot = folder / "report-1280.png"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(html.as_uri())
        page.screenshot(path=str(shot), full_page=True)
        page.close()
    return [shot]


PAGES: dict[str, Callable[[Path], list[Path]]] = {"dashboard": dashboard, "report": report}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.screenshots", description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(PAGES), help="only these pages")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder for the PNGs")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(PAGES):
        for path in PAGES[name](args.output):
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
