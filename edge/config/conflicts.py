"""Near-miss thresholds of a camera (``conflicts``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from edge.config.base import StrictModel


class ConflictConfig(StrictModel):
    """Near-miss detection between road users on the ground plane (needs a calibration).

    A near-miss needs evidence (see ``edge.analytics.conflicts``): mature, consistent tracks, a TTC at or
    below the threshold held for ``min_exposure_s``, a gap larger than the pair's position uncertainty and
    a closing speed larger than its velocity uncertainty. Every false alarm keeps video (P3).
    """

    ttc_threshold_s: float = Field(
        1.5, gt=0, le=10,
        description="TTC at or below this, held for min_exposure_s, makes an encounter a near-miss (FHWA SSAM "
        "default 1.5 s).",
    )
    pet_threshold_s: float = Field(
        1.5, gt=0, le=10,
        description="Paths crossing (not following) with a post-encroachment time at or below this: near-miss.",
    )
    min_exposure_s: float = Field(
        0.3, ge=0, le=5,
        description="The TTC must stay at or below the threshold this long without a break (a time-exposed "
        "TTC). Raising it drops short noise-driven dips but also brief real conflicts.",
    )
    min_exposure_frames: int = Field(
        3, ge=1, le=100, description="... and over at least this many evaluated frames (for low frame rates)."
    )
    min_track_age_s: float = Field(
        1.0, ge=0, le=30,
        description="Both road users must have been tracked this long (a new track's velocity is its guess).",
    )
    max_position_std_m: float = Field(
        1.0, gt=0, le=20,
        description="Road users whose position is more uncertain than this (one standard deviation, metres: "
        "small far-away boxes) take part in no conflict.",
    )
    gap_sigmas: float = Field(
        1.0, ge=0, le=10,
        description="A frame counts as evidence only when the collision course holds with each footprint shrunk "
        "by this many of its position standard deviations per side: a gap or an overlap within the pair's "
        "uncertainty tells nothing (a merge of boxes looks the same).",
    )
    closing_sigmas: float = Field(
        2.0, ge=0, le=10,
        description="... and when the relative speed exceeds this many combined velocity standard deviations.",
    )
    serious_deceleration_mps2: float = Field(
        4.0, gt=0, le=15,
        description="Severity after the Swedish Traffic Conflict Technique (Hyden 1987): a conflict is serious "
        "('high') when stopping from the conflicting speed within the time to accident needs more than this "
        "deceleration, i.e. TA <= speed / (2 x this); the border rises with speed as the TCT's does.",
    )
    medium_ta_s: float = Field(
        1.0, gt=0, le=10,
        description="A conflict that is not serious is 'medium' when its time to accident (or PET) is at or "
        "below this, else 'low'.",
    )
    horizon_s: float = Field(5.0, gt=0, le=30, description="TTC looks this far ahead under constant velocity.")
    max_pair_distance_m: float = Field(
        30.0, gt=0, le=200,
        description="Only road users this close are paired (spatial pruning keeps busy scenes cheap).",
    )
    min_speed_mps: float = Field(
        1.0, ge=0, le=20, description="At least one road user of a pair must move this fast to be a conflict."
    )
    encounter_gap_s: float = Field(
        1.0, gt=0, le=10, description="An encounter ends when the pair has not been close for this long."
    )
    impact_closing_speed_mps: float = Field(
        5.0, gt=0, le=50,
        description="A collision seen without a sustained lead-up (a road user that enters the view just before "
        "the crash): footprints touching within gap_sigmas of their uncertainty while closing at least this fast "
        "(and faster than closing_sigmas velocity standard deviations), ...",
    )
    impact_min_track_age_s: float = Field(
        0.3, ge=0, le=30,
        description="... the faster road user tracked at least this long, located within max_position_std_m, ...",
    )
    impact_confirm_s: float = Field(
        0.5, gt=0, le=5,
        description="... and within this time after the contact its motion breaks: a measurement fails the "
        "innovation gate, the track ends, or it loses half its speed. Passing close by does none of these.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ConflictConfig:
        if self.medium_ta_s > max(self.ttc_threshold_s, self.pet_threshold_s):
            raise ValueError("medium_ta_s must not exceed the TTC and PET thresholds")
        return self
