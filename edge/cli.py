"""Command line: a thin layer that parses arguments, calls the package, and maps ``EdgeError`` to exit 1."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from edge import __version__
from edge.config import load_config
from edge.errors import ConfigError, EdgeError
from edge.media import utc_time_arg
from edge.types import ROAD_USER_CLASSES

log = logging.getLogger("edge")


def _cmd_validate(args: argparse.Namespace) -> int:
    from edge.prepare import prepare

    try:
        config = load_config(args.config)
        prepare(config)  # the same start-up checks as run and replay: calibrations, clip key, model file
    except ConfigError as exc:
        print(f"INVALID {exc}", file=sys.stderr)
        return 1
    lines = sum(len(c.lines) for c in config.cameras)
    print(f"OK {args.config}: device {config.device_id}, {len(config.cameras)} camera(s), {lines} line(s)")
    return 0


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def publish_start(video: Path, given: datetime | None, origin: datetime) -> tuple[datetime, str]:
    """When the first frame of a replay that publishes was recorded, and where that was read: ``--start-time``,
    else the file (its creation_time tag or name), else the config's ``windows.origin`` if it is set. A
    dashboard must not get windows of 1970, so with none of them the replay is refused."""
    from edge.media import recording_start

    if given is not None:
        return given, "--start-time"
    found = recording_start(video)
    if found is not None:
        return found
    if origin != _EPOCH:
        return origin, "windows.origin of the config"
    raise ConfigError(
        f"{video}: publishing needs the time the video was recorded, and neither its metadata (creation_time) nor "
        "its name says it; give it, e.g. --start-time 2024-05-01T07:00:00Z (or set windows.origin in the config)"
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM in ``edge replay``: it takes the path of Ctrl-C, so the partial window is flushed and the
    publisher drains its outbox before the process exits (with 143 instead of 130)."""


def _terminated(signum: int, _frame: object) -> None:
    log.warning("SIGTERM received: stopping the replay; the partial window is flushed and published as on Ctrl-C")
    raise Terminated


def _cmd_replay(args: argparse.Namespace) -> int:
    import signal

    from edge.attest import disable_core_dumps
    from edge.detect import Detector
    from edge.prepare import prepare, video_size
    from edge.replay import format_summary, replay

    signal.signal(signal.SIGTERM, _terminated)  # as SIGINT, not the default action (no flush)
    disable_core_dumps()  # a core dump could hold frames (P2)
    config = load_config(args.config)
    if args.model_dir is not None:
        config = config.model_copy(
            update={"detector": config.detector.model_copy(update={"model_dir": args.model_dir})}
        )
    size = video_size(args.video)
    prepare(config, frame_sizes={config.camera(args.camera).name: size} if size else None, device=False)
    detector = Detector(config.detector)
    publisher = None
    if args.mqtt is not None or args.publish:
        args.start_time, where = publish_start(args.video, args.start_time, config.windows.origin)
        print(f"windows start at {args.start_time.isoformat()} (from {where})")
        from edge.config import MqttConfig
        from edge.publish.mqtt import MqttPublisher

        mqtt = config.mqtt
        if args.mqtt is not None:  # a dashboard broker for this replay; the outbox lives in the output folder
            mqtt = MqttConfig(url=args.mqtt, outbox_path=args.output / "outbox.sqlite3")
        if mqtt is None:
            raise ConfigError("--publish needs an mqtt section in the config (or use --mqtt URL)")
        args.output.mkdir(parents=True, exist_ok=True)
        publisher = MqttPublisher(mqtt, config.device_id)
        publisher.start()
    progress = sys.stderr.isatty() and not args.quiet and os.environ.get("CI") != "true"
    try:
        summary = replay(args.video, config, detector, args.output, camera=args.camera,
                         start_time=args.start_time, max_frames=args.max_frames, progress=progress,
                         force_events_s=tuple(args.force_event), publisher=publisher)
    finally:
        drained = publisher.stop(args.flush_timeout) if publisher is not None else True
    input_px = "x".join(map(str, detector.input_size_px))
    print(f"{args.video} with {config.detector.model} at {input_px} ({', '.join(detector.providers)})")
    print(format_summary(summary))
    outputs = ["metrics.jsonl", "events.jsonl", *(["speeds.jsonl"] if summary.calibrated else [])]
    print("output: " + ", ".join(str(args.output / name) for name in outputs))
    if summary.clips is not None:
        print(f"clips: {args.output / 'clips'} (budget {config.clips.budget_s_per_hour:g} s per hour, "
              f"{config.clips.budget_s_per_day:g} s per day)")
    if not drained:
        print(f"published: not all acknowledged within {args.flush_timeout:g} s; the outbox keeps the rest")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from edge.detect import Detector
    from edge.prepare import prepare
    from edge.service import Service

    config = load_config(args.config)
    prepare(config)  # every config error refused here, before any thread starts
    service = Service(config, args.config, Detector(config.detector))
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:  # no live reload: the same clean stop as SIGTERM, said so in the log
            log.warning("SIGHUP received: flushing and exiting cleanly; edge run does not reload in place, a "
                        "changed config takes effect by restarting the service (systemctl restart edge)")
        else:
            log.info("signal %d: stopping", signum)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    service.start()
    print(f"edge run: device {config.device_id}, {len(config.cameras)} camera(s), attestation "
          f"{'ok' if service.attestation['ok'] else 'FAILED'}", flush=True)
    watchdog = threading.Thread(target=service.run_forever, args=(stopping.set,), name="watchdog", daemon=True)
    watchdog.start()
    stopping.wait()
    service.stop(args.flush_timeout)
    print("edge run: stopped", flush=True)
    return 0


