"""Screenshots of the built docs site, as a reader's browser renders them.

Serves `site/` (built by `make docs`) on 127.0.0.1 and renders four pages in
headless Chromium (`apt-get install -y chromium` on Debian), saving PNGs
under `docs/screenshots/`: the home page, a guide, an API page and the
benchmarks page. Look at them after a docs change: a table that overflows,
a plot that does not load or a docstring that renders as raw text shows
there first. About 20 s.

    make docs && python scripts/docs_screenshots.py
"""

import argparse
import contextlib
import functools
import http.server
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Screenshot name -> (page path in the site, window height in pixels).
PAGES = {
    "home.png": ("", 1700),
    "guide-few-labels.png": ("guides/few-labels.html", 2600),
    "api-tfkd.png": ("api/index.html", 2600),
    "benchmarks.png": ("benchmarks.html", 3400),
}
WIDTH = 1280


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("No Chromium found: apt-get install -y chromium")


@contextlib.contextmanager
def serve(directory):
    """An HTTP server for `directory` on a free port of 127.0.0.1."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def screenshot(chromium, url, path, height):
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--window-size={WIDTH},{height}", "--virtual-time-budget=5000",
             f"--screenshot={path}", url],
            check=True, capture_output=True, timeout=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=pathlib.Path, default=ROOT / "site")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").exists():
        raise SystemExit(f"{args.site} has no index.html: run `make docs` first")
    chromium = find_chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    with serve(args.site) as base:
        for name, (page, height) in PAGES.items():
            screenshot(chromium, base + page, args.out / name, height)
            print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
