"""Screenshot a report.html in headless Chromium, to look at the report as a reader would.

    python scripts/screenshot_report.py REPORT.html --out shot.png
    python scripts/screenshot_report.py --run-dir RUN_DIR --out shot.png   # write it first

Finds chromium, chromium-browser or google-chrome on PATH (Debian: ``apt-get install
chromium``) and runs it with ``--headless --no-sandbox --disable-gpu --screenshot``. The
window is ``--width`` x ``--height`` pixels; a page longer than that is cut at the bottom
(raise ``--height``), and white space below a shorter page is trimmed off.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str:
    """The first Chromium-like browser on PATH; raises with the names tried."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(f"no browser found on PATH (tried {', '.join(BROWSERS)}); "
                     "on Debian: apt-get install -y chromium")


def screenshot(html: Path, out: Path, width: int = 1400, height: int = 6000,
               timeout: float = 120.0) -> Path:
    """Render ``html`` in headless Chromium and save a ``width`` x ``height`` PNG at ``out``."""
    out = out.resolve()
    with tempfile.TemporaryDirectory() as profile:
        command = [find_browser(), "--headless", "--no-sandbox", "--disable-gpu",
                   "--hide-scrollbars", f"--user-data-dir={profile}",
                   f"--screenshot={out}", f"--window-size={width},{height}",
                   html.resolve().as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"browser exited {done.returncode}:\n{done.stderr[-2000:]}")
    trim_bottom(out)
    return out


def trim_bottom(png: Path, margin: int = 24) -> None:
    """Cut the empty white space below the page's content (the window is taller than it)."""
    try:
        from PIL import Image, ImageChops
    except ImportError:  # Pillow comes with matplotlib; without it the PNG stays as taken
        return
    with Image.open(png) as image:
        rgb = image.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, "white")).getbbox()
    if box is not None and box[3] + margin < rgb.height:
        rgb.crop((0, 0, rgb.width, box[3] + margin)).save(png)


def main(argv: list[str] | None = None) -> int:
    """Command line: screenshot a report (writing it first with --run-dir)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", type=Path, help="a report.html")
    parser.add_argument("--run-dir", type=Path, help="write this run's report first")
    parser.add_argument("--out", type=Path, default=Path("report_screenshot.png"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=6000)
    args = parser.parse_args(argv)
    if args.run_dir is not None:
        from lbt_study.report import write_report

        html = write_report(args.run_dir).html
    elif args.html is not None:
        html = args.html
    else:
        parser.error("give a report.html or --run-dir")
    print(screenshot(html, args.out, args.width, args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
