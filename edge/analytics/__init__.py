"""Analytics on tracks: line counts, windows, ground-plane measures.

Each analytic is a plug-in (``base.Analytic``); ``registry`` builds a camera's list from its config and
``windows`` merges their per-window fragments into the records.
"""
