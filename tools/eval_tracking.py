"""Tracking quality of edge's tracker on manual tracks: HOTA, IDF1, MOTA, identity switches, class counts.

    python tools/eval_tracking.py [--scenes rene rouen sherbrooke stmarc] [--profiles clean realistic ...]
                                  [--seed N] [--frames N] [--footage] [--json]

Ground truth: the Urban Tracker manual tracks in ../shared/trajectories/urbantracker-gt (Jodoin, Bilodeau and
Saunier, WACV 2014): 4 urban scenes, one box per road user per frame with an id and a class, no video (see
SOURCE.txt there). Each frame's manual boxes are perturbed as a detector would see them (seeded, one profile
of ``PROFILES`` at a time, printed with the results) and fed to ``edge.track.ByteTracker`` (default
``TrackerConfig``) as that frame's detections, in frame order, exactly as ``edge/pipeline.py`` feeds it; the
confirmed tracks it reports are compared with the manual tracks.

Metrics:

- IDF1, MOTA, identity switches, fragmentations, mostly tracked/lost: py-motmetrics (``motmetrics``, in the
  dev extra), a box matching a manual box at IoU >= 0.5 (MOTChallenge's rule).
- ID switches per 100 GT tracks: motmetrics' ``num_switches`` per 100 manual road users.
- The tracker reports a track only on frames where a detection matched it (as the pipeline uses it), so every
  missed detection is a miss: MOTA and DetA cannot exceed about 1 - the drop rate.
- HOTA, DetA, AssA (Luiten et al., IJCV 2021), averaged over IoU thresholds 0.05 ... 0.95: ``hota`` below, a
  port of TrackEval's ``HOTA.eval_sequence`` (MIT licence). No released motmetrics computes HOTA (1.4.0, the
  latest on PyPI, predates it), and every PyPI release of ``trackeval`` requires ``opencv-python``, which
  installs over the ``opencv-python-headless`` build that edge depends on (both ship the ``cv2`` package; the
  GUI build needs libGL). The port gives trackeval 1.3.0's values bit for bit on every scene and profile here
  (checked with its wheel unpacked, without its dependencies); tests/test_eval_tracking.py keeps a toy case's
  reference values. motmetrics' IDF1, MOTA and switches also equal trackeval's Identity and CLEAR there.
- Class counts, as Telraam publishes count accuracy: manual road users per class next to confirmed tracks per
  class (a track's class is its majority class on its last frame), error ``(tracked - manual) / manual`` over
  the full sample and per scene; also the tracks on road users alone ("onRU": matched to a manual box at least
  once), which leaves out the clutter tracks that false boxes start. Each scene is 601 to 1001 frames (about
  half a minute at 30 fps), so 15-minute bins do not apply: the scenes stand in for the bins.

``--footage`` also runs the detector and tracker on the two OpenTrafficCam clips (3 s each) and compares the
tracks per class with the road users listed there by hand (presence only: the lists hold no boxes).

Exits 2 with a message when ../shared or a scene file is missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import motmetrics as mm  # type: ignore[import-untyped]  # ships no type information
import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped, unused-ignore]

from edge.config import TrackerConfig
from edge.track import ByteTracker, box_iou
from edge.types import ROAD_USER_CLASSES, Detections, IntArray

F64Array = npt.NDArray[np.float64]

REPO: Final = Path(__file__).resolve().parents[1]
SCENES: Final = ("rene", "rouen", "sherbrooke", "stmarc")
GT_DIR: Final = Path("trajectories") / "urbantracker-gt"

#: Polytrack ``road_user_type`` (objects_type table) to edge's road-user classes.
POLYTRACK_CLASSES: Final = {1: "car", 2: "person", 3: "motorcycle", 4: "bicycle", 5: "bus", 6: "truck"}
#: Manual road users of type 0 ("unknown") or -1, resolved from the annotators' own ``description`` column.
RESOLVED: Final = {
    ("rene", 10): "car",  # "left outbound dark car"
    ("rene", 22): "car",  # "silver vus" (SUV)
    ("rene", 27): "car",  # "silver car"
    ("rouen", 5): "person",  # "chandail noir" (black sweater)
    ("rouen", 9): "person",  # "enfant" (child), type -1
    ("sherbrooke", 3): "person",  # "Black Dress Women"
    ("sherbrooke", 5): "car",  # "Black VUS"
    ("stmarc", 1): "person",  # "black shirt"
    ("stmarc", 3): "person",  # "waiting guy 1"
    ("stmarc", 10): "person",  # "man in black"
    ("stmarc", 12): "person",  # "white shirt, black hair, black pants"
    ("stmarc", 14): "person",  # "fille chandail brun" (girl in a brown sweater)
    ("stmarc", 23): "car",  # "black acura"
}
#: The class a detector most often confuses each class with (class noise).
CONFUSED_WITH: Final = {"car": "truck", "bus": "truck", "truck": "car", "motorcycle": "bicycle",
                        "bicycle": "motorcycle", "person": "bicycle"}
_CONFUSED: Final = np.array([ROAD_USER_CLASSES.index(CONFUSED_WITH[c]) for c in ROAD_USER_CLASSES], np.int64)

#: A tracker box matches a manual box at this IoU or more (MOTChallenge) for motmetrics' CLEAR and ID metrics.
MATCH_IOU: Final = 0.5
#: TrackEval's HOTA thresholds: IoU 0.05, 0.10, ..., 0.95.
HOTA_ALPHAS: Final = np.arange(0.05, 0.99, 0.05)
_EPS: Final = float(np.finfo(float).eps)
MOT_METRICS: Final = ("num_frames", "num_unique_objects", "num_objects", "idf1", "idp", "idr", "mota",
                      "num_switches", "num_fragmentations", "mostly_tracked", "mostly_lost",
                      "num_false_positives", "num_misses")


# ----------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Boxes:
    """One frame's boxes: ids ``(N,)``, ``xyxy (N,4)`` in pixels, classes ``(N,)`` (ROAD_USER_CLASSES)."""

    number: int
    ids: IntArray
    xyxy: F64Array
    cls: IntArray


