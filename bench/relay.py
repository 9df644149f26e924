"""Relay benchmark: Postern against Postfix, both relaying to the same smtp-sink on loopback.

    make bench                                  # 10,000 messages per run, every workload
    .venv/bin/python -m bench.relay --messages 1000 --sizes 2k --sessions 20 --only postern

For each workload (message size x parallel client sessions) and each server, a
fresh smtp-sink and a fresh server are started; one probe message must reach the
sink through the server (so it really relays), then smtp-source sends N messages.
The figure is N divided by the time from starting smtp-source until the sink has
received the N-th message. Each server gets a private directory on the same file
system and fsyncs every message before its 250, so durability is the same.
Peak RSS: the Postern daemon process; for Postfix the sum over all processes of
the instance (master, smtpd, cleanup, trivial-rewrite, qmgr, smtp, ...), which
counts shared libraries once per process. Everything started is stopped at the end,
whatever happens; results go to bench/results/relay-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from .postern import ROOT, PosternInstance
from .postfix import PostfixInstance, postfix_version
from .tools import (
    BenchError, RssSampler, Sink, free_port, start_source, stop_process, tail, wait_for_quiet, wait_source,
)

RESULTS = ROOT / "bench" / "results"
SERVERS = ("postfix", "postern")


def parse_size(text: str) -> int:
    text = text.strip().lower().removesuffix("b")
    scale = 1024 if text.endswith("k") else 1024 * 1024 if text.endswith("m") else 1
    return int(float(text.rstrip("km")) * scale)


def size_label(size: int) -> str:
    return f"{size / 1024:g} KB" if size % 1024 == 0 or size > 10240 else f"{size} B"


def workload_label(size: int, sessions: int) -> str:
    return f"{size_label(size)}, {sessions} session{'s' if sessions != 1 else ''}"


def mib(value: int | None) -> str:
    return f"{value / (1 << 20):.1f} MiB" if value else "n/a"


def machine() -> dict:
    def first_line(path: str) -> str:
        try:
            return Path(path).read_text().splitlines()[0]
        except (OSError, IndexError):
            return ""

    os_name = next((line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                    if line.startswith("PRETTY_NAME=")), platform.system()) if Path("/etc/os-release").exists() else ""
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "os": os_name,
        "debian_version": first_line("/etc/debian_version"),
        "kernel": platform.release(),
        "python": platform.python_version(),  # the daemon runs on this interpreter too
        "postfix": postfix_version(),
        "cpu_model": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name")), ""),
    }


def source_tree() -> dict:
    """Which relay code was measured: the commit, and files changed since (the working tree is what runs)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.rstrip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "changed": git("status", "--porcelain", "--", "relay").splitlines()}


def filesystem_of(path: Path) -> str:
    best = None
    for part in psutil.disk_partitions(all=True):
        if str(path).startswith(part.mountpoint) and (best is None or len(part.mountpoint) > len(best.mountpoint)):
            best = part
    return best.fstype if best else "unknown"


