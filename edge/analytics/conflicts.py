"""Near-miss detection: TTC, DRAC and PET between nearby road users, one event per encounter, on evidence.

Every frame, road users on the ground plane within ``max_pair_distance_m`` of each other are paired
(a k-d tree query, so a busy scene costs pairs that are close, not all pairs). For each pair the 2-D
time to collision of their oriented footprints under constant velocity (a disc for pedestrians) and the
deceleration rate to avoid the crash are computed (``edge.analytics.surrogate``). An *encounter* is one
pair over the frames it stays close.

Evidence, because a false alarm keeps video (P3): a frame counts towards a conflict only when

* both road users are *mature* (tracked ``min_track_age_s``, velocity settled), *consistent* (no measurement
  failed the innovation gate within ``consistency_hold_s``) and located well enough
  (``position_std_m <= max_position_std_m``: small far-away boxes are uncertain by metres);
* TTC is at or below ``ttc_threshold_s``;
* the collision course holds with every footprint shrunk by ``gap_sigmas`` of its position standard
  deviation on each side: a gap, or a lateral overlap of two cars in adjacent lanes, that lies within the
  pair's uncertainty tells nothing (two boxes merging in an occlusion look like a collision course);
* the relative speed exceeds ``closing_sigmas`` combined velocity standard deviations (the TTC is not
  made of noise).

The encounter is a conflict when such frames follow each other without a break (an evaluated frame above
the threshold ends a run; a frame that cannot tell, or a missed detection shorter than ``_RUN_GAP_S``,
does not) for ``min_exposure_s`` and ``min_exposure_frames``: a time-exposed TTC (Minderhoud & Bovy 2001,
"Extended time-to-collision measures for road traffic safety assessment", AAP 33(1)) rather than one
frame's minimum. Footprints that overlap while such a run is under way are a *collision*.
A conflict found by PET alone (paths crossing at 30 deg or more, the later road user moving) needs both
tracks mature and consistent too.

An *impact* is a collision without that lead-up: a crash often comes within a second of the victim entering
the view, too soon for a mature track. It needs evidence of its own, physical rather than statistical: the
footprints touch (within ``gap_sigmas`` of their uncertainty, now or within ``_CONTACT_S``) while closing at
``impact_closing_speed_mps`` or more (and faster than ``closing_sigmas`` combined velocity standard
deviations), the faster road user (the striker) tracked for ``impact_min_track_age_s``, consistent and moving
faster than ``closing_sigmas`` of its own velocity uncertainty, both located within ``max_position_std_m``;
and then, within ``impact_confirm_s``, the striker's motion breaks: a measurement fails the innovation gate,
its track ends, or it has lost half its speed. Road users that only pass close by (adjacent lanes, a box
merge in an occlusion) keep their motion; a static false detection (a gantry sign seen as a bus) is far up
the image and so located by metres, not within one.

Measures on the event:

* ``ttc_s`` is the time to accident (TA) of the Swedish Traffic Conflict Technique (Hyden 1987; Laureshyn
  & Varhelyi 2018, *The Swedish Traffic Conflict Technique - Observer's manual*): the lowest evidenced TTC;
* ``conflicting_speed_mps`` (CS): the speed, at that moment, of the road user that braked hardest
  afterwards (the evasive one), or the faster one when neither braked;
* ``evasive_deceleration_mps2``: the largest speed drop rate of either road user after the run started,
  over at least ``_DECEL_MIN_S`` (evasive action; None when not measurable);
* ``time_exposed_s``: the longest evidenced run.

Severity follows the TCT's principle that the same TA is more serious at a higher conflicting speed: a
conflict is ``high`` (serious) when stopping from CS within TA needs more than
``serious_deceleration_mps2`` (``TA <= CS / (2 a)``) or when the footprints collided; otherwise ``medium``
when TA (or PET) is at most ``medium_ta_s``, else ``low``. This is an operationalisation of the TCT's
serious-conflict border, not a reading of its published diagram.

Definitions (DESIGN.md): TTC (Hayward 1972), PET (Allen et al. 1978), DRAC (Cooper & Ferguson 1976),
conflict types by heading angle as in FHWA SSAM v2 (Gettman et al. 2008): rear-end < 30 deg, crossing
> 85 deg, else angled (lane change).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from edge.analytics.kinematics import GroundKinematics, GroundTracks
from edge.analytics.surrogate import (
    REAR_END_MAX_ANGLE_DEG,
    Disc,
    Footprint,
    Footprints,
    conflict_type,
    drac_batch,
    drac_mps2,
    heading_angle_deg,
    pet_s,
    ttc_batch,
    ttc_s,
)
from edge.config import ConflictConfig
from edge.payloads import ConflictCounts
from edge.types import F64, ROAD_USER_CLASSES

PERSON = ROAD_USER_CLASSES.index("person")
VULNERABLE = frozenset(ROAD_USER_CLASSES.index(c) for c in ("person", "bicycle", "motorcycle"))
#: A missed detection (or a frame that cannot tell) shorter than this does not break a run of evidence.
_RUN_GAP_S: Final = 0.3
#: A deceleration is measured over at least this long (shorter spans are dominated by velocity noise).
_DECEL_MIN_S: Final = 0.3
#: A deceleration below this is not called evasive when choosing the conflicting speed's road user.
_EVASIVE_MIN_MPS2: Final = 1.0
#: Shrunk footprints keep at least this size (m): a point would never collide with a point.
_MIN_SIZE_M: Final = 0.1
#: Below this yaw rate (rad/s) a road user drives straight and the constant-velocity TTC is the whole test.
_YAW_STRAIGHT_RPS: Final = 0.05
#: Time step (s) of the constant-turn-rate check.
_TURN_STEP_S: Final = 0.05
#: Footprints that will touch within this time (s) are in contact (one frame at 10 fps).
_CONTACT_S: Final = 0.1
#: Road users farther apart than this (centre to centre, m) cannot touch (two buses end to end).
_CONTACT_RANGE_M: Final = 25.0
#: An impact's striker that keeps less than this part of its speed at contact has been stopped by it.
_IMPACT_SPEED_KEPT: Final = 0.5


@dataclass(frozen=True, slots=True)
class _Moment:
    """How a pair stood at one instant: the values an event reports."""

    t_s: float
    speeds: tuple[float, float]
    headings: tuple[tuple[float, float], tuple[float, float]]
    location: tuple[float, float]


@dataclass(frozen=True, slots=True)
class NearMiss:
    """One near-miss encounter. ``tracker_ids`` are internal (clip triggering); they never leave the device."""

    t_s: float
    ttc_s: float | None
    pet_s: float | None
    drac_mps2: float | None
    conflict_type: str
    severity: str
    classes: tuple[str, str]
    speeds_mps: tuple[float, float]
    vulnerable: bool
    location_m: tuple[float, float]
    tracker_ids: tuple[int, int]
    conflicting_speed_mps: float | None = None
    evasive_deceleration_mps2: float | None = None
    time_exposed_s: float = 0.0
    collision: bool = False


@dataclass(slots=True)
class _Encounter:
    a: int
    b: int
    classes: tuple[int, int]
    last_seen_t: float
    # the run of evidence under way
    run_start_t: float = math.nan
    run_last_t: float = math.nan
    run_frames: int = 0
    run_speeds: tuple[float, float] = (0.0, 0.0)
    # the best run so far, and the minimum evidenced TTC (the time to accident)
    exposed_s: float = 0.0
    qualified: bool = False
    collision: bool = False
    min_ttc: float = math.inf
    max_drac: float = 0.0
    at_min: _Moment | None = None  # the moment of the time to accident
    # an impact: a contact waiting for the striker's motion to break, then confirmed
    contact: _Moment | None = None
    striker: int = -1
    striker_speed: float = 0.0
    striker_clear: bool = True
    impact: _Moment | None = None
    decel: list[float] = field(default_factory=lambda: [0.0, 0.0])
    decel_measured: bool = False
    sizes: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 1.0), (1.0, 1.0))
    paths: list[F64] = field(default_factory=lambda: [np.zeros((0, 3)), np.zeros((0, 3))])


def tct_serious(ta_s: float, conflicting_speed_mps: float, deceleration_mps2: float) -> bool:
    """True when stopping from ``conflicting_speed_mps`` within ``ta_s`` needs more than ``deceleration_mps2``."""
    return ta_s <= conflicting_speed_mps / (2.0 * deceleration_mps2)


class ConflictDetector:
    """One camera's encounters. ``update`` once per frame after the ground kinematics."""

    def __init__(self, config: ConflictConfig, kinematics: GroundKinematics) -> None:
        self.config = config
        self.kinematics = kinematics
        self._encounters: dict[tuple[int, int], _Encounter] = {}
        self.pairs_evaluated = 0

    @property
    def open_encounters(self) -> int:
        return len(self._encounters)

    def update(self, ground: GroundTracks, ended_ids: tuple[int, ...] = ()) -> list[NearMiss]:
        t = ground.t_s
        self._evaluate(ground)
        self._contacts(ground)
        ended = set(ended_ids)
        self._confirm_impacts(ground, ended)
        events = []
        for key, enc in list(self._encounters.items()):
            if key[0] in ended or key[1] in ended or t - enc.last_seen_t > self.config.encounter_gap_s:
                del self._encounters[key]
                if (event := self._close(enc)) is not None:
                    events.append(event)
        return events

    def flush(self) -> list[NearMiss]:
        """Close every open encounter (end of stream)."""
        events = [e for enc in self._encounters.values() if (e := self._close(enc)) is not None]
        self._encounters.clear()
        return events

    # ----------------------------------------------------------------------------------------- per frame
    def _evaluate(self, g: GroundTracks) -> None:
        cfg = self.config
        person = g.class_id == PERSON
        usable = (g.valid & (np.isfinite(g.heading).all(axis=1) | person) & g.consistent
                  & (g.age_s >= cfg.min_track_age_s) & (g.position_std_m <= cfg.max_position_std_m))
        idx = np.flatnonzero(usable)
        if len(idx) < 2:
            return
        pairs = cKDTree(g.xy_m[idx]).query_pairs(cfg.max_pair_distance_m, output_type="ndarray")
        if len(pairs) == 0:
            return
        i, j = idx[pairs[:, 0]], idx[pairs[:, 1]]
        moving = (g.speed_mps[i] >= cfg.min_speed_mps) | (g.speed_mps[j] >= cfg.min_speed_mps)
        i, j = i[moving], j[moving]
        if len(i) == 0:
            return
        self.pairs_evaluated += len(i)
        ttc, drac = self._ttc(g, i, j, np.zeros(len(g)))
        # Evidence: the same TTC with every footprint shrunk by gap_sigmas of its position uncertainty per
        # side, so a collision course must hold even if both road users are that much smaller or farther
        # apart than estimated (a gap or a lateral overlap within the uncertainty tells nothing).
        sure, _ = self._ttc(g, i, j, cfg.gap_sigmas * g.position_std_m)
        rel = np.hypot(*(g.velocity_mps[i] - g.velocity_mps[j]).T)
        rel_std = np.hypot(g.velocity_std_mps[i], g.velocity_std_mps[j])
        tells = (sure >= 0) & (sure <= cfg.ttc_threshold_s) & (rel > cfg.closing_sigmas * rel_std)
        yaw = np.abs(g.yaw_rate_rps)
        turning = tells & ((yaw[i] > _YAW_STRAIGHT_RPS) | (yaw[j] > _YAW_STRAIGHT_RPS))
        if turning.any():  # a turning road user must collide on its arc too, not only on its tangent
            ti, tj = i[turning], j[turning]
            tells[turning] = _collides_turning(g, ti, tj, cfg.gap_sigmas * g.position_std_m, cfg.ttc_threshold_s)
        for k in range(len(i)):
            self._observe(g, int(i[k]), int(j[k]), float(ttc[k]), float(drac[k]), bool(tells[k]))

    def _contacts(self, g: GroundTracks) -> None:
        """Pairs whose footprints touch within their uncertainty while closing fast: impacts to confirm."""
        cfg = self.config
        self._follow_strikers(g)
        # a box cut by the image border is not where its road user stands, nor does its motion break there
        idx = np.flatnonzero((g.position_std_m <= cfg.max_position_std_m) & ~g.at_border)
        if len(idx) < 2:
            return
        pairs = cKDTree(g.xy_m[idx]).query_pairs(_CONTACT_RANGE_M, output_type="ndarray")
        if len(pairs) == 0:
            return
        i, j = idx[pairs[:, 0]], idx[pairs[:, 1]]
        striker = (g.consistent & (g.age_s >= cfg.impact_min_track_age_s)
                   & (g.speed_mps >= cfg.impact_closing_speed_mps)
                   & (g.speed_mps > cfg.closing_sigmas * g.velocity_std_mps))
        keep = striker[i] | striker[j]
        i, j = i[keep], j[keep]
        gap = g.xy_m[j] - g.xy_m[i]
        closing = (np.einsum("ij,ij->i", g.velocity_mps[i] - g.velocity_mps[j], gap)
                   / np.maximum(np.hypot(gap[:, 0], gap[:, 1]), 1e-9))
        rel_std = np.hypot(g.velocity_std_mps[i], g.velocity_std_mps[j])
        keep = (closing >= cfg.impact_closing_speed_mps) & (closing > cfg.closing_sigmas * rel_std)
        i, j = i[keep], j[keep]
        if len(i) == 0:
            return
        # a young track's heading is not known yet: its footprint points where it moves
        oriented = replace(g, heading=_headings_or_motion(g))
        ttc, _ = self._ttc(oriented, i, j, -cfg.gap_sigmas * g.position_std_m)
        for k in np.flatnonzero(ttc <= _CONTACT_S).tolist():
            enc, a, b = self._encounter(g, int(i[k]), int(j[k]))
            if enc.contact is None and enc.impact is None:
                s = a if striker[a] and (not striker[b] or g.speed_mps[a] >= g.speed_mps[b]) else b
                enc.contact = _moment(g, a, b)
                enc.striker, enc.striker_speed = int(g.tracker_id[s]), float(g.speed_mps[s])
                enc.striker_clear = True

    def _follow_strikers(self, g: GroundTracks) -> None:
        """Whether each pending contact's striker is, at its latest sighting, clear of the image border."""
        for enc in self._encounters.values():
            if enc.contact is not None and (row := g.index_of(enc.striker)) is not None:
                enc.striker_clear = not bool(g.at_border[row])

    def _confirm_impacts(self, g: GroundTracks, ended: set[int]) -> None:
        """A contact is an impact once the striker's motion breaks within ``impact_confirm_s``, clear of the
        image border (where a box is cut, its jumps and its end are those of the view, not of the road user)."""
        for enc in self._encounters.values():
            if enc.contact is None:
                continue
            if g.t_s - enc.contact.t_s > self.config.impact_confirm_s:
                enc.contact = None  # the striker drove on: a close pass, not a crash
                continue
            row = g.index_of(enc.striker)
            if row is None:
                broke = enc.striker in ended and enc.striker_clear
            else:
                broke = not g.at_border[row] and (not g.consistent[row]
                                                  or g.speed_mps[row] < _IMPACT_SPEED_KEPT * enc.striker_speed)
            if broke:
                enc.impact, enc.contact = enc.contact, None

    def _ttc(self, g: GroundTracks, i: npt.NDArray[np.int64], j: npt.NDArray[np.int64],
             shrink_m: F64) -> tuple[F64, F64]:
        """TTC and DRAC of pairs ``(i, j)`` with each footprint shrunk by ``shrink_m[row]`` per side."""
        horizon = self.config.horizon_s
        person = g.class_id == PERSON
        length = np.maximum(g.length_m - 2 * shrink_m, _MIN_SIZE_M)
        width = np.maximum(g.width_m - 2 * shrink_m, _MIN_SIZE_M)
        ttc = np.full(len(i), math.inf)
        drac = np.zeros(len(i))
        rect = ~(person[i] | person[j])
        if rect.any():
            ri, rj = i[rect], j[rect]
            a = Footprints(g.xy_m[ri], g.heading[ri], length[ri], width[ri])
            b = Footprints(g.xy_m[rj], g.heading[rj], length[rj], width[rj])
            ttc[rect] = ttc_batch(a, g.velocity_mps[ri], b, g.velocity_mps[rj], horizon)
            drac[rect] = drac_batch(a, g.velocity_mps[ri], b, g.velocity_mps[rj], horizon)
        for d in np.flatnonzero(~rect).tolist():
            ri, rj = int(i[d]), int(j[d])
            sa, sb = _shape(g, ri, length[ri], width[ri]), _shape(g, rj, length[rj], width[rj])
            va = (float(g.velocity_mps[ri, 0]), float(g.velocity_mps[ri, 1]))
            vb = (float(g.velocity_mps[rj, 0]), float(g.velocity_mps[rj, 1]))
            ttc[d] = ttc_s(sa, va, sb, vb, horizon)
            drac[d] = drac_mps2(sa, va, sb, vb, horizon)
        return ttc, drac

    def _encounter(self, g: GroundTracks, i: int, j: int) -> tuple[_Encounter, int, int]:
        """The open encounter of rows ``i`` and ``j`` (opened now if new), and the rows in its order."""
        a, b = int(g.tracker_id[i]), int(g.tracker_id[j])
        if a > b:
            a, b, i, j = b, a, j, i
        enc = self._encounters.get((a, b))
        if enc is None:
            enc = _Encounter(a, b, (int(g.class_id[i]), int(g.class_id[j])), g.t_s)
            self._encounters[(a, b)] = enc
        enc.last_seen_t = g.t_s
        return enc, i, j

    def _observe(self, g: GroundTracks, i: int, j: int, ttc: float, drac: float, tells: bool) -> None:
        cfg = self.config
        t = g.t_s
        enc, i, j = self._encounter(g, i, j)
        a, b = enc.a, enc.b
        enc.paths = [self.kinematics.history(a), self.kinematics.history(b)]
        enc.sizes = ((float(g.length_m[i]), float(g.width_m[i])), (float(g.length_m[j]), float(g.width_m[j])))
        speeds = (float(g.speed_mps[i]), float(g.speed_mps[j]))
        running = enc.run_frames > 0 and t - enc.run_last_t <= _RUN_GAP_S
        if ttc < 0:  # overlapping now: a collision if a run of evidence led here, else nothing to tell
            if running and enc.qualified:
                enc.collision = True
            return
        evidence = ttc <= cfg.ttc_threshold_s and tells
        if not evidence:
            if ttc > cfg.ttc_threshold_s or not running:
                enc.run_frames = 0  # an evaluated frame above the threshold ends the run
            return
        if not running:
            enc.run_start_t, enc.run_frames, enc.run_speeds = t, 0, speeds
        enc.run_last_t = t
        enc.run_frames += 1
        run_s = t - enc.run_start_t
        if run_s >= enc.exposed_s:
            enc.exposed_s = run_s
        if run_s >= cfg.min_exposure_s and enc.run_frames >= cfg.min_exposure_frames:
            enc.qualified = True
        if run_s >= _DECEL_MIN_S:
            for k in (0, 1):
                rate = (enc.run_speeds[k] - speeds[k]) / run_s
                enc.decel[k] = max(enc.decel[k], rate)
            enc.decel_measured = True
        if ttc < enc.min_ttc:
            enc.min_ttc = ttc
            enc.max_drac = max(enc.max_drac, drac)
            enc.at_min = _moment(g, i, j)

    def _close(self, enc: _Encounter) -> NearMiss | None:
        cfg = self.config
        ttc_hit = enc.qualified and enc.min_ttc <= cfg.ttc_threshold_s and enc.at_min is not None
        pet = None
        pa, pb = enc.paths
        if len(pa) >= 2 and len(pb) >= 2:
            pet = pet_s(pa, pb, size_a_m=_square_if_disc(enc.sizes[0], enc.classes[0]),
                        size_b_m=_square_if_disc(enc.sizes[1], enc.classes[1]))
        pet_hit = pet is not None and pet <= cfg.pet_threshold_s and self._pet_evidence(pa, pb)
        if not (ttc_hit or pet_hit or enc.impact is not None):
            return None
        decel = tuple(enc.decel) if ttc_hit and enc.decel_measured else None
        moment, severity, cs = self._severity(enc, ttc_hit, pet, decel)
        return NearMiss(
            t_s=moment.t_s,
            ttc_s=round(enc.min_ttc, 3) if ttc_hit else None,
            pet_s=round(pet, 3) if pet is not None else None,
            drac_mps2=round(enc.max_drac, 3) if ttc_hit and math.isfinite(enc.max_drac) else None,
            conflict_type=conflict_type(*moment.headings),
            severity=severity,
            classes=(ROAD_USER_CLASSES[enc.classes[0]], ROAD_USER_CLASSES[enc.classes[1]]),
            speeds_mps=(round(moment.speeds[0], 2), round(moment.speeds[1], 2)),
            vulnerable=bool(VULNERABLE & set(enc.classes)),
            location_m=(float(round(moment.location[0])), float(round(moment.location[1]))),
            tracker_ids=(enc.a, enc.b),
            conflicting_speed_mps=round(cs, 2) if cs is not None else None,
            evasive_deceleration_mps2=round(max(decel), 2) if decel is not None else None,
            time_exposed_s=round(enc.exposed_s, 3) if ttc_hit else 0.0,
            collision=enc.collision or enc.impact is not None,
        )

    def _severity(self, enc: _Encounter, ttc_hit: bool, pet: float | None,
                  decel: tuple[float, ...] | None) -> tuple[_Moment, str, float | None]:
        """The moment an event reports, its severity and its conflicting speed (TCT)."""
        cfg = self.config
        if ttc_hit and enc.at_min is not None:
            m, ta = enc.at_min, enc.min_ttc
            evasive = (int(np.argmax(decel)) if decel is not None and max(decel) >= _EVASIVE_MIN_MPS2
                       else int(np.argmax(m.speeds)))
            cs = m.speeds[evasive]
            serious = (enc.collision or enc.impact is not None
                       or tct_serious(ta, cs, cfg.serious_deceleration_mps2))
            return m, "high" if serious else "medium" if ta <= cfg.medium_ta_s else "low", cs
        if enc.impact is not None:  # a collision without a sustained lead-up: the striker's speed at contact
            return enc.impact, "high", enc.striker_speed
        pa, pb = enc.paths  # a PET-only conflict: where and how the paths crossed, from the last samples
        m = _Moment(enc.last_seen_t, (_path_speed(pa), _path_speed(pb)), (_path_heading(pa), _path_heading(pb)),
                    _path_meeting(pa, pb))
        return m, "medium" if pet is not None and pet <= cfg.medium_ta_s else "low", None

    def _pet_evidence(self, pa: F64, pb: F64) -> bool:
        """PET needs crossing paths (not one road user following another) and the later one moving."""
        cfg = self.config
        if heading_angle_deg(_path_heading(pa), _path_heading(pb)) < REAR_END_MAX_ANGLE_DEG:
            return False
        later = pa if pa[-1, 0] >= pb[-1, 0] else pb
        return _path_speed(later) >= cfg.min_speed_mps