@dataclass(frozen=True)
class Scene:
    name: str
    frames: list[Boxes]  # every frame from the first annotated to the last, empty ones included


def road_user(scene: str, object_id: int, road_user_type: int) -> str:
    if (scene, object_id) in RESOLVED:
        return RESOLVED[scene, object_id]
    if road_user_type not in POLYTRACK_CLASSES:
        raise ValueError(f"{scene} object {object_id}: road_user_type {road_user_type} has no class; add it to "
                         "RESOLVED from its description")
    return POLYTRACK_CLASSES[road_user_type]


def load_scene(root: Path, name: str, max_frames: int | None = None) -> Scene:
    """The manual tracks of one scene (``<root>/<name>/<name>_gt.sqlite``), the first ``max_frames`` frames."""
    path = root / name / f"{name}_gt.sqlite"
    if not path.is_file():
        raise FileNotFoundError(path)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        types = dict(con.execute("SELECT object_id, road_user_type FROM objects").fetchall())
        rows = con.execute("SELECT frame_number, object_id, x_top_left, y_top_left, x_bottom_right, "
                           "y_bottom_right FROM bounding_boxes ORDER BY frame_number, object_id").fetchall()
    finally:
        con.close()
    cls = {i: ROAD_USER_CLASSES.index(road_user(name, i, t)) for i, t in types.items()}
    table = np.array(rows, np.float64).reshape(-1, 6)
    first = int(table[:, 0].min())
    count = int(table[:, 0].max()) - first + 1
    count = count if max_frames is None else min(count, max_frames)
    at = np.searchsorted(table[:, 0], first + np.arange(count + 1))
    frames = []
    for k in range(count):
        part = table[at[k]:at[k + 1]]
        ids = part[:, 1].astype(np.int64)
        frames.append(Boxes(first + k, ids, part[:, 2:].copy(), np.array([cls[i] for i in ids.tolist()], np.int64)))
    return Scene(name, frames)


