"""Relay benchmark: Postern against Postfix, both relaying to the same smtp-sink on loopback.

    make bench                                  # 3,000 messages per run, every workload and measurement
    .venv/bin/python -m bench.relay --messages 1000 --sizes 2k --sessions 20 --only postern

Throughput. For each workload and each server, a fresh smtp-sink and a fresh
server are started; one probe message must reach the sink through the server (so
it really relays), then smtp-source sends N messages. The figure is N divided by
the time from starting smtp-source until the sink has received the N-th message.
The workloads: 2 KB and 50 KB messages from 1 and from 20 sessions, one connection
per message (smtp-source's default), and a connector's: 20 sessions that each keep
their connection (-d) sending 75 KB messages with 3 recipients (-r 3); smtp-source
cannot pipeline, so no workload does. Each server gets a private directory on the
same file system and fsyncs every message before its 250, so durability is the same.

CPU and memory count every process of a server: for Postern the daemon and all its
descendants, for Postfix the master and all its descendants (smtpd, cleanup,
trivial-rewrite, qmgr, smtp, ...), summed. CPU includes children that have exited
(their parents reaped them). Memory is sampled every 0.2 s as the sum of PSS
(shared pages divided among their users) and the sum of RSS (shared pages counted
in every process); the table shows peak PSS, the JSON both.

Then, unless turned off: the time from the end of DATA to the 250 (p50, p99) over
20 sessions keeping their connections (bench.latency), both servers; the time a
Postern daemon takes to accept mail when started on 100,000 queued messages
(bench.restart); the memory of each server holding 500 idle sessions after EHLO
(bench.connections; Postfix with default_process_limit raised to allow them).
Everything started is stopped at the end, whatever happens; results go to
bench/results/relay-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
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
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from .postern import ROOT, PosternInstance
from .postfix import PostfixInstance, postfix_version
from .restart import measure_restart
from .tools import (
    BenchError, MemorySampler, Sink, free_port, raise_file_limit, start_source, stop_process, tail, wait_for_quiet,
    wait_source,
)

RESULTS = ROOT / "bench" / "results"
SERVERS = ("postfix", "postern")


def parse_size(text: str) -> int:
    text = text.strip().lower().removesuffix("b")
    scale = 1024 if text.endswith("k") else 1024 * 1024 if text.endswith("m") else 1
    return int(float(text.rstrip("km")) * scale)


def size_label(size: int) -> str:
    return f"{size / 1024:g} KB" if size % 1024 == 0 or size > 10240 else f"{size} B"


def workload_label(size: int, sessions: int, keep: bool = False, recipients: int = 1) -> str:
    label = f"{size_label(size)}, {sessions} session{'s' if sessions != 1 else ''}"
    if keep:
        label += ", kept connections"
    if recipients > 1:
        label += f", {recipients} rcpts"
    return label


@dataclass(frozen=True)
class Workload:
    """What smtp-source sends: payload size, parallel sessions, whether each session keeps
    its connection for all its messages (-d), and recipients per message (-r)."""

    size: int
    sessions: int
    keep: bool = False
    recipients: int = 1

    @property
    def label(self) -> str:
        return workload_label(self.size, self.sessions, self.keep, self.recipients)

    @property
    def tag(self) -> str:
        """For file names."""
        return f"{self.size}-{self.sessions}" + ("-d" if self.keep else "") + (f"-r{self.recipients}" if self.recipients > 1 else "")


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


def new_server(kind: str, sink: Sink, workdir: Path, settings: dict | None = None) -> PostfixInstance | PosternInstance:
    """A server (not started yet) that will relay to `sink`; Postfix `settings` go into its main.cf.

    Callers keep it before `start()`, so that a start failing half-way is still stopped."""
    return PostfixInstance(sink.port, workdir, settings) if kind == "postfix" else PosternInstance(sink.port, workdir)


def probe(server, sink: Sink, size: int, recipients: int, log: Path) -> int:
    """One message through the server must reach the sink. Returns how many deliveries the sink
    counts per message: 1, unless the server splits a message's recipients into several."""
    process = start_source(server.port, 1, size, 1, log, recipients=recipients)
    try:
        wait_source(process, 30, log)
    finally:
        stop_process(process, 5)
    sink.wait_for(1, 30)  # it really relays
    if recipients > 1:  # the other deliveries of a split message come within moments
        wait_until_steady(lambda: sink.count, 1.0, 10)
    return sink.count


