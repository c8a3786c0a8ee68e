"""Turning movements on the Radeberg trajectories against the gates OpenTrafficCam listed for them.

    python tools/eval_radeberg.py [--shared ../shared] [--json]

Data (../shared/trajectories/radeberg-intersection, see ../shared/docs/DATA.md): two 15-minute files of
real trajectories (UTM zone 33N metres, 20 fps) and, per trajectory, the entry and exit gate that
OpenTrafficCam's own analysis found (``*_otcTrajInfo.csv``). The zones below were drawn by hand, once, from
a plot of where trajectories start and end: each is a band around one approach's gate line, 3 m outward
and 1.5 m inward, and the Nord and Ost bands meet on the bisector of their corner. Each trajectory runs
through :func:`edge.trajectories.analyse` (the same MovementCounter the camera pipeline uses) and its
movement is compared with ``EntryGate -> ExitGate``.

Two things about the data that matter (found while writing this tool):

* The ``TrajID`` of the world file is *not* the ``TrajID`` of the info file: the world file numbers the
  trajectories 1..N in the order of the info file's rows (verified here for every row by the entry and
  exit times, which equal the first and last sample times). Joining on TrajID pairs up the wrong
  trajectories for ~25 % of the rows.
* The trajectories are cut at the gates: each starts on its entry gate line and ends on its exit gate
  line, so the zones must straddle the gate lines.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from edge.trajectories import Trajectories, analyse
from edge.types import ROAD_USER_CLASSES

REPO = Path(__file__).resolve().parents[1]
FOLDER: Final = "trajectories/radeberg-intersection"
STEMS: Final = ("raspberrypi_FR20_2020-02-20_11-30-00", "raspberrypi_FR20_2020-02-20_12-00-00")

#: OpenTrafficCam class -> edge road-user class (a van is a car to a COCO detector; every truck size a truck).
CLASS_MAP: Final = {
    "Car": "car", "Van": "car", "Bus": "bus", "Truck": "truck", "Light Truck": "truck",
    "Medium Truck": "truck", "Heavy Vehicle": "truck", "Pedestrian": "person", "Bicycle": "bicycle",
    "Motorcycle": "motorcycle",
}

#: Local frame: UTM 33N minus the centroid of the five reference points
#: (Testmessung_Radeberg_Erfassungsbereich_refptsWorld.txt), x east, y north, metres.
ORIGIN_UTM: Final = (424123.7194, 5662247.54)

# Gate lines (local metres), read off a plot of the trajectories' first and last points, each extended a
# few metres past the outermost point. NE is where the Nord and Ost gate lines meet.
_NE: Final = (17.4, 4.55)
#: approach -> (gate end A, gate end B, unit normal pointing into the junction)
GATES: Final = {
    "Nord": ((-8.0, 8.9), _NE, (-0.169, -0.986)),
    "Ost": (_NE, (5.5, -13.3), (-0.831, 0.556)),
    "Sued": ((-26.0, -26.1), (1.0, -17.55), (-0.302, 0.953)),
    "West": ((-43.5, -7.2), (-28.5, 6.9), (0.685, -0.729)),
}
INWARD_M: Final = 1.5
OUTWARD_M: Final = 3.0


def _cut(p: npt.NDArray[np.float64], u: npt.NDArray[np.float64], c: npt.NDArray[np.float64],
         v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Intersection of the lines p + s*u and c + t*v."""
    s, _ = np.linalg.solve(np.column_stack([u, -v]), c - p)
    out: npt.NDArray[np.float64] = p + s * u
    return out


def zones_local() -> dict[str, npt.NDArray[np.float64]]:
    """One band polygon per approach; at the NE corner both bands end on the corner's bisector."""
    ne = np.array(_NE)
    u_n = np.subtract(GATES["Nord"][0], ne)
    u_o = np.subtract(GATES["Ost"][1], ne)
    bisector = u_n / np.hypot(*u_n) + u_o / np.hypot(*u_o)
    out: dict[str, npt.NDArray[np.float64]] = {}
    for name, (a_, b_, n_) in GATES.items():
        a, b, n = np.array(a_), np.array(b_), np.array(n_)
        u = (b - a) / np.hypot(*(b - a))
        corners = []
        for end in (a, b):
            cut_dir = bisector if np.allclose(end, ne) else n  # a free end is cut square
            corners.append([_cut(end + d * n, u, end, cut_dir) for d in (INWARD_M, -OUTWARD_M)])
        (a_in, a_out), (b_in, b_out) = corners
        out[name] = np.array([a_in, b_in, b_out, a_out])
    return out