# --------------------------------------------------------------------------------------- perturbation
@dataclass(frozen=True)
class Noise:
    """How manual boxes become detections; every draw comes from one generator seeded per scene."""

    jitter: float = 0.0  # std of each box edge, as a fraction of the box's width (x1, x2) or height (y1, y2)
    drop: float = 0.0  # probability that a manual box is missed on a frame (independent per box and frame)
    false_per_frame: float = 0.0  # mean number of false boxes appearing per frame (Poisson)
    false_frames: int = 1  # a false box stays 1..false_frames frames at one place (clutter), jittered
    class_flip: float = 0.0  # probability that a detection gets the confusable class (CONFUSED_WITH)
    score_low: float = 0.9  # scores of detections of road users: uniform in [score_low, score_high]
    score_high: float = 0.9
    false_score_low: float = 0.1  # scores of false boxes: uniform in [false_score_low, false_score_high]
    false_score_high: float = 0.5
    stride: int = 1  # detect on every stride-th frame; the tracker coasts over the others (not scored)

    def describe(self) -> str:
        if self == Noise():
            return "manual boxes unchanged, score 0.9, every frame"
        return (f"edges jittered {self.jitter:.0%} of box size (std), {self.drop:.0%} of boxes dropped, "
                f"{self.false_per_frame:g} false boxes/frame lasting 1-{self.false_frames} frames, scores "
                f"U({self.score_low:g}, {self.score_high:g}), false U({self.false_score_low:g}, "
                f"{self.false_score_high:g}), {self.class_flip:.0%} class flips, "
                + ("every frame" if self.stride == 1 else f"detection on 1 frame in {self.stride}, coasting between"))


_REALISTIC: Final = Noise(jitter=0.02, drop=0.10, false_per_frame=0.02, false_frames=4, class_flip=0.05,
                          score_low=0.2, score_high=0.95)
PROFILES: Final = {
    "clean": Noise(),
    "realistic": _REALISTIC,
    "stride2": replace(_REALISTIC, stride=2),
    "heavy": Noise(jitter=0.06, drop=0.30, false_per_frame=0.2, false_frames=8, class_flip=0.15,
                   score_low=0.15, score_high=0.9, false_score_high=0.6),
}


@dataclass
class Clutter:
    """False positives: boxes the size of a random manual box of the scene, placed uniformly in the image."""

    noise: Noise
    rng: np.random.Generator
    sizes: F64Array  # (M,2) manual box widths and heights
    classes: IntArray  # (M,) their classes
    extent: F64Array  # (2,) image width, height (the manual boxes' extent)
    boxes: F64Array = field(default_factory=lambda: np.zeros((0, 4)))
    cls: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    left: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def of(cls, scene: Scene, noise: Noise, rng: np.random.Generator) -> Clutter:
        xyxy = np.concatenate([f.xyxy for f in scene.frames])
        return cls(noise, rng, xyxy[:, 2:] - xyxy[:, :2], np.concatenate([f.cls for f in scene.frames]),
                   xyxy[:, 2:].max(axis=0))

    def step(self) -> tuple[F64Array, IntArray]:
        """This frame's false boxes ``(K,4)`` and classes ``(K,)``."""
        rng, n = self.rng, int(self.rng.poisson(self.noise.false_per_frame))
        if n:
            pick = rng.integers(0, len(self.sizes), n)
            wh = self.sizes[pick]
            x1y1 = rng.random((n, 2)) * np.maximum(self.extent - wh, 1.0)
            self.boxes = np.concatenate([self.boxes, np.hstack([x1y1, x1y1 + wh])])
            self.cls = np.concatenate([self.cls, self.classes[pick]])
            self.left = np.concatenate([self.left, rng.integers(1, self.noise.false_frames + 1, n)])
        out = jittered(self.boxes, self.noise.jitter, rng), self.cls.copy()
        self.left = self.left - 1
        keep = self.left > 0
        self.boxes, self.cls, self.left = self.boxes[keep], self.cls[keep], self.left[keep]
        return out


def jittered(xyxy: F64Array, jitter: float, rng: np.random.Generator) -> F64Array:
    if not jitter:
        return xyxy.copy()
    wh = xyxy[:, 2:] - xyxy[:, :2]
    out: F64Array = xyxy + rng.normal(0.0, jitter, xyxy.shape) * np.tile(wh, 2)
    return out


def perturbed(frame: Boxes, noise: Noise, rng: np.random.Generator, clutter: Clutter) -> Detections:
    """One frame's manual boxes as detections: missed, jittered, class-flipped, with false boxes added."""
    keep = rng.random(len(frame.ids)) >= noise.drop
    xyxy = jittered(frame.xyxy[keep], noise.jitter, rng)
    cls = frame.cls[keep].copy()
    flip = rng.random(len(cls)) < noise.class_flip
    cls[flip] = _CONFUSED[cls[flip]]
    score = rng.uniform(noise.score_low, noise.score_high, len(cls))
    false_xyxy, false_cls = clutter.step()
    false_score = rng.uniform(noise.false_score_low, noise.false_score_high, len(false_cls))
    return Detections(np.concatenate([xyxy, false_xyxy]).astype(np.float32),
                      np.concatenate([score, false_score]).astype(np.float32), np.concatenate([cls, false_cls]))


