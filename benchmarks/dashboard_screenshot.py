"""A headless-Chromium screenshot of the Dask dashboard while a job runs (the picture in the README).

    python benchmarks/dashboard_screenshot.py [--out docs/dashboard.png] [--ratings 2000000] [--after 12]

It writes synthetic power-law ratings to a temporary folder, starts `python -m jobs.recommend train` on them with an
embedded cluster whose dashboard listens on a free port of 127.0.0.1, waits until the dashboard shows ALS tasks
and ``--after`` seconds have passed, and has a headless Chromium (``--chromium``, Debian's package: apt-get install
chromium), driven by Playwright (pip install playwright; it does not need its own browser download), load the
dashboard's /status page, wait for its Bokeh plots to draw, and save a PNG. The job is stopped afterwards.
"""

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def task_names(port):
    """The task groups the /status page shows (through its Bokeh session), or an empty set."""
    from bokeh.client import pull_session
    from bokeh.models import ColumnDataSource

    try:
        with pull_session(url=f"http://127.0.0.1:{port}/status") as session:
            return {name for model in session.document.models if isinstance(model, ColumnDataSource)
                    for name in model.data.get("name", []) if isinstance(name, str)}
    except OSError:
        return set()


def screenshot(chromium, url, out, size):
    """Load ``url`` in headless Chromium, wait for the Bokeh canvases to draw, save a PNG of the page."""
    from playwright.sync_api import sync_playwright

    width, height = map(int, size.split(","))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        page.wait_for_selector("canvas", timeout=60_000)
        page.wait_for_timeout(3000)  # a few dashboard refreshes
        page.screenshot(path=str(out))
        browser.close()


def write_ratings(path, n_ratings):
    import numpy as np
    from recommend import power_law_ratings

    ratings = power_law_ratings(n_ratings, seed=0)
    np.save(path, np.column_stack([ratings.users, ratings.items, ratings.values]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--ratings", type=int, default=2_000_000, help="synthetic ratings to train on")
    parser.add_argument("--after", type=float, default=12.0, help="seconds of ALS tasks before the screenshot")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--size", default="1600,1000", help="window width,height")
    args = parser.parse_args()
    if not Path(args.chromium).exists():
        sys.exit(f"no Chromium at {args.chromium}: install Debian's chromium package or pass --chromium PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        ratings = Path(folder) / "ratings.npy"
        write_ratings(ratings, args.ratings)
        job = subprocess.Popen([sys.executable, "-m", "jobs.recommend", "train", "--ratings", str(ratings),
                                "--model-dir", str(Path(folder) / "models"), "--rank", "32", "--max-steps", "30",
                                "--patience", "30", "--dashboard-address", f"127.0.0.1:{port}"], cwd=ROOT)
        try:
            deadline = time.monotonic() + 300
            while not any(name.startswith("als-solve") for name in task_names(port)):
                if job.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the job ended before its ALS tasks showed on the dashboard")
                time.sleep(0.5)
            time.sleep(args.after)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            screenshot(args.chromium, f"http://127.0.0.1:{port}/status", args.out, args.size)
            print(f"wrote {args.out}")
        finally:
            job.terminate()
            job.wait(timeout=60)


if __name__ == "__main__":
    main()