def _collides_turning(g: GroundTracks, i: npt.NDArray[np.int64], j: npt.NDArray[np.int64], shrink_m: F64,
                      within_s: float) -> npt.NDArray[np.bool_]:
    """Whether pairs ``(i, j)`` overlap within ``within_s`` when each keeps its speed *and* its yaw rate.

    Constant turn rate and velocity (CTRV): a road user turning through a junction follows an arc, and its
    tangent may point at a car it will pass; a conflict must hold on the arc as well. Sampled every
    ``_TURN_STEP_S``; footprints (discs count as squares here) shrunk by ``shrink_m`` per side as in the
    constant-velocity test.
    """
    steps = np.arange(0.0, within_s + 1e-9, _TURN_STEP_S)
    poses = []
    for rows in (i, j):
        speed = g.speed_mps[rows]
        angle = np.arctan2(g.velocity_mps[rows, 1], g.velocity_mps[rows, 0])
        omega = g.yaw_rate_rps[rows]
        turn = np.abs(omega) > 1e-6
        theta = angle[None, :] + omega[None, :] * steps[:, None]  # (K, n)
        safe = np.where(turn, omega, 1.0)
        dx = np.where(turn, speed / safe * (np.sin(theta) - np.sin(angle)), speed * np.cos(angle) * steps[:, None])
        dy = np.where(turn, -speed / safe * (np.cos(theta) - np.cos(angle)), speed * np.sin(angle) * steps[:, None])
        xy = g.xy_m[rows][None, :, :] + np.stack([dx, dy], axis=-1)  # (K, n, 2)
        length = np.maximum(g.length_m[rows] - 2 * shrink_m[rows], _MIN_SIZE_M)
        width = np.maximum(g.width_m[rows] - 2 * shrink_m[rows], _MIN_SIZE_M)
        poses.append((xy, np.stack([np.cos(theta), np.sin(theta)], axis=-1), length, width))
    (xa, ha, la, wa), (xb, hb, lb, wb) = poses
    k, n = len(steps), len(i)
    a = Footprints(xa.reshape(-1, 2), ha.reshape(-1, 2), np.tile(la, k), np.tile(wa, k))
    b = Footprints(xb.reshape(-1, 2), hb.reshape(-1, 2), np.tile(lb, k), np.tile(wb, k))
    still = np.zeros((k * n, 2))
    overlap = ttc_batch(a, still, b, still) < 0  # at rest: -1 exactly when overlapping at that instant
    hit: npt.NDArray[np.bool_] = np.asarray(np.asarray(overlap).reshape(k, n).any(axis=0), dtype=bool)
    return hit


