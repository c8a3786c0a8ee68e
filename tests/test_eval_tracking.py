"""tools/eval_tracking.py: the tracker and the metric wiring on real manual tracks (Urban Tracker, rouen)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO, missing, shared_path

sys.path.insert(0, str(REPO / "tools"))
GT = "trajectories/urbantracker-gt"


def _tool() -> Any:
    if importlib.util.find_spec("motmetrics") is None:
        missing("the motmetrics package is missing: it comes with the dev extra (`pip install -e '.[dev]'`)")
    import eval_tracking

    return eval_tracking


@pytest.fixture(scope="module")
def rouen() -> Any:
    """The rouen scene: 601 frames, 16 manual road users (11 pedestrians, 4 cars, 1 bicycle)."""
    root = shared_path(GT + "/rouen/rouen_gt.sqlite").parents[1]
    return _tool().load_scene(root, "rouen")


def _row(results: list[Any], scene: str = "rouen") -> dict[str, Any]:
    [row] = [r.row() for r in results if r.scene == scene]
    out: dict[str, Any] = row
    return out


def test_manual_tracks_against_themselves_score_exactly_one(rouen: Any) -> None:
    tool = _tool()
    results = tool.evaluate_pairs("self", {"rouen": (rouen.frames, rouen.frames)})
    for scene in ("rouen", "overall"):
        row = _row(results, scene)
        assert (row["hota"], row["det_a"], row["ass_a"], row["idf1"], row["mota"]) == (1.0, 1.0, 1.0, 1.0, 1.0)
        assert (row["id_switches"], row["false_positives"], row["misses"]) == (0, 0, 0)
        assert row["gt_tracks"] == row["tracks"] == row["tracks_on_road_users"] == row["class_right"] == 16
    counts = results[0].counts
    assert counts.tracked == counts.manual == {"person": 11, "car": 4, "bicycle": 1}


def test_hota_port_and_motmetrics_agree_with_trackeval_on_a_toy_case() -> None:
    """Two road users over 6 frames: one followed 1 px off by one track, the other split between two tracks
    at frame 3, and a false box on frame 4. Reference values from trackeval 1.3.0 (HOTA, Identity, CLEAR)."""
    tool = _tool()
    gt, hyp = [], []
    for k in range(6):
        gt.append(tool.Boxes(k, np.array([1, 2]), np.array([[2.0 * k, 0, 2 * k + 10, 10], [30, 0, 40, 10]]),
                             np.array([0, 5])))
        ids = [7, 8 if k < 3 else 9] + ([10] if k == 4 else [])
        boxes = [[2.0 * k + 1, 0, 2 * k + 11, 10], [30, 1, 40, 11]] + ([[60, 0, 70, 10]] if k == 4 else [])
        hyp.append(tool.Boxes(k, np.array(ids), np.array(boxes), np.zeros(len(ids), np.int64)))
    assert tool.hota(gt, hyp).summary() == pytest.approx(
        {"hota": 0.7006739320739737, "det_a": 0.7773279352226721, "ass_a": 0.631578947368421}, abs=1e-12)
    row = _row(tool.evaluate_pairs("toy", {"toy": (gt, hyp)}), "toy")
    assert (row["idf1"], row["mota"], row["id_switches"]) == (pytest.approx(0.72), pytest.approx(5 / 6), 1)
    assert row["id_switches_per_100_gt"] == 50.0


def test_tracker_keeps_identities_on_clean_boxes_and_loses_them_under_heavy_noise(rouen: Any) -> None:
    tool = _tool()
    clean = _row(tool.evaluate([rouen], ["clean"], seed=0))
    # Only the 2 frames before each track is confirmed are missed: one track per road user, no switch.
    assert clean["idf1"] > 0.99 and clean["hota"] > 0.98
    assert clean["id_switches"] == 0 and clean["tracks"] == clean["gt_tracks"] == 16
    heavy = _row(tool.evaluate([rouen], ["heavy"], seed=0))
    assert heavy["idf1"] < clean["idf1"] - 0.15 and heavy["hota"] < clean["hota"] - 0.3
    assert heavy["id_switches"] > 0 and heavy["tracks"] > heavy["tracks_on_road_users"] >= 16


def test_perturbation_is_seeded_and_stride_scores_only_detected_frames(rouen: Any) -> None:
    tool = _tool()
    a = tool.run_tracker(rouen, tool.PROFILES["realistic"], seed=1)
    b = tool.run_tracker(rouen, tool.PROFILES["realistic"], seed=1)
    c = tool.run_tracker(rouen, tool.PROFILES["realistic"], seed=2)
    boxes = [np.concatenate([h.xyxy for h in run[1]]) for run in (a, b, c)]
    assert np.array_equal(boxes[0], boxes[1]) and not np.array_equal(boxes[0], boxes[2])
    gt, hyp = tool.run_tracker(rouen, tool.PROFILES["stride2"], seed=0)
    assert [g.number for g in gt] == [f.number for f in rouen.frames[::2]] == [h.number for h in hyp]


def test_class_of_each_track_comes_from_its_detections(rouen: Any) -> None:
    """Every detection given the confusable class: the tracks carry it, none has its road user's class."""
    tool = _tool()
    noise = dataclasses.replace(tool.PROFILES["clean"], class_flip=1.0)
    counts = tool.evaluate_pairs("flip", {"rouen": tool.run_tracker(rouen, noise, seed=0)})[0].counts
    assert counts.class_right == 0
    assert counts.tracked == {"bicycle": 11, "truck": 4, "motorcycle": 1}  # person, car, bicycle confused


def test_cli_prints_json_and_exits_2_without_shared_data(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        rouen: Any) -> None:
    tool = _tool()
    assert tool.main(["--scenes", "rouen", "--profiles", "clean", "--frames", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["scene"] for r in out["results"]] == ["rouen", "overall"] and out["results"][0]["frames"] == 100
    assert tool.main(["--shared", str(tmp_path)]) == 2
    assert "../shared" in capsys.readouterr().err
