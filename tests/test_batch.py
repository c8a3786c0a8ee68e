"""edge batch (``edge.batch``): manifests, segment plans, the seeking source, merging, the scheduler, and on
real clips: batch == per-file replays (local and Ray), 4 segments == the unsplit replay, SIGKILL + rerun.

The real-clip tests run on the shared OTC clips (60 frames each) and on the highway overpass clip
concatenated with ffmpeg to 126 s; the whole file takes about a minute on 2 idle cores."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.batch.job import JobSpec, Outcome, Progress
from edge.batch.ledger import Ledger
from edge.batch.manifest import Recording, load_manifest, pattern_regex
from edge.batch.outputs import combine_metrics, combine_speeds
from edge.batch.plan import Probe, SplitOptions, config_sha256, plan_jobs, segment_spans
from edge.batch.progress import BatchProgress
from edge.batch.runner import BatchOptions, BatchSummary, _Plan, _Scheduler, run_batch
from edge.batch.seek import SegmentSource
from edge.config import EdgeConfig
from edge.detect import Detector
from edge.errors import ConfigError
from edge.payloads import NearMissEvent, SpeedStats, WindowHealth, WindowMetrics, WindowSpeeds
from edge.replay import replay
from edge.source import FileSource
from tests.conftest import REPO, missing, repo_config, shared_path

OTC = "footage/otc-intersection/Testvideo_{}_FR20_2020-01-01_00-00-00.mp4"
#: Four recordings of the two OTC clips, each in its own windows (so no window is shared by two of them).
OTC_RUNS = [("Cars-Cyclist", "2024-05-01T07:00:00Z"), ("Cars-Truck", "2024-05-01T07:05:10Z"),
            ("Cars-Cyclist", "2024-05-01T08:00:20Z"), ("Cars-Truck", "2024-05-01T09:00:00Z")]
RECORDS = ("metrics.jsonl", "speeds.jsonl", "events.jsonl")


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def otc_config(model_dir: Path) -> EdgeConfig:
    return repo_config("otc-intersection.yaml", model_dir)


@pytest.fixture(scope="module")
def otc_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("manifest") / "otc.csv"
    rows = [f"{shared_path(OTC.format(clip))},junction,{start}" for clip, start in OTC_RUNS]
    path.write_text("path,camera,start\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def per_file(otc_config: EdgeConfig, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """What one `edge replay` per recording writes, its records concatenated in time order."""
    detector = Detector(otc_config.detector)
    out: dict[str, bytes] = dict.fromkeys(RECORDS, b"")
    for i, (clip, start) in enumerate(sorted(OTC_RUNS, key=lambda r: r[1])):
        folder = tmp_path_factory.mktemp(f"replay{i}")
        replay(shared_path(OTC.format(clip)), otc_config, detector, folder, start_time=_when(start))
        for name in RECORDS:
            out[name] += (folder / name).read_bytes()
    return out


def assert_same_records(outdir: Path, expected: dict[str, bytes]) -> None:
    for name in RECORDS:
        assert (outdir / name).read_bytes() == expected[name], name
    assert expected["metrics.jsonl"].count(b"\n") >= 4


# ------------------------------------------------------------------------------------------------ manifest
def test_manifests_in_csv_and_yaml_with_a_file_name_pattern(otc_config: EdgeConfig, tmp_path: Path) -> None:
    folder = shared_path("footage/otc-intersection")
    (tmp_path / "m.yaml").write_text(
        f"recordings:\n  - folder: {folder}\n    pattern: 'Testvideo_*_%Y-%m-%d_%H-%M-%S.mp4'\n"
        f"  - {{path: {folder / 'Testvideo_Cars-Truck_FR20_2020-01-01_00-00-00.mp4'}, "
        "start: 2024-05-01T07:00:00Z, camera: junction}\n")
    found = load_manifest(tmp_path / "m.yaml", otc_config)
    assert [(r.path.name.split("_")[1], r.start_from) for r in found] == [
        ("Cars-Cyclist", "file name pattern"), ("Cars-Truck", "file name pattern"), ("Cars-Truck", "manifest")]
    assert found[0].start == datetime(2020, 1, 1, tzinfo=UTC) and found[2].start == datetime(2024, 5, 1, 7,
                                                                                              tzinfo=UTC)
    (tmp_path / "m.csv").write_text(f"path,camera,start\n{folder / 'Testvideo_Cars-Truck_FR20_2020-01-01_00-00-00.mp4'}"
                                    ",,\n")
    (csv_rec,) = load_manifest(tmp_path / "m.csv", otc_config)
    assert csv_rec.camera == "junction" and csv_rec.start == datetime(2020, 1, 1, tzinfo=UTC)
    assert "its file name" in csv_rec.start_from
    (tmp_path / "bad.csv").write_text(f"path,camera,start\n{csv_rec.path},nope,2024-05-01T07:00:00\n")
    with pytest.raises(ConfigError, match="nope"):
        load_manifest(tmp_path / "bad.csv", otc_config)
    m = pattern_regex("cam_%Y%m%d_%H%M%S*.mp4").fullmatch("cam_20240501_070000_x.mp4")
    assert m is not None and m.groupdict() == {"Y": "2024", "m": "05", "d": "01", "H": "07", "M": "00", "S": "00"}


# ------------------------------------------------------------------------------------------------ plan
def test_segments_fall_on_window_boundaries_with_a_warm_up(otc_config: EdgeConfig) -> None:
    rec = Recording(Path("x.mp4"), "junction", datetime(2024, 5, 1, 7, 0, 50, tzinfo=UTC))
    info = Probe(fps=10.0, frames=1350, size=(800, 600))  # 135 s: 07:00:50 .. 07:03:05
    spans = segment_spans(otc_config, rec, info, SplitOptions(segment_s=60, warmup_s=10))
    origin_w = int(datetime(2024, 5, 1, 7, 1, tzinfo=UTC).timestamp()
                   - otc_config.windows.origin.timestamp()) // 60
    assert [(s.keep_from, s.keep_until) for s in spans] == [
        (None, origin_w), (origin_w, origin_w + 1), (origin_w + 1, origin_w + 2), (origin_w + 2, None)]
    # a segment starts 10 s (and a frame) before its first window: 07:02:00 is media time 70 s, frame 700
    assert [s.first_frame for s in spans] == [0, 0, 599, 1199]
    assert len(segment_spans(otc_config, rec, info, SplitOptions(segment_s=None))) == 1
    assert len(segment_spans(otc_config, rec, info, SplitOptions(segment_s=120))) == 2
    jobs = plan_jobs(otc_config, rec, info, SplitOptions(segment_s=60, warmup_s=10), input_sha256="a" * 64,
                     cfg_sha256=config_sha256(otc_config), clips_root=None)
    assert len({j.job_id for j in jobs}) == 4 and jobs[-1].frames == 1350 - 1199
    other = otc_config.model_copy(update={"windows": otc_config.windows.model_copy(update={"window_s": 120})})
    assert config_sha256(other) != config_sha256(otc_config)


# ------------------------------------------------------------------------------------------------ seek
def _ffmpeg() -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        missing("ffmpeg is not on PATH; install it (Debian: apt-get install ffmpeg)")
    return ffmpeg


@pytest.fixture(scope="module")
def h264_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The overpass clip as H.264 in MP4 with B-frames and a keyframe every 25 frames, as cameras record."""
    out = tmp_path_factory.mktemp("h264") / "overpass.mp4"
    subprocess.run([_ffmpeg(), "-nostdin", "-v", "error", "-i", str(shared_path("footage/highway-overpass/video1.avi")),
                    "-frames:v", "300", "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "2",
                    "-pix_fmt", "yuv420p", str(out)], check=True, timeout=60)
    return out


