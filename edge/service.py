"""The device service, ``edge run``: every camera in its own worker, one MQTT publisher, a watchdog.

    start()  -> refuses to run when the attestation (core dumps off, model, clip store, encoder, clip
                encryption) failed; else publisher (retained "online" with the attestation),
                one worker per camera, watchdog; systemd READY=1
    watchdog -> every second: restart a crashed worker after a jittered back-off (1 s doubling to 60 s)
                within a budget per hour, then report it "failed"; report stalled cameras; publish
                health; systemd WATCHDOG=1 while at least one camera is healthy (streaming, retrying,
                or waiting for its restart), so one broken camera never restarts the whole service
    stop()   -> SIGTERM: each worker closes its partial window into the outbox, then the publisher
                flushes what it can and disconnects (the broker then publishes the retained "offline")

Nothing here blocks on the network: workers write to the outbox, and only the publisher's own thread
talks to the broker. A camera fault never ends the process (the source reconnects with back-off).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from edge.attest import attestation, disable_core_dumps
from edge.clips.recorder import ClipRecorder, WindowClipTally, build_recorder
from edge.config import CameraConfig, EdgeConfig, FileSourceConfig
from edge.drive import drive, with_drops
from edge.errors import ConfigError, EdgeError
from edge.payloads import CameraHealth, DeviceHealth, iso_utc
from edge.pipeline import CameraPipeline, FrameResult, ObjectDetector
from edge.publish.homeassistant import discovery_messages
from edge.publish.mqtt import MqttPublisher
from edge.sinks import FanOutSink, MqttSink, RecordCounts, RecordSink
from edge.source import FileSource, LiveSource, SourceState, open_source
from edge.stages import ANALYTICS_THREAD
from edge.types import Frame

log = logging.getLogger(__name__)

WATCHDOG_PERIOD_S = 1.0
RESTARTS_PER_HOUR = 10
STALL_REPORT_S = 10.0
RESTART_BACKOFF_MIN_S = 1.0  # the first restart of a crashed worker waits 0.5-1 s ...
RESTART_BACKOFF_MAX_S = 60.0  # ... each further one twice as long, up to 30-60 s (jittered)
RESTART_RESET_S = 60.0  # a worker that ran this long since its restart starts its back-off afresh


def sd_notify(message: str) -> bool:
    """Tell systemd (``Type=notify``, ``WatchdogSec=``) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.sendto(message.encode(), address)
        return True
    return False


@dataclass
class WorkerStats:
    frames: int = 0
    dropped: int = 0  # frames the live reader dropped (newest frame only)
    restarts: int = 0
    last_frame_mono: float | None = None
    records: RecordCounts = field(default_factory=RecordCounts)  # what went to the sink


@dataclass
class RestartState:
    """The watchdog's record of one camera's restarts."""

    recent: deque[float] = field(default_factory=deque)  # restart times within the last hour
    attempt: int = 0  # restarts since the worker last ran RESTART_RESET_S: the back-off step
    due: float | None = None  # when the crashed worker is restarted; None: not scheduled
    started: float | None = None  # when it was last restarted
    failed: bool = False  # the hour's budget is spent: the camera stays down and is reported "failed"


