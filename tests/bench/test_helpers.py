"""The benchmark's own measuring parts: percentiles, the latency client, process-tree CPU and memory."""

import asyncio
import resource
import statistics
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from bench.connections import hold
from bench.latency import SmtpError, measure, message_text, percentile, summary
from bench.relay import Workload, parse_size
from bench.tools import process_tree, raise_file_limit, tree_cpu_seconds, tree_memory


# --- percentile


def test_percentile_interpolates_between_ranks():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 0) == 1  # order of the input does not matter
    assert percentile([4, 1, 3, 2], 100) == 4
    assert percentile([10], 99) == 10
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)


def test_percentile_agrees_with_the_standard_library():
    values = [0.3, 7.1, 2.2, 9.9, 0.01, 5.5, 5.5, 3.0, 12.0, 1.0, 4.4]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for p in range(1, 100):
        assert percentile(values, p) == pytest.approx(cuts[p - 1])


def test_percentile_of_one_slow_message_in_a_hundred():
    """p99 must see the tail that p50 hides."""
    values = [0.010] * 98 + [0.500] * 2
    assert percentile(values, 50) == pytest.approx(0.010)
    assert percentile(values, 99) == pytest.approx(0.500)


@pytest.mark.parametrize("p", [-1, 100.5])
def test_percentile_refuses_a_rank_outside_0_100(p):
    with pytest.raises(ValueError):
        percentile([1.0, 2.0], p)


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        percentile([], 50)


# --- the message and the workload


@pytest.mark.parametrize("size", [1, 2, 3, 79, 80, 81, 2048, 75 * 1024])
def test_message_body_has_the_size_asked_and_needs_no_dot_stuffing(size):
    text = message_text(size)
    header, _, body = text.partition(b"\r\n\r\n")
    assert len(body) in (size, size + 1)  # one byte over when a lone CRLF cannot fit exactly
    assert body.endswith(b"\r\n")
    lines = body.split(b"\r\n")
    assert not any(line.startswith(b".") for line in lines)
    assert max(len(line) for line in lines) <= 998
    assert b"\n" not in body.replace(b"\r\n", b"") and b"\r" not in body.replace(b"\r\n", b"")


def test_sizes_and_labels():
    assert parse_size("2k") == 2048 and parse_size("75k") == 76800 and parse_size("1m") == 1 << 20
    assert Workload(2048, 1).label == "2 KB, 1 session"
    assert Workload(76800, 20, True, 3).label == "75 KB, 20 sessions, kept connections, 3 rcpts"
    assert Workload(76800, 20, True, 3).tag != Workload(76800, 20).tag


# --- the latency client against a real SMTP server on loopback


class Server:
    """A small SMTP server: answers the end of DATA after `delay` seconds with `final`,
    and counts connections and messages; `drop_after_ehlo` closes sessions once greeted."""

    def __init__(self, delay: float = 0.0, final: bytes = b"250 queued", drop_after_ehlo: bool = False):
        self.delay, self.final, self.drop_after_ehlo = delay, final, drop_after_ehlo
        self.connections = self.messages = self.open = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def session(self, reader, writer):
        self.connections += 1
        self.open += 1
        try:
            writer.write(b"220 test ESMTP\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-test\r\n250 8BITMIME\r\n")
                    if self.drop_after_ehlo:
                        await writer.drain()
                        return
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    while (text := await reader.readline()) not in (b".\r\n", b""):
                        pass
                    await asyncio.sleep(self.delay)
                    self.messages += 1
                    writer.write(self.final + b"\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    return
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.open -= 1
            writer.close()


async def test_latency_counts_every_message_once_over_the_sessions_asked():
    async with Server() as server:
        timings = await measure("127.0.0.1", server.port, messages=47, sessions=5, size=2048)
    assert len(timings) == 47 and server.messages == 47
    assert server.connections == 5  # each session keeps its connection


async def test_latency_is_the_time_the_server_takes_to_answer_the_end_of_data():
    async with Server(delay=0.05) as server:
        timings = await measure("127.0.0.1", server.port, messages=20, sessions=4, size=2048)
    figures = summary(timings)
    assert 50 <= figures["p50_ms"] < 500
    assert figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]


