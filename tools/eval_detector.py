"""Detector precision and recall of vehicles at IoU 0.5 against the NGSIM US-101 manual boxes.

    EDGE_MODEL_DIR=../shared/models python tools/eval_detector.py [--shared ../shared] [--model-dir DIR]

Every model of the manifest runs at its default input size; the dynamic YOLOX also at larger sizes.
Models are looked up in --model-dir, else in $EDGE_MODEL_DIR and the model cache (where
tools/quantize_int8.py writes the int8 model), else in ../shared/models; a derived model that is not
there yet is reported with the command that produces it, and the other models still run.
All motor-vehicle classes (car, bus, truck, motorcycle) count as "vehicle" (the ground truth has one
category, car, covering every vehicle). Matching: greedy by score, one detection per box, IoU >= 0.5.
Reported at three score thresholds plus AP50 (all-point interpolated, VOC style), and the time per image
on one thread: the whole detector call (letterbox, inference, decode, NMS) and the inference alone.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.config import DetectorConfig
from edge.detect import Detector, iou_matrix
from edge.errors import ModelError
from edge.models import load_manifest
from edge.types import MOTOR_VEHICLE_CLASSES, ROAD_USER_CLASSES

VEHICLE_IDS = [ROAD_USER_CLASSES.index(c) for c in MOTOR_VEHICLE_CLASSES]
RUNS: list[tuple[str, tuple[int, int] | None]] = [
    ("yolox-nano-416", None),
    ("yolox-nano-416-int8", None),  # made by tools/quantize_int8.py
    ("yolox-nano-dynamic", (416, 416)),
    ("yolox-nano-dynamic", (640, 480)),
    ("yolox-nano-dynamic", (832, 640)),
    ("yolo11n-320", None),
]


def load_ground_truth(seq: Path) -> dict[str, npt.NDArray[np.float32]]:
    gt = json.loads((seq / "annotations" / "GT.json").read_text())
    names = {img["id"]: img["file_name"] for img in gt["images"]}
    boxes: dict[str, list[list[float]]] = {name: [] for name in names.values()}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        boxes[names[a["image_id"]]].append([x, y, x + w, y + h])
    return {k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in boxes.items()}


def match(det: npt.NDArray[np.float32], score: npt.NDArray[np.float32],
          gt: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """True positives among detections (sorted by score), greedy at IoU >= 0.5."""
    order = np.argsort(-score, kind="stable")
    tp = np.zeros(len(det), bool)
    if len(gt) == 0 or len(det) == 0:
        return tp
    iou = iou_matrix(det[order], gt)
    used = np.zeros(len(gt), bool)
    for i in range(len(order)):
        cand = np.where(used, -1.0, iou[i])
        j = int(np.argmax(cand))
        if cand[j] >= 0.5:
            used[j] = True
            tp[order[i]] = True
    return tp


def evaluate(detector: Detector, images: Path, gt: dict[str, npt.NDArray[np.float32]]) -> dict[str, float]:
    scores, tps = [], []
    n_gt = 0
    t = t_infer = 0.0
    for i, (name, boxes) in enumerate(sorted(gt.items())):
        image = cv2.imread(str(images / name))
        if image is None:
            raise SystemExit(f"cannot read {images / name}")
        frame = np.asarray(image, np.uint8)
        for _ in range(3 if i == 0 else 0):  # warm-up: first runs allocate and pack weights
            detector(frame)
        t0 = time.perf_counter()
        dets = detector(frame)
        t += time.perf_counter() - t0
        blob, _ = detector.letterbox(frame)
        t0 = time.perf_counter()
        detector.infer(blob)
        t_infer += time.perf_counter() - t0
        keep = np.isin(dets.class_id, VEHICLE_IDS)
        tps.append(match(dets.xyxy[keep], dets.confidence[keep], boxes))
        scores.append(dets.confidence[keep])
        n_gt += len(boxes)
    s, tp = np.concatenate(scores), np.concatenate(tps)
    order = np.argsort(-s, kind="stable")
    s, tp = s[order], tp[order]
    cum_tp = np.cumsum(tp)
    precision = cum_tp / np.arange(1, len(tp) + 1)
    recall = cum_tp / n_gt
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    ap = float(np.sum(np.diff(np.concatenate([[0.0], recall])) * envelope))
    out = {"ap50": ap, "ms_per_image": 1000 * t / len(gt), "infer_ms": 1000 * t_infer / len(gt),
           "gt_boxes": float(n_gt)}
    for thr in (0.1, 0.3, 0.5):
        sel = s >= thr
        out[f"p@{thr}"] = float(tp[sel].mean()) if sel.any() else 0.0
        out[f"r@{thr}"] = float(tp[sel].sum() / n_gt)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--model-dir", type=Path,
                    help="default: $EDGE_MODEL_DIR and the model cache if the variable is set, else ../shared/models")
    args = ap.parse_args()
    seq = args.shared / "footage" / "ngsim-us101" / "Sequence1"
    gt = load_ground_truth(seq)
    model_dir = args.model_dir or (None if os.environ.get("EDGE_MODEL_DIR") else args.shared / "models")
    manifest = load_manifest()
    print(f"NGSIM US-101 Sequence1: {len(gt)} frames, {sum(len(b) for b in gt.values())} vehicle boxes")
    cols = ["P@0.1", "R@0.1", "P@0.3", "R@0.3", "P@0.5", "R@0.5", "AP50", "ms", "inf ms"]
    print(f"{'model':20} {'input':>9} " + " ".join(f"{c:>6}" for c in cols))
    for name, size in RUNS:
        config = DetectorConfig(model=name, input_size_px=size, model_dir=model_dir, score_threshold=0.05)
        try:
            det = Detector(config)
        except ModelError as exc:
            if manifest.get(name).derived_by is None:
                raise
            print(f"{name:20} skipped: {exc}")
            continue
        r = evaluate(det, seq / "images" / "test", gt)
        keys = ["p@0.1", "r@0.1", "p@0.3", "r@0.3", "p@0.5", "r@0.5", "ap50"]
        values = " ".join(f"{r[k]:6.3f}" for k in keys) + f" {r['ms_per_image']:6.1f} {r['infer_ms']:6.1f}"
        print(f"{name:20} {det.input_w:>4}x{det.input_h:<4} {values}")


if __name__ == "__main__":
    main()