def run_tracker(scene: Scene, noise: Noise, seed: int,
                config: TrackerConfig | None = None) -> tuple[list[Boxes], list[Boxes]]:
    """Manual boxes and the tracker's confirmed tracks on every frame the tracker saw detections."""
    rng = np.random.default_rng([seed, zlib.crc32(scene.name.encode())])
    clutter = Clutter.of(scene, noise, rng)
    tracker = ByteTracker(config or TrackerConfig())
    gt: list[Boxes] = []
    hyp: list[Boxes] = []
    for k, frame in enumerate(scene.frames):
        if k % noise.stride:
            tracker.coast()
            continue
        t = tracker.update(perturbed(frame, noise, rng, clutter))
        gt.append(frame)
        hyp.append(Boxes(frame.number, t.tracker_id, t.xyxy.astype(np.float64), t.class_id))
    return gt, hyp


# -------------------------------------------------------------------------------------------- metrics
def mot_accumulator(gt: Sequence[Boxes], hyp: Sequence[Boxes]) -> Any:
    """motmetrics' event log of manual vs tracker boxes, a pair allowed at IoU >= ``MATCH_IOU``.

    Distances are ``1 - IoU`` from edge's ``box_iou`` (motmetrics 1.4.0's own ``iou_matrix`` calls
    ``np.asfarray``, gone since NumPy 2).
    """
    acc = mm.MOTAccumulator(auto_id=True)
    for g, h in zip(gt, hyp, strict=True):
        dist = 1.0 - box_iou(g.xyxy, h.xyxy)
        dist[dist > 1.0 - MATCH_IOU] = np.nan
        acc.update(g.ids.tolist(), h.ids.tolist(), dist)
    return acc


@dataclass(frozen=True)
class HotaParts:
    """HOTA sums per threshold (``HOTA_ALPHAS``); adding parts is TrackEval's ``combine_sequences``."""

    tp: F64Array
    fn: F64Array
    fp: F64Array
    ass: F64Array  # sum over true positives of their id pair's association IoU

    def __add__(self, other: HotaParts) -> HotaParts:
        return HotaParts(self.tp + other.tp, self.fn + other.fn, self.fp + other.fp, self.ass + other.ass)

    @property
    def det_a(self) -> F64Array:
        out: F64Array = self.tp / np.maximum(1.0, self.tp + self.fn + self.fp)
        return out

    @property
    def ass_a(self) -> F64Array:
        out: F64Array = self.ass / np.maximum(1.0, self.tp)
        return out

    def summary(self) -> dict[str, float]:
        """HOTA, DetA and AssA, each the mean over the thresholds (TrackEval's reported values)."""
        return {"hota": float(np.sqrt(self.det_a * self.ass_a).mean()), "det_a": float(self.det_a.mean()),
                "ass_a": float(self.ass_a.mean())}


def _dense(ids: Sequence[IntArray]) -> tuple[list[IntArray], int]:
    """Ids per frame renumbered 0..n-1 over the whole sequence, and n."""
    flat = np.concatenate([np.zeros(0, np.int64), *ids])
    uniq, inverse = np.unique(flat, return_inverse=True)
    return np.split(inverse.astype(np.int64), np.cumsum([len(i) for i in ids])[:-1]), len(uniq)


def _alignment(gts: list[IntArray], hyps: list[IntArray], sims: list[F64Array], n_gt: int,
               n_hyp: int) -> tuple[F64Array, F64Array, F64Array]:
    """Global alignment score of every (manual, tracker) id pair, and detections per id (HOTA paper, eq. 10)."""
    potential = np.zeros((n_gt, n_hyp))
    gt_count = np.zeros(n_gt)
    hyp_count = np.zeros(n_hyp)
    for g, h, sim in zip(gts, hyps, sims, strict=True):
        denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim
        potential[g[:, None], h[None, :]] += np.divide(sim, denom, out=np.zeros_like(sim), where=denom > _EPS)
        gt_count[g] += 1
        hyp_count[h] += 1
    return potential / (gt_count[:, None] + hyp_count[None, :] - potential), gt_count, hyp_count