@pytest.mark.parametrize(("clip", "seeks"), [
    ("footage/highway-overpass/video1.avi", True),  # MPEG-4 part 2 in AVI, a keyframe every 300 frames
    ("h264", True),  # H.264 with B-frames in MP4
    ("footage/highway-cctv/video02.avi", False),  # packed B-frames: pts out of order, read from the start
])
def test_a_seeked_source_gives_the_frames_of_the_whole_decode(clip: str, seeks: bool, h264_clip: Path) -> None:
    path = h264_clip if clip == "h264" else shared_path(clip)

    def frames(source: FileSource, n: int) -> list[tuple[int, float, int | None, str]]:
        return [(f.index, f.t_s, f.pts, hashlib.sha256(f.image.tobytes()).hexdigest())
                for f, _ in zip(source, range(n), strict=False)]

    with FileSource(path, fit_px=(416, 416)) as whole:
        reference = frames(whole, 280)
    for first in (5, 137, 250):
        with SegmentSource(path, first, fit_px=(416, 416)) as part:
            assert frames(part, 30) == reference[first:first + 30], first
            assert part.seeked == (seeks and first >= 8)


def test_a_segment_starting_past_the_end_of_its_file_is_refused_as_such() -> None:
    from edge.batch.seek import PastTheEndError

    with pytest.raises(PastTheEndError):
        SegmentSource(shared_path("footage/highway-overpass/video1.avi"), 600)


