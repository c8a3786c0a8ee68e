"""Batch replay of many recordings (``edge batch``): a manifest of recordings, split into window-aligned
segments with a warm-up, run on a local process pool or on Ray, recorded in a job ledger and merged into
one set of window records. See ``edge.batch.runner``."""
