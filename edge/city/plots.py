"""The report's figures: matplotlib on its Agg canvas (no display, no pyplot state), as PNG data URIs so the
HTML needs no other file and no network. Every figure draws its axes and says "no data" where a period has
none, so an empty period is visible as such.

The conflict map is drawn on the ground plane from the site's calibrated lines and zones
(:mod:`edge.city.site`) and the events' rounded locations: never from a camera frame.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from types import MappingProxyType
from typing import Final

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Polygon

from edge.city.analysis import CONFLICT_KINDS, Profile, SpeedSummary
from edge.city.site import SiteGeometry
from edge.city.stats import SPEED_GRID
from edge.city.study import Events

COLOURS: Final = MappingProxyType({"before": "#3b6ea8", "after": "#e07b39", "comparison": "#7f7f7f"})
TYPE_COLOURS: Final = MappingProxyType({"rear_end": "#3b6ea8", "crossing": "#c0392b", "angled": "#27ae60"})
SEVERITY_SIZE: Final = MappingProxyType({"high": 70.0, "medium": 36.0, "low": 16.0})
SEVERITY_COLOURS: Final = MappingProxyType({"high": "#b2182b", "medium": "#ef8a62", "low": "#fddbc7"})
DPI: Final = 96


def _figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _no_data(ax: Axes, text: str = "no data in this period") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#888888")


def volume_profile(profiles: dict[str, Profile], basis: str) -> str:
    """The average day: vehicles per hour in 15-minute bins, one line per period."""
    fig = _figure(9.0, 3.3)
    ax = fig.add_subplot()
    hours = np.arange(96) / 4.0
    drawn = False
    for label, p in profiles.items():
        finite = np.isfinite(p.rate_vph)
        if finite.any():
            colour = COLOURS.get(label, "k")
            ax.step(hours, p.rate_vph, where="post", color=colour, label=label, lw=1.6)
            if finite.sum() < 12:  # a few observed bins: mark them, a step of one bin is hard to see
                ax.plot(hours[finite] + 0.125, p.rate_vph[finite], "o", color=colour, ms=6)
            drawn = True
    ax.set(xlim=(0, 24), xticks=range(0, 25, 3), xlabel="hour of day (local time)", ylabel="vehicles per hour",
           title=f"Average day: {basis}")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="upper left")
    else:
        _no_data(ax)
    return data_uri(fig)


def movement_bars(totals: dict[str, dict[tuple[str, str], float]]) -> str:
    """Vehicles per hour observed by approach and movement, side by side per period."""
    fig = _figure(9.0, 3.3)
    ax = fig.add_subplot()
    keys = sorted({k for t in totals.values() for k in t})
    if not keys:
        _no_data(ax, "no turning movements (the camera has no zones)")
    width = 0.8 / max(1, len(totals))
    for i, (label, per) in enumerate(totals.items()):
        x = np.arange(len(keys)) + (i - (len(totals) - 1) / 2) * width
        ax.bar(x, [per.get(k, 0.0) for k in keys], width, color=COLOURS.get(label, "k"), label=label)
    ax.set_xticks(np.arange(len(keys)), [f"{a}\n{m}" for a, m in keys], fontsize=7)
    ax.set(ylabel="vehicles per hour", title="Turning movements by approach (motor vehicles, per hour observed)")
    ax.grid(axis="y", alpha=0.3)
    if keys:
        ax.legend()
    return data_uri(fig)


def daily_conflict_rates(series: dict[str, tuple[Sequence[object], np.ndarray, np.ndarray]]) -> str:
    """Conflicts per 1,000 entering vehicles per day, with each period's overall rate."""
    fig = _figure(9.0, 3.0)
    ax = fig.add_subplot()
    drawn = False
    for label, (days, conflicts, entering) in series.items():
        ok = entering > 0
        if not ok.any():
            continue
        x = np.array(days, dtype=object)[ok]
        ax.plot(list(x), 1000 * conflicts[ok] / entering[ok], "o", ms=4, color=COLOURS.get(label, "k"), label=label)
        ax.hlines(1000 * conflicts.sum() / entering.sum(), x[0], x[-1], color=COLOURS.get(label, "k"), lw=2)
        drawn = True
    ax.set(ylabel="per 1,000 entering", title="Conflicts per 1,000 entering vehicles, day by day (line: period rate)")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="best", framealpha=0.9)
        fig.autofmt_xdate()
    else:
        _no_data(ax)
    return data_uri(fig)