def _event(n: int) -> NearMissEvent:
    return NearMissEvent(msg_id=f"e{n}", device="d", camera="c", time="2024-05-01T07:00:03Z", conflict_type="rear_end",
                         severity="low", road_users=("car", "car"), speeds_mps=(10.0, 9.0), vulnerable=False,
                         time_exposed_s=0.5, location_m=(1, 2))


def test_a_segment_keeps_the_windows_and_events_of_its_own_windows_only() -> None:
    from edge.analytics.windows import WindowAggregator
    from edge.batch.span import Span, SpanSink
    from edge.sinks import RecordCounts

    windows = WindowAggregator("d", "c", 60, datetime(2024, 5, 1, 7, tzinfo=UTC))
    # (windows, events) kept: window 1 and its event / windows 1, 2, their events and the end of the stream's
    for keep_until, kept in ((2, (1, 1)), (None, (2, 3))):
        counts = RecordCounts()
        sink = SpanSink(counts, Span(first_frame=10, keep_from=1, keep_until=keep_until), windows)
        for window, n in ((0, 1), (1, 2), (2, 3)):  # events of frames in windows 0 (warm-up), 1, 2 (after)
            sink.event(_event(n))
            sink.frame(window)
            sink.window(_metrics(10, 1, partial=False).model_copy(
                update={"window_start": f"2024-05-01T07:0{window}:00Z"}))
        sink.event(_event(4))  # the end of the stream's
        sink.close()
        assert (counts.windows, sum(counts.events.values())) == kept


# ------------------------------------------------------------------------------------------------ merge
def _metrics(frames: int, cars: int, partial: bool) -> WindowMetrics:
    return WindowMetrics(msg_id="m", device="d", camera="c", window_start="2024-05-01T07:00:00Z", window_s=60,
                         partial=partial, counts={"L": {"up": {"car": cars, "bus": 1}}},
                         health=WindowHealth(frames=frames, dropped_frames=0, fps=15.0))


def _speeds(count: int, mean: float | None) -> WindowSpeeds:
    st = SpeedStats(count=count, unmeasured=1, mean_kmh=mean, p50_kmh=mean, p85_kmh=mean, over_limit=1)
    return WindowSpeeds(msg_id="s", device="d", camera="c", window_start="2024-05-01T07:00:00Z", window_s=60,
                        partial=True, line="L", speed_limit_kmh=50, speeds={"up": {"car": st}})


