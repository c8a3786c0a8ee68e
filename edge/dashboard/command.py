"""``edge dashboard``: its arguments and what it does (edge/cli.py only wires it in)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import ConfigError
from edge.media import utc_time_arg

if TYPE_CHECKING:
    import ssl

SUMMARY = ("serve the reference dashboard (city side, not on the device): a page that reads the broker over "
           "MQTT on WebSockets with the viewer's own read-only login and checks every message against the contract")
EXAMPLE = ("edge dashboard --broker wss://broker.city.example:8884 --username dashboard "
           "--archive /var/lib/edge-city/archive.sqlite")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, metavar="URL",
                   help="the broker's WebSockets URL as the viewer's browser reaches it, e.g. "
                   "wss://broker.city.example:8884 (ws:// only on this machine)")
    p.add_argument("--username", help="user name to prefill in the login form (each viewer types the password)")
    p.add_argument("--prefix", default="traffic/v1", help="topic prefix of the devices (mqtt.prefix)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve the page on (default: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port to serve the page on (0: any free port)")
    p.add_argument("--archive", type=Path, metavar="PATH",
                   help="where the rolling chart's last hours come from: the city archive (the SQLite file that "
                   "`edge archive` fills) or a folder of metrics records (*.jsonl, e.g. replay outputs); without "
                   "it the chart starts empty and fills from live messages")
    p.add_argument("--hours", type=float, default=6.0, help="hours the rolling chart shows")
    p.add_argument("--history-end", type=utc_time_arg, metavar="TIME",
                   help="end of the chart's archive span (default: now), e.g. for an archive of old footage")
    p.add_argument("--stale-after", type=float, default=180.0, metavar="S",
                   help="an online device that sent nothing for this long is shown as silent")
    p.add_argument("--certfile", type=Path, help="serve the page over https with this certificate (PEM)")
    p.add_argument("--keyfile", type=Path, help="private key of --certfile (PEM)")
    p.add_argument("--contract", type=Path, metavar="DIR",
                   help="the contract folder whose schemas/ the page validates against (default: contract/ of "
                   "the source tree edge runs from)")


def _tls(certfile: Path | None, keyfile: Path | None) -> ssl.SSLContext | None:
    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        raise ConfigError("--certfile and --keyfile go together")
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(certfile), str(keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--certfile/--keyfile: cannot load {certfile} with {keyfile}: {exc}") from None
    return ctx


def _stop(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from edge.dashboard.server import DEFAULT_CONTRACT_DIR, DashboardServer, DashboardSettings  # only when it runs

    settings = DashboardSettings(
        broker_url=args.broker, prefix=args.prefix, username=args.username, archive=args.archive,
        history_hours=args.hours, history_end=args.history_end, stale_after_s=args.stale_after,
        contract_dir=args.contract or DEFAULT_CONTRACT_DIR,
    )
    try:
        server = DashboardServer(settings, args.host, args.port, _tls(args.certfile, args.keyfile))
    except OSError as exc:
        raise ConfigError(f"cannot serve on {args.host}:{args.port}: {exc.strerror}") from None
    signal.signal(signal.SIGTERM, _stop)
    print(f"edge dashboard: {server.url} (broker {settings.broker_url}, prefix {settings.prefix}, chart: "
          f"{'archive ' + str(settings.archive) if settings.archive else 'live messages since page load'})",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("edge dashboard: stopped", flush=True)
    return 0