def run_one(kind: str, size: int, sessions: int, args, workdir: Path, round_: int = 1) -> dict:
    """One server, one workload: fresh sink, fresh server, probe, then the measured run."""
    result = {"server": kind, "size": size, "sessions": sessions, "messages": args.messages,
              "workload": workload_label(size, sessions), "round": round_}
    label = f"{kind} {result['workload']}"
    source_log = workdir / f"smtp-source-{kind}-{size}-{sessions}.log"
    sink = Sink(workdir)
    server: PostfixInstance | PosternInstance | None = None
    profiler = None
    probe = source = None
    try:
        sink.start()
        server = (PostfixInstance if kind == "postfix" else PosternInstance)(sink.port, workdir)
        server.start(free_port())
        probe = start_source(server.port, 1, size, 1, source_log)
        wait_source(probe, 30, source_log)
        sink.wait_for(1, 30)  # it really relays

        target = 1 + args.messages
        sink.expect(target)
        result["cpu_busy_before"] = wait_for_quiet(args.quiet_wait)
        if result["cpu_busy_before"] >= 15:
            print(f"  warning: the machine is {result['cpu_busy_before']:.0f}% busy with other work", flush=True)
        if args.profile and kind == "postern":
            from .profile import PySpy
            profiler = PySpy(server.pid, args.profile / f"postern-{size}-{sessions}-{round_}.txt")
            time.sleep(1.0)  # let py-spy attach
        cpu_before = server.cpu_seconds()
        machine_before = psutil.cpu_times()
        finished: list[float] = []
        with RssSampler(server.rss, args.rss_interval) as sampler:
            started = time.monotonic()
            source = start_source(server.port, args.messages, size, sessions, source_log, args.reuse_connections)
            watcher = threading.Thread(target=lambda: (source.wait(), finished.append(time.monotonic())), daemon=True)
            watcher.start()

            def source_failed() -> str:
                code = source.poll()
                return f"smtp-source exited with {code}: {tail(source_log, 300)}" if code else ""

            arrived = sink.wait_for(target, args.timeout, abort=source_failed)
            wait_source(source, started + args.timeout - time.monotonic(), source_log)
            watcher.join(5)
        seconds = arrived - started
        machine_after = psutil.cpu_times()
        busy = sum(getattr(machine_after, f) - getattr(machine_before, f)
                   for f in ("user", "nice", "system", "irq", "softirq"))
        result["machine_cpu_seconds"] = round(busy, 2)  # all processes, ours included; at most 2 x seconds
        result.update(
            ok=True,
            seconds=round(seconds, 3),
            msgs_per_s=round(args.messages / seconds, 1),
            source_seconds=round(finished[0] - started, 3) if finished else None,
            peak_rss=sampler.peak,
            rss_samples=sampler.samples,
        )
        # CPU the server used for the run: unlike msgs/s, hardly changed by other work on the machine
        user, system = (after - before for after, before in zip(server.cpu_seconds(), cpu_before))
        result.update(cpu_user_seconds=round(user, 2), cpu_system_seconds=round(system, 2),
                      cpu_ms_per_msg=round(1000 * (user + system) / args.messages, 2))
        result["pss_after"] = server.pss()  # once, at the end: too costly to sample for Postfix's many processes
        time.sleep(0.5)
        result["sink_total"] = sink.count - 1  # more than `messages` would mean duplicates
        result["queued_after"] = server.queue_size()
        print(f"  {label}: {result['msgs_per_s']:.1f} msgs/s ({seconds:.1f}s), peak RSS {mib(sampler.peak)}, "
              f"CPU {result['cpu_ms_per_msg']:.2f} ms/msg", flush=True)
    except BenchError as error:
        result.update(ok=False, error=str(error))
        if server is not None:
            result["server_log_tail"] = tail(server.log_path, 1500)
        print(f"  {label}: FAILED: {error}", flush=True)
    finally:
        stop_process(source, 5)
        stop_process(probe, 5)
        if profiler is not None:
            profiler.stop()
        if server is not None:
            server.stop(keep=args.keep)
        sink.stop()
    return result


def summarise(results: list[dict]) -> list[dict]:
    """One row per workload and server: medians over the rounds that worked, and the highest peak RSS."""
    rows = []
    for key in dict.fromkeys((r["size"], r["sessions"], r["server"]) for r in results):
        runs = [r for r in results if (r["size"], r["sessions"], r["server"]) == key]
        rates = [r["msgs_per_s"] for r in runs if r.get("ok")]
        cpus = [r["cpu_ms_per_msg"] for r in runs if r.get("ok")]
        rows.append({
            "size": key[0], "sessions": key[1], "server": key[2], "workload": workload_label(key[0], key[1]),
            "runs": len(runs), "failed": len(runs) - len(rates),
            "msgs_per_s": round(statistics.median(rates), 1) if rates else None,
            "min_msgs_per_s": min(rates, default=None), "max_msgs_per_s": max(rates, default=None),
            "peak_rss": max((r.get("peak_rss") or 0 for r in runs), default=0) or None,
            "cpu_ms_per_msg": round(statistics.median(cpus), 2) if cpus else None,
        })
    return rows