async def test_latency_refuses_to_measure_refused_mail():
    async with Server(final=b"451 try again later") as server:
        with pytest.raises(SmtpError, match="451"):
            await measure("127.0.0.1", server.port, messages=4, sessions=2, size=100)


async def test_latency_with_more_sessions_than_messages():
    async with Server() as server:
        timings = await measure("127.0.0.1", server.port, messages=3, sessions=20, size=100)
    assert len(timings) == 3 and server.connections == 3


# --- holding many sessions open


async def test_hold_measures_while_every_session_is_open():
    async with Server() as server:
        seen = []
        figures = await hold(server.port, 60, lambda: seen.append(server.open) or {"rss": 1}, settle=0.1)
        await asyncio.sleep(0.2)
        assert seen == [60] and figures["alive"] == 60 and figures["connections"] == 60 and figures["rss"] == 1
        assert server.open == 0  # all closed afterwards


async def test_hold_notices_sessions_the_server_dropped():
    async with Server(drop_after_ehlo=True) as server:
        figures = await hold(server.port, 10, lambda: {}, settle=0.1)
    assert figures["alive"] == 0


# --- CPU and memory of a process tree (real processes)

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def test_cpu_counts_children_that_ran_and_exited_and_live_grandchildren():
    """A parent whose child burnt CPU and exited (reaped), and whose live child is burning now."""
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        subprocess.run([sys.executable, "-c", {BURN.format(seconds=0.4)!r}])   # came and went
        live = subprocess.Popen([sys.executable, "-c", {BURN.format(seconds=0.4)!r} + "time.sleep(30)"])
        print("ready", flush=True)
        time.sleep(30)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert parent.stdout.readline() == b"ready\n"
        root = psutil.Process(parent.pid)
        deadline = time.monotonic() + 10
        while sum(tree_cpu_seconds(process_tree(root))) < 0.8 and time.monotonic() < deadline:
            time.sleep(0.05)
        user, system = tree_cpu_seconds(process_tree(root))
        assert 0.8 <= user + system < 3
        own = root.cpu_times()
        assert own.user + own.system < 0.4  # the parent alone would miss nearly all of it
        assert len(process_tree(root)) == 2
    finally:
        for process in process_tree(psutil.Process(parent.pid)):
            process.kill()
        parent.wait()


def test_memory_sums_rss_and_pss_over_the_tree():
    """The child says it is ready only once its 60 MiB are written, so the figures are read after."""
    child = "import time; b = bytearray(60 << 20); print('ready', flush=True); time.sleep(30)"
    script = ("import subprocess, sys, time\n"
              f"child = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
              "time.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert parent.stdout.readline() == b"ready\n"
        figures = tree_memory(process_tree(psutil.Process(parent.pid)))
        assert figures["processes"] == 2
        assert figures["rss"] >= 60 << 20
        assert 60 << 20 <= figures["pss"] <= figures["rss"]  # the 60 MiB are the child's own
    finally:
        for process in process_tree(psutil.Process(parent.pid)):
            process.kill()
        parent.wait()


def test_memory_of_no_process_is_none():
    assert tree_memory([]) is None and tree_cpu_seconds([]) == (0.0, 0.0) and process_tree(None) == []


def test_file_limit_is_raised_for_the_servers_started_afterwards():
    script = ("import resource, subprocess, sys\n"
              "from bench.tools import raise_file_limit\n"
              "print(raise_file_limit(2048))\n"
              "print(subprocess.run(['sh', '-c', 'ulimit -n'], capture_output=True, text=True).stdout.strip())\n")

    def low():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, preexec_fn=low, check=True)
    assert out.stdout.split() == ["2048", "2048"]
    assert raise_file_limit(1) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # never lowered
