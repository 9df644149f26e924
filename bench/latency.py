"""How long a client waits for its 250 after the end of DATA.

    .venv/bin/python -m bench.latency 127.0.0.1:2525 [--messages 2000 --sessions 20 --size 2k]

A small asyncio SMTP client: `sessions` concurrent sessions, each sending its share
of the messages back to back over one connection (EHLO once, then MAIL, RCPT, DATA
per message). For every message it times the interval from writing the final
".\\r\\n" (the message text itself already written and handed to the kernel) until
the reply to it has been read: the time the server takes to make the message
durable and answer. Prints the median (p50) and p99 in milliseconds.

It speaks plain SMTP only (no TLS, no pipelining), and gives up on the first
reply that is not the expected one: a latency figure over refused mail would mean
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from typing import Sequence

HOST = "127.0.0.1"
LINE = 78  # message text in lines of this many characters plus CRLF


class SmtpError(Exception):
    """The server answered something else than expected, or closed the connection."""


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) of `values`, interpolating linearly between the two
    nearest ranks (numpy's default): p50 of [1, 2, 3, 4] is 2.5, p100 is the largest."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0-100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def message_text(size: int, subject: str = "latency") -> bytes:
    """A message of headers plus `size` bytes of body in lines of printable text, ready for DATA.

    No line starts with a dot, so nothing needs dot-stuffing; the final ".\\r\\n" is not included."""
    header = (f"From: <sender@bench.example.net>\r\nTo: <recipient@example.com>\r\n"
              f"Subject: {subject}\r\n\r\n").encode()
    lines, left = [], size
    while left > 0:
        width = max(min(LINE, left - 2), 0)
        lines.append(b"x" * width + b"\r\n")
        left -= width + 2
    return header + b"".join(lines)


async def reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    """One SMTP reply, multi-line ones included: (code, text of all lines)."""
    lines = []
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise SmtpError("the server closed the connection" + (f" after {line!r}" if line else ""))
        lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            break
    try:
        return int(lines[-1][:3]), "\n".join(lines)
    except ValueError:
        raise SmtpError(f"not an SMTP reply: {lines[-1]!r}") from None


async def expect(reader: asyncio.StreamReader, code: int, what: str) -> None:
    got, text = await reply(reader)
    if got != code:
        raise SmtpError(f"{what}: expected {code}, got {text!r}")


async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str, code: int) -> None:
    writer.write(line.encode() + b"\r\n")
    await expect(reader, code, line)


async def greet(host: str, port: int, name: str = "bench.example.net",
                timeout: float = 60) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, read the greeting and say EHLO: a session ready for its first MAIL."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        await asyncio.wait_for(expect(reader, 220, "greeting"), timeout)
        await asyncio.wait_for(command(reader, writer, f"EHLO {name}", 250), timeout)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def quit_session(writer: asyncio.StreamWriter) -> None:
    """QUIT without waiting for the answer, then close (errors ignored: the figures are taken)."""
    try:
        writer.write(b"QUIT\r\n")
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (OSError, asyncio.TimeoutError):
        pass


async def _session(host: str, port: int, count: int, text: bytes, timings: list[float], timeout: float) -> None:
    reader, writer = await greet(host, port, timeout=timeout)
    try:
        for _ in range(count):
            await asyncio.wait_for(command(reader, writer, "MAIL FROM:<sender@bench.example.net>", 250), timeout)
            await asyncio.wait_for(command(reader, writer, "RCPT TO:<recipient@example.com>", 250), timeout)
            await asyncio.wait_for(command(reader, writer, "DATA", 354), timeout)
            writer.write(text)
            await writer.drain()
            began = time.perf_counter()
            writer.write(b".\r\n")
            await asyncio.wait_for(expect(reader, 250, "end of DATA"), timeout)
            timings.append(time.perf_counter() - began)
    finally:
        await quit_session(writer)


async def measure(host: str, port: int, messages: int, sessions: int = 20, size: int = 2048,
                  timeout: float = 60) -> list[float]:
    """Send `messages` over `sessions` concurrent connections; the seconds from ".\\r\\n" to 250
    of each message, in the order they were answered. SmtpError if any session fails."""
    if messages < 1 or sessions < 1:
        raise ValueError("messages and sessions must be at least 1")
    text = message_text(size)
    timings: list[float] = []
    shares = [messages // sessions + (1 if n < messages % sessions else 0) for n in range(sessions)]
    results = await asyncio.gather(*(_session(host, port, share, text, timings, timeout) for share in shares if share),
                                   return_exceptions=True)
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        raise SmtpError(f"{len(failures)} of {len(results)} sessions failed, the first: {failures[0]!r}")
    return timings


def summary(timings: Sequence[float]) -> dict[str, float]:
    """p50, p99 and the largest, in milliseconds, and how many messages they are over."""
    return {"messages": len(timings), "p50_ms": round(1000 * percentile(timings, 50), 2),
            "p99_ms": round(1000 * percentile(timings, 99), 2), "max_ms": round(1000 * max(timings), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("server", help="HOST:PORT of the SMTP server")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", default="2k", help="body size in bytes, or with k/m (default 2k)")
    args = parser.parse_args(argv)
    host, _, port = args.server.rpartition(":")
    from .relay import parse_size

    try:
        timings = asyncio.run(measure(host or HOST, int(port), args.messages, args.sessions, parse_size(args.size)))
    except (SmtpError, OSError, asyncio.TimeoutError) as error:
        print(f"bench.latency: {error!r}", file=sys.stderr)
        return 1
    figures = summary(timings)
    print(f"end of DATA to 250, {figures['messages']} messages over {args.sessions} sessions: "
          f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, max {figures['max_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