def hota(gt: Sequence[Boxes], hyp: Sequence[Boxes]) -> HotaParts:
    """HOTA of one sequence: a port of TrackEval's ``HOTA.eval_sequence`` (Luiten et al., IJCV 2021; MIT)."""
    gts, n_gt = _dense([g.ids for g in gt])
    hyps, n_hyp = _dense([h.ids for h in hyp])
    sims = [box_iou(g.xyxy, h.xyxy) for g, h in zip(gt, hyp, strict=True)]
    align, gt_count, hyp_count = _alignment(gts, hyps, sims, n_gt, n_hyp)
    n_alpha = len(HOTA_ALPHAS)
    tp, fn, fp = np.zeros(n_alpha), np.zeros(n_alpha), np.zeros(n_alpha)
    matches = np.zeros((n_alpha, n_gt, n_hyp))
    for g, h, sim in zip(gts, hyps, sims, strict=True):
        if not len(g) or not len(h):
            fn += len(g)
            fp += len(h)
            continue
        rows, cols = linear_sum_assignment(-(align[g[:, None], h[None, :]] * sim))
        ok = sim[rows, cols][None, :] >= HOTA_ALPHAS[:, None] - _EPS  # (alpha, pair)
        n = ok.sum(axis=1)
        tp += n
        fn += len(g) - n
        fp += len(h) - n
        a, pair = np.nonzero(ok)
        matches[a, g[rows[pair]], h[cols[pair]]] += 1  # pairs are unique per alpha within a frame
    ass_iou = matches / np.maximum(1.0, gt_count[None, :, None] + hyp_count[None, None, :] - matches)
    return HotaParts(tp, fn, fp, (matches * ass_iou).sum(axis=(1, 2)))


@dataclass(frozen=True)
class Counts:
    """Road users per class: manual, tracked (every confirmed track, with its class on its last frame) and
    tracked on a road user (tracks matched to a manual box at least once: not clutter)."""

    manual: Counter[str] = field(default_factory=Counter)
    tracked: Counter[str] = field(default_factory=Counter)
    on_road_users: Counter[str] = field(default_factory=Counter)
    class_right: int = 0  # tracks on a road user whose class is that road user's (the one matched most)

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.manual + other.manual, self.tracked + other.tracked,
                      self.on_road_users + other.on_road_users, self.class_right + other.class_right)


def matched_road_users(acc: Any) -> dict[int, int]:
    """Every tracker id matched at least once (motmetrics MATCH or SWITCH) -> the manual id matched most."""
    ev = acc.mot_events
    ev = ev[ev["Type"].isin(["MATCH", "SWITCH"])]
    pairs = Counter(zip(ev["HId"].astype(int).tolist(), ev["OId"].astype(int).tolist(), strict=True))
    out: dict[int, int] = {}
    for (hid, oid), _ in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0])):
        out.setdefault(hid, oid)
    return out


def class_counts(gt: Sequence[Boxes], hyp: Sequence[Boxes], matched: dict[int, int]) -> Counts:
    truth: dict[int, int] = {}
    last: dict[int, int] = {}
    for boxes, into in ((gt, truth), (hyp, last)):
        for b in boxes:
            into.update(zip(b.ids.tolist(), b.cls.tolist(), strict=True))
    on = {h: c for h, c in last.items() if h in matched}
    return Counts(Counter(ROAD_USER_CLASSES[c] for c in truth.values()),
                  Counter(ROAD_USER_CLASSES[c] for c in last.values()),
                  Counter(ROAD_USER_CLASSES[c] for c in on.values()),
                  sum(c == truth[matched[h]] for h, c in on.items()))


# ------------------------------------------------------------------------------------------ evaluation
@dataclass(frozen=True)
class Result:
    """One profile on one scene (or ``overall``, all scenes pooled)."""

    profile: str
    scene: str
    mot: dict[str, float]
    hota: dict[str, float]
    counts: Counts

    def row(self) -> dict[str, Any]:
        m, c = self.mot, self.counts
        per100 = 100.0 * m["num_switches"] / max(1.0, m["num_unique_objects"])
        return {"profile": self.profile, "scene": self.scene, "frames": int(m["num_frames"]),
                "gt_tracks": int(m["num_unique_objects"]), "tracks": c.tracked.total(),
                "tracks_on_road_users": c.on_road_users.total(), **self.hota, "idf1": m["idf1"],
                "idp": m["idp"], "idr": m["idr"], "mota": m["mota"], "id_switches": int(m["num_switches"]),
                "id_switches_per_100_gt": per100, "fragmentations": int(m["num_fragmentations"]),
                "mostly_tracked": int(m["mostly_tracked"]), "mostly_lost": int(m["mostly_lost"]),
                "false_positives": int(m["num_false_positives"]), "misses": int(m["num_misses"]),
                "class_right": c.class_right}