def _moment(g: GroundTracks, i: int, j: int) -> _Moment:
    mid = (g.xy_m[i] + g.xy_m[j]) / 2
    return _Moment(g.t_s, (float(g.speed_mps[i]), float(g.speed_mps[j])), (_heading(g, i), _heading(g, j)),
                   (float(mid[0]), float(mid[1])))


def _headings_or_motion(g: GroundTracks) -> F64:
    """Each track's heading; where it is not known yet, the direction it moves in (else along x)."""
    heading = g.heading.copy()
    unknown = ~np.isfinite(heading).all(axis=1)
    v = g.velocity_mps[unknown]
    speed = np.hypot(v[:, 0], v[:, 1])[:, None]
    heading[unknown] = np.where(speed > 0, v / np.maximum(speed, 1e-12), [1.0, 0.0])
    return heading


def _shape(g: GroundTracks, row: int, length_m: float, width_m: float) -> Footprint | Disc:
    x, y = float(g.xy_m[row, 0]), float(g.xy_m[row, 1])
    if g.class_id[row] == PERSON:
        return Disc(x, y, float(width_m) / 2)
    hx, hy = float(g.heading[row, 0]), float(g.heading[row, 1])
    return Footprint(x, y, hx, hy, float(length_m), float(width_m))


def _heading(g: GroundTracks, row: int) -> tuple[float, float]:
    h = g.heading[row]
    if np.isfinite(h).all():
        return float(h[0]), float(h[1])
    v = g.velocity_mps[row]
    n = math.hypot(float(v[0]), float(v[1]))
    return (float(v[0]) / n, float(v[1]) / n) if n > 0 else (1.0, 0.0)