class CameraWorker:
    """One camera in its own thread: source -> pipeline -> sink. ``stop`` flushes the partial window."""

    def __init__(self, config: EdgeConfig, camera: CameraConfig, detector: ObjectDetector, sink: RecordSink, *,
                 split_analytics: bool = ANALYTICS_THREAD) -> None:
        if camera.source is None:
            raise ConfigError(f"camera {camera.name}: `edge run` needs cameras[].source (rtsp, usb or file)")
        self.config, self.camera, self.detector, self.sink = config, camera, detector, sink
        self.split_analytics = split_analytics  # detection and analytics in separate threads (> 2 cores)
        self.stats = WorkerStats()
        self.error: BaseException | None = None
        self.finished = False  # a file source without `loop` that reached its end: not restarted
        self._stop = threading.Event()
        self._source: FileSource | LiveSource | None = None
        self._thread: threading.Thread | None = None
        self.recorder: ClipRecorder | None = None

    # ------------------------------------------------------------------------------------------ control
    def start(self) -> None:
        self.error = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.camera.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        source = self._source
        if isinstance(source, LiveSource):
            source.close()  # unblocks the frame iterator
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def state(self) -> str:
        if not self.alive:
            return "crashed" if self.error is not None else "closed" if self.finished else "stopped"
        source = self._source
        if isinstance(source, LiveSource):
            return source.state.value
        return "streaming"

    # ------------------------------------------------------------------------------------------- thread
    def _run(self) -> None:
        try:
            self._work()
        except Exception as exc:  # a crashed worker is restarted by the watchdog
            self.error = exc
            log.exception("camera %s: worker crashed", self.camera.name)

    def _frames(self, recorder: ClipRecorder | None) -> FileSource | LiveSource:
        source = self.camera.source
        if source is None:
            raise ConfigError(f"camera {self.camera.name}: no source")
        tap = recorder.ring if recorder is not None else None
        fit = self.detector.input_size_px
        return open_source(source, on_packet=tap, fit_px=fit)

    def _work(self) -> None:
        cfg = self.config
        recorder = build_recorder(cfg.clips, cfg.device_id, self.camera.name) if cfg.clips.enabled else None
        self.recorder = recorder
        pipeline = CameraPipeline(cfg, self.camera, self.detector, recorder=recorder)
        tally = WindowClipTally(recorder)  # clip counts of each window into its health
        try:
            # Detection in a thread of its own ahead of tracking and analytics where cores allow (as replay);
            # at the end (stop, file end, crash) the partial window goes to the outbox, not lost.
            drive(self._sources(recorder), pipeline, tally, FanOutSink(self.sink, self.stats.records),
                  on_frame=self._count, stop=self._stop.is_set, detect_thread=self.split_analytics,
                  thread_name=f"camera-{self.camera.name}-detect", wake=self._wake)
        finally:
            if self._source is not None:
                self._source.close()  # a file only now: the detect thread decoding it has stopped
            if recorder is not None:
                recorder.close()
                recorder.store.close()

    def _wake(self) -> None:
        source = self._source
        if isinstance(source, LiveSource):
            source.close()  # thread-safe: wakes the detect stage if it waits for a frame

    def _count(self, frame: Frame, result: FrameResult) -> None:
        self.stats.frames += 1
        self.stats.last_frame_mono = time.monotonic()

    def _sources(self, recorder: ClipRecorder | None) -> Iterator[tuple[Frame, int]]:
        """The camera's frames, each with the frames dropped before it, across the reopenings of a looping
        file, until the source ends or ``stop``."""
        file_cfg = self.camera.source if isinstance(self.camera.source, FileSourceConfig) else None
        counter = itertools.count()  # frame index across the reopenings of a looping file
        while not self._stop.is_set():
            source = self._frames(recorder)
            self._source = source
            try:
                if file_cfg is not None and isinstance(source, FileSource):
                    yield from self._file(source, file_cfg, counter)
                else:
                    yield from self._live(source)
            finally:
                source.close()  # idempotent; in the thread that decodes the file
            if not (file_cfg is not None and file_cfg.loop):
                self.finished = file_cfg is not None and not self._stop.is_set()
                if self.finished and file_cfg is not None:
                    log.warning("camera %s: file %s ended after %d frames (source.loop is false)",
                                self.camera.name, file_cfg.path, self.stats.frames)
                return

    def _file(self, source: FileSource, file_cfg: FileSourceConfig,
              counter: Iterator[int]) -> Iterator[tuple[Frame, int]]:
        """A file standing in for a camera: live clock, frame index across loops, optional pacing."""
        t_start = time.monotonic()
        for frame in source:
            if self._stop.is_set():
                return
            if file_cfg.realtime:
                delay = t_start + frame.t_s - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            yield Frame(frame.image, next(counter), time.monotonic(), time.time(), frame.pts, frame.source_size), 0

    def _live(self, source: FileSource | LiveSource) -> Iterator[tuple[Frame, int]]:
        """A camera's frames with the frames its reader dropped before each (counted in ``stats``)."""
        for frame, dropped in with_drops(source):
            if self._stop.is_set():
                return
            self.stats.dropped += dropped
            yield frame, dropped