def evaluate_pairs(profile: str, runs: dict[str, tuple[list[Boxes], list[Boxes]]]) -> list[Result]:
    """Metrics per scene and pooled (``overall``) for manual/tracker box sequences keyed by scene."""
    names = list(runs)
    accs = [mot_accumulator(*runs[n]) for n in names]
    mot = mm.metrics.create().compute_many(accs, metrics=list(MOT_METRICS), names=names,
                                           generate_overall=True).to_dict("index")
    out: list[Result] = []
    total_hota = HotaParts(*(np.zeros(len(HOTA_ALPHAS)) for _ in range(4)))
    total_counts = Counts()
    for name, acc in zip(names, accs, strict=True):
        parts = hota(*runs[name])
        counts = class_counts(*runs[name], matched_road_users(acc))
        total_hota, total_counts = total_hota + parts, total_counts + counts
        out.append(Result(profile, name, {k: float(v) for k, v in mot[name].items()}, parts.summary(), counts))
    out.append(Result(profile, "overall", {k: float(v) for k, v in mot["OVERALL"].items()}, total_hota.summary(),
                      total_counts))
    return out


def evaluate(scenes: Sequence[Scene], profiles: Sequence[str], seed: int) -> list[Result]:
    results: list[Result] = []
    for profile in profiles:
        runs = {s.name: run_tracker(s, PROFILES[profile], seed) for s in scenes}
        results += evaluate_pairs(profile, runs)
    return results


# --------------------------------------------------------------------------------- real footage (OTC)
OTC_CLIPS: Final = (("Cars-Cyclist", "otc_cars_cyclist_roadusers.csv"), ("Cars-Truck", "otc_cars_truck_roadusers.csv"))
#: Listed classes to edge's: a COCO detector has no van, and calls one a car (or a truck).
LISTED_AS: Final = {"van": "car", "cars": "car"}


def footage_counts(shared: Path) -> list[dict[str, Any]]:
    """Tracks per class of detector + tracker on each OTC clip next to the road users listed there by hand
    (low-confidence entries, far-background vehicles, left out)."""
    from edge.config import load_config
    from edge.detect import Detector
    from edge.source import FileSource

    config = load_config(REPO / "config" / "otc-intersection.yaml")
    det_config = config.detector.model_copy(update={"model_dir": shared / "models"})
    detector = Detector(det_config)
    otc = shared / "footage" / "otc-intersection"
    out = []
    for clip, users in OTC_CLIPS:
        tracker = ByteTracker(config.tracker)
        last: dict[int, int] = {}
        with FileSource(otc / f"Testvideo_{clip}_FR20_2020-01-01_00-00-00.mp4") as source:
            for frame in source:
                t = tracker.update(detector(frame.image))
                last.update(zip(t.tracker_id.tolist(), t.class_id.tolist(), strict=True))
        with (otc / users).open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if not r["confidence"].startswith("low")]
        listed = Counter(LISTED_AS.get(w, w) for w in (r["class"].split(" (")[0].split("/")[0] for r in rows))
        out.append({"clip": clip, "model": det_config.model, "listed": dict(listed),
                    "tracked": dict(Counter(ROAD_USER_CLASSES[c] for c in last.values()))})
    return out


# ---------------------------------------------------------------------------------------------- report
def _error(tracked: int, manual: int) -> str:
    return f"{(tracked - manual) / manual:+.0%}" if manual else ("0" if not tracked else f"+{tracked}")


def format_metrics(results: Sequence[Result]) -> str:
    head = (f"{'profile':10} {'scene':11} {'frames':>6} {'GT':>3} {'trk':>4} {'onRU':>4} {'HOTA':>5} {'DetA':>5} "
            f"{'AssA':>5} {'IDF1':>5} {'MOTA':>6} {'IDsw':>4} {'IDsw/100':>8} {'MT':>3} {'ML':>3}")
    lines = [head]
    for r in (x.row() for x in results):
        lines.append(f"{r['profile']:10} {r['scene']:11} {r['frames']:6d} {r['gt_tracks']:3d} {r['tracks']:4d} "
                     f"{r['tracks_on_road_users']:4d} {r['hota']:5.3f} {r['det_a']:5.3f} {r['ass_a']:5.3f} "
                     f"{r['idf1']:5.3f} {r['mota']:6.3f} {r['id_switches']:4d} {r['id_switches_per_100_gt']:8.1f} "
                     f"{r['mostly_tracked']:3d} {r['mostly_lost']:3d}")
    return "\n".join(lines)