def table(summary: list[dict]) -> str:
    rows = [("workload", "Postfix msgs/s", "Postern msgs/s", "Postern/Postfix", "Postern peak RSS",
             "Postfix peak RSS (sum)", "CPU ms/msg Postfix", "CPU ms/msg Postern")]
    for size, sessions in dict.fromkeys((r["size"], r["sessions"]) for r in summary):
        found = {r["server"]: r for r in summary if (r["size"], r["sessions"]) == (size, sessions)}

        def rate(kind: str) -> str:
            if kind not in found:
                return "-"
            row = found[kind]
            text = f"{row['msgs_per_s']:.1f}" if row["msgs_per_s"] else "failed"
            if row["runs"] > 1 and row["msgs_per_s"]:
                text += f" ({row['min_msgs_per_s']:.0f}-{row['max_msgs_per_s']:.0f})"
            return text + (f" [{row['failed']} failed]" if row["failed"] and row["msgs_per_s"] else "")

        both = all(found.get(kind, {}).get("msgs_per_s") for kind in SERVERS)
        ratio = f"{found['postern']['msgs_per_s'] / found['postfix']['msgs_per_s']:.2f}" if both else "-"
        rows.append((
            workload_label(size, sessions), rate("postfix"), rate("postern"), ratio,
            mib(found["postern"]["peak_rss"]) if "postern" in found else "-",
            mib(found["postfix"]["peak_rss"]) if "postfix" in found else "-",
            *(f"{found[kind]['cpu_ms_per_msg']:.2f}" if found.get(kind, {}).get("cpu_ms_per_msg") else "-"
              for kind in SERVERS),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10000, help="messages per run (default 10000)")
    parser.add_argument("--sizes", default="2k,50k", help="message payload sizes, comma-separated (default 2k,50k)")
    parser.add_argument("--sessions", default="1,20", help="parallel smtp-source sessions (default 1,20)")
    parser.add_argument("--only", choices=SERVERS, help="run one server only")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every run; the table shows medians")
    parser.add_argument("--reuse-connections", action="store_true",
                        help="smtp-source -d: send every message of a session over one connection "
                             "(default: one connection per message, smtp-source's own default)")
    parser.add_argument("--timeout", type=float, help="seconds allowed per run (default 60 + messages / 10)")
    parser.add_argument("--quiet-wait", type=float, default=60,
                        help="before each run, wait up to this many seconds for other work to leave the CPUs idle")
    parser.add_argument("--rss-interval", type=float, default=0.2, help="RSS sampling interval in seconds")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record the Postern daemon with py-spy into DIR (slows it down a little)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' directories (logs, config)")
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/relay-<timestamp>.json)")
    args = parser.parse_args(argv)
    try:
        args.sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        args.sessions = [int(s) for s in args.sessions.split(",") if s.strip()]
    except ValueError as error:
        parser.error(f"--sizes/--sessions: {error}")
    if args.messages < 1 or args.repeat < 1 or not args.sizes or not args.sessions or min(args.sizes + args.sessions) < 1:
        parser.error("--messages, --sizes and --sessions need positive numbers")
    args.timeout = args.timeout or 60 + args.messages / 10
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the benchmark like Ctrl-C: everything started is stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    servers = [args.only] if args.only else list(SERVERS)
    for tool in ("smtp-sink", "smtp-source"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            print(f"bench.relay: {tool} not found: install Postfix (scripts/install-test-packages)", file=sys.stderr)
            return 2
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    workdir.chmod(0o755)  # Postfix's processes, running as the postfix user, must reach their directories inside
    report = {
        "benchmark": "relay",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m bench.relay", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {**machine(), "queue_filesystem": filesystem_of(workdir)},
        "source": source_tree(),
        "settings": {"messages": args.messages, "repeat": args.repeat, "sizes": args.sizes, "sessions": args.sessions,
                     "reuse_connections": args.reuse_connections, "timeout": args.timeout,
                     "postfix_rss": "sum of all processes of the instance", "postern_rss": "the relay process"},
        "results": [],
    }
    if report["machine"]["queue_filesystem"] in ("tmpfs", "ramfs"):
        print(f"bench.relay: warning: {workdir} is on {report['machine']['queue_filesystem']}: fsync costs nothing there",
              file=sys.stderr)
    print(f"relay benchmark: {args.messages} messages per run, queues under {workdir}", flush=True)
    try:
        for round_ in range(1, args.repeat + 1):  # rounds interleave, so a busy spell does not hit one workload only
            if args.repeat > 1:
                print(f"round {round_} of {args.repeat}", flush=True)
            for size in args.sizes:
                for sessions in args.sessions:
                    for kind in servers:
                        result = run_one(kind, size, sessions, args, workdir, round_)
                        report["results"].append(result)
    except KeyboardInterrupt:
        print("interrupted: stopping", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["summary"] = summarise(report["results"])
    output = args.output or RESULTS / f"relay-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(report["summary"]))
    if args.repeat > 1:
        print(f"(median of {args.repeat} rounds, lowest-highest in brackets)")
    print(f"\nresults: {output}")
    if args.profile:
        from .profile import summarise as summarise_profile
        for raw in sorted(args.profile.glob("postern-*.txt")):  # also: python -m bench.profile FILE
            print("\n" + summarise_profile(raw, 15))
    return 0 if report["results"] and all(r["ok"] for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
