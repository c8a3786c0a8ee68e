"""The city side's commands, behind ``edge archive`` and ``edge report`` (the parsers live in :mod:`edge.cli`).

Imported only when one of them runs, so the device's commands never load the report's dependencies."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import zoneinfo
from datetime import UTC, datetime

from edge.city.config import ArchiveConfig, SiteConfig, load_archive_config
from edge.city.store import Archive
from edge.errors import ConfigError, EdgeError
from edge.payloads import iso_utc

log = logging.getLogger(__name__)


def _config(args: argparse.Namespace) -> ArchiveConfig:
    if args.config is not None:
        config = load_archive_config(args.config)
        return config.model_copy(update={"database": args.db}) if args.db is not None else config
    if args.db is None:
        raise ConfigError("give the archive: -c ARCHIVE.yaml, or --db FILE")
    return ArchiveConfig(database=args.db)


def cmd_archive(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.import_paths:
        from edge.city.importer import import_paths
        from edge.city.records import Checker

        with Archive(config.database) as archive:
            summary = import_paths(archive, Checker(config.schemas_dir), args.import_paths)
        print(f"{config.database}: imported {summary.line()}")
        return 0
    if args.status:
        return _status(config)
    from edge.city.subscriber import ArchiveSubscriber

    subscriber = ArchiveSubscriber(config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"edge archive: {config.database} <- {subscriber.mqtt.broker_host}:{subscriber.mqtt.broker_port} "
          f"({', '.join(subscriber.topics)}, QoS 1, session {subscriber.client_id})", flush=True)

    def say_subscribed() -> None:  # the broker keeps the session from here on: nothing published is missed
        while not stop.is_set():
            if subscriber.subscribed.wait(0.5):
                print("edge archive: subscribed; storing", flush=True)
                return

    threading.Thread(target=say_subscribed, name="archive-ready", daemon=True).start()
    subscriber.run(stop)
    print(f"edge archive: stopped; {dict(sorted(subscriber.counters.items()))}", flush=True)
    return 0


def _status(config: ArchiveConfig) -> int:
    with Archive(config.database, readonly=True) as archive:
        counts = archive.counts()
        print(f"{config.database}: {counts.windows} windows, {counts.speeds} speeds records, {counts.events} events, "
              f"{counts.quarantined} quarantined")
        for device, camera, first, last, n in archive.cameras():
            span = f"{iso_utc(datetime.fromtimestamp(first, UTC))} .. {iso_utc(datetime.fromtimestamp(last, UTC))}"
            print(f"  {device}/{camera}: {n} windows, {span}")
        for kind, outcomes in counts.outcomes.items():
            print(f"  {kind}: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
        for reason, n in archive.query("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason ORDER BY 2 DESC "
                                       "LIMIT 10"):
            print(f"  quarantined {n}x: {reason}")
    return 0


def _site(config: ArchiveConfig, archive: Archive, text: str | None, what: str) -> SiteConfig:
    """A site by configured name, or DEVICE/CAMERA, or the archive's only camera."""
    if text is not None:
        if (found := config.site(text)) is not None:
            return found
        device, sep, camera = text.partition("/")
        if sep:
            return next((s for s in config.sites if (s.device, s.camera) == (device, camera)),
                        SiteConfig(name=f"{device}-{camera}", device=device, camera=camera))
        names = ", ".join(s.name for s in config.sites) or "none configured"
        raise EdgeError(f"--{what} {text!r}: no such site ({names}); give a site name or DEVICE/CAMERA")
    cameras = archive.cameras()
    if len(cameras) != 1:
        listed = ", ".join(f"{d}/{c}" for d, c, *_ in cameras) or "none"
        raise EdgeError(f"the archive holds {len(cameras)} cameras ({listed}): choose one with --site DEVICE/CAMERA")
    device, camera = cameras[0][:2]
    return next((s for s in config.sites if (s.device, s.camera) == (device, camera)),
                SiteConfig(name=f"{device}-{camera}", device=device, camera=camera))


def cmd_report(args: argparse.Namespace) -> int:
    from edge.city.report import ReportRequest, SiteRef, build_report
    from edge.city.site import load_site_geometry
    from edge.city.study import parse_period

    config = _config(args)
    tz = zoneinfo.ZoneInfo(args.tz or config.timezone)
    with Archive(config.database, readonly=True) as archive:
        site = _site(config, archive, args.site, "site")
        geometry_file = args.site_config or site.config
        geometry = load_site_geometry(geometry_file, site.camera) if geometry_file is not None else None
        comparison = _site(config, archive, args.comparison, "comparison") if args.comparison else None
        request = ReportRequest(
            SiteRef(site.name, site.device, site.camera, geometry), parse_period(args.before, "before", tz),
            parse_period(args.after, "after", tz), tz, args.output,
            SiteRef(comparison.name, comparison.device, comparison.camera) if comparison else None, args.pdf, args.seed)
        result = build_report(archive, request)
    print(f"report: {result.html}" + (f" and {result.pdf}" if result.pdf else ""))
    print("csv: " + ", ".join(p.name for p in result.csvs))
    for row in result.change[:3]:
        print(f"  {row.metric} ({row.unit}): {row.change} ({row.interval}), {row.verdict}")
    return 0