def test_a_window_two_recordings_share_is_one_record_with_the_parts_summed() -> None:
    merged = combine_metrics([_metrics(300, 4, partial=True), _metrics(600, 6, partial=False)])
    assert merged.counts == {"L": {"up": {"car": 10, "bus": 2}}}
    assert merged.partial and merged.health.frames == 900 and merged.msg_id == "m"
    speeds = combine_speeds([_speeds(3, 40.0), _speeds(1, None)])
    car = speeds.speeds["up"]["car"]
    assert (car.count, car.unmeasured, car.over_limit) == (4, 2, 2)
    assert car.p85_kmh is None and car.p50_kmh is None and car.mean_kmh is None  # not combinable
    assert combine_speeds([_speeds(3, 40.0), _speeds(1, 60.0)]).speeds["up"]["car"].mean_kmh == 45.0


def test_events_of_later_segments_get_the_ids_of_the_unsplit_replay(tmp_path: Path) -> None:
    import uuid

    from edge.batch.outputs import job_dir, merge

    start = datetime(2024, 5, 1, 7, tzinfo=UTC)
    jobs = [JobSpec(job_id=f"j{k}", video=Path("v.mp4"), camera="c", start=start, segment=k, segments=2)
            for k in range(2)]
    for job, events in zip(jobs, ([_event(1), _event(2)], [_event(7)]), strict=True):
        job_dir(tmp_path, job.job_id).mkdir(parents=True)
        (job_dir(tmp_path, job.job_id) / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in events))
    assert merge(tmp_path, jobs).events == 3
    ids = [json.loads(line)["msg_id"] for line in (tmp_path / "events.jsonl").open()]
    third = str(uuid.uuid5(uuid.NAMESPACE_URL, "edge-event/d/c/2024-05-01T07:00:03Z/3"))  # as CameraPipeline names it
    assert ids == ["e1", "e2", third]


# ------------------------------------------------------------------------------------------------ scheduler
class FlakyBackend:
    """Runs nothing: job ``bad`` fails every time, job ``twice`` fails once, the others succeed."""

    def __init__(self, result_of: dict[str, Outcome]) -> None:
        self.slots, self.name = 2, "fake"
        self.queue: deque[str] = deque()
        self.result_of, self.tries = result_of, dict.fromkeys(result_of, 0)

    def submit(self, job: JobSpec) -> None:
        self.queue.append(job.job_id)

    def poll(self, timeout_s: float) -> list[Outcome | Progress]:
        out: list[Outcome | Progress] = []
        while self.queue:
            job_id = self.queue.popleft()
            self.tries[job_id] += 1
            fails = job_id == "bad" or (job_id == "twice" and self.tries[job_id] == 1)
            out += [Progress(job_id, 5), Outcome(job_id, error="boom") if fails else self.result_of[job_id]]
        return out

    def close(self) -> None:
        pass


def test_failed_jobs_are_retried_a_bounded_number_of_times(tmp_path: Path) -> None:
    from edge.batch.job import JobResult

    jobs = [JobSpec(job_id=i, video=Path("v.mp4"), camera="c", start=datetime(2024, 5, 1, tzinfo=UTC), frames=10)
            for i in ("ok", "twice", "bad")]
    result = {j.job_id: Outcome(j.job_id, JobResult(j.job_id, 10, 1.0, 0.1, 0, (), {"metrics.jsonl": ""}, "w"))
              for j in jobs}
    backend = FlakyBackend(result)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    summary = BatchSummary(outdir=tmp_path, backend="fake", workers=2, threads=1, run=1, recordings=1, jobs=3,
                           video_s=1.0)
    plan = _Plan(jobs, {Path("v.mp4"): "0" * 64}, "1" * 64, 1.0)
    progress = BatchProgress(jobs=3, frames=30, skipped=0, enabled=False)
    _Scheduler(backend, ledger, plan, tmp_path, run=1, retries=2, serial=False, progress=progress,
               summary=summary).execute(jobs)
    assert backend.tries == {"ok": 1, "twice": 2, "bad": 3}
    assert {r.job_id: (r.state, r.attempts) for r in ledger.rows()} == {
        "ok": ("done", 1), "twice": ("done", 2), "bad": ("failed", 3)}
    assert summary.done == 2 and list(summary.failed) == ["v.mp4"]
    assert (tmp_path / "jobs" / "twice" / "metrics.jsonl").exists()
    assert not list((tmp_path / "jobs").glob(".*"))  # no partial folder left


