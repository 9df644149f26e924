"""CPU of one SMTP conversation through the receiving side, in-process, without sockets.

    .venv/bin/python -m bench.session [--size 2k --conversations 1000 --rounds 7 --profile]

Each conversation is what `smtp-source` sends for one message (EHLO, MAIL, RCPT, DATA,
the message, QUIT) fed to a receiving process's SMTP session (`relay/smtpd.py`) one
command at a time, each after the reply to the one before, with the queue on a tmpfs
when there is one (`--queue-dir` to choose): the session's set-up, its commands, the
checks at the end of DATA, the Received header, the queue file and the log lines, but
no network and no delivery. Prints the CPU of a conversation in microseconds: the
least of the rounds (what the code costs when the machine's other tenants leave it
alone) and their median. On a shared machine that is steadier than `bench.relay`'s
messages a second, so it is the figure to compare two versions of the receiving side
with; `--profile` prints where the time goes (cProfile, which overstates code made of
many small calls).

Every reply is checked; a conversation that does not end in "250 ... queued" and "221"
stops the run, so the figure is never that of refused mail.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ipaddress
import os
import pstats
import statistics
import sys
import tempfile
import time

from bench.latency import message_text
from bench.relay import parse_size
from relay.config import MtaConfig
from relay.event_loop import EVENT_LOOP_VARIABLE, choose_event_loop
from relay.events import log_to
from relay.queue.entry import Counters
from relay.queue.store import QueueStore
from relay.smtpd import Receiver

CLIENT = ("127.0.0.1", 40000)


class Transport(asyncio.Transport):
    """The session's socket: it keeps what the session writes and says when a reply has come."""

    def __init__(self, protocol: asyncio.Protocol):
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.replied = asyncio.Event()
        self.closed = asyncio.get_running_loop().create_future()

    def get_extra_info(self, name, default=None):
        return {"peername": CLIENT, "sockname": ("127.0.0.1", 25)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data
        self.replied.set()

    def is_closing(self) -> bool:
        return self.closed.done()

    def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def conversation(size: int) -> list[tuple[bytes, bytes]]:
    """(what the client sends, how the reply to it begins)."""
    return [(b"EHLO client.example.net\r\n", b"250 "), (b"MAIL FROM:<alice@example.net>\r\n", b"250 "),
            (b"RCPT TO:<bob@example.com>\r\n", b"250 "), (b"DATA\r\n", b"354 "),
            (message_text(size, "session") + b".\r\n", b"250 2.0.0 Ok: queued as "), (b"QUIT\r\n", b"221 ")]


async def converse(receiver: Receiver, steps: list[tuple[bytes, bytes]]) -> None:
    session = receiver.protocol()
    transport = Transport(session)
    session.connection_made(transport)
    await transport.replied.wait()
    for sent, expected in [(b"", b"220 ")] + steps:
        if sent:
            transport.replied.clear()
            del transport.written[:]
            session.data_received(sent)
            await transport.replied.wait()
        last = bytes(transport.written).rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
        if not last.startswith(expected):
            raise RuntimeError(f"after {sent[:40]!r}: {last.decode(errors='replace')!r}, not {expected.decode()!r}...")
    await transport.closed


async def run(args: argparse.Namespace, queue_dir: str) -> list[float]:
    store = QueueStore(queue_dir)
    store.open()
    config = MtaConfig(hostname="gw.example.com", relay_domains=("example.com",),
                       my_networks=(ipaddress.ip_network("127.0.0.0/8"),), peername_lookup=False)
    queued = []
    receiver = Receiver(config=lambda: config, store=store, counters=Counters(), verify=None,
                        enqueue=lambda entry, body: queued.append(entry.id), resolver=None,
                        tls_context=lambda: None)
    steps = conversation(args.size)
    for _ in range(min(200, args.conversations)):  # warm: imports, caches, the first group commits
        await converse(receiver, steps)
    profile = cProfile.Profile() if args.profile else None
    rounds = []
    for _ in range(args.rounds):
        if profile:
            profile.enable()
        start = time.process_time()
        for _ in range(args.conversations):
            await converse(receiver, steps)
        rounds.append((time.process_time() - start) / args.conversations)
        if profile:
            profile.disable()
        for queue_id in queued:  # the queue stays small, as delivery would keep it
            store.remove_soon(queue_id, lambda *_: None)
        queued.clear()
        await asyncio.sleep(0)
    if profile:
        pstats.Stats(profile, stream=sys.__stdout__).sort_stats("cumulative").print_stats(35)
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.session", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("2k"), help="message size (default 2k)")
    parser.add_argument("--conversations", type=int, default=1000, help="conversations a round (default 1000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    parser.add_argument("--queue-dir", help="where the queue goes (default: a new directory on /dev/shm, else /tmp)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's view of the rounds")
    args = parser.parse_args(argv)
    if args.conversations < 1 or args.rounds < 1:
        parser.error("--conversations and --rounds must be at least 1")
    log_to(lambda lines: None, False)  # the log lines are made and framed as in a receiving process...
    stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # ...and written nowhere
    try:
        with tempfile.TemporaryDirectory(prefix="bench-session-",
                                         dir=args.queue_dir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)) as work:
            loop_name, loop_factory = choose_event_loop(os.environ.get(EVENT_LOOP_VARIABLE))
            with asyncio.Runner(loop_factory=loop_factory) as runner:  # the receiving process's loop
                rounds = runner.run(run(args, work))
    finally:
        sys.stderr = stderr
    print(f"{args.size} octets a message, {args.conversations} conversations x {args.rounds} rounds, {loop_name}: "
          f"CPU {min(rounds) * 1e6:.0f} us a conversation (least), {statistics.median(rounds) * 1e6:.0f} us (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
