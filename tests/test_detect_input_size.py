"""Automatic input size (issue 13 item 5): a dynamic model with no ``detector.input_size_px`` fits its input to
the first frame at the scale of its manifest size, without the letterbox's padding rows (what
config/carpark-1080p.yaml sets by hand); a configured size and a fixed-input model are left alone."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest

from edge.config import DetectorConfig
from edge.detect import Detector, auto_input_size
from edge.models import load_manifest
from edge.types import analysis_size
from tests.conftest import shared_path


@pytest.mark.parametrize(("frame", "expected"), [
    ((1920, 1080), (416, 256)),  # 416x234 of picture: 22 padding rows instead of 182
    ((480, 270), (416, 256)),    # the analysis copy of a 1080p camera, which is what the detector sees
    ((1280, 720), (416, 256)),
    ((800, 600), (416, 320)),    # 4:3: 416x312
    ((320, 240), (416, 320)),    # small frames are scaled up as the square input does
    ((1080, 1920), (256, 416)),  # portrait
    ((416, 416), (416, 416)),
    ((1920, 1200), (416, 288)),  # 16:10: 416x260
])
def test_the_smallest_input_at_the_default_scale(frame: tuple[int, int], expected: tuple[int, int]) -> None:
    assert auto_input_size(frame, (416, 416)) == expected


def test_the_scale_is_the_default_inputs() -> None:
    # a non-square default keeps its own letterbox scale: 1920x1080 into 640x384 is scaled by 1/3 (640x360)
    assert auto_input_size((1920, 1080), (640, 384)) == (640, 384)
    assert auto_input_size((800, 600), (640, 384)) == (512, 384)
    for frame in [(1920, 1080), (800, 600), (1080, 1920), (333, 777)]:
        w, h = auto_input_size(frame, (416, 416))
        assert w % 32 == 0 and h % 32 == 0 and max(w, h) == 416
        # the frame fits without being scaled below the default's scale, and one stride less would not hold it
        scale = 416 / max(frame)
        assert w >= frame[0] * scale - 1e-9 and h >= frame[1] * scale - 1e-9
        assert w - 32 < frame[0] * scale and h - 32 < frame[1] * scale


def test_the_manifest_gives_the_dynamic_model_the_weights_scale() -> None:
    entry = load_manifest().get("yolox-nano-dynamic")
    assert entry.dynamic_input and entry.input_size_px == (416, 416)


def test_a_dynamic_model_picks_416x256_on_a_1080p_frame(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    det = Detector(DetectorConfig(model="yolox-nano-dynamic", model_dir=model_dir))
    # before a frame: the manifest's size, which makes the same analysis copies as the size it will pick
    assert analysis_size((1920, 1080), det.input_size_px) == analysis_size((1920, 1080), (416, 256)) == (480, 270)
    with caplog.at_level(logging.INFO, logger="edge.detect"):
        blob, box = det.letterbox(np.zeros((1080, 1920, 3), np.uint8))
    assert blob.shape == (1, 3, 256, 416) and det.input_size_px == (416, 256)
    assert box.scale == pytest.approx(416 / 1920)
    assert "input 416x256 for 1920x1080 frames (automatic" in caplog.text
    assert len(det(np.zeros((270, 480, 3), np.uint8))) == 0 and det.input_size_px == (416, 256)
    det(np.zeros((600, 800, 3), np.uint8))  # a source whose size changes (a camera reconfigured) is refitted
    assert det.input_size_px == (416, 320)


def test_a_configured_size_and_a_fixed_model_are_kept(model_dir: Path) -> None:
    frame = np.zeros((1080, 1920, 3), np.uint8)
    configured = Detector(DetectorConfig(model="yolox-nano-dynamic", model_dir=model_dir, input_size_px=(640, 384)))
    assert configured.letterbox(frame)[0].shape == (1, 3, 384, 640) and configured.input_size_px == (640, 384)
    fixed = Detector(DetectorConfig(model="yolox-nano-416", model_dir=model_dir))
    assert fixed.letterbox(frame)[0].shape == (1, 3, 416, 416) and fixed.input_size_px == (416, 416)


def test_the_automatic_size_finds_what_the_hand_set_size_finds(model_dir: Path) -> None:
    """On a real 1080p frame (the bench copy of the overpass clip, as the source hands it over) the automatic
    size gives the boxes of config/carpark-1080p.yaml's hand-set 416x256, exactly."""
    with av.open(str(shared_path("footage/bench/highway_1080p.mp4"))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 250:
                image = np.asarray(frame.to_ndarray(width=480, height=270, format="bgr24", interpolation="AREA"),
                                   np.uint8)
                break
    auto = Detector(DetectorConfig(model="yolox-nano-dynamic", model_dir=model_dir))(image)
    hand = Detector(DetectorConfig(model="yolox-nano-dynamic", model_dir=model_dir, input_size_px=(416, 256)))(image)
    assert len(auto) >= 5
    assert np.array_equal(auto.xyxy, hand.xyxy) and np.array_equal(auto.class_id, hand.class_id)
