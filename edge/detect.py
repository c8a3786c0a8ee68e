"""Object detector on onnxruntime: letterbox, inference, decode, NMS, cross-class suppression.

This is the only module that imports onnxruntime. Two output layouts are supported, chosen by the
model manifest:

- ``yolox``: raw grid output ``(1, N, 5 + C)`` = (x, y, w, h, objectness, class scores) per anchor point
  over strides 8/16/32 (Ge et al. 2021, YOLOX); input BGR 0..255, letterboxed at the top-left, pad 114.
- ``ultralytics``: ``(1, 4 + C, N)`` = (cx, cy, w, h, class scores), no objectness (YOLOv8/YOLO11);
  input RGB scaled to 0..1, letterboxed in the centre, pad 114.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# onnxruntime (1.2x+) keeps a telemetry database under ~/.cache/Microsoft/DeveloperTools and may send
# events: a device must write nowhere but its state folders and talk to no one but the broker and the
# camera. The library reads this variable when it loads, so it is set before the import, unconditionally.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge.config import DetectorConfig
from edge.errors import ModelError
from edge.models import ModelEntry, load_manifest, read_verified
from edge.types import ROAD_USER_CLASSES, Detections

log = logging.getLogger(__name__)

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
#: Vehicle classes that one physical vehicle is often detected as at once (a pickup as car and truck).
_CROSS_CLASS = np.array([ROAD_USER_CLASSES.index(c) for c in ("car", "bus", "truck")])
#: Vehicle classes whose box can hold a smaller vehicle box of the same vehicle (a cab, a van's front).
_HEAVY = np.array([ROAD_USER_CLASSES.index(c) for c in ("bus", "truck")])
_TWO_WHEELERS = np.array([ROAD_USER_CLASSES.index(c) for c in ("bicycle", "motorcycle")])
_PERSON = ROAD_USER_CLASSES.index("person")
_PAD_VALUE = 114
#: The largest output stride of the supported heads (YOLOX, Ultralytics): a dynamic input's sides are
#: multiples of it.
INPUT_STRIDE_PX = 32


@dataclass(slots=True)
class DetectorTimes:
    """Seconds spent per detector step, summed over calls (for benchmarks)."""

    calls: int = 0
    preprocess_s: float = 0.0  # letterbox and blob
    inference_s: float = 0.0  # onnxruntime
    postprocess_s: float = 0.0  # decode, NMS, cross-class suppression, riders


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a source frame maps into the model input: ``model = source * scale + offset``."""

    scale: float
    offset_x: int
    offset_y: int


def choose_providers(wanted: tuple[str, ...], available: list[str]) -> list[str]:
    """Map config names to onnxruntime providers, keeping those installed; CPU always comes last."""
    chosen = []
    for name in wanted:
        provider = _PROVIDERS[name]
        if provider in available:
            chosen.append(provider)
        else:
            log.warning("execution provider %s (%s) is not available in this onnxruntime build; skipping it "
                        "(install the matching onnxruntime package, e.g. onnxruntime-gpu or "
                        "onnxruntime-openvino)", name, provider)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    if chosen[0] == "CPUExecutionProvider" and wanted[0] != "cpu":
        log.warning("no accelerator available: falling back to CPU inference")
    return chosen


