"""``edge analyse-trajectories`` end to end on a constructed crossing with a known near-miss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml


def test_cli_finds_movements_speeds_and_the_near_miss(tmp_path: Path) -> None:
    rows = ["track_id,class,t_s,x_m,y_m"]
    for f in range(0, 200):  # 10 s at 20 Hz
        t = f / 20
        rows.append(f"1,car,{t:.2f},{-40 + 10 * t:.3f},0.0")  # eastbound 36 km/h, at x=0 when t=4.0
        rows.append(f"2,car,{t:.2f},0.0,{-41 + 10 * t:.3f}")  # northbound 36 km/h, at y=0 when t=4.1
    csv_path = tmp_path / "tracks.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    study = {
        "zones_m": {"West": [[-45, -5], [-30, -5], [-30, 5], [-45, 5]],
                    "Ost": [[30, -5], [45, -5], [45, 5], [30, 5]],
                    "Sued": [[-5, -48], [5, -48], [5, -30], [-5, -30]],
                    "Nord": [[-5, 30], [5, 30], [5, 48], [-5, 48]]},
        # first name: the crossing towards the line's left in a y-down view, i.e. towards +x for a line drawn
        # along +y (edge.analytics.lines); here that is eastbound
        "lines_m": [{"name": "X", "points_px": [[10, -5], [10, 5]], "directions": ["eastbound", "westbound"]}],
        "speed_limit_kmh": 30,
    }
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study))
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "analyse-trajectories", str(csv_path), "-c",
                           str(config), "-o", str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert report["movements"]["West->Ost"]["car"] == 1
    assert report["movements"]["Sued->Nord"]["car"] == 1
    assert report["counts"]["X"]["eastbound"]["car"] == 1
    (speed,) = report["speeds"]["X"]["eastbound"].values()
    assert abs(speed["mean_kmh"] - 36.0) < 2.0
    assert speed["over_limit"] == 1
    (nm,) = report["near_misses"]
    assert nm["type"] == "crossing"
    # centres pass the crossing point 0.4 s apart; 4.5 m cars at 10 m/s occupy the conflict area for 0.63 s
    # each, so their occupancies overlap: PET 0 and a finite TTC on the way in
    assert nm["pet_s"] == 0.0
    assert nm["ttc_s"] is not None and nm["ttc_s"] <= 1.5
    assert "near-misses: 1" in proc.stdout
