"""The city side: an archive of the records the devices publish, and the before/after safety study built on it.

Nothing here runs on a device. The modules, in data-flow order:

* :mod:`edge.city.config`     ``ARCHIVE.yaml``: database, broker subscription, study sites
* :mod:`edge.city.records`    classify and validate a payload against ``contract/schemas`` (JSON Schema)
* :mod:`edge.city.store`      the archive (SQLite): idempotent upserts, quarantine, counters, queries
* :mod:`edge.city.subscriber` ``edge archive``: the MQTT v5 subscriber (persistent session, QoS 1, TLS)
* :mod:`edge.city.importer`   JSONL output of ``edge replay`` / ``edge batch`` into the archive
* :mod:`edge.city.synth`      seeded weeks of windows with a known change, for checking the statistics
* :mod:`edge.city.study`      one site and period out of the archive: 15-minute bins, speeds, conflicts, events
* :mod:`edge.city.stats`      rate ratios, distribution tests, speed percentiles from window statistics
* :mod:`edge.city.site`       the site's ground-plane geometry (lines, zones, turn types) from its edge config
* :mod:`edge.city.plots`      matplotlib (Agg) figures as data URIs
* :mod:`edge.city.report`     ``edge report``: the self-contained HTML report, its CSV exports and a PDF

Its extra dependencies (``pip install -e '.[report]'``) are never part of the device's.
"""