def _square_if_disc(size: tuple[float, float], class_id: int) -> tuple[float, float]:
    return (size[1], size[1]) if class_id == PERSON else size


def _path_speed(path: F64) -> float:
    if len(path) < 2:
        return 0.0
    d = path[-1] - path[max(0, len(path) - 5)]
    return float(math.hypot(d[1], d[2]) / d[0]) if d[0] > 0 else 0.0


def _path_heading(path: F64) -> tuple[float, float]:
    if len(path) < 2:
        return (1.0, 0.0)
    d = path[-1, 1:] - path[0, 1:]
    n = math.hypot(float(d[0]), float(d[1]))
    return (float(d[0]) / n, float(d[1]) / n) if n > 0 else (1.0, 0.0)


def _path_meeting(pa: F64, pb: F64) -> tuple[float, float]:
    """The closest pair of observed points of the two paths (where they crossed, within sampling)."""
    d = np.hypot(pa[:, None, 1] - pb[None, :, 1], pa[:, None, 2] - pb[None, :, 2])
    flat = int(np.argmin(d))
    ia, ib = divmod(flat, d.shape[1])
    return (float(pa[ia, 1] + pb[ib, 1]) / 2, float(pa[ia, 2] + pb[ib, 2]) / 2)


class ConflictAggregator:
    """Near-misses per window by type and severity, against the motor vehicles that entered."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._by_type: dict[str, dict[str, int]] = {
            t: {"high": 0, "medium": 0, "low": 0} for t in ("rear_end", "crossing", "angled")
        }
        self._vulnerable = 0
        self._entering = 0

    def add(self, events: list[NearMiss], vehicles_entering: int) -> None:
        self._entering += vehicles_entering
        for e in events:
            self._by_type[e.conflict_type][e.severity] += 1
            self._vulnerable += int(e.vulnerable)

    def close(self) -> ConflictCounts:
        total = sum(sum(v.values()) for v in self._by_type.values())
        out = ConflictCounts(
            by_type=self._by_type,
            vulnerable=self._vulnerable,
            vehicles_entering=self._entering,
            per_1000_vehicles=round(1000 * total / self._entering, 2) if self._entering else None,
        )
        self._reset()
        return out
