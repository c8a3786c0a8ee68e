"""Motion gating: a cheap test of whether a frame can change anything the detector would find.

The frame is shrunk to a small grey copy and compared with the previous one; if fewer than
``min_changed_frac`` of its pixels changed by more than ``pixel_threshold`` grey levels, nothing moves
and detection can be skipped (the tracker coasts). Every ``max_skipped_frames`` the detector runs anyway,
so a road user that appeared without visible motion is still found.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from edge.config import MotionGatingConfig


class MotionGate:
    def __init__(self, config: MotionGatingConfig) -> None:
        self.config = config
        self._previous: npt.NDArray[np.uint8] | None = None
        self._skipped = 0
        self.skipped_total = 0

    def needs_detection(self, image: npt.NDArray[np.uint8]) -> bool:
        """True when this frame should go through the detector; always updates the reference frame."""
        h, w = image.shape[:2]
        width = self.config.width_px
        small = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
        grey = np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), np.uint8)
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape or self._skipped >= self.config.max_skipped_frames:
            self._skipped = 0
            return True
        changed = np.count_nonzero(cv2.absdiff(grey, previous) > self.config.pixel_threshold)
        if changed >= self.config.min_changed_frac * grey.size:
            self._skipped = 0
            return True
        self._skipped += 1
        self.skipped_total += 1
        return False
