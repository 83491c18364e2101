"""A PNG of a page as headless Chromium draws it: the README's pictures, and the tests that
check a page in a real browser (they share `CHROMIUM_FLAGS` and `chromium_binary`).

    python -m monitoring.html.screenshot page.html out.png [--width 1200] [--max-height 8000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# Headless Chromium on a closed network: without the background-networking flags it keeps
# trying to reach Google's hosts; a fresh profile keeps runs independent of each other.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def chromium_binary() -> str:
    """Debian's Chromium (`make system-tools` installs it); a clear error when it is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise FileNotFoundError("chromium is not installed: `make system-tools` installs it")
    return found


def screenshot(
    page: str | Path, out: str | Path, *, width: int = 1200, max_height: int = 8000
) -> Path:
    """A PNG of the whole page (up to `max_height` px) as headless Chromium renders it.

    Chromium's command line shoots the window, not the page, so the window is made taller than
    the page and the white space under the content is cropped. The PNG is then reduced to a
    256-colour palette: a page of flat colours loses nothing visible and the file shrinks
    several times, which matters for an image committed to the README.
    """
    from PIL import Image  # only the screenshot needs Pillow

    page, out = Path(page).resolve(), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="page-chromium-") as profile:
        raw = Path(profile) / "raw.png"
        result = subprocess.run(
            [
                chromium_binary(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={Path(profile) / 'profile'}",
                f"--window-size={width},{max_height}",
                f"--screenshot={raw}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0 or not raw.exists():
            raise RuntimeError(
                f"chromium could not take the screenshot (exit {result.returncode}): "
                f"{result.stderr.strip()[-800:]}"
            )
        with Image.open(raw) as shot:
            image = shot.convert("RGB")
    image = image.crop((0, 0, image.width, _bottom(image)))
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def _bottom(image: Any) -> int:
    """Where to cut the shot: under the content, or in the last gap between sections above
    the window's bottom when the page is taller than the window (never through a chart)."""
    import numpy as np

    pixels = np.asarray(image)
    blank = (pixels == 255).all(axis=(1, 2))  # rows with nothing drawn on them
    drawn = np.flatnonzero(~blank)
    if not drawn.size:
        return image.height
    gap = 24  # rows of white that separate two sections
    if drawn[-1] < image.height - gap:  # the page ended (or a gap reaches the window's bottom)
        return int(drawn[-1]) + gap
    run = np.convolve(blank.astype(int), np.ones(gap, dtype=int), mode="valid")
    gaps = np.flatnonzero(run == gap)
    return int(gaps[-1]) + gap // 2 if gaps.size else image.height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.html.screenshot",
        description="Write a PNG of an HTML page as headless Chromium draws it.",
    )
    parser.add_argument("page", type=Path, help="HTML file")
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--width", type=int, default=1200, help="width in px")
    parser.add_argument(
        "--max-height", type=int, default=8000, help="crop the picture at this height (px)"
    )
    args = parser.parse_args(argv)
    if not args.page.is_file():
        parser.error(f"{args.page}: no such file")
    shot = screenshot(args.page, args.out, width=args.width, max_height=args.max_height)
    print(f"screenshot: {shot.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