def _cmd_attest(args: argparse.Namespace) -> int:
    import json

    from edge.attest import attestation, disable_core_dumps
    from edge.prepare import prepare

    disable_core_dumps()  # as the service does at start-up; the check then proves it took effect
    config = load_config(args.config)
    prepare(config)
    record = attestation(config, args.config)
    print(json.dumps(record, indent=2))
    return 0 if record["ok"] else 1


def _password(env: str | None) -> bytes | None:
    if env is None:
        return None
    value = os.environ.get(env)
    if value is None:
        raise EdgeError(f"environment variable {env} (--password-env) is not set")
    return value.encode()


def _cmd_clips(args: argparse.Namespace) -> int:
    from edge.clips import crypto

    if args.clips_cmd == "keygen":
        password = _password(args.password_env)
        private_pem, public_pem = crypto.generate_keypair(password)
        args.out.mkdir(parents=True, exist_ok=True)
        private, public = args.out / "clips-private.pem", args.out / "clips-public.pem"
        if existing := [str(p) for p in (private, public) if p.exists()]:
            raise EdgeError(f"{' and '.join(existing)} already exist(s): nothing was overwritten. Clips encrypted for "
                            "that public key need its private key: keep the pair, or move it away first to make a "
                            "new one")
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
        public.write_bytes(public_pem)
        print(f"private key (keep it off the device): {private}\npublic key (clips.encryption): {public}")
        return 0
    key = crypto.load_private_key(args.key, _password(args.password_env))
    clip_id = args.clip_id or args.input.name.split(".")[0]
    crypto.decrypt_file(args.input, args.output, key, crypto.clip_context(args.device, clip_id))
    print(f"{args.output}: decrypted and authenticated")
    return 0


