"""python -m reliability: every fault scenario at full size, then the attack and fuzzing tests, long.

    .venv/bin/python -m reliability                  # what `make reliability` runs
    .venv/bin/python -m reliability --quick          # the sizes of `make test`, no pytest run
    .venv/bin/python -m reliability --only crash --messages 20000 --kills 40

Prints each scenario's figures, writes them to .run/reliability/figures.md (and .json),
and exits 1 if any scenario or test failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from . import crash, damaged, disk_full, hostile, outage, two_hops
from .scenario import Outcome

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / ".run" / "reliability"
TESTS = ["tests/reliability/test_attacks.py", "tests/reliability/test_fuzz_smtp.py",
         "tests/reliability/test_fuzz_control.py", "tests/reliability/test_fuzz_config.py"]


def scenarios(args) -> dict:
    """name -> a function running it at the chosen size."""
    quick = args.quick
    load = crash.CrashLoad(messages=args.messages or (300 if quick else 10_000),
                           clients=args.clients or (10 if quick else 20), kills=args.kills or (3 if quick else 20),
                           seed=args.seed, time_limit=150 if quick else 900)
    receiving = dataclasses.replace(load, receivers=2, target="receiver")
    return {
        "crash": lambda: crash.run(dataclasses.replace(load, receivers=2)),
        "crash-receiver": lambda: crash.run(receiving),
        "recovery": lambda: outage.recovery(outage.Recovery() if quick else outage.Recovery(
            messages=40, spread=4.0, refused_for=6.0, tempfail_for=6.0, maximal_backoff=12)),
        "expiry": lambda: outage.expiry(outage.Expiry() if quick else outage.Expiry(messages=50, lifetime=5)),
        "disk-full": lambda: disk_full.run(disk_full.DiskFull() if quick else disk_full.DiskFull(
            filesystem_kb=2048, ballast_kb=256, after_full=20)),
        "hostile": lambda: hostile.run(hostile.Hostile() if quick else hostile.Hostile(
            idle=100, noop_loops=100, drips=20, flood=500, max_connections=100)),
        "damaged": lambda: damaged.run(damaged.Damaged() if quick else damaged.Damaged(messages=200)),
        "two-hops": lambda: two_hops.run(two_hops.TwoHops() if quick else two_hops.TwoHops(messages=200)),
    }


def markdown(outcomes: list[Outcome], tests: str, started: float) -> str:
    lines = [f"Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))} on {platform.node()} "
             f"({os.cpu_count()} cores), {time.time() - started:.0f} s in all.", ""]
    for outcome in outcomes:
        verdict = f"skipped: {outcome.skipped}" if outcome.skipped else "held" if outcome.ok else "FAILED"
        lines += [f"#### {outcome.name}: {verdict} ({outcome.seconds:.1f} s)", "", "| figure | value |", "|---|---|"]
        lines += [f"| {key.strip()} | {value} |" for key, value in outcome.figures.items()]
        lines += [f"| problem | {problem} |" for problem in outcome.problems]
        lines.append("")
    if tests:
        lines += ["#### attack and fuzzing tests (POSTERN_RELIABILITY=long)", "", "```", tests, "```", ""]
    return "\n".join(lines)


def run_tests() -> tuple[bool, str]:
    """The attack and property-based tests with the long hypothesis settings; (passed, summary line)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "3600", *TESTS]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "POSTERN_RELIABILITY": "long"},
                            capture_output=True, text=True)
    print(result.stdout[-6000:], result.stderr[-2000:], sep="")
    summary = [line for line in result.stdout.splitlines() if " passed" in line or " failed" in line]
    return result.returncode == 0, summary[-1].strip("= ") if summary else f"pytest exited {result.returncode}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the sizes make test uses, and no pytest run")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scenarios (and no pytest run)")
    parser.add_argument("--messages", type=int, help="crash: messages to send")
    parser.add_argument("--clients", type=int, help="crash: concurrent clients")
    parser.add_argument("--kills", type=int, help="crash: kill -9 count")
    parser.add_argument("--seed", type=int, help="crash: random seed for the kill moments")
    args = parser.parse_args(argv)
    available = scenarios(args)
    names = args.only or list(available)
    unknown = set(names) - set(available)
    if unknown:
        parser.error(f"no scenario {', '.join(sorted(unknown))}; there are {', '.join(available)}")
    started = time.time()
    outcomes = []
    for name in names:
        print(f"--- {name}", flush=True)
        try:
            outcome = available[name]()
        except Exception:  # a harness that breaks is a failed scenario, and the others still run
            outcome = Outcome(name, problems=[traceback.format_exc()])
        print(outcome.text(), flush=True)
        outcomes.append(outcome)
    tests_ok, tests = True, ""
    if not args.quick and not args.only:
        print("--- attack and fuzzing tests, long", flush=True)
        tests_ok, tests = run_tests()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "figures.md").write_text(markdown(outcomes, tests, started))
    (RESULTS / "figures.json").write_text(json.dumps(
        [{"name": o.name, "ok": o.ok, "skipped": o.skipped, "seconds": round(o.seconds, 1), "figures": o.figures,
          "problems": o.problems} for o in outcomes] + ([{"tests": tests, "ok": tests_ok}] if tests else []),
        indent=2, default=str))
    failed = [o.name for o in outcomes if not o.ok] + ([] if tests_ok else ["attack and fuzzing tests"])
    held = [o.name for o in outcomes if o.ok and not o.skipped]
    held += ["attack and fuzzing tests"] if tests and tests_ok else []
    print(f"\nreliability: {len(held)} held, {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; "
          f"figures in {RESULTS / 'figures.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
