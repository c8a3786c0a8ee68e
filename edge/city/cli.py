"""``edge archive`` and ``edge report``: their arguments (argparse only, light to import: the CLI builds its parser
from it at every start); the commands themselves are in :mod:`edge.city.commands`."""

from __future__ import annotations

import argparse
from pathlib import Path

ARCHIVE_SUMMARY = ("the city side: subscribe to the broker (MQTT v5, persistent session, QoS 1, TLS) and store "
                   "every window, speeds and event record in a SQLite archive, validated against the contract; "
                   "or import the JSONL output of `edge replay` / `edge batch`")
ARCHIVE_EXAMPLE = "edge archive -c archive.yaml   (or to import: edge archive --db archive.sqlite3 --import out/r1)"
REPORT_SUMMARY = ("the before/after safety study of one site from the archive: a self-contained HTML report "
                  "(volumes, speeds, conflicts, before vs after with intervals and tests), CSV exports, optional PDF")
REPORT_EXAMPLE = ("edge report --db out/city/archive.sqlite3 --before 2024-04-01/2024-04-28 "
                  "--after 2024-05-13/2024-06-09 --site cam-0001/north -o out/report")


def _archive_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, help="ARCHIVE.yaml: database, timezone, mqtt, sites "
                   "(see edge/city/config.py)")
    p.add_argument("--db", type=Path, help="the archive's SQLite file (instead of, or overriding, the config's)")


def add_archive_arguments(p: argparse.ArgumentParser) -> None:
    _archive_source(p)
    p.add_argument("--import", dest="import_paths", type=Path, nargs="+", metavar="PATH",
                   help="import these JSONL files or output folders (of edge replay / edge batch) and exit")
    p.add_argument("--status", action="store_true", help="print what the archive holds (and what it quarantined)")


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    _archive_source(p)
    p.add_argument("--before", required=True, metavar="PERIOD",
                   help="START/END: dates (2024-04-01/2024-04-28, both included) or ISO 8601 instants (end excluded)")
    p.add_argument("--after", required=True, metavar="PERIOD", help="START/END of the after period, as --before")
    p.add_argument("--site", help="a site name of the config, or DEVICE/CAMERA (default: the archive's only camera)")
    p.add_argument("--comparison", metavar="SITE", help="a comparison site (name or DEVICE/CAMERA) where nothing "
                   "changed: the effect is then relative to it")
    p.add_argument("--site-config", type=Path, help="the site's edge config (lines, zones, calibration) for the map "
                   "and turn types (default: the site's config in ARCHIVE.yaml)")
    p.add_argument("--tz", help="IANA time zone for bins and profiles (default: the config's, else UTC)")
    p.add_argument("--pdf", action="store_true", help="also print report.pdf with a headless Chromium")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals (default 0: reproducible)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for report.html and the CSV files")


def run_archive(args: argparse.Namespace) -> int:
    from edge.city.commands import cmd_archive

    return cmd_archive(args)


def run_report(args: argparse.Namespace) -> int:
    from edge.city.commands import cmd_report

    return cmd_report(args)