class Service:
    """All cameras of one device."""

    def __init__(self, config: EdgeConfig, config_path: Path, detector: ObjectDetector, *,
                 rng: random.Random | None = None) -> None:
        if config.mqtt is None:
            raise ConfigError("`edge run` needs an mqtt section: the device publishes only over MQTT")
        self.config = config
        disable_core_dumps()  # before the attestation, which checks that it took effect
        if config.clips.enabled:  # the store folder, as its check in the attestation expects it
            config.clips.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(config.clips.store_dir, 0o700)
        self.attestation = attestation(config, config_path)
        self.publisher = MqttPublisher(config.mqtt, config.device_id, attestation=self.attestation,
                                       discovery=discovery_messages(config))  # Home Assistant, if on
        sink = MqttSink(self.publisher)  # shared by the workers; the publisher is stopped by ``stop``
        self.workers = [CameraWorker(config, cam, detector, sink) for cam in config.cameras]
        self._restarts: dict[str, RestartState] = {w.camera.name: RestartState() for w in self.workers}
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self.publisher.health_report = self.health  # the one health shape of the device: with its cameras
        self._rates: dict[str, tuple[float, int, int]] = {}  # camera -> (time, frames, frames+dropped)

    def start(self) -> None:
        if not self.attestation["ok"]:  # a device that cannot attest its privacy terms does not run
            failed = "; ".join(f"{c['name']}: {c['detail']}" for c in self.attestation["checks"] if not c["ok"])
            raise EdgeError(f"the attestation failed, so the service does not start ({failed}); "
                            "`edge attest -c CONFIG` prints the whole record")
        self.publisher.start()
        for w in self.workers:
            w.start()
        sd_notify("READY=1")

    @property
    def all_files_ended(self) -> bool:
        """Every camera is a file source that reached its end without ``loop``: nothing is left to do."""
        return bool(self.workers) and all(w.finished for w in self.workers)

    def run_forever(self, on_all_ended: Callable[[], None] | None = None) -> None:
        """The watchdog loop, until ``stop`` (SIGTERM); calls ``on_all_ended`` once when every camera's
        file has ended (``edge run`` then stops as on SIGTERM)."""
        while not self._stop.wait(WATCHDOG_PERIOD_S):
            healthy = self.watchdog_tick()
            if healthy:
                sd_notify("WATCHDOG=1")
            if on_all_ended is not None and self.all_files_ended:
                log.warning("every camera's file has ended: stopping")
                on_all_ended()
                on_all_ended = None

    def watchdog_tick(self, now: float | None = None) -> bool:
        """Restart crashed workers when their back-off is over, publish health when due; True (feed the
        systemd watchdog) while at least one camera is healthy. ``now`` is ``time.monotonic()``."""
        now = time.monotonic() if now is None else now
        healthy = [self._camera_ok(w, now) for w in self.workers]
        return any(healthy) or not healthy

    def _camera_ok(self, w: CameraWorker, now: float) -> bool:
        """One camera's turn of the watchdog: False when it is down for good (budget spent) or stalled."""
        r = self._restarts[w.camera.name]
        if w.alive:
            if r.attempt and r.started is not None and now - r.started >= RESTART_RESET_S:
                r.attempt = 0  # it ran long enough: the next crash starts the back-off afresh
            age = now - w.stats.last_frame_mono if w.stats.last_frame_mono is not None else None
            # frames stopped but the source does not know yet: not healthy (systemd decides if all are)
            return not (age is not None and age > STALL_REPORT_S and w.state == SourceState.STREAMING.value)
        if w.finished or self._stop.is_set():
            return True
        return self._restart_when_due(w, r, now)

    def _restart_when_due(self, w: CameraWorker, r: RestartState, now: float) -> bool:
        """A crashed worker: schedule its restart, restart it when due, or give up for the hour."""
        while r.recent and now - r.recent[0] > 3600:
            r.recent.popleft()
        if len(r.recent) >= RESTARTS_PER_HOUR:
            if not r.failed:
                log.error("camera %s: worker restart budget spent (%d in the last hour); reported failed, "
                          "staying down", w.camera.name, RESTARTS_PER_HOUR)
            r.failed = True
            return False
        r.failed = False
        if r.due is None:
            delay = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_MIN_S * 2 ** min(r.attempt, 30))
            r.due = now + delay * self._rng.uniform(0.5, 1.0)  # jittered: cameras do not restart in step
            log.warning("camera %s: worker %s; restarting in %.1f s", w.camera.name,
                        "crashed" if w.error else "stopped", r.due - now)
        if now < r.due:
            return True  # a known retry state, like a camera that is reconnecting
        r.due, r.started = None, now
        r.attempt += 1
        r.recent.append(now)
        w.stats.restarts += 1
        log.warning("camera %s: restarting the worker (%d in the last hour)", w.camera.name, len(r.recent))
        w.start()
        return True

    def health(self) -> DeviceHealth:
        base = self.publisher.health()
        now = time.monotonic()
        cameras = {}
        for w in self.workers:
            age = now - w.stats.last_frame_mono if w.stats.last_frame_mono is not None else None
            clips = w.recorder.counters if w.recorder is not None else None
            used = w.recorder.budget.used_s(time.time()) if w.recorder is not None else (0.0, 0.0)
            t_prev, out_prev, in_prev = self._rates.get(w.camera.name, (now, w.stats.frames, w.stats.frames))
            dt = now - t_prev
            frames_in = w.stats.frames + w.stats.dropped
            self._rates[w.camera.name] = (now, w.stats.frames, frames_in)
            failed = self._restarts[w.camera.name].failed
            cameras[w.camera.name] = CameraHealth(
                state="failed" if failed else w.state, frames=w.stats.frames, dropped_frames=w.stats.dropped,
                restarts=w.stats.restarts,
                decode_errors=w._source.decode_errors if w._source is not None else 0,
                fps_in=round((frames_in - in_prev) / dt, 2) if dt > 0 else 0.0,
                fps_out=round((w.stats.frames - out_prev) / dt, 2) if dt > 0 else 0.0,
                clip_store_bytes=_clip_bytes(w.recorder),
                frame_age_s=round(age, 3) if age is not None else None,
                clips_written=clips.written if clips else 0,
                clips_dropped=clips.dropped_faults if clips else 0,
                clips_dropped_budget=clips.dropped_budget if clips else 0,
                clip_s_last_hour=round(used[0], 3), clip_s_last_day=round(used[1], 3),
            )
        return base.model_copy(update={"cameras": cameras, "cpu_temp_c": cpu_temperature_c(),
                                       "time": iso_utc(datetime.now(UTC))})

    def stop(self, flush_timeout_s: float = 10.0) -> None:
        self._stop.set()
        sd_notify("STOPPING=1")
        for w in self.workers:
            w.stop()
        self.publisher.stop(flush_timeout_s)


def _clip_bytes(recorder: ClipRecorder | None) -> int:
    if recorder is None:
        return 0
    try:
        return recorder.store.usage_bytes()
    except sqlite3.ProgrammingError:  # the worker closed its store while stopping
        return 0


def cpu_temperature_c() -> float | None:
    """The highest thermal-zone temperature, when the kernel exposes one."""
    temps = []
    for zone in Path("/sys/class/thermal").glob("thermal_zone*/temp"):
        with contextlib.suppress(OSError, ValueError):
            temps.append(int(zone.read_text().strip()) / 1000)
    return max(temps) if temps else None
