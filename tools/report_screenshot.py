"""A PNG of chosen sections of a study report, taken by a headless Chromium (for the README's picture).

    python tools/report_screenshot.py out/city/report/report.html -o docs/city-report-clips.png \\
        --sections overview,"conflict map" --width 900

Each section (or plot) is captured whole (or its first ``--max-height`` CSS pixels), the captures are
stacked, scaled to ``--width`` and written as a palette PNG (a chart needs few colours; the file stays small).
The report holds charts and tables only: no camera image.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image  # pillow comes with matplotlib (the report extra)

from edge.city.browser import Chromium

_RECTS = """JSON.stringify(Object.fromEntries([...document.querySelectorAll('section, img')].map(s => {
  const r = s.getBoundingClientRect();
  return [s.id || s.alt, {x: r.x + scrollX, y: r.y + scrollY, w: r.width, h: r.height}];
})))"""


def capture(html: Path, sections: list[str], max_height: int) -> np.ndarray:
    with Chromium(width=1000, height=900) as browser:
        browser.open(html, watch=False)
        rects = json.loads(browser.evaluate(_RECTS))
        parts: list[np.ndarray] = []
        for name in sections:
            if name not in rects:
                raise SystemExit(f"{html} has no section or plot {name!r}; it has {', '.join(rects)}")
            r = rects[name]
            png = browser.screenshot({"x": r["x"], "y": r["y"], "width": r["w"], "height": min(r["h"], max_height)})
            part = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            if part is None:
                raise SystemExit(f"Chromium's screenshot of {name!r} is no PNG")
            parts.append(part)
    width = max(p.shape[1] for p in parts)
    padded = [cv2.copyMakeBorder(p, 0, 0, 0, width - p.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255))
              for p in parts]
    return np.vstack(padded)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path, help="the report.html")
    ap.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--sections", default="overview",
                    help="comma-separated section ids or plot names (an image's alt text), in order")
    ap.add_argument("--max-height", type=int, default=2000, help="CSS pixels kept of each section")
    ap.add_argument("--width", type=int, default=900, help="width of the PNG in pixels")
    ap.add_argument("--colours", type=int, default=160, help="palette size of the PNG (charts and text need few)")
    args = ap.parse_args(argv)
    image = capture(args.html, args.sections.split(","), args.max_height)
    scale = args.width / image.shape[1]
    image = cv2.resize(image, (args.width, round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    rgb.quantize(colors=args.colours, dither=Image.Dither.NONE).save(args.output, optimize=True)
    print(f"{args.output}: {image.shape[1]}x{image.shape[0]}, {args.output.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