def wait_until_steady(value, quiet: float, timeout: float) -> None:
    """Wait until value() has not changed for `quiet` seconds (at most `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.1)
        if (now := value()) != last:
            last, since = now, time.monotonic()


def quiet_before(args) -> float:
    busy = wait_for_quiet(args.quiet_wait)
    if busy >= 15:
        print(f"  warning: the machine is {busy:.0f}% busy with other work", flush=True)
    return busy


def run_one(kind: str, workload: Workload, args, workdir: Path, round_: int = 1) -> dict:
    """One server, one workload: fresh sink, fresh server, probe, then the measured run."""
    size, sessions = workload.size, workload.sessions
    result = {"server": kind, "size": size, "sessions": sessions, "keep_connections": workload.keep,
              "recipients": workload.recipients, "messages": args.messages, "workload": workload.label,
              "round": round_}
    label = f"{kind} {workload.label}"
    source_log = workdir / f"smtp-source-{kind}-{workload.tag}.log"
    sink = Sink(workdir)
    server: PostfixInstance | PosternInstance | None = None
    profiler = None
    source = None
    try:
        sink.start()
        server = new_server(kind, sink, workdir)
        server.start(free_port())
        per_message = probe(server, sink, size, workload.recipients, source_log)
        result["sink_deliveries_per_message"] = per_message

        target = per_message * (1 + args.messages)
        sink.expect(target)
        result["cpu_busy_before"] = quiet_before(args)
        if args.profile and kind == "postern":
            from .profile import PySpy
            profiler = PySpy(server.pid, args.profile / f"postern-{workload.tag}-{round_}.txt")
            time.sleep(1.0)  # let py-spy attach
        cpu_before = server.cpu_seconds()
        machine_before = psutil.cpu_times()
        finished: list[float] = []
        with MemorySampler(server.memory, args.rss_interval) as sampler:
            started = time.monotonic()
            source = start_source(server.port, args.messages, size, sessions, source_log,
                                  args.reuse_connections or workload.keep, workload.recipients)
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
            peak_rss=sampler.peak.get("rss"),
            peak_pss=sampler.peak.get("pss"),
            peak_processes=sampler.peak.get("processes"),
            memory_samples=sampler.samples,
        )
        # CPU the server used for the run: unlike msgs/s, hardly changed by other work on the machine
        user, system = (after - before for after, before in zip(server.cpu_seconds(), cpu_before))
        result.update(cpu_user_seconds=round(user, 2), cpu_system_seconds=round(system, 2),
                      cpu_ms_per_msg=round(1000 * (user + system) / args.messages, 2))
        result["pss_after"] = server.pss()
        time.sleep(0.5)
        result["sink_total"] = sink.count - per_message  # more than `messages` x per_message would mean duplicates
        result["queued_after"] = server.queue_size()
        print(f"  {label}: {result['msgs_per_s']:.1f} msgs/s ({seconds:.1f}s), peak PSS {mib(result['peak_pss'])}, "
              f"CPU {result['cpu_ms_per_msg']:.2f} ms/msg", flush=True)
    except BenchError as error:
        result.update(ok=False, error=str(error))
        if server is not None:
            result["server_log_tail"] = tail(server.log_path, 1500)
        print(f"  {label}: FAILED: {error}", flush=True)
    finally:
        stop_process(source, 5)
        if profiler is not None:
            profiler.stop()
        if server is not None:
            server.stop(keep=args.keep)
        sink.stop()
    return result


def run_latency(kind: str, args, workdir: Path) -> dict:
    """End of DATA to 250 at `--latency-sessions` sessions keeping their connections, 2 KB messages."""
    from .latency import SmtpError, measure, summary

    result = {"server": kind, "messages": args.latency_messages, "sessions": args.latency_sessions,
              "size": args.latency_size}
    sink = Sink(workdir)
    server = None
    try:
        sink.start()
        server = new_server(kind, sink, workdir)
        server.start(free_port())
        per_message = probe(server, sink, args.latency_size, 1, workdir / f"latency-probe-{kind}.log")
        result["cpu_busy_before"] = quiet_before(args)
        timings = asyncio.run(measure("127.0.0.1", server.port, args.latency_messages, args.latency_sessions,
                                      args.latency_size))
        sink.wait_for(per_message * (1 + args.latency_messages), args.timeout)  # all relayed before the next run
        result.update(ok=True, **summary(timings))
        print(f"  {kind} latency: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms", flush=True)
    except (BenchError, SmtpError, OSError, asyncio.TimeoutError) as error:
        result.update(ok=False, error=str(error) or repr(error))
        print(f"  {kind} latency: FAILED: {result['error']}", flush=True)
    finally:
        if server is not None:
            server.stop(keep=args.keep)
        sink.stop()
    return result


def run_connections(kind: str, args, workdir: Path) -> dict:
    """Memory of all the server's processes while `--connections` idle sessions are open."""
    from .connections import measure_connections
    from .latency import SmtpError

    result = {"server": kind, "connections": args.connections}
    sink = Sink(workdir)
    server = None
    try:
        sink.start()
        # Postfix runs one smtpd per session, at most default_process_limit (100) of them
        settings = {"default_process_limit": args.connections + 50} if kind == "postfix" else None
        server = new_server(kind, sink, workdir, settings)
        server.start(free_port())
        result["idle"] = server.memory()
        result.update(measure_connections(server.port, args.connections, server.memory), ok=True)
        ok = result["alive"] == args.connections
        print(f"  {kind} {args.connections} connections: RSS {mib(result['rss'])} (PSS {mib(result['pss'])}, "
              f"{result['processes']} processes)" + ("" if ok else f", only {result['alive']} still open"), flush=True)
        result["ok"] = ok
    except (BenchError, SmtpError, OSError, asyncio.TimeoutError) as error:
        result.update(ok=False, error=str(error) or repr(error))
        print(f"  {kind} {args.connections} connections: FAILED: {result['error']}", flush=True)
    finally:
        if server is not None:
            server.stop(keep=args.keep)
        sink.stop()
    return result