def test_with_clips_on_a_camera_is_not_split_and_its_jobs_run_one_at_a_time(otc_config: EdgeConfig,
                                                                             tmp_path: Path) -> None:
    from edge.batch.job import JobResult

    config = otc_config.model_copy(update={"clips": otc_config.clips.model_copy(update={"enabled": True})})
    info = Probe(fps=10.0, frames=36_000, size=(800, 600))  # an hour
    jobs = [j for k in range(3) for j in plan_jobs(
        config, Recording(Path(f"{k}.mp4"), "junction", datetime(2024, 5, 1, 7 + k % 2, tzinfo=UTC)), info,
        SplitOptions(segment_s=600), input_sha256=f"{k}" * 64, cfg_sha256="c" * 64, clips_root=tmp_path / "clips")]
    assert len(jobs) == 3 and all(j.span.whole and j.clips_dir == tmp_path / "clips/junction" for j in jobs)

    class Serial(FlakyBackend):
        def submit(self, job: JobSpec) -> None:
            assert not self.queue, "two jobs of one camera at once"
            super().submit(job)

    backend = Serial({j.job_id: Outcome(j.job_id, JobResult(j.job_id, 1, 1.0, 0.1, 0, (), {}, "w")) for j in jobs})
    summary = BatchSummary(outdir=tmp_path, backend="fake", workers=2, threads=1, run=1, recordings=3, jobs=3,
                           video_s=1.0)
    plan = _Plan(jobs, {j.video: "0" * 64 for j in jobs}, "1" * 64, 1.0)
    _Scheduler(backend, Ledger(tmp_path / "ledger.sqlite"), plan, tmp_path, run=1, retries=0, serial=True,
               progress=BatchProgress(jobs=3, frames=3, skipped=0, enabled=False), summary=summary).execute(jobs)
    assert summary.done == 3