def _cmd_trajectories(args: argparse.Namespace) -> int:
    import json
    from collections import Counter

    from edge.config import load_study
    from edge.trajectories import AnalysisOptions, analyse_trajectories

    study = load_study(args.config)
    result = analyse_trajectories(
        args.csv, {k: list(v) for k, v in study.zones_m.items()}, study.lines_m,
        AnalysisOptions(speed_limit_kmh=study.speed_limit_kmh, conflicts=study.conflicts),
    )
    print(f"{args.csv}: {result.n_tracks} tracks over {result.duration_s:.1f} s")
    if result.movement_counts:
        print("\nmovement            " + " ".join(f"{c:>10}" for c in ROAD_USER_CLASSES))
        for name, per_class in sorted(result.movement_counts.items()):
            print(f"{name:20}" + " ".join(f"{per_class[c]:>10}" for c in ROAD_USER_CLASSES))
    for line, per_dir in result.speeds.items():
        for direction, stats_by_class in per_dir.items():
            for cls, st in stats_by_class.items():
                if st.count:
                    print(f"speed {line} {direction} {cls}: n={st.count} mean {st.mean_kmh} p85 {st.p85_kmh} km/h, "
                          f"{st.over_limit} over {study.speed_limit_kmh:g}")
    kinds = Counter(f"{nm.conflict_type}/{nm.severity}" for nm in result.near_misses)
    print(f"\nnear-misses: {len(result.near_misses)} " + (str(dict(sorted(kinds.items()))) if kinds else ""))
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        report = {
            "tracks": result.n_tracks, "duration_s": result.duration_s,
            "movements": result.movement_counts, "counts": result.counts,
            "speeds": {ln: {d: {c: st.as_dict() for c, st in pc.items() if st.count or st.unmeasured}
                            for d, pc in pd.items()} for ln, pd in result.speeds.items()},
            "near_misses": [{"t_s": nm.t_s, "type": nm.conflict_type, "severity": nm.severity, "ttc_s": nm.ttc_s,
                             "pet_s": nm.pet_s, "drac_mps2": nm.drac_mps2, "road_users": nm.classes,
                             "speeds_mps": nm.speeds_mps, "vulnerable": nm.vulnerable, "location_m": nm.location_m}
                            for nm in result.near_misses],
        }
        (args.output / "analysis.json").write_text(json.dumps(report, indent=1))
        print(f"report: {args.output / 'analysis.json'}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from edge.models import cache_dir, fetch, load_manifest, search_dirs

    manifest = load_manifest()
    if args.models_cmd == "fetch":
        path = fetch(manifest.get(args.name), args.dest)
        print(f"{args.name}: {path} (sha256 verified)")
        return 0
    print(f"search path: {', '.join(map(str, search_dirs(None)))} (cache: {cache_dir()})")
    for m in manifest.models:
        print(f"{m.name:22} {m.layout:12} {m.input_size_px[0]}x{m.input_size_px[1]:<5} {m.file}  [{m.licence}]")
    return 0


_EPILOG = """\
configs: config/*.yaml are worked examples, one per shipped clip; config/device-example.yaml is a device's.
models: looked for in EDGE_MODEL_DIR, then the user cache (see `edge models list`).

first steps:
  edge validate-config config/carpark.yaml
  edge replay ../shared/footage/highway-overpass/video1.avi -c config/highway-overpass.yaml -o out/overpass
  edge run -c /etc/edge/config.yaml            (on the device, under systemd)

`edge COMMAND --help` shows each command's options and an example."""

_DESCRIPTION = """\
The edge pipeline of a privacy-reviewed traffic camera: it counts road users by line, direction, class and
turning movement, measures speeds and near-miss conflicts on the calibrated ground, keeps only short encrypted
clips of near-misses (never audio, never other frames), and publishes anonymous per-window metrics over MQTT."""


def _command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str,
             example: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=summary, description=summary, epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_validate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    v = _command(sub, "validate-config", "check a config file as `edge run` would; print each error with its YAML "
                 "path and exit 1", "edge validate-config config/highway-overpass.yaml")
    v.add_argument("config", type=Path, help="the YAML config file")
    v.set_defaults(func=_cmd_validate)


def _add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = _command(sub, "replay", "run the pipeline on a recorded video, as fast as the machine allows, and print "
                 "counts, speeds and near-misses; write metrics.jsonl (and clips, if on) to the output folder",
                 "edge replay ../shared/footage/highway-overpass/video1.avi -c config/highway-overpass.yaml "
                 "-o out/overpass")
    r.add_argument("video", type=Path, help="the recorded video (MP4, MKV, ...)")
    r.add_argument("-c", "--config", type=Path, required=True, help="the YAML config (lines, zones, calibration)")
    r.add_argument("-o", "--output", type=Path, required=True, help="output folder for metrics.jsonl")
    r.add_argument("--camera", help="camera of the config to use (default: the first)")
    r.add_argument("--start-time", type=utc_time_arg,
                   help="UTC instant of the video's first frame (default: windows.origin of the config; when "
                   "publishing: the file's creation_time tag or a date in its name, else required)")
    r.add_argument("--max-frames", type=int, help="stop after this many frames")
    r.add_argument("--model-dir", type=Path, help="folder with the model file (overrides the config)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.add_argument("--publish", action="store_true", help="also publish over MQTT as the config's mqtt says")
    r.add_argument("--mqtt", metavar="URL", help="also publish to this broker, e.g. mqtt://127.0.0.1:1883")
    r.add_argument("--flush-timeout", type=float, default=30.0, help="seconds to wait for broker acks at the end")
    r.add_argument("--force-event", type=float, action="append", default=[], metavar="T_S",
                   help="trigger a clip event at this media time (seconds); repeatable; for testing clips")
    r.set_defaults(func=_cmd_replay)


def _add_run_and_attest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = _command(sub, "run", "the device service: every camera of the config, publishing over MQTT until "
                   "SIGTERM", "edge run -c /etc/edge/config.yaml")
    run.add_argument("-c", "--config", type=Path, required=True, help="the device's YAML config")
    run.add_argument("--flush-timeout", type=float, default=10.0, help="seconds to drain the outbox at stop")
    run.set_defaults(func=_cmd_run)
    a = _command(sub, "attest", "print the attestation record (version, privacy protocol, limits, hashes, "
                 "checks) for the privacy officer; exit 1 if a check fails", "edge attest -c /etc/edge/config.yaml")
    a.add_argument("-c", "--config", type=Path, required=True, help="the device's YAML config")
    a.set_defaults(func=_cmd_attest)


def _add_clips(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = _command(sub, "clips", "tools for the holder of the clip key, on a city machine (not on the device)",
                 "edge clips keygen --out keys/")
    csub = c.add_subparsers(dest="clips_cmd", required=True)
    k = csub.add_parser("keygen", help="make the city's X25519 key pair for clip encryption")
    k.add_argument("--out", type=Path, required=True, help="folder for clips-private.pem and clips-public.pem")
    k.add_argument("--password-env", help="environment variable holding a password for the private key")
    d = csub.add_parser("decrypt", help="decrypt and authenticate one clip")
    d.add_argument("input", type=Path, help="the encrypted clip")
    d.add_argument("output", type=Path, help="where to write the MP4")
    d.add_argument("--key", type=Path, required=True, help="the private key (PEM)")
    d.add_argument("--device", required=True, help="device_id the clip came from (bound into the ciphertext)")
    d.add_argument("--clip-id", help="clip id (default: the file name before the first dot)")
    d.add_argument("--password-env", help="environment variable holding the private key's password")
    c.set_defaults(func=_cmd_clips)


def _add_trajectories_and_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = _command(sub, "analyse-trajectories", "counts, movements, speeds and near-misses of already-extracted "
                 "ground trajectories (e.g. a drone dataset)",
                 "edge analyse-trajectories tracks.csv -c study.yaml -o out/study")
    t.add_argument("csv", type=Path, help="CSV with columns track_id,class,t_s,x_m,y_m (metres, ground frame)")
    t.add_argument("-c", "--config", type=Path, required=True, help="study YAML: zones_m, lines_m, thresholds")
    t.add_argument("-o", "--output", type=Path, help="folder for analysis.json")
    t.set_defaults(func=_cmd_trajectories)
    m = _command(sub, "models", "list the model manifest or fetch a pinned model (checks its sha256)",
                 "edge models fetch yolox-nano-416")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    msub.add_parser("list", help="models in the manifest and where they are looked for")
    f = msub.add_parser("fetch", help="download a model's pinned URL and check its sha256")
    f.add_argument("name", help="a model name from `edge models list`")
    f.add_argument("--dest", type=Path, help="folder to store it in (default: the cache)")
    m.set_defaults(func=_cmd_models)


def _add_dashboard(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edge.dashboard import command  # argparse and the stdlib HTTP server only; nothing heavy

    d = _command(sub, "dashboard", command.SUMMARY, command.EXAMPLE)
    command.add_arguments(d)
    d.set_defaults(func=command.run)


def _add_batch(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edge.batch import command  # argparse only; the batch machinery is imported when it runs

    b = _command(sub, "batch", command.SUMMARY, command.EXAMPLE)
    command.add_arguments(b)
    b.set_defaults(func=command.run)


def _add_city(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edge.city import cli as city  # argparse only; the archive and report are imported when they run

    a = _command(sub, "archive", city.ARCHIVE_SUMMARY, city.ARCHIVE_EXAMPLE)
    city.add_archive_arguments(a)
    a.set_defaults(func=city.run_archive)
    r = _command(sub, "report", city.REPORT_SUMMARY, city.REPORT_EXAMPLE)
    city.add_report_arguments(r)
    r.set_defaults(func=city.run_report)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge", description=_DESCRIPTION, epilog=_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"edge {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _add_validate(sub)
    _add_replay(sub)
    _add_run_and_attest(sub)
    _add_clips(sub)
    _add_trajectories_and_models(sub)
    _add_dashboard(sub)
    _add_batch(sub)
    _add_city(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
        return code
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
