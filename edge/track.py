"""Multi-object tracking: ByteTrack-style two-stage association over a constant-velocity Kalman filter.

Algorithm after ByteTrack (Y. Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every
Detection Box", ECCV 2022), whose Kalman filter follows DeepSORT (Wojke et al. 2017). Each frame:

1. Predict every track one frame ahead (batched over all tracks).
2. Match high-score detections (``score >= track_activation_threshold``) to confirmed tracks, tracked or
   lost, by IoU (cost ``1 - IoU``, pairs below ``minimum_matching_iou`` never match).
3. Match low-score detections (``low_score_threshold <= score < track_activation_threshold``) to the
   confirmed tracks still unmatched that were tracked on the previous frame. Low-score boxes are often
   occluded road users: they keep a track alive but never start one.
4. Match tentative tracks to the high-score detections left over; unmatched tentative tracks are deleted.
   Leftover high-score detections start new tentative tracks.

A tentative track is confirmed, gets an id and is reported after ``minimum_consecutive_frames`` matches in
a row. A confirmed track that goes unmatched is *lost*; it is still predicted and may be matched again by a
high-score detection, and it ends after more than ``lost_track_buffer_frames`` frames without a match.

Memory is bounded: all per-track state lives in a few parallel arrays with one row per live track, and a
row is dropped as soon as its track ends. There is no removed-track list and no per-track history.
Ids are owned by one ``ByteTracker`` instance, so several cameras can be tracked in one process.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

import numpy as np
import numpy.typing as npt

# scipy ships no type information; the scipy-stubs dev extra provides it where installed.
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped, unused-ignore]

from edge.config import TrackerConfig
from edge.types import ROAD_USER_CLASSES, BoolArray, Detections, FloatArray, IntArray, Tracks

F64Array = npt.NDArray[np.float64]

#: Process and measurement noise relative to the box height, as in ByteTrack/DeepSORT: position noise is
#: 1/20 of the height per frame, velocity noise 1/160.
STD_WEIGHT_POSITION: Final = 1.0 / 20
STD_WEIGHT_VELOCITY: Final = 1.0 / 160

_N_CLASSES: Final = len(ROAD_USER_CLASSES)
#: Buffered-IoU widening of tentative tracks and detections per frame elapsed beyond one (stride, gating).
TENTATIVE_BUFFER_PER_FRAME: Final = 0.3
# Cost given to pairs below the IoU gate. Far above any real cost (``1 - IoU <= 1``), so the assignment
# first maximises the number of pairs that pass the gate; gated pairs it still returns are discarded.
_GATED_COST: Final = 1e6


def _constant(values: list[float]) -> F64Array:
    arr = np.array(values, np.float64)
    arr.flags.writeable = False
    return arr


# Standard deviations as ``height * weight + floor`` per state component (cx, cy, a, h, vcx, vcy, va, vh).
_WP, _WV = STD_WEIGHT_POSITION, STD_WEIGHT_VELOCITY
_INIT_STD_WEIGHT: Final = _constant([2 * _WP, 2 * _WP, 0, 2 * _WP, 10 * _WV, 10 * _WV, 0, 10 * _WV])
_INIT_STD_FLOOR: Final = _constant([0, 0, 1e-2, 0, 0, 0, 1e-5, 0])
_PROCESS_STD_WEIGHT: Final = _constant([_WP, _WP, 0, _WP, _WV, _WV, 0, _WV])
_PROCESS_STD_FLOOR: Final = _INIT_STD_FLOOR
_MEASURE_STD_WEIGHT: Final = _constant([_WP, _WP, 0, _WP])
_MEASURE_STD_FLOOR: Final = _constant([0, 0, 1e-1, 0])
_EYE8: Final = np.eye(8, dtype=np.bool_)
_EYE8.flags.writeable = False
_EYE4: Final = np.eye(4, dtype=np.bool_)
_EYE4.flags.writeable = False


# ------------------------------------------------------------------------------------------ Kalman filter
# State per track: (cx, cy, a, h, vcx, vcy, va, vh): box centre px, aspect ratio w/h, height px, and their
# velocities per frame. Measurement: (cx, cy, a, h). Constant-velocity model with one-frame steps, after
# ByteTrack's ``yolox/tracker/kalman_filter.py`` (Zhang et al. 2022), itself DeepSORT's filter.


def xyxy_to_cxcyah(xyxy: F64Array) -> F64Array:
    """Boxes ``(N,4)`` as ``(x1, y1, x2, y2)`` to measurements ``(N,4)`` as ``(cx, cy, w/h, h)``."""
    wh = xyxy[:, 2:] - xyxy[:, :2]
    out = np.empty((len(xyxy), 4))
    out[:, :2] = xyxy[:, :2] + wh / 2
    out[:, 2] = wh[:, 0] / wh[:, 1]
    out[:, 3] = wh[:, 1]
    return out


def cxcyah_to_xyxy(state: F64Array) -> F64Array:
    """The first four state columns ``(cx, cy, w/h, h)`` of ``(N,>=4)`` to boxes ``(N,4)`` ``xyxy``."""
    wh = np.empty((len(state), 2))
    wh[:, 0] = state[:, 2] * state[:, 3]
    wh[:, 1] = state[:, 3]
    out = np.empty((len(state), 4))
    out[:, :2] = state[:, :2] - wh / 2
    out[:, 2:] = out[:, :2] + wh
    return out


def kalman_initiate(measurement: F64Array) -> tuple[F64Array, F64Array]:
    """Start tracks from unassociated measurements ``(N,4)``: mean ``(N,8)``, covariance ``(N,8,8)``.

    Velocities start at zero with a large uncertainty (ByteTrack, Zhang et al. 2022).
    """
    n = len(measurement)
    mean = np.zeros((n, 8))
    mean[:, :4] = measurement
    std = measurement[:, 3:4] * _INIT_STD_WEIGHT + _INIT_STD_FLOOR
    cov = np.zeros((n, 8, 8))
    cov[:, _EYE8] = std**2
    return mean, cov


def kalman_predict(mean: F64Array, cov: F64Array) -> None:
    """Advance all tracks one frame, in place: mean ``(N,8)``, covariance ``(N,8,8)``.

    Motion ``x' = F x`` with ``F = [[I, I], [0, I]]``; process noise scales with the box height
    (ByteTrack's ``multi_predict``, Zhang et al. 2022).
    """
    std = mean[:, 3:4] * _PROCESS_STD_WEIGHT + _PROCESS_STD_FLOOR
    mean[:, :4] += mean[:, 4:]
    # F P F^T written out in 4x4 blocks: [[A, B], [C, D]] -> [[A+B+C+D, B+D], [C+D, D]].
    cov[:, :4, :] += cov[:, 4:, :]
    cov[:, :, :4] += cov[:, :, 4:]
    cov[:, _EYE8] += std**2


def kalman_update(mean: F64Array, cov: F64Array, measurement: F64Array) -> tuple[F64Array, F64Array]:
    """Correct predicted states ``(K,8)``/``(K,8,8)`` with measurements ``(K,4)``; returns new arrays.

    Measurement noise scales with the predicted height (ByteTrack's ``project``, Zhang et al. 2022).
    """
    std = mean[:, 3:4] * _MEASURE_STD_WEIGHT + _MEASURE_STD_FLOOR
    innovation_cov = cov[:, :4, :4].copy()
    innovation_cov[:, _EYE4] += std**2
    # Gain K = P H^T S^-1. S is symmetric, so K^T = S^-1 (H P) and one batched solve gives it.
    gain = np.linalg.solve(innovation_cov, cov[:, :4, :]).transpose(0, 2, 1)
    innovation = measurement - mean[:, :4]
    new_mean = mean + np.matmul(gain, innovation[:, :, None])[:, :, 0]
    # P - K S K^T == P - K H P
    new_cov = cov - np.matmul(gain, cov[:, :4, :])
    return new_mean, new_cov


# ------------------------------------------------------------------------------------------ association
def box_iou(a: F64Array, b: F64Array) -> F64Array:
    """Pairwise IoU ``(N,M)`` of boxes ``a (N,4)`` and ``b (M,4)`` in ``xyxy``; degenerate boxes give 0."""
    ax1, ay1, ax2, ay2 = a.T[:, :, None]
    bx1, by1, bx2, by2 = b.T
    inter_w = np.minimum(ax2, bx2) - np.maximum(ax1, bx1)
    inter_h = np.minimum(ay2, by2) - np.maximum(ay1, by1)
    np.maximum(inter_w, 0.0, out=inter_w)
    np.maximum(inter_h, 0.0, out=inter_h)
    inter = inter_w * inter_h
    area_a = np.maximum(ax2 - ax1, 0.0) * np.maximum(ay2 - ay1, 0.0)
    area_b = np.maximum(bx2 - bx1, 0.0) * np.maximum(by2 - by1, 0.0)
    union = area_a + area_b - inter
    result: F64Array = inter / np.maximum(union, 1e-9)
    return result


def _buffered(xyxy: F64Array, frac: float) -> F64Array:
    """Boxes ``(N,4)`` widened on every side by ``frac`` of their own width and height."""
    pad = np.tile((xyxy[:, 2:] - xyxy[:, :2]) * frac, 2)
    pad[:, :2] *= -1
    out: F64Array = xyxy + pad
    return out


def match_iou(iou: F64Array, minimum_iou: float) -> tuple[IntArray, IntArray]:
    """Optimal one-to-one matching on cost ``1 - IoU``; returns row and column indices of kept pairs.

    Pairs with ``IoU < minimum_iou`` are never returned. Deterministic for a given matrix.
    """
    ok = iou >= minimum_iou
    if not ok.any():
        empty = np.zeros((0,), np.int64)
        return empty, empty
    cost = np.where(ok, 1.0 - iou, _GATED_COST)
    rows, cols = linear_sum_assignment(cost)
    keep = ok[rows, cols]
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


# ------------------------------------------------------------------------------------------ track store
@dataclass(slots=True)
class _TrackStore:
    """Per-track state as parallel arrays, one row per live track (tentative, tracked or lost).

    Every field is an array whose first axis is the track; ``take`` and ``extend`` keep them aligned.
    """

    tracker_id: IntArray  # (N,) 0 while tentative; ids are given on confirmation
    mean: F64Array  # (N,8) Kalman state
    cov: F64Array  # (N,8,8) Kalman covariance
    confirmed: BoolArray  # (N,)
    hits: IntArray  # (N,) consecutive matched frames (decides confirmation)
    misses: IntArray  # (N,) frames since the last match; 0 = tracked, > 0 = lost
    class_votes: F64Array  # (N, len(ROAD_USER_CLASSES)) summed detection confidence per class
    origin: F64Array  # (N,4) the first detection box: where the road user was first seen
    last: F64Array  # (N,4) the latest matched detection box
    previous: F64Array  # (N,4) the matched detection box before ``last`` (``origin`` after one match)

    @classmethod
    def new(cls, mean: F64Array, cov: F64Array, class_votes: F64Array, origin: F64Array) -> _TrackStore:
        """Tentative tracks with one match each."""
        n = len(mean)
        return cls(
            np.zeros(n, np.int64),
            mean,
            cov,
            np.zeros(n, np.bool_),
            np.ones(n, np.int64),
            np.zeros(n, np.int64),
            class_votes,
            origin,
            origin.copy(),
            origin.copy(),
        )

    def __len__(self) -> int:
        return len(self.tracker_id)

    def take(self, rows: BoolArray) -> _TrackStore:
        return _TrackStore(*(getattr(self, name)[rows] for name in _STORE_FIELDS))

    def extend(self, other: _TrackStore) -> _TrackStore:
        return _TrackStore(*(np.concatenate([getattr(self, name), getattr(other, name)]) for name in _STORE_FIELDS))

    def container_lengths(self) -> dict[str, int]:
        """Length of every per-track container; all equal the number of live tracks."""
        return {name: len(getattr(self, name)) for name in _STORE_FIELDS}


_STORE_FIELDS: Final = tuple(f.name for f in fields(_TrackStore))


def _empty_store() -> _TrackStore:
    return _TrackStore.new(np.zeros((0, 8)), np.zeros((0, 8, 8)), np.zeros((0, _N_CLASSES)), np.zeros((0, 4)))


def _rows(mask: BoolArray) -> IntArray:
    """Indices where a 1-D mask is true (``np.flatnonzero`` without its ravel)."""
    return mask.nonzero()[0]


def _assign(iou: F64Array, rows: IntArray, cols: IntArray, minimum_iou: float) -> tuple[IntArray, IntArray]:
    """Match tracks ``rows`` to detections ``cols`` of a full IoU matrix; returns matched rows and cols."""
    if not len(rows) or not len(cols):
        return rows[:0], cols[:0]
    r, c = match_iou(iou[rows][:, cols], minimum_iou)
    return rows[r], cols[c]


# -------------------------------------------------------------------------------------------- tracker
class ByteTracker:
    """ByteTrack-style multi-object tracker (Zhang et al., ECCV 2022) with per-instance ids.

    Feed it every frame's detections in order with ``update``; it returns the confirmed tracks matched on
    that frame. Ids start at 1, increase by one per confirmed track and are never shared between
    instances. Same detections in the same order give the same tracks.
    """

    def __init__(self, config: TrackerConfig) -> None:
        self._config = config
        self._store = _empty_store()
        #: Next id to give a confirmed track. Owned by this instance only.
        self._next_id = 1
        #: Frames since the previous ``update``: 1 plus the frames coasted in between.
        self._gap = 1

    @property
    def active_track_count(self) -> int:
        """Live tracks of every state: tracked, lost and tentative."""
        return len(self._store)

    def container_lengths(self) -> dict[str, int]:
        """Length of each internal per-track container (for memory-bound checks)."""
        return self._store.container_lengths()

    def reset(self) -> tuple[int, ...]:
        """Drop every track and restart ids at 1, as if new.

        Returns the ids of the confirmed tracks dropped, so that per-track state elsewhere can be freed.
        """
        dropped = tuple(np.sort(self._store.tracker_id[self._store.confirmed]).tolist())
        self._store = _empty_store()
        self._next_id = 1
        self._gap = 1
        return dropped

    def coast(self) -> Tracks:
        """Advance one frame on which detection was skipped (stride, or motion gating saw nothing move).

        Every track's Kalman state is predicted one frame ahead, but no track counts a miss: a skipped frame
        is not evidence that a road user left. Returns no tracks (nothing was observed).
        """
        store = self._store
        if len(store):
            store.mean[store.misses > 0, 7] = 0.0
            kalman_predict(store.mean, store.cov)
        self._gap += 1
        return Tracks.empty()

    def update(self, detections: Detections) -> Tracks:
        """Associate one frame's detections and return the confirmed tracks matched on it.

        ``Tracks.xyxy`` and ``confidence`` are the matched detection's; ``class_id`` is the track's
        confidence-weighted majority class so far; rows are sorted by ``tracker_id``. ``ended_ids`` lists
        confirmed tracks that ended on this frame (sorted). Detections with a non-finite or empty box or a
        score below ``low_score_threshold`` are ignored.

        Raises ``ValueError`` if a ``class_id`` is outside ``ROAD_USER_CLASSES``.
        """
        cfg = self._config
        store = self._store
        gap, self._gap = self._gap, 1
        class_id = detections.class_id
        if len(class_id) and (class_id.min() < 0 or class_id.max() >= _N_CLASSES):
            bad = int(class_id.max() if class_id.max() >= _N_CLASSES else class_id.min())
            raise ValueError(
                f"class_id must be in [0, {_N_CLASSES}) (an index into ROAD_USER_CLASSES), got {bad}; "
                "map detector classes to road-user classes before tracking"
            )

        # 1. Predict. Lost tracks stop growing or shrinking (ByteTrack zeroes their height velocity).
        if len(store):
            store.mean[store.misses > 0, 7] = 0.0
            kalman_predict(store.mean, store.cov)

        # Usable detections: finite, non-empty box, score at least the low threshold. ``cand`` indexes them.
        boxes = detections.xyxy.astype(np.float64)
        score = detections.confidence
        wh = boxes[:, 2:] - boxes[:, :2]
        # Thresholds are compared in the scores' float32, so that a score of 0.7 passes a threshold of 0.7.
        usable = (np.isfinite(wh) & (wh > 0)).all(axis=1) & (score >= score.dtype.type(cfg.low_score_threshold))
        cand = _rows(usable)
        high = score[cand] >= score.dtype.type(cfg.track_activation_threshold)
        iou = box_iou(cxcyah_to_xyxy(store.mean), boxes[cand])
        min_iou = cfg.minimum_matching_iou
        confirmed = store.confirmed

        # 2. High-score detections against confirmed tracks, tracked and lost.
        t1, c1 = _assign(iou, _rows(confirmed), _rows(high), min_iou)
        # 3. Low-score detections against confirmed tracks left that were tracked on the previous frame.
        tracked_left = confirmed & (store.misses == 0)
        tracked_left[t1] = False
        t2, c2 = _assign(iou, _rows(tracked_left), _rows(~high), min_iou)
        # 4. Tentative tracks against high-score detections left; the rest of those start new tracks.
        # A tentative track has no velocity yet, so its prediction stays where it was last seen: both boxes
        # are widened in proportion to the frames elapsed (buffered IoU, Yang et al., WACV 2023).
        high_left = high.copy()
        high_left[c1] = False
        b = TENTATIVE_BUFFER_PER_FRAME * (gap - 1)  # 0 on consecutive frames: the plain IoU above
        iou_t = iou if b == 0 else box_iou(_buffered(cxcyah_to_xyxy(store.mean), b), _buffered(boxes[cand], b))
        t3, c3 = _assign(iou_t, _rows(~confirmed), _rows(high_left), min_iou)
        high_left[c3] = False
        new_det = cand[high_left]

        matched_t = np.concatenate([t1, t2, t3])
        matched_d = cand[np.concatenate([c1, c2, c3])]
        det_of_row = np.full(len(store), -1, np.int64)
        det_of_row[matched_t] = matched_d

        if len(matched_t):
            store.mean[matched_t], store.cov[matched_t] = kalman_update(
                store.mean[matched_t], store.cov[matched_t], xyxy_to_cxcyah(boxes[matched_d])
            )
            store.class_votes[matched_t, class_id[matched_d]] += score[matched_d]
            store.previous[matched_t] = store.last[matched_t]
            store.last[matched_t] = boxes[matched_d]
        store.misses += gap
        store.misses[matched_t] = 0
        store.hits[matched_t] += 1
        store.hits[store.misses > 0] = 0

        # Tentative tracks that missed a frame are deleted; lost tracks past the buffer end.
        ended = confirmed & (store.misses > cfg.lost_track_buffer_frames)
        keep = np.where(confirmed, ~ended, store.misses == 0)
        ended_ids = tuple(np.sort(store.tracker_id[ended]).tolist())
        if not keep.all():
            store = store.take(keep)
            det_of_row = det_of_row[keep]

        if len(new_det):
            mean, cov = kalman_initiate(xyxy_to_cxcyah(boxes[new_det]))
            votes = np.zeros((len(new_det), _N_CLASSES))
            votes[np.arange(len(new_det)), class_id[new_det]] = score[new_det]
            store = store.extend(_TrackStore.new(mean, cov, votes, boxes[new_det]))
            det_of_row = np.concatenate([det_of_row, new_det])

        # Confirm tentative tracks with enough consecutive matches; ids go in row (= creation) order.
        promote = ~store.confirmed & (store.hits >= cfg.minimum_consecutive_frames)
        n_promote = int(np.count_nonzero(promote))
        if n_promote:
            store.tracker_id[promote] = np.arange(self._next_id, self._next_id + n_promote)
            store.confirmed[promote] = True
            self._next_id += n_promote
        self._store = store

        out = _rows(store.confirmed & (det_of_row >= 0))
        if not len(out):
            return Tracks.empty(ended_ids)
        out = out[np.argsort(store.tracker_id[out])]
        det = det_of_row[out]
        xyxy: FloatArray = detections.xyxy[det].astype(np.float32)
        confidence: FloatArray = detections.confidence[det].astype(np.float32)
        majority: IntArray = store.class_votes[out].argmax(axis=1).astype(np.int64)
        origin: FloatArray = store.origin[out].astype(np.float32)
        previous: FloatArray = store.previous[out].astype(np.float32)
        return Tracks(xyxy, confidence, majority, store.tracker_id[out].copy(), ended_ids, origin, previous)
