"""The report in a real browser (Debian's chromium, headless, driven over the DevTools protocol): it loads with no
console error and no network request, every section's plots are drawn (screenshots checked for non-blank
plots), and it prints to PDF. Built through the CLI, with a comparison site."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.city.browser import Chromium, find_chromium
from edge.city.store import Archive
from edge.city.synth import DEFAULT_START, SiteModel, fill, generate, site_config_yaml, study_phases
from edge.cli import main
from tests.conftest import missing

SECTIONS_WITH_PLOTS = {"before-after": 1, "volumes": 2, "speeds": 1, "conflicts": 3}
_LAYOUT = """JSON.stringify([...document.querySelectorAll('section')].map(s => {
  const r = s.getBoundingClientRect();
  return {id: s.id, x: r.x + scrollX, y: r.y + scrollY, w: r.width, h: r.height,
          imgs: [...s.querySelectorAll('img')].map(i => { const q = i.getBoundingClientRect();
            return {x: q.x - r.x, y: q.y - r.y, w: q.width, h: q.height, loaded: i.complete && i.naturalWidth > 0}; })};
}))"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    treated, comparison = SiteModel(), SiteModel(device="synth-0002", with_speeds=False)
    with Archive(tmp / "archive.sqlite3") as archive:
        fill(archive, generate(treated, study_phases(DEFAULT_START, 5, gap_days=2, conflict_factor=0.6), seed=5))
        fill(archive, generate(comparison, study_phases(DEFAULT_START, 5, gap_days=2), seed=6))
    (tmp / "site.yaml").write_text(site_config_yaml(treated))
    code = main(["report", "--db", str(tmp / "archive.sqlite3"), "--site", "synth-0001/main", "--comparison",
                 "synth-0002/main", "--site-config", str(tmp / "site.yaml"), "--before", "2024-04-01/2024-04-05",
                 "--after", "2024-04-08/2024-04-12", "-o", str(tmp / "report")]
                + (["--pdf"] if find_chromium() else []))
    assert code == 0
    return tmp / "report"


@pytest.fixture(scope="module")
def browser() -> Any:
    if find_chromium() is None:
        missing("chromium not found: the report's browser test needs it (apt-get install chromium)")
    with Chromium(width=1100, height=900) as b:
        yield b


def test_the_comparison_site_enters_the_comparison(report: Path) -> None:
    with (report / "before_after.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    row = next(r for r in rows if "relative to synth-0002" in r["metric"])
    assert "comparison site" in row["test"] and float(row["low"]) < float(row["high"])


def _blank(image: np.ndarray) -> str | None:
    """Why an image region is blank, or None: it must have ink and more than a handful of colours."""
    ink = np.mean(np.any(image < 235, axis=2))
    colours = len(np.unique(image.reshape(-1, 3) // 8, axis=0))
    if ink < 0.02:
        return f"only {ink:.1%} of its pixels are not white"
    if colours < 12:
        return f"only {colours} colours"
    return None


def test_the_report_opens_offline_without_errors_and_every_plot_is_drawn(report: Path, browser: Chromium,
                                                                           tmp_path: Path) -> None:
    browser.open(report / "report.html")
    layout = __import__("json").loads(browser.evaluate(_LAYOUT))
    events = browser.events
    errors = [e for e in events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert not errors, errors
    urls = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    assert [u for u in urls if u.startswith("file://")] == [(report / "report.html").resolve().as_uri()]
    assert all(u.startswith(("file://", "data:")) for u in urls), urls  # nothing else is fetched
    sections = {s["id"]: s for s in layout}
    assert list(sections) == ["overview", "before-after", "volumes", "speeds", "conflicts", "method"]
    for name, plots in SECTIONS_WITH_PLOTS.items():
        s = sections[name]
        png = browser.screenshot({"x": s["x"], "y": s["y"], "width": s["w"], "height": s["h"]})
        (tmp_path / f"{name}.png").write_bytes(png)
        shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert shot is not None and shot.shape[0] >= int(s["h"]) - 1
        assert len(s["imgs"]) == plots, name
        for k, img in enumerate(s["imgs"]):
            assert img["loaded"] and img["w"] > 600 and img["h"] > 150, (name, img)
            y0, x0 = int(img["y"]), int(img["x"])
            region = shot[y0:y0 + int(img["h"]), x0:x0 + int(img["w"])]
            assert (reason := _blank(region)) is None, f"{name} plot {k}: {reason}"
    text = browser.evaluate("document.body.innerText")
    assert "Regression to the mean" in text and "comparison site synth-0002" in text


def test_the_report_prints_to_pdf(report: Path) -> None:
    if find_chromium() is None:
        missing("chromium not found: --pdf needs it (apt-get install chromium)")
    pdf = (report / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 50_000
    assert pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page/") + pdf.count(b"/Type/Page") >= 3 or \
        pdf.count(b"/Page") >= 4