def _count_line(c: str, scenes: Sequence[Result], overall: Counts) -> str:
    errs = [abs(r.counts.tracked[c] - r.counts.manual[c]) / r.counts.manual[c] for r in scenes if r.counts.manual[c]]
    per = " ".join(f"{f'{r.counts.tracked[c]}/{r.counts.manual[c]}':>10}" for r in scenes)
    manual, tracked, on = overall.manual[c], overall.tracked[c], overall.on_road_users[c]
    return (f"{'':10} {c:8} {per} {manual:6d} {tracked:6d} {_error(tracked, manual):>6} "
            f"{(f'{np.mean(errs):.0%}' if errs else '-'):>9} {on:6d} {_error(on, manual):>6}")


def format_counts(results: Sequence[Result]) -> str:
    """Per profile and class: tracked/manual per scene; full sample: manual, tracked, error, the mean |error|
    over the scenes (the "bins"), tracks on road users (clutter left out) and their error."""
    lines = []
    for profile in dict.fromkeys(r.profile for r in results):
        rows = [r for r in results if r.profile == profile]
        scenes, overall = rows[:-1], rows[-1].counts
        lines.append(f"{profile:10} {'class':8} " + " ".join(f"{r.scene[:10]:>10}" for r in scenes)
                     + f" {'manual':>6} {'tracks':>6} {'error':>6} {'mean|err|':>9} {'onRU':>6} {'error':>6}")
        lines += [_count_line(c, scenes, overall) for c in ROAD_USER_CLASSES
                  if overall.manual[c] or overall.tracked[c]]
        on = overall.on_road_users.total()
        lines.append(f"{'':10} tracks on road users with their road user's class: {overall.class_right}/{on}"
                     + (f" ({overall.class_right / on:.0%})" if on else ""))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared data folder")
    ap.add_argument("--scenes", nargs="+", choices=SCENES, default=list(SCENES))
    ap.add_argument("--profiles", nargs="+", choices=list(PROFILES), default=list(PROFILES),
                    help="detection perturbations (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the perturbations (default 0)")
    ap.add_argument("--frames", type=int, help="only the first N frames of each scene")
    ap.add_argument("--footage", action="store_true",
                    help="also: detector + tracker on the OpenTrafficCam clips vs their hand-listed road users")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.shared / GT_DIR
    try:
        scenes = [load_scene(root, name, args.frames) for name in args.scenes]
    except FileNotFoundError as e:
        print(f"missing {e.args[0]}: the shared data set must sit beside the repository as ../shared (or pass "
              "--shared); see ../shared/docs/DATA.md", file=sys.stderr)
        return 2
    results = evaluate(scenes, args.profiles, args.seed)
    footage = footage_counts(args.shared) if args.footage else []
    profiles = {p: PROFILES[p].describe() for p in args.profiles}
    if args.json:
        print(json.dumps({"seed": args.seed, "profiles": profiles, "results": [r.row() for r in results],
                          "class_counts": [{"profile": r.profile, "scene": r.scene, "manual": dict(r.counts.manual),
                                            "tracked": dict(r.counts.tracked),
                                            "tracked_on_road_users": dict(r.counts.on_road_users)}
                                           for r in results],
                          "footage": footage}, indent=2))
        return 0
    print(f"seed {args.seed}; tracker: edge.track.ByteTracker, default TrackerConfig; match at IoU >= {MATCH_IOU}")
    print("\n".join(f"  {p:10} {d}" for p, d in profiles.items()) + "\n")
    print(format_metrics(results) + "\n")
    print("Class counts, tracked/manual (15-min bins do not apply: a scene is at most 1001 frames)")
    print(format_counts(results))
    for f in footage:
        print(f"\nOTC {f['clip']}, detector {f['model']} + tracker, 3 s: class, listed by hand, tracks")
        for c in (c for c in ROAD_USER_CLASSES if c in f["listed"] or c in f["tracked"]):
            print(f"  {c:10} {f['listed'].get(c, 0):3d} {f['tracked'].get(c, 0):3d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
