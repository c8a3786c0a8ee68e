"""tools/derive_dynamic.py: the dynamic YOLOX-Nano is made locally from the pinned 416 file, and at 416x256
on a 16:9 frame it finds the same boxes as the 416x416 file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from edge.config import DetectorConfig
from edge.detect import Detector, iou_matrix
from edge.models import load_manifest
from tests.conftest import missing, shared_path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))


def _tool() -> Any:
    try:
        import onnx  # noqa: F401
    except ImportError:
        missing("the onnx package is missing: it comes with the dev extra (`pip install -e '.[dev]'`)")
    import derive_dynamic

    return derive_dynamic


@pytest.fixture(scope="module")
def derived_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """A model folder holding only the file the tool wrote."""
    out = tmp_path_factory.mktemp("derived") / load_manifest().get("yolox-nano-dynamic").file
    assert _tool().main(["--model-dir", str(model_dir), "--out", str(out)]) == 0  # 0: sha256 matches the pin
    return out.parent


def test_the_tool_writes_the_pinned_file(derived_dir: Path, model_dir: Path) -> None:
    entry = load_manifest().get("yolox-nano-dynamic")
    assert entry.url is None and entry.derived_by == "python tools/derive_dynamic.py"
    written = (derived_dir / entry.file).read_bytes()
    assert written == (model_dir / entry.file).read_bytes()  # byte for byte the shared data set's copy


def test_rect_input_finds_the_same_boxes_as_the_square_letterbox(derived_dir: Path, model_dir: Path) -> None:
    square = Detector(DetectorConfig(model="yolox-nano-416", model_dir=model_dir))
    rect = Detector(DetectorConfig(model="yolox-nano-dynamic", model_dir=derived_dir, input_size_px=(416, 256)))
    assert rect.letterbox(np.zeros((1080, 1920, 3), np.uint8))[0].shape == (1, 3, 256, 416)
    compared = 0
    with av.open(str(shared_path("footage/bench/highway_1080p.mp4"))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i not in (250, 400):
                continue
            image = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
            a, b = square(image), rect(image)
            a, b = a[a.confidence >= 0.3], b[b.confidence >= 0.3]
            assert len(a) == len(b) >= 5
            iou = iou_matrix(a.xyxy, b.xyxy)
            match = iou.argmax(1)
            assert np.all(iou.max(1) > 0.95)
            assert np.array_equal(a.class_id, b.class_id[match])
            assert np.allclose(a.confidence, b.confidence[match], atol=0.03)
            compared += len(a)
    assert compared >= 10
