"""Write a seeded synthetic before/after study as the pipeline writes its output, with the truth it came from.

    python tools/synth_study.py -o out/synth --days 28 --conflict-factor 0.7 --seed 1
    edge archive --db out/synth/archive.sqlite3 --import out/synth
    edge report --db out/synth/archive.sqlite3 --site-config out/synth/site.yaml \\
        --before 2024-04-01/2024-04-28 --after 2024-05-06/2024-06-02 -o out/synth/report

The folder gets ``metrics.jsonl``, ``speeds.jsonl``, ``events.jsonl`` (contract records, as ``edge replay``
writes them), ``site.yaml`` (the site's edge config: calibration, lines, zones) and ``truth.json`` (what was
generated: exposures, conflicts, the generating rates and the true speed percentiles), so the report's
statistics can be checked against it (see edge/city/synth.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path

from edge.city.synth import DEFAULT_START, SiteModel, generate, site_config_yaml, study_phases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, required=True, help="folder to write")
    ap.add_argument("--days", type=int, default=28, help="days in each period (default 28)")
    ap.add_argument("--gap-days", type=int, default=7, help="days between the periods (the works; default 7)")
    ap.add_argument("--conflict-factor", type=float, default=0.7, help="after/before conflicts per exposure")
    ap.add_argument("--volume-factor", type=float, default=1.0, help="after/before traffic volume")
    ap.add_argument("--speed-shift", type=float, default=0.0, help="change of speeds after, km/h")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    site = SiteModel()
    phases = study_phases(DEFAULT_START, args.days, gap_days=args.gap_days, conflict_factor=args.conflict_factor,
                          volume_factor=args.volume_factor, speed_shift_kmh=args.speed_shift)
    data = generate(site, phases, seed=args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    for name, text in data.jsonl().items():
        (args.output / name).write_text(text)
    (args.output / "site.yaml").write_text(site_config_yaml(site))
    truth = [{"period": label, "start": p.start.isoformat(), "days": p.days, "vehicles_entering": t.vehicles_entering,
              "conflicts": t.conflicts, "generating_rate_per_1000": t.rate_per_1000,
              "realised_rate_per_1000": 1000 * t.conflicts / t.vehicles_entering,
              "speed_p85_kmh": {f"{ln} {d}": round(t.speed_quantile(ln, d, 0.85), 2) for ln, d in sorted(t.speeds_kmh)}}
             for label, p, t in zip(("before", "after"), phases, data.truth, strict=True)]
    (args.output / "truth.json").write_text(json.dumps(truth, indent=1))
    last = phases[1].start + timedelta(days=args.days - 1)
    print(f"{args.output}: {len(data.metrics)} windows, {len(data.speeds)} speeds records, {len(data.events)} events")
    print(f"periods: --before {phases[0].start.date()}/{(phases[0].start + timedelta(days=args.days - 1)).date()} "
          f"--after {phases[1].start.date()}/{last.date()} (UTC)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
