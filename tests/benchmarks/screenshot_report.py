"""Render a report's ``index.html`` in headless Chromium and save a full-page screenshot, so
a person can look at the page as a reader sees it (from the file system, no server).

    python tests/benchmarks/screenshot_report.py [reports/table4-laptop/index.html] [--out PNG]

Not part of ``make test``: it needs a Chromium binary (``chromium``, ``chromium-browser``,
``google-chrome``; Debian: ``apt-get install chromium``) and says so when there is none.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 6000) -> Path:
    browser = find_browser()
    if browser is None:
        raise SystemExit(f"no Chromium found (looked for {', '.join(BROWSERS)}): install one, "
                         "e.g. `apt-get install chromium`, then run this again")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no first-run dialogs
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={width},{height}",
             f"--screenshot={out.resolve()}", page.resolve().as_uri()],
            check=True, capture_output=True, timeout=120)
    if not out.is_file() or out.stat().st_size == 0:
        raise SystemExit(f"{browser} wrote no screenshot for {page}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?", default="reports/table4-laptop/index.html")
    parser.add_argument("--out", default=None, help="PNG to write (default: beside the page, "
                        "named <page folder>-screenshot.png under reports/screenshots/)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=6000, help="page height to render (px)")
    args = parser.parse_args()
    page = Path(args.page)
    if not page.is_file():
        sys.exit(f"{page} does not exist: run `make ablations` (or `python -m "
                 "arkpose.report_index`) first")
    out = Path(args.out) if args.out else page.parent.parent / "screenshots" / f"{page.parent.name}.png"
    print(screenshot(page, out, args.width, args.height))


if __name__ == "__main__":
    main()