def summarise(results: list[dict]) -> list[dict]:
    """One row per workload and server: medians over the rounds that worked, and the highest peaks."""
    rows = []
    for key in dict.fromkeys((r["workload"], r["server"]) for r in results):
        runs = [r for r in results if (r["workload"], r["server"]) == key]
        rates = [r["msgs_per_s"] for r in runs if r.get("ok")]
        cpus = [r["cpu_ms_per_msg"] for r in runs if r.get("ok")]
        rows.append({
            "workload": key[0], "server": key[1], "size": runs[0]["size"], "sessions": runs[0]["sessions"],
            "keep_connections": runs[0]["keep_connections"], "recipients": runs[0]["recipients"],
            "runs": len(runs), "failed": len(runs) - len(rates),
            "msgs_per_s": round(statistics.median(rates), 1) if rates else None,
            "min_msgs_per_s": min(rates, default=None), "max_msgs_per_s": max(rates, default=None),
            "peak_rss": max((r.get("peak_rss") or 0 for r in runs), default=0) or None,
            "peak_pss": max((r.get("peak_pss") or 0 for r in runs), default=0) or None,
            "cpu_ms_per_msg": round(statistics.median(cpus), 2) if cpus else None,
        })
    return rows


def table(summary: list[dict]) -> str:
    rows = [("workload", "Postfix msgs/s", "Postern msgs/s", "Postern/Postfix", "CPU ms/msg Postfix",
             "CPU ms/msg Postern", "peak PSS Postfix", "peak PSS Postern")]
    for workload in dict.fromkeys(r["workload"] for r in summary):
        found = {r["server"]: r for r in summary if r["workload"] == workload}

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
            workload, rate("postfix"), rate("postern"), ratio,
            *(f"{found[kind]['cpu_ms_per_msg']:.2f}" if found.get(kind, {}).get("cpu_ms_per_msg") else "-"
              for kind in SERVERS),
            *(mib(found[kind]["peak_pss"]) if kind in found else "-" for kind in SERVERS),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)


