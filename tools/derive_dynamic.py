"""The dynamic-input YOLOX-Nano, derived from the pinned 416x416 file.

    python tools/derive_dynamic.py [--model-dir DIR] [--out FILE]

Reads the manifest entry ``yolox-nano-416`` (sha256-checked: from --model-dir, else $EDGE_MODEL_DIR, else
the cache that `edge models fetch yolox-nano-416` fills) and writes the manifest entry
``yolox-nano-dynamic`` (default: into the model cache, where the detector finds it).

The weights and every node stay as they are: the input's height and width become the symbols ``height``
and ``width``, the output's dimensions ``output_d0..2``, and the stored intermediate shapes (value_info,
which pin 416x416) are dropped; onnxruntime infers them per input size. YOLOX's decode head has no
size constants, so any multiple of 32 works. On a 16:9 camera this lets the detector run the same weights
at the same scale as the 416x416 file without the letterbox's padding rows: 416x256 instead of 416x416,
about 40 % less inference (detector.input_size_px: [416, 256]).

The result is a pure function of the input file and the onnx version's serialiser; the manifest pins
its sha256 and the tool says whether the file it wrote matches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from edge.models import cache_dir, load_manifest, read_verified, write_model

import onnx  # isort: skip

SOURCE_MODEL = "yolox-nano-416"
DYNAMIC_MODEL = "yolox-nano-dynamic"


def make_dynamic(model_bytes: bytes) -> bytes:
    """The same graph with symbolic input height and width, symbolic output dims and no stored shapes."""
    model = onnx.load_from_string(model_bytes)
    (image,) = model.graph.input
    dims = image.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError(f"expected an NCHW image input, got {len(dims)} dimensions")
    for dim, symbol in ((dims[2], "height"), (dims[3], "width")):
        dim.ClearField("dim_value")
        dim.dim_param = symbol
    for output in model.graph.output:
        for i, dim in enumerate(output.type.tensor_type.shape.dim):
            dim.ClearField("dim_value")
            dim.dim_param = f"{output.name}_d{i}"
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, help="folder with the 416 model (default: $EDGE_MODEL_DIR, cache)")
    ap.add_argument("--out", type=Path, help="output file (default: the model cache, under the manifest's name)")
    args = ap.parse_args(argv)

    manifest = load_manifest()
    source, target = manifest.get(SOURCE_MODEL), manifest.get(DYNAMIC_MODEL)
    _, model_bytes = read_verified(source, args.model_dir)
    out: Path = args.out or cache_dir() / target.file
    digest = write_model(make_dynamic(model_bytes), out)
    print(f"wrote {out}\nsha256 {digest}")
    if digest == target.sha256:
        print(f"matches the manifest entry {target.name}")
        return 0
    print(
        f"does NOT match the manifest entry {target.name} (sha256 {target.sha256}): onnx {onnx.__version__} "
        "serialises differently from the version that made the pinned file (1.23.2); the detector will refuse "
        "this file until someone checks it and pins the new sha256 in models/manifest.yaml on purpose",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