def zones_utm() -> dict[str, npt.NDArray[np.float64]]:
    return {name: poly + np.array(ORIGIN_UTM) for name, poly in zones_local().items()}


@dataclass(frozen=True, slots=True)
class Reference:
    trajectories: Trajectories
    gate_movement: dict[int, str]  # world TrajID -> "Entry->Exit"
    otc_class: dict[int, str]


def _gate(name: str) -> str:
    return name.strip().split("_", 1)[1]


def load(shared: Path, stem: str) -> Reference:
    """One file's trajectories (UTM) and OpenTrafficCam's movement per trajectory, joined by row order."""
    folder = shared / FOLDER
    with (folder / f"{stem}_mp4_DFS_otcTrajInfo.csv").open(encoding="utf-8") as fh:
        info = list(csv.DictReader(fh, skipinitialspace=True))
    world = np.loadtxt(folder / f"{stem}_mp4_DFS_otcTrajWorld_decDot.csv", delimiter=";", skiprows=1)
    ids = world[:, 0].astype(np.int64)
    gate: dict[int, str] = {}
    otc_class: dict[int, str] = {}
    class_id = np.zeros(len(ids), np.int64)
    for row_no, row in enumerate(info, start=1):
        rows = ids == row_no
        t = world[rows, 3]
        if not (len(t) and abs(t[0] - float(row["EntryTime"])) < 1e-3 and abs(t[-1] - float(row["ExitTime"])) < 1e-3):
            raise SystemExit(f"{stem}: info row {row_no} (TrajID {row['TrajID']}) does not match world TrajID "
                             f"{row_no} by entry/exit time; the row-order join no longer holds")
        gate[row_no] = f"{_gate(row['EntryGate'])}->{_gate(row['ExitGate'])}"
        otc_class[row_no] = row["Class"].strip()
        class_id[rows] = ROAD_USER_CLASSES.index(CLASS_MAP[otc_class[row_no]])
    if set(ids.tolist()) != set(gate):
        raise SystemExit(f"{stem}: world file has trajectories without an info row")
    return Reference(Trajectories(ids, class_id, world[:, 3], world[:, 1:3]), gate, otc_class)


def evaluate(shared: Path) -> dict[str, object]:
    table: Counter[tuple[str, str]] = Counter()  # (movement, "ours"|"gates") -> count
    rows: list[dict[str, object]] = []
    agree = total = 0
    for stem in STEMS:
        ref = load(shared, stem)
        result = analyse(ref.trajectories, zones_utm())
        ours = {m.tracker_id: m.name for m in result.movements}
        for tid, listed in sorted(ref.gate_movement.items()):
            got = ours.get(tid)
            table[(listed, "gates")] += 1
            table[(got or "(none)", "ours")] += 1
            total += 1
            if got == listed:
                agree += 1
            else:
                first = ref.trajectories.xy_m[ref.trajectories.track_id == tid][[0, -1]] - np.array(ORIGIN_UTM)
                rows.append({"file": stem[-8:], "traj": tid, "class": ref.otc_class[tid], "gates": listed,
                             "ours": got, "start_local_m": first[0].round(1).tolist(),
                             "end_local_m": first[1].round(1).tolist()})
    movements = sorted({m for m, _ in table})
    return {
        "trajectories": total,
        "agree": agree,
        "agreement": agree / total if total else 0.0,
        "table": [{"movement": m, "ours": table[(m, "ours")], "gates": table[(m, "gates")]} for m in movements],
        "disagreements": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the ../shared data folder")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    if not (args.shared / FOLDER).is_dir():
        print(f"missing {args.shared / FOLDER}; see ../shared/docs/DATA.md", file=sys.stderr)
        return 2
    res = evaluate(args.shared)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{'movement':<14}{'ours':>6}{'gates':>7}")
    for r in res["table"]:  # type: ignore[attr-defined]
        print(f"{r['movement']:<14}{r['ours']:>6}{r['gates']:>7}")
    print(f"\n{res['agree']} of {res['trajectories']} trajectories get their listed movement "
          f"({100 * float(res['agreement']):.1f} %)")  # type: ignore[arg-type]
    for d in res["disagreements"]:  # type: ignore[attr-defined]
        print(f"  {d['file']} #{d['traj']} {d['class']}: gates {d['gates']}, ours {d['ours']}, "
              f"from {d['start_local_m']} to {d['end_local_m']} (local m)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
