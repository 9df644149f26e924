"""How quickly the console starts and how fluid its queue screen stays with a big queue.

    .venv/bin/python -m bench.console [--messages 100000]

Starts a real relay on a queue of N messages (written as in bench.queue_list),
then runs the console headless (Textual's pilot, 80x25) in a fresh process and
measures: start to the first painted dashboard (imports included), until the relay has
loaded its queue (it answers at once, and lists the queue once loaded), opening the
queue screen until its rows are drawn, the time each key takes until the screen
has been updated, and the console's resident memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


from bench.queue_list import relay_with_queue

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import asyncio, json, statistics, sys, time
began = time.perf_counter()
import psutil
from console.app import make_app

async def main():
    app = make_app(sys.argv[1], require_login=False)
    figures = {}
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.pause()
        figures["first_paint_s"] = time.perf_counter() - began
        while app.relay_status is None:
            await asyncio.sleep(0.01)
        figures["dashboard_with_status_s"] = time.perf_counter() - began
        # a relay just started lists its queue only once it has loaded it (the dashboard shows how far)
        while app.relay_status is None or app.relay_status.get("loading"):
            await asyncio.sleep(0.05)
        figures["queue_loaded_s"] = time.perf_counter() - began
        opened = time.perf_counter()
        await pilot.press("f3")
        queue = app.screen.query_one("#queue-list")
        while not queue.rows:
            await asyncio.sleep(0.005)
        await pilot.pause()
        figures["queue_open_s"] = time.perf_counter() - opened
        figures["queue_total"] = queue.total
        samples, cpu = [], 0.0
        for key in ["down"] * 30 + ["pagedown"] * 30 + ["end", "home"] + ["pageup"] * 5:
            pressed, cpu_before = time.perf_counter(), time.process_time()
            await pilot.press(key)
            loaded = queue.loaded_offset
            while not (queue.loaded_offset <= queue.top < queue.loaded_offset + max(1, len(queue.rows))):
                await asyncio.sleep(0.001)
            await pilot.pause()
            samples.append((time.perf_counter() - pressed) * 1000)
            cpu += time.process_time() - cpu_before
        figures["key_median_ms"] = statistics.median(samples)
        figures["key_cpu_ms"] = cpu / len(samples) * 1000
        figures["key_max_ms"] = max(samples)
        figures["rss_mib"] = psutil.Process().memory_info().rss / 2**20
    print(json.dumps(figures))

asyncio.run(main())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    with relay_with_queue(args.messages) as (_, socket_path, _):
        probe = subprocess.run([sys.executable, "-c", PROBE, str(socket_path)], cwd=ROOT,
                               capture_output=True, text=True, timeout=600)
    if probe.returncode:
        raise SystemExit(probe.stderr[-3000:])
    figures = json.loads(probe.stdout.strip().splitlines()[-1])
    print(f"\nconsole on a queue of {figures['queue_total']} messages, 80x25, headless")
    print(f"  start to first painted dashboard     {figures['first_paint_s'] * 1000:7.0f} ms")
    print(f"  ... with the relay's status shown    {figures['dashboard_with_status_s'] * 1000:7.0f} ms")
    print(f"  ... with the relay's queue loaded    {figures['queue_loaded_s'] * 1000:7.0f} ms")
    print(f"  queue screen open, rows drawn        {figures['queue_open_s'] * 1000:7.0f} ms")
    print(f"  one key (cursor, page, end, home)    {figures['key_median_ms']:7.1f} ms median, "
          f"{figures['key_max_ms']:.1f} ms worst (pilot round trip, including its idle wait)")
    print(f"  ... of which the console's own work  {figures['key_cpu_ms']:7.1f} ms CPU per key")
    print(f"  console resident memory              {figures['rss_mib']:7.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