_GRAPH_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(config: DetectorConfig) -> ort.SessionOptions:
    """onnxruntime session options from the detector config: one inference at a time (sequential, one
    inter-op thread), ``threads`` intra-op threads, no spinning unless asked, the chosen graph
    optimisation and memory arena."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = _GRAPH_OPTIMIZATION[config.graph_optimization]
    opts.enable_cpu_mem_arena = config.cpu_memory_arena
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.thread_spinning else "0")
    return opts


def iou_matrix(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Pairwise IoU of boxes ``a (N,4)`` and ``b (M,4)`` in xyxy."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    out: npt.NDArray[np.float32] = (inter / np.maximum(union, 1e-9)).astype(np.float32)
    return out


def inside_smaller_matrix(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Pairwise intersection over the smaller box's area of boxes ``a (N,4)`` and ``b (M,4)`` in xyxy: 1 when
    one box lies wholly inside the other, whatever their sizes (IoU is small for a small box in a big one)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    out: npt.NDArray[np.float32] = (inter / np.maximum(smaller, 1e-9)).astype(np.float32)
    return out


def _drop_by_score(dets: Detections, same: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.bool_]]) -> Detections:
    """Greedy suppression among the car/bus/truck boxes: from the highest score down, a kept box drops every
    lower-scored one that ``same`` (a pairwise matrix over the boxes in score order) calls the same vehicle."""
    idx = np.flatnonzero(np.isin(dets.class_id, _CROSS_CLASS))
    if len(idx) < 2:
        return dets
    order = idx[np.argsort(-dets.confidence[idx], kind="stable")]
    pairs = same(order)
    keep = np.ones(len(dets), bool)
    for i in range(len(order)):
        if not keep[order[i]]:
            continue
        later = np.arange(i + 1, len(order))
        keep[order[later[pairs[i, i + 1 :]]]] = False
    return dets[keep]


def suppress_cross_class(dets: Detections, iou_threshold: float) -> Detections:
    """Among car/bus/truck boxes, drop a box overlapping a higher-scored box of another such class."""
    return _drop_by_score(dets, lambda order: iou_matrix(dets.xyxy[order], dets.xyxy[order]) > iou_threshold)


def suppress_nested_vehicles(dets: Detections, overlap: float) -> Detections:
    """A car, bus or truck box lying inside a larger truck or bus box by at least ``overlap`` of its own area
    is the same vehicle (a truck's cab found as a car or a truck inside the whole truck's box; their IoU is
    far below the cross-class threshold): of the two, the lower-scored box is dropped, so a faint heavy box
    spanning two queued cars does not swallow them. Persons, two-wheelers and boxes inside a car box never
    take part: a cyclist beside a bus is a road user of its own."""

    def nested(order: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        boxes = dets.xyxy[order]
        area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        heavy = np.isin(dets.class_id[order], _HEAVY)
        larger_is_heavy = np.where(area[:, None] >= area[None, :], heavy[:, None], heavy[None, :])
        out: npt.NDArray[np.bool_] = (inside_smaller_matrix(boxes, boxes) >= overlap) & larger_is_heavy
        return out

    return _drop_by_score(dets, nested)


def merge_riders(dets: Detections, overlap: float) -> Detections:
    """Drop a person box that lies mostly on a bicycle or motorcycle box: that person is its rider, and
    the two-wheeler alone is the road user (a cyclist must not count as a cyclist and a pedestrian)."""
    persons = np.flatnonzero(dets.class_id == _PERSON)
    wheels = np.flatnonzero(np.isin(dets.class_id, _TWO_WHEELERS))
    if len(persons) == 0 or len(wheels) == 0:
        return dets
    p, w = dets.xyxy[persons], dets.xyxy[wheels]
    lt = np.maximum(p[:, None, :2], w[None, :, :2])
    rb = np.minimum(p[:, None, 2:], w[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    person_area = np.maximum(np.prod(p[:, 2:] - p[:, :2], axis=1), 1e-9)
    riders = persons[(inter / person_area[:, None]).max(axis=1) >= overlap]
    keep = np.ones(len(dets), bool)
    keep[riders] = False
    return dets[keep]


def auto_input_size(frame_size: tuple[int, int], default_size: tuple[int, int],
                    stride: int = INPUT_STRIDE_PX) -> tuple[int, int]:
    """The smallest input ``(width, height)``, both multiples of ``stride``, that holds a ``frame_size`` frame
    at the scale a ``default_size`` input letterboxes it at: the same weights at the same scale, without the
    padding rows. A 1920x1080 frame and the 416x416 default: 416x256 (the 416x234 picture and 22 padding
    rows instead of 182); 800x600: 416x320. Exact integer arithmetic: the limiting side comes out at its
    default, never one stride more."""
    (w, h), (dw, dh) = frame_size, default_size
    num, den = (dw, w) if dw * h <= dh * w else (dh, h)  # scale = num / den = min(dw / w, dh / h)
    return (-(-w * num // (den * stride)) * stride, -(-h * num // (den * stride)) * stride)


class Detector:
    """Runs one manifest model on frames and returns road-user ``Detections`` in source pixels."""

    def __init__(self, config: DetectorConfig, entry: ModelEntry | None = None) -> None:
        self.config = config
        self.entry = entry or load_manifest().get(config.model)
        fixed = not self.entry.dynamic_input
        if fixed and config.input_size_px is not None and config.input_size_px != self.entry.input_size_px:
            raise ModelError(
                f"detector.input_size_px {config.input_size_px} is not possible with {self.entry.name}: its "
                f"input is fixed at {self.entry.input_size_px}; remove the setting or pick a dynamic model"
            )
        # A dynamic model with no configured size fits its input to the first frame (``auto_input_size``);
        # until then it holds the manifest's size, whose scale gives sources the same analysis copies.
        self._auto_size = self.entry.dynamic_input and config.input_size_px is None
        self._frame_size: tuple[int, int] | None = None
        self._set_input(*(config.input_size_px or self.entry.input_size_px))
        self.model_path, model_bytes = read_verified(self.entry, config.model_dir)
        self.model_sha256 = self.entry.sha256

        providers = choose_providers(config.execution_providers, ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(model_bytes, sess_options=session_options(config),
                                                 providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"onnxruntime cannot load {self.model_path}: {exc}") from None
        self.providers = self._session.get_providers()
        if self.providers[0] != providers[0]:  # installed, but the device is missing or failed to start
            log.warning("execution provider %s could not start here; running on %s instead",
                        providers[0], ", ".join(self.providers))
        size = "input size from the first frame" if self._auto_size else f"{self.input_w}x{self.input_h}"
        log.info("detector %s %s on %s, %d thread(s)", self.entry.name, size, ", ".join(self.providers),
                 config.threads)
        self._input_name = self._session.get_inputs()[0].name

        ids = self.entry.road_user_ids()
        self._model_cls = np.array(sorted(ids), np.int64)
        self._road_cls = np.array([ids[k] for k in sorted(ids)], np.int64)
        self.times = DetectorTimes()

    @property
    def input_size_px(self) -> tuple[int, int]:
        """Model input ``(width, height)``. With an automatic size (a dynamic model, no
        ``detector.input_size_px``) the manifest's size until a frame arrives, then the one fitted to it: both
        letterbox a frame at the same scale, so a source fitting its analysis copies to either makes the same."""
        return self.input_w, self.input_h

    def _set_input(self, width: int, height: int) -> None:
        self.input_w, self.input_h = width, height
        self._grid, self._stride = _yolox_grid(width, height)
        self._canvas = np.full((height, width, 3), _PAD_VALUE, np.uint8)

    def _fit_input(self, frame_size: tuple[int, int]) -> None:
        """Pick the automatic input size for frames of ``frame_size`` (again when a source's size changes)."""
        self._frame_size = frame_size
        size = auto_input_size(frame_size, self.entry.input_size_px)
        if size != self.input_size_px:
            self._set_input(*size)
        log.info("detector %s: input %dx%d for %dx%d frames (automatic: the scale of its %dx%d default without "
                 "letterbox padding rows; detector.input_size_px sets one)", self.entry.name, *size, *frame_size,
                 *self.entry.input_size_px)

    # ------------------------------------------------------------------------------------- preprocess
    def letterbox(self, image: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], Letterbox]:
        """Scale ``image`` to fit the model input keeping its aspect ratio, pad with 114, make a blob."""
        h, w = image.shape[:2]
        if self._auto_size and (w, h) != self._frame_size:
            self._fit_input((w, h))
        scale = min(self.input_w / w, self.input_h / h)
        nw, nh = round(w * scale), round(h * scale)
        if self.entry.layout == "yolox":
            ox, oy = 0, 0
        else:
            ox, oy = (self.input_w - nw) // 2, (self.input_h - nh) // 2
        canvas = self._canvas
        canvas[...] = _PAD_VALUE
        # Sources deliver an analysis copy less than 2x the input (``Frame``): bilinear is alias-free there
        # and 5x cheaper than area averaging, which only larger images (tools, tests) need.
        interpolation = cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA
        fitted = image if (w, h) == (nw, nh) else cv2.resize(image, (nw, nh), interpolation=interpolation)
        canvas[oy : oy + nh, ox : ox + nw] = fitted
        if self.entry.layout == "yolox":
            blob = cv2.dnn.blobFromImage(canvas)  # BGR, 0..255, NCHW float32
        else:
            blob = cv2.dnn.blobFromImage(canvas, scalefactor=1 / 255.0, swapRB=True)
        return np.asarray(blob, np.float32), Letterbox(scale, ox, oy)

    # ---------------------------------------------------------------------------------------- inference
    def infer(self, blob: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = self._session.run(None, {self._input_name: blob})[0]
        return out

    def decode(self, raw: npt.NDArray[np.float32], box: Letterbox) -> Detections:
        """Turn raw model output into thresholded, NMS-filtered ``Detections`` in source pixels."""
        cfg = self.config
        if self.entry.layout == "yolox":
            pred = raw[0]
            cls_scores = pred[:, 5 + self._model_cls] * pred[:, 4:5]
        else:
            pred = raw[0].T
            cls_scores = pred[:, 4 + self._model_cls]
        best = np.argmax(cls_scores, axis=1)
        score = cls_scores[np.arange(len(best)), best]
        keep = np.flatnonzero(score >= cfg.score_threshold)
        if len(keep) == 0:
            return Detections.empty()
        p = pred[keep]
        if self.entry.layout == "yolox":
            xy = (p[:, :2] + self._grid[keep]) * self._stride[keep, None]
            wh = np.exp(p[:, 2:4]) * self._stride[keep, None]
        else:
            xy, wh = p[:, :2], p[:, 2:4]
        xyxy = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        xyxy[:, [0, 2]] = (xyxy[:, [0, 2]] - box.offset_x) / box.scale
        xyxy[:, [1, 3]] = (xyxy[:, [1, 3]] - box.offset_y) / box.scale
        score, cls = score[keep], self._road_cls[best[keep]]

        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        nms = cv2.dnn.NMSBoxesBatched(
            xywh.tolist(), score.tolist(), cls.tolist(), cfg.score_threshold, cfg.nms_iou_threshold
        )
        idx = np.sort(np.asarray(nms, np.int64).reshape(-1))
        dets = Detections(xyxy[idx].astype(np.float32), score[idx].astype(np.float32), cls[idx])
        dets = suppress_cross_class(dets, cfg.cross_class_iou_threshold)
        dets = suppress_nested_vehicles(dets, cfg.nested_vehicle_overlap_frac)
        return merge_riders(dets, cfg.rider_overlap_threshold)

    def __call__(self, image: npt.NDArray[np.uint8]) -> Detections:
        t0 = time.perf_counter()
        blob, box = self.letterbox(image)
        t1 = time.perf_counter()
        raw = self.infer(blob)
        t2 = time.perf_counter()
        dets = self.decode(raw, box)
        h, w = image.shape[:2]
        clipped = np.clip(dets.xyxy, 0, [w, h, w, h]).astype(np.float32)
        t3 = time.perf_counter()
        times = self.times
        times.calls += 1
        times.preprocess_s += t1 - t0
        times.inference_s += t2 - t1
        times.postprocess_s += t3 - t2
        return Detections(clipped, dets.confidence, dets.class_id)


def _yolox_grid(width: int, height: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Anchor-point grid offsets (N,2) and strides (N,) of a YOLOX head for this input size."""
    grids, strides = [], []
    for s in (8, 16, 32):
        gy, gx = np.meshgrid(np.arange(height // s), np.arange(width // s), indexing="ij")
        grids.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        strides.append(np.full(gx.size, s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def model_file(config: DetectorConfig) -> Path:
    """Path of the configured model after its sha256 check (for attestation and tools)."""
    return read_verified(load_manifest().get(config.model), config.model_dir)[0]
