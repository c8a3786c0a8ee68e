from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from edge.config import DetectorConfig
from edge.detect import Detector, choose_providers, merge_riders, session_options, suppress_cross_class
from edge.errors import ModelError
from edge.models import load_manifest
from edge.types import ROAD_USER_CLASSES, Detections
from tests.conftest import shared_path

CAR, TRUCK, PERSON = (ROAD_USER_CLASSES.index(c) for c in ("car", "truck", "person"))


@pytest.fixture(scope="module")
def overpass_frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(shared_path("footage/highway-overpass/video1.avi")))
    for _ in range(200):
        ok, image = cap.read()
        assert ok
    cap.release()
    return image


def test_manifest_pins_every_model() -> None:
    manifest = load_manifest()
    names = {m.name for m in manifest.models}
    assert {"yolox-nano-416", "yolox-nano-dynamic", "yolo11n-320"} <= names
    default = manifest.get("yolox-nano-416")
    assert default.url and default.url.startswith("https://") and default.licence.startswith("Apache-2.0")


@pytest.mark.parametrize("model", ["yolox-nano-416", "yolox-nano-dynamic", "yolo11n-320"])
def test_both_layouts_find_the_cars_on_the_overpass(model: str, model_dir: Path, overpass_frame: np.ndarray) -> None:
    det = Detector(DetectorConfig(model=model, model_dir=model_dir))
    out = det(overpass_frame)
    confident_cars = out[(out.class_id == CAR) & (out.confidence >= 0.4)]
    # frame 200 shows a red car in the right lane with its bottom-centre near (193, 123) (hand-read)
    centres = np.stack([(confident_cars.xyxy[:, 0] + confident_cars.xyxy[:, 2]) / 2, confident_cars.xyxy[:, 3]], 1)
    assert np.min(np.hypot(*(centres - [193, 123]).T)) < 8
    assert np.all(out.xyxy[:, [0, 2]] <= 320)
    assert np.all(out.xyxy[:, [1, 3]] <= 240)


def test_dynamic_model_takes_the_configured_size(model_dir: Path) -> None:
    det = Detector(DetectorConfig(model="yolox-nano-dynamic", model_dir=model_dir, input_size_px=(640, 384)))
    blob, box = det.letterbox(np.zeros((1080, 1920, 3), np.uint8))
    assert blob.shape == (1, 3, 384, 640)
    assert box.scale == pytest.approx(1 / 3)
    with pytest.raises(ModelError, match="fixed"):
        Detector(DetectorConfig(model="yolox-nano-416", model_dir=model_dir, input_size_px=(640, 384)))


def test_tampered_model_is_refused(model_dir: Path, tmp_path: Path) -> None:
    src = model_dir / "yolox_nano_coco_416.onnx"
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / src.name).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the manifest") as exc:
        Detector(DetectorConfig(model_dir=tmp_path))
    assert hashlib.sha256(bytes(data)).hexdigest() in str(exc.value)


def test_missing_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="edge models fetch yolox-nano-416"):
        Detector(DetectorConfig(model_dir=tmp_path))


def test_model_found_through_environment(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(model_dir / "yolox_nano_coco_416.onnx", tmp_path)
    monkeypatch.setenv("EDGE_MODEL_DIR", str(tmp_path))
    assert Detector(DetectorConfig()).model_path == tmp_path / "yolox_nano_coco_416.onnx"


def test_cross_class_suppression_keeps_one_box_per_vehicle() -> None:
    dets = Detections.from_lists(
        [[0, 0, 100, 50], [2, 1, 101, 52], [300, 0, 340, 90], [0, 0, 100, 50]],
        [0.6, 0.8, 0.9, 0.7],
        [CAR, TRUCK, PERSON, PERSON],
    )
    out = suppress_cross_class(dets, 0.7)
    kept = sorted(zip(out.class_id.tolist(), [round(float(c), 2) for c in out.confidence], strict=True))
    assert kept == [(TRUCK, 0.8), (PERSON, 0.7), (PERSON, 0.9)]


def test_unavailable_providers_fall_back_to_cpu() -> None:
    assert choose_providers(("cuda", "cpu"), ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(("cuda",), ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_a_missing_accelerator_is_reported_and_cpu_runs(model_dir: Path, overpass_frame: np.ndarray,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    # This machine has no GPU and a CPU-only onnxruntime: asking for CUDA, TensorRT and OpenVINO must say
    # so and still detect on the CPU.
    config = DetectorConfig(model_dir=model_dir, execution_providers=("cuda", "tensorrt", "openvino", "cpu"))
    with caplog.at_level("WARNING", logger="edge.detect"):
        detector = Detector(config)
    assert detector.providers == ["CPUExecutionProvider"]
    assert "falling back to CPU" in caplog.text
    for name in ("cuda", "tensorrt", "openvino"):
        assert f"execution provider {name} " in caplog.text
    assert len(detector(overpass_frame)) > 0


def test_session_options_follow_the_config() -> None:
    opts = session_options(DetectorConfig(threads=3, graph_optimization="basic", cpu_memory_arena=False))
    assert opts.intra_op_num_threads == 3 and opts.inter_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert not opts.enable_cpu_mem_arena
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(DetectorConfig(thread_spinning=True)).get_session_config_entry(
        "session.intra_op.allow_spinning") == "1"


def test_riders_merge_into_their_two_wheeler() -> None:
    bicycle = ROAD_USER_CLASSES.index("bicycle")
    dets = Detections.from_lists(
        [[100, 100, 140, 200], [98, 140, 142, 210], [300, 100, 340, 200]],  # rider on a bike, a pedestrian
        [0.8, 0.7, 0.9],
        [PERSON, bicycle, PERSON],
    )
    out = merge_riders(dets, 0.5)
    assert out.class_id.tolist() == [bicycle, PERSON]
    assert out.xyxy[1].tolist() == [300, 100, 340, 200]