# ------------------------------------------------------------------------------------------------ real clips
@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The highway overpass clip (33 s) concatenated to 126 s with ffmpeg (stream copy: its own frames)."""
    ffmpeg = _ffmpeg()
    folder = tmp_path_factory.mktemp("long")
    video = shared_path("footage/highway-overpass/video1.avi")
    (folder / "list.txt").write_text("".join(f"file '{video}'\n" for _ in range(4)))
    out = folder / "overpass-126s.avi"
    subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(folder / "list.txt"),
                    "-c", "copy", "-t", "126", str(out)], check=True, timeout=60)
    return out


def test_four_segments_give_the_records_of_the_unsplit_replay(long_clip: Path, model_dir: Path,
                                                               tmp_path: Path) -> None:
    base = repo_config("highway-overpass.yaml", model_dir)
    config = base.model_copy(update={"detector": base.detector.model_copy(update={"stride_frames": 2})})
    start = "2024-05-01T07:00:55Z"  # windows 07:00 (5 s of video), 07:01, 07:02, 07:03 (1 s, partial)
    (tmp_path / "m.csv").write_text(f"path,camera,start\n{long_clip},overpass,{start}\n")
    summary = run_batch(tmp_path / "m.csv", config, tmp_path / "batch",
                        BatchOptions(workers=2, split=SplitOptions(segment_s=60, warmup_s=10)))
    assert (summary.jobs, summary.done, summary.failed) == (4, 4, {})
    unsplit = replay(long_clip, config, Detector(config.detector), tmp_path / "whole", start_time=_when(start))
    for name in RECORDS:
        assert (tmp_path / "batch" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    merged = [WindowMetrics.model_validate_json(line) for line in (tmp_path / "batch/metrics.jsonl").open()]
    assert [(r.window_start[11:16], r.partial) for r in merged] == [
        ("07:00", False), ("07:01", False), ("07:02", False), ("07:03", True)]
    counted = sum(n for r in merged for per_class in r.counts["L2"].values() for n in per_class.values())
    assert counted == sum(unsplit.counts.values()) > 100
    written = {p.relative_to(tmp_path / "batch").parts[0] if p.parent == tmp_path / "batch" else p.name
               for p in (tmp_path / "batch").rglob("*") if p.is_file()}
    assert written <= {*RECORDS, "job.json", "ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"}, written
    firsts = sorted(json.loads(p.read_text())["first_frame"] for p in (tmp_path / "batch/jobs").glob("*/job.json"))
    assert firsts[:2] == [0, 0] and 800 < firsts[2] < 850 < 1700 < firsts[3] < 1750  # the last two seek


def _ledger_rows(path: Path) -> dict[str, tuple[str, int, int]]:
    """job id -> (state, attempts, run); empty while the ledger is being created."""
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(path) as db:
            return {r[0]: (r[1], r[2], r[3]) for r in db.execute("SELECT job_id, state, attempts, run FROM jobs")}
    except sqlite3.OperationalError:  # no table yet
        return {}


def _batch_cmd(manifest: Path, outdir: Path, model_dir: Path) -> list[str]:
    return [sys.executable, "-m", "edge.cli", "batch", str(manifest), "-c", str(REPO / "config/otc-intersection.yaml"),
            "-o", str(outdir), "--model-dir", str(model_dir), "--workers", "1", "-q"]


def test_a_killed_batch_resumes_without_redoing_or_losing_a_job(otc_manifest: Path, per_file: dict[str, bytes],
                                                               model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "batch"
    proc = subprocess.Popen(_batch_cmd(otc_manifest, out, model_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(state == "done" for state, _, _ in _ledger_rows(out / "ledger.sqlite").values()):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers die with it (PR_SET_PDEATHSIG)
    proc.wait(timeout=10)
    before = _ledger_rows(out / "ledger.sqlite")
    done_before = {j for j, (state, _, _) in before.items() if state == "done"}
    assert 1 <= len(done_before) < 4, before
    for _ in range(100):  # the worker and the resource tracker go within moments
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the batch's processes outlived the killed driver")
    assert not (out / "metrics.jsonl").exists()
    rerun = subprocess.run(_batch_cmd(otc_manifest, out, model_dir), capture_output=True, text=True, timeout=300,
                           check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{4 - len(done_before)} run now, {len(done_before)} done before, 0 failed" in rerun.stdout
    after = _ledger_rows(out / "ledger.sqlite")
    assert all(after[j] == before[j] for j in done_before)  # not redone: run 1, one attempt
    assert {state for state, _, _ in after.values()} == {"done"} and len(after) == 4
    assert_same_records(out, per_file)  # nothing lost, nothing doubled


def test_ray_backend_gives_the_records_of_the_per_file_replays(otc_manifest: Path, otc_config: EdgeConfig,
                                                                per_file: dict[str, bytes], tmp_path: Path) -> None:
    try:
        import ray
    except ImportError:
        missing("ray is not installed: pip install -e '.[ray]' (tools/test.sh installs it)")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        started_s = time.perf_counter() - t0
        assert started_s < 60, f"local Ray took {started_s:.0f} s to start"
        summary = run_batch(otc_manifest, otc_config, tmp_path, BatchOptions(backend="ray", workers=2))
    finally:
        ray.shutdown()
    assert summary.backend.startswith("ray") and (summary.done, summary.failed) == (4, {})
    assert_same_records(tmp_path, per_file)
