"""``edge batch``: its arguments and what it runs (``edge.batch.runner``). Light to import: the CLI builds its
parser from it at every start."""

from __future__ import annotations

import argparse
from pathlib import Path

SUMMARY = ("replay every recording of a manifest (CSV or YAML) through the pipeline of `edge replay`, on a local "
           "process pool or on Ray, split into segments, resumable; merge the window records into one set")
EXAMPLE = "edge batch recordings.yaml -c config/highway-overpass.yaml -o out/study"


def add_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("manifest", type=Path, help="CSV (path,camera,start) or YAML (recordings: path or folder + "
                   "pattern, camera, start); see edge/batch/manifest.py")
    b.add_argument("-c", "--config", type=Path, required=True, help="the YAML config every recording runs with")
    b.add_argument("-o", "--output", type=Path, required=True,
                   help="batch folder: merged metrics.jsonl (speeds, events), jobs/, ledger.sqlite")
    b.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local process pool (default), or Ray Core (pip install 'edge[ray]'; RAY_ADDRESS attaches "
                   "to a cluster, else a local Ray starts)")
    b.add_argument("--workers", type=int, help="worker processes or Ray actors (default: one per core); "
                   "onnxruntime threads per worker = cores / workers")
    b.add_argument("--segment-s", type=float, default=1800.0,
                   help="split recordings longer than this into segments at window boundaries (default 1800; "
                   "0: never split)")
    b.add_argument("--warmup-s", type=float, default=60.0,
                   help="seconds a segment runs before its first window, to prime the tracker (default 60)")
    b.add_argument("--retries", type=int, default=2, help="further attempts of a failed job in this run")
    b.add_argument("--model-dir", type=Path, help="folder with the model file (overrides the config)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def _terminated(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # as Ctrl-C: the workers are stopped; the ledger keeps what is done


def run(args: argparse.Namespace) -> int:
    import signal

    from edge.attest import disable_core_dumps
    from edge.batch.plan import SplitOptions
    from edge.batch.progress import show_progress
    from edge.batch.runner import BatchOptions, run_batch
    from edge.batch.summary import format_batch_summary
    from edge.config import load_config
    from edge.errors import ConfigError

    signal.signal(signal.SIGTERM, _terminated)
    disable_core_dumps()  # a core dump could hold frames (P2); the workers inherit the limit
    config = load_config(args.config)
    if args.model_dir is not None:
        config = config.model_copy(
            update={"detector": config.detector.model_copy(update={"model_dir": args.model_dir})})
    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if args.segment_s < 0 or args.warmup_s < 0 or args.retries < 0:
        raise ConfigError("--segment-s, --warmup-s and --retries cannot be negative")
    split = SplitOptions(segment_s=args.segment_s or None, warmup_s=args.warmup_s)
    options = BatchOptions(backend=args.backend, workers=args.workers, split=split, retries=args.retries,
                           progress=show_progress(args.quiet))
    summary = run_batch(args.manifest, config, args.output, options)
    print(format_batch_summary(summary))
    return 1 if summary.failed else 0
