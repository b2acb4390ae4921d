"""``python -m bench`` is ``make bench``; ``make bench-check`` adds ``--quick --check FILE``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from bench import report
from bench.runner import Settings, run
from bench.upstream import run_fast


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short run (~2 min): fewer scenarios, no nginx")
    mode.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings (machinery check)")
    mode.add_argument(
        "--instructions", action="store_true", help="only callgrind counts per answer (steady under load)"
    )
    parser.add_argument("--reps", type=int, help="repetitions (default 3; at least 3 for published numbers)")
    parser.add_argument(
        "--json", type=Path, help="write the results here (default bench/latest.json, -quick/-smoke suffixed)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    parser.add_argument("--check", type=Path, help="fail when a ratio worsens >20%% against this baseline")
    parser.add_argument("--write-baseline", type=Path, help="write this run's ratios as a baseline file")
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx reference")
    args = parser.parse_args(argv)

    if args.instructions:
        settings = Settings.instructions_only()
    else:
        settings = Settings.smoke() if args.smoke else Settings.quick() if args.quick else Settings()
    if args.reps:
        settings.reps = args.reps
    if args.no_nginx:
        settings.use_nginx = False
    results = run_fast(run(settings))
    text = report.render(results)
    print("\n" + text)
    data = results.to_json()
    data["ratios"] = report.ratios(results)
    data["targets"] = [
        {
            "name": t.name,
            "value": t.value,
            "limit": t.limit,
            "higher_is_better": t.higher_is_better,
            "unit": t.unit,
            "met": t.met,
        }
        for t in report.targets(results)
    ]
    data["table"] = text
    if args.json is None:  # the published full results are never overwritten by a short run
        args.json = Path(
            "bench/latest.json" if settings.mode == "full" else f"bench/latest-{settings.mode}.json"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    print(f"results written to {args.json}")
    if args.markdown:
        args.markdown.write_text(text)
    if args.write_baseline:
        args.write_baseline.write_bytes(
            orjson.dumps(
                {
                    "mode": settings.mode,
                    "reps": settings.reps,
                    "pinning": results.pinning,
                    "ratios": data["ratios"],
                },
                option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
            )
        )
        print(f"baseline written to {args.write_baseline}")
    if args.check:
        baseline = orjson.loads(args.check.read_bytes())
        ok, summary, timing_worse = report.check(results, baseline)
        print(f"\nregression check against {args.check}:\n{summary}")
        if not ok and timing_worse and report.only_ratios_failed(results):
            # Timing on a shared 2-core VM swings by tens of percent between runs, and noise only ever
            # slows a run: three more repetitions join these, and each ratio is judged on its best one.
            print(f"\n{len(timing_worse)} timing ratio(s) worsened: three more repetitions to tell noise")
            settings.instructions = False  # counted once; they do not move between runs
            results.merge(run_fast(run(settings)))
            ok, summary, _ = report.check(results, baseline)
            print(f"\nregression check (6 repetitions) against {args.check}:\n{summary}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