def speed_cdfs(summaries: dict[str, dict[tuple[str, str], SpeedSummary]]) -> str:
    """One panel per line and direction: the estimated speed distribution (CDF) of each period."""
    keys = sorted({k for s in summaries.values() for k in s})
    cols = min(4, max(1, len(keys)))
    rows = max(1, -(-len(keys) // cols))
    fig = _figure(9.0, 2.4 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_axis_off()
    if not keys:
        axes[0, 0].set_axis_on()
        _no_data(axes[0, 0], "no speeds (the camera is not calibrated, or no crossing was measured)")
    for ax, key in zip(axes.flat, keys, strict=False):
        limit = None
        for label, per in summaries.items():
            s = per.get(key)
            if s is None or not s.cdf.any():
                continue
            ax.plot(SPEED_GRID, s.cdf, color=COLOURS.get(label, "k"), label=f"{label} (p85 {s.quantiles[2]:.0f})")
            limit = s.limit
        if limit is not None:
            ax.axvline(limit, color="#444444", ls="--", lw=1)
            ax.legend(fontsize=7, loc="lower right")
        else:
            _no_data(ax)
        ax.set(title=f"{key[0]} {key[1]}", xlim=(0, 90), ylim=(0, 1), xlabel="km/h")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    fig.suptitle("Speed distributions (motor vehicles; dashed: limit)", fontsize=10)
    return data_uri(fig)


def measure_histograms(events: dict[str, Events]) -> str:
    """TTC and PET of the conflicts, before and after (density, so periods of unequal size compare)."""
    fig = _figure(9.0, 3.0)
    for ax, (name, attr) in zip(fig.subplots(1, 2), (("TTC", "ttc"), ("PET", "pet")), strict=True):
        bins = np.linspace(0, 3.0, 31)
        drawn = False
        for label, ev in events.items():
            v = getattr(ev, attr)
            v = v[np.isfinite(v)]
            if len(v):
                ax.hist(v, bins=bins, density=True, histtype="stepfilled", alpha=0.45, color=COLOURS.get(label, "k"),
                        label=f"{label} (n={len(v)})")
                drawn = True
        ax.set(xlabel=f"{name} (s)", ylabel="density", title=f"{name} of conflicts")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            _no_data(ax, f"no conflict with a {name}")
    return data_uri(fig)


def _draw_site(ax: Axes, geometry: SiteGeometry | None, lo: np.ndarray, hi: np.ndarray) -> None:
    """Zones (filled, named inside the view) and lines of the site, on the ground plane."""
    if geometry is None:
        return
    for name, poly in geometry.zones.items():
        ax.add_patch(Polygon(poly, closed=True, fc="#d9e6f2", ec="#8fa9c4", lw=0.8, zorder=0))
        cx, cy = np.clip(np.mean(poly, axis=0), lo + 0.08 * (hi - lo), hi - 0.08 * (hi - lo))
        ax.text(cx, cy, name, ha="center", va="center", fontsize=7, color="#4a6785", zorder=1)
    for name, line in geometry.lines.items():
        xy = np.asarray(line)
        ax.plot(xy[:, 0], xy[:, 1], color="#333333", lw=1.4, zorder=1)
        ax.text(xy[-1, 0], xy[-1, 1], f" {name}", fontsize=7, color="#333333", zorder=1)


def conflict_map(geometry: SiteGeometry | None, events: dict[str, Events]) -> str:
    """Where conflicts happened, on the ground plane (metres), one panel per period; colour: type, size: severity."""
    fig = _figure(9.0, 4.4)
    axes = fig.subplots(1, len(events), squeeze=False)[0]
    pts = [np.c_[e.x, e.y] for e in events.values() if len(e)]
    # the view: events and lines (zones cut by the image edge can project far away), else the zones
    lines = [np.asarray(p) for p in geometry.lines.values()] if geometry is not None else []
    zones = [np.asarray(p) for p in geometry.zones.values()] if geometry is not None else []
    everything = np.concatenate(pts + lines) if pts or lines else (np.concatenate(zones) if zones else np.zeros((0, 2)))
    lo, hi = (everything.min(axis=0) - 5, everything.max(axis=0) + 5) if len(everything) else (np.zeros(2), np.ones(2))
    for ax, (label, ev) in zip(axes, events.items(), strict=True):
        _draw_site(ax, geometry, lo, hi)
        for ctype, name in CONFLICT_KINDS:
            m = ev.conflict_type == ctype
            if m.any():
                sizes = [SEVERITY_SIZE.get(str(s), 16.0) for s in ev.severity[m]]
                ax.scatter(ev.x[m], ev.y[m], s=sizes, c=TYPE_COLOURS[ctype], alpha=0.55, edgecolors="white",
                           linewidths=0.4, label=name, zorder=2)
        if len(everything):
            ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]))
        ax.set_aspect("equal", adjustable="box")
        ax.set(title=f"{label}: {len(ev)} conflicts", xlabel="x (m)", ylabel="y (m)")
        ax.grid(alpha=0.25)
        if len(ev):
            ax.legend(fontsize=7, loc="upper right", markerscale=0.7)
        else:
            _no_data(ax, "no conflict events")
    fig.suptitle("Conflict locations on the ground plane (size: severity)", fontsize=10)
    return data_uri(fig)


def severity_chart(rates: dict[str, dict[tuple[str, str], float]]) -> str:
    """Conflicts per 1,000 entering vehicles by type, stacked by severity, per period."""
    fig = _figure(9.0, 3.0)
    ax = fig.add_subplot()
    labels = [(label, ctype) for ctype, _ in CONFLICT_KINDS for label in rates]
    x = np.arange(len(labels), dtype=float) + np.repeat(np.arange(len(CONFLICT_KINDS)) * 0.6, len(rates))
    bottom = np.zeros(len(labels))
    for severity in ("high", "medium", "low"):
        h = np.array([rates[label].get((ctype, severity), 0.0) for label, ctype in labels])
        ax.bar(x, h, 0.8, bottom=bottom, color=SEVERITY_COLOURS[severity], edgecolor="#555555", lw=0.4,
               label=severity)
        bottom += h
    ax.set_xticks(x, [f"{ctype.replace('_', '-')}\n{label}" for label, ctype in labels], fontsize=8)
    ax.set(ylabel="per 1,000 entering", title="Conflicts by type and severity, per 1,000 entering vehicles")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="severity", fontsize=8)
    if not bottom.any():
        _no_data(ax, "no conflicts")
    return data_uri(fig)