def latency_line(results: dict[str, dict], args) -> str:
    """One line: p50/p99 from the end of DATA to 250 for each server measured."""
    def figures(kind: str) -> str:
        found = results[kind]
        return (f"{kind} p50 {found['p50_ms']:.1f} ms, p99 {found['p99_ms']:.1f} ms" if found.get("ok")
                else f"{kind} failed")

    return (f"latency, end of DATA to 250 ({args.latency_sessions} sessions, {size_label(args.latency_size)}, "
            f"{args.latency_messages} messages): " + "; ".join(figures(kind) for kind in results))


def restart_line(result: dict) -> str:
    if not result.get("ok"):
        return f"restart with {result['messages']} queued messages: postern failed: {result.get('error')}"
    return (f"restart with {result['messages']} queued messages ({'cold' if result['cold'] else 'warm'} page cache): "
            f"postern first 250 after {result['seconds_to_250']:.2f} s (first greeting after "
            f"{result['seconds_to_greeting']:.2f} s; goal under 5 s)")


def connections_line(results: dict[str, dict], count: int) -> str:
    def figures(kind: str) -> str:
        found = results[kind]
        if not found.get("ok"):
            return f"{kind} failed" + (f" ({found['alive']} of {count} still open)" if "alive" in found else "")
        return f"{kind} RSS {mib(found['rss'])} (PSS {mib(found['pss'])}, {found['processes']} processes)"

    return (f"memory at {count} connections after EHLO, summed over all processes: "
            + "; ".join(figures(kind) for kind in results) + " (goal for postern: RSS under 150 MiB)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="messages per throughput run (default 3000)")
    parser.add_argument("--sizes", default="2k,50k",
                        help="message payload sizes, comma-separated (default 2k,50k; '' for none of these workloads)")
    parser.add_argument("--sessions", default="1,20", help="parallel smtp-source sessions (default 1,20)")
    parser.add_argument("--reuse-connections", action="store_true",
                        help="smtp-source -d for the --sizes x --sessions workloads too: send every message of "
                             "a session over one connection (default: one connection per message)")
    parser.add_argument("--connector", action=argparse.BooleanOptionalAction, default=True,
                        help="the connector's workload: 20 sessions keeping their connections, 75 KB, 3 recipients")
    parser.add_argument("--connector-size", default="75k", help="payload size of the connector's messages")
    parser.add_argument("--connector-recipients", type=int, default=3, help="recipients per connector message")
    parser.add_argument("--receivers", default=PosternInstance.receivers,
                        help=f"Postern's receiving processes (default {PosternInstance.receivers})")
    parser.add_argument("--only", choices=SERVERS, help="run one server only")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of every throughput run, interleaved; the table shows medians (default 3)")
    parser.add_argument("--latency-messages", type=int, default=2000,
                        help="messages for the end-of-DATA-to-250 latency (default 2000; 0: skip it)")
    parser.add_argument("--latency-sessions", type=int, default=20, help="concurrent sessions for the latency")
    parser.add_argument("--latency-size", default="2k", help="message size for the latency (default 2k)")
    parser.add_argument("--restart-messages", type=int, default=100_000,
                        help="queued messages for Postern's restart time (default 100000; 0: skip it)")
    parser.add_argument("--cold", action="store_true",
                        help="drop the page cache before the restart (as after a reboot; slows other work down)")
    parser.add_argument("--connections", type=int, default=500,
                        help="idle sessions held open for the memory figure (default 500; 0: skip it)")
    parser.add_argument("--timeout", type=float, help="seconds allowed per run (default 60 + messages / 10)")
    parser.add_argument("--quiet-wait", type=float, default=20,
                        help="before each run, wait up to this many seconds for other work to leave the CPUs idle")
    parser.add_argument("--rss-interval", type=float, default=0.2, help="memory sampling interval in seconds")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record the Postern daemon with py-spy into DIR (slows it down a little)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' directories (logs, config)")
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/relay-<timestamp>.json)")
    args = parser.parse_args(argv)
    try:
        args.sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        args.sessions = [int(s) for s in args.sessions.split(",") if s.strip()]
        args.connector_size = parse_size(args.connector_size)
        args.latency_size = parse_size(args.latency_size)
    except ValueError as error:
        parser.error(f"--sizes/--sessions: {error}")
    if args.messages < 1 or args.repeat < 1 or min(args.sizes + args.sessions, default=1) < 1:
        parser.error("--messages, --sizes and --sessions need positive numbers")
    if min(args.latency_messages, args.restart_messages, args.connections) < 0 or args.latency_sessions < 1:
        parser.error("--latency-messages, --restart-messages and --connections cannot be negative")
    if args.connector_recipients < 1:
        parser.error("--connector-recipients needs a positive number")
    args.timeout = args.timeout or 60 + args.messages / 10
    args.workloads = [Workload(size, sessions, args.reuse_connections) for size in args.sizes for sessions in args.sessions]
    if args.connector:
        args.workloads.append(Workload(args.connector_size, 20, True, args.connector_recipients))
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the benchmark like Ctrl-C: everything started is stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    servers = [args.only] if args.only else list(SERVERS)
    PosternInstance.receivers = args.receivers
    for tool in ("smtp-sink", "smtp-source"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            print(f"bench.relay: {tool} not found: install Postfix (scripts/install-test-packages)", file=sys.stderr)
            return 2
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    # Every held session is a socket here and one in the server (which inherits this limit), plus files
    files = raise_file_limit(2 * args.connections + 1024)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    workdir.chmod(0o755)  # Postfix's processes, running as the postfix user, must reach their directories inside
    report = {
        "benchmark": "relay",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m bench.relay", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {**machine(), "queue_filesystem": filesystem_of(workdir)},
        "source": source_tree(),
        "settings": {"messages": args.messages, "repeat": args.repeat,
                     "workloads": [asdict(w) for w in args.workloads], "timeout": args.timeout,
                     "latency_messages": args.latency_messages, "latency_sessions": args.latency_sessions,
                     "restart_messages": args.restart_messages, "connections": args.connections,
                     "file_limit": files,
                     "cpu": "user + system of every process of the server, descendants included, exited ones too",
                     "memory": "sums over every process of the server: peak_pss (table), peak_rss"},
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
            for workload in args.workloads:
                for kind in servers:
                    report["results"].append(run_one(kind, workload, args, workdir, round_))
        if args.latency_messages:
            report["latency"] = {kind: run_latency(kind, args, workdir) for kind in servers}
        if args.restart_messages and "postern" in servers:
            print(f"  postern restart: writing {args.restart_messages} queued messages...", flush=True)
            report["restart"] = measure_restart(args.restart_messages, workdir, args.cold)
            print("  " + restart_line(report["restart"]), flush=True)
        if args.connections:
            report["connections"] = {kind: run_connections(kind, args, workdir) for kind in servers}
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
    if report["summary"]:
        print("CPU and memory: every process of each server summed (Postern: the daemon and all its descendants; "
              "Postfix: the master and all its descendants); memory = peak of the summed PSS")
        print(table(report["summary"]))
        if args.repeat > 1:
            print(f"(median of {args.repeat} rounds, lowest-highest in brackets)")
    if "latency" in report:
        print(latency_line(report["latency"], args))
    if "restart" in report:
        print(restart_line(report["restart"]))
    if "connections" in report:
        print(connections_line(report["connections"], args.connections))
    print(f"\nresults: {output}")
    if args.profile:
        from .profile import summarise as summarise_profile
        for raw in sorted(args.profile.glob("postern-*.txt")):  # also: python -m bench.profile FILE
            print("\n" + summarise_profile(raw, 15))
    extras = [*report.get("latency", {}).values(), *report.get("connections", {}).values()]
    if "restart" in report:
        extras.append(report["restart"])
    measured = report["results"] + extras
    return 0 if measured and all(r.get("ok") for r in measured) else 1


if __name__ == "__main__":
    sys.exit(main())
