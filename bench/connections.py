"""The memory a server needs to hold many SMTP sessions open at once.

`count` clients connect, read the greeting and say EHLO, then stay connected and
idle, as many slow senders would. Once all are in, the memory of all the server's
processes is summed (RSS and PSS), then every session must still answer NOOP with
250 (a server that dropped some would look cheaper than it is), and all are closed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from .latency import SmtpError, command, greet, quit_session
from .tools import HOST

PARALLEL = 50  # connections being set up at once: a burst, but within every server's listen backlog


async def hold(port: int, count: int, measure: Callable[[], dict | None], settle: float = 1.0,
               timeout: float = 120) -> dict:
    """Open `count` sessions to 127.0.0.1:`port`, call `measure()` while they are all open, check them, close them.

    Returns measure()'s figures with `connections`, `open_seconds` (to set them all up)
    and `alive` (how many still answered NOOP). SmtpError if some could not be opened."""
    gate = asyncio.Semaphore(PARALLEL)

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            return await greet(HOST, port, timeout=timeout)

    began = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    sessions = [result for result in results if not isinstance(result, BaseException)]
    failures = [result for result in results if isinstance(result, BaseException)]
    try:
        if failures:
            raise SmtpError(f"{len(failures)} of {count} connections failed, the first: {failures[0]!r}")
        opened = time.monotonic() - began
        await asyncio.sleep(settle)  # let the server finish whatever each new session started
        figures = dict(measure() or {})
        checks = await asyncio.gather(*(asyncio.wait_for(command(reader, writer, "NOOP", 250), 30)
                                        for reader, writer in sessions), return_exceptions=True)
        figures.update(connections=count, open_seconds=round(opened, 2),
                       alive=sum(1 for check in checks if not isinstance(check, BaseException)))
        return figures
    finally:
        await asyncio.gather(*(quit_session(writer) for _, writer in sessions))


def measure_connections(port: int, count: int, measure: Callable[[], dict | None]) -> dict:
    """`hold` from synchronous code."""
    return asyncio.run(hold(port, count, measure))
