"""Sampling the relay daemon with py-spy during a run, and summing up where it spent its time.

py-spy is a measuring tool, not a dependency: `.venv/bin/pip install py-spy`.
`python -m bench.profile FILE.txt` prints the summary of a raw profile again.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .tools import BenchError


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


class PySpy:
    """py-spy record attached to a running process; `stop()` makes it write its raw (collapsed) stacks.

    Only samples of a thread holding the GIL are kept (--gil): that is the daemon's
    Python work, which runs on one core at a time and limits it. Time in system calls
    (socket writes, fsync) is left out: the run's system CPU seconds show it. Without
    --gil, py-spy also counts a thread as busy while it waits for a CPU, which on a
    busy machine mostly measures the other work."""

    def __init__(self, pid: int, output: Path, rate: int = 200):
        self.output = output
        self.log_path = output.with_suffix(".log")
        command = [py_spy(), "record", "--pid", str(pid), "--format", "raw", "--gil",
                   "--rate", str(rate), "--output", str(output)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _frames(stack: str) -> list[str]:
    # py-spy raw lines: "frame;frame;...;leaf COUNT", each frame "function (file:line)"
    return [frame for frame in stack.split(";") if not frame.startswith(("process ", "thread "))]


def _function(frame: str) -> str:
    """'handle_DATA (relay/smtpd.py:190)' -> 'handle_DATA (relay/smtpd.py)'"""
    name, _, place = frame.rpartition(" (")
    return f"{name} ({place.rsplit(':', 1)[0].rstrip(')')})" if name else frame


def _main_thread(frames: list[str]) -> bool:
    """The event loop's thread starts at the module; worker threads at Thread._bootstrap."""
    return frames[0].startswith(("<module>", "_run_module_as_main"))


def summarise(raw: Path, top: int = 25, main_only: bool = False) -> str:
    """Tables of where the samples fall; with `main_only`, those of the event loop's thread only."""
    own: collections.Counter[str] = collections.Counter()
    own_lines: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    by_file: collections.Counter[str] = collections.Counter()
    total = workers = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames:
            continue
        if main_only and not _main_thread(frames):
            workers += count
            continue
        total += count
        functions = [_function(frame) for frame in frames]
        own[functions[-1]] += count
        own_lines[frames[-1]] += count
        for function in set(functions):
            inclusive[function] += count
        by_file[functions[-1].rpartition("(")[2].rstrip(")")] += count
    if not total:
        return f"{raw}: no samples\n"

    def table(title: str, counter: collections.Counter) -> str:
        rows = [f"{title}\n"]
        for name, count in counter.most_common(top):
            rows.append(f"  {100 * count / total:5.1f}%  {count:7d}  {name}\n")
        return "".join(rows)

    return (
        f"{raw.name}: {total} samples" + (f" of the event loop's thread ({workers} of worker threads left out)" if main_only else "") + "\n"
        + table("self time by function (leaf frames):", own)
        + table("self time by line:", own_lines)
        + table("self time by file:", by_file)
        + table("inclusive time by function:", inclusive)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="summarise py-spy raw profiles")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--main-thread", action="store_true", help="only the event loop's thread")
    args = parser.parse_args(argv)
    for path in args.files:
        print(summarise(path, args.top, main_only=args.main_thread))
    return 0


if __name__ == "__main__":
    sys.exit(main())
