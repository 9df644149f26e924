"""Slow and hostile clients: cut at their limits, while the relay goes on serving its own.

At once, from untrusted addresses: sessions that say EHLO and fall silent (cut at
idle_timeout), sessions that loop on NOOP (cut after junk_command_limit with 421), and
sessions that drip one byte at a time and never end a line (not idle, so only
session_timeout cuts them). Meanwhile a trusted client sends mail.

Then a flood: hundreds of connections at once from many untrusted addresses, more than
max_connections. The surplus gets 421 4.7.0 and is closed; while the flood holds its
connections open, the trusted client still gets its mail through and the control API
answers; once the flood is gone, anyone gets in again.

Then one address alone opens hundreds of connections: it gets client_connection_count_limit
of them and 421 for the rest, while another stranger and the trusted client still get in.

Then a header flood: one untrusted client sends a message whose header is one field of
2 MB, and one as large as message_size_limit allows, in folded continuation lines. While
the relay receives and checks it, another SMTP client and the control API keep asking;
their longest wait is the figure. (Quadratic header scanning once held them for minutes.)
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from relay.control.client import ControlClient
from tests.support.relay import RelayProcess
from tests.support.sink import Sink

from .scenario import Outcome, make_message, message_id_of, scratch, wait_for


@dataclass
class Hostile:
    idle: int = 20
    noop_loops: int = 20
    drips: int = 5
    flood: int = 500
    max_connections: int = 100
    idle_timeout: int = 2
    session_timeout: int = 5
    junk_command_limit: int = 20
    one_address: int = 300
    client_connection_count_limit: int = 20
    header_floods: tuple[int, ...] = (2_000_000, 10_240_000 - 2_000)  # the second: message_size_limit, less room
    header_patience: float = 600.0  # a probe unanswered this long is reported as such


def untrusted(n: int) -> str:
    """Distinct loopback addresses outside my_networks (127.0.0.1/32)."""
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


async def connect(port: int, source: str):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the relay sends until it closes; b'OPEN' at the end if it had not closed in time."""
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(4096), deadline - time.monotonic())
        except asyncio.TimeoutError:
            break
        except ConnectionError:
            return received
        if not chunk:
            return received
        received += chunk
    return received + b"OPEN"


def survives(session):
    """A session that the relay breaks off in an unexpected way reports it instead of raising."""
    async def run(*args):
        try:
            return await session(*args)
        except (OSError, asyncio.TimeoutError) as error:
            return -1, f"{type(error).__name__}: {error}".encode()
    return run


@survives
async def idle_session(port: int, n: int, limit: float) -> tuple[float, bytes]:
    reader, writer = await connect(port, untrusted(n))
    try:
        await reader.readline()
        writer.write(b"EHLO idle.example.net\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        silent_since = time.monotonic()
        tail = await until_closed(reader, limit)
        return time.monotonic() - silent_since, tail
    finally:
        writer.close()


@survives
async def noop_session(port: int, n: int, most: int) -> tuple[int, bytes]:
    """NOOP until the relay stops answering 250; returns how many it took and its last line."""
    reader, writer = await connect(port, untrusted(n))
    try:
        await reader.readline()
        for count in range(most):
            writer.write(b"NOOP\r\n")
            line = await asyncio.wait_for(reader.readline(), 10)
            if not line.startswith(b"250"):
                return count, line.strip() + (b"" if await until_closed(reader, 5) == b"" else b" (left open)")
        return most, b"never cut"
    finally:
        writer.close()


@survives
async def drip_session(port: int, n: int, limit: float) -> tuple[float, bytes]:
    reader, writer = await connect(port, untrusted(n))
    started = time.monotonic()
    try:
        await reader.readline()
        for _ in range(int(limit / 0.4)):
            writer.write(b"x")  # a command line that never ends
            try:
                line = await asyncio.wait_for(reader.readline(), 0.4)
            except asyncio.TimeoutError:
                continue
            return time.monotonic() - started, line.strip()
        return time.monotonic() - started, b"never cut"
    finally:
        writer.close()


def trusted_send(relay: RelayProcess, message_id: str) -> str:
    try:
        with relay.smtp() as client:
            client.sendmail("alice@example.com", ["bob@example.org"], make_message(message_id))
        return "250"
    except Exception as error:
        return f"{type(error).__name__}: {error}"


async def timeouts_and_junk(plan: Hostile, relay: RelayProcess, outcome: Outcome, run: str) -> list[str]:
    idle = [idle_session(relay.port, n, plan.idle_timeout + 5) for n in range(plan.idle)]
    noops = [noop_session(relay.port, 100 + n, plan.junk_command_limit + 10) for n in range(plan.noop_loops)]
    drips = [drip_session(relay.port, 200 + n, plan.session_timeout + 5) for n in range(plan.drips)]
    sent = asyncio.gather(*(asyncio.to_thread(trusted_send, relay, f"busy{n}.{run}@reliability.example")
                            for n in range(3)))
    idled, nooped, dripped, trusted = await asyncio.gather(
        asyncio.gather(*idle), asyncio.gather(*noops), asyncio.gather(*drips), sent)
    idle_times = [t for t, _ in idled]
    idle_cut = [t for t, tail in idled if not tail.endswith(b"OPEN")]
    outcome.figures.update({
        "idle sessions cut": f"{len(idle_cut)} of {plan.idle}, after {min(idle_times):.1f}-{max(idle_times):.1f} s"
                             f" (idle_timeout {plan.idle_timeout} s)",
        "idle sessions were told": ", ".join(sorted({tail.decode(errors='replace').strip() or '(nothing)'
                                                     for _, tail in idled})),
        "NOOP loops cut": f"{sum(1 for c, _ in nooped if c == plan.junk_command_limit)} of {plan.noop_loops}, "
                          f"after {plan.junk_command_limit} NOOPs (junk_command_limit)",
        "NOOP loops were told": ", ".join(sorted({line.decode(errors='replace') for _, line in nooped})),
        "byte-drip sessions cut": f"{sum(1 for _, line in dripped if line.startswith(b'421'))} of {plan.drips}, after "
                                  f"{min(t for t, _ in dripped):.1f}-{max(t for t, _ in dripped):.1f} s "
                                  f"(session_timeout {plan.session_timeout} s)",
        "trusted mail meanwhile": ", ".join(trusted),
    })
    outcome.check(len(idle_cut) == plan.idle, f"{plan.idle - len(idle_cut)} idle sessions were not cut")
    outcome.check(all(plan.idle_timeout - 0.2 <= t <= plan.idle_timeout + 2.5 for t in idle_cut),
                  f"idle sessions cut after {sorted(idle_cut)} s, idle_timeout is {plan.idle_timeout} s")
    outcome.check(all(c == plan.junk_command_limit and line.startswith(b"421 4.7.0") for c, line in nooped),
                  f"NOOP loops: {sorted(set(nooped))}")
    outcome.check(all(line.startswith(b"421 4.4.2") and plan.session_timeout - 0.2 <= t <= plan.session_timeout + 2
                      for t, line in dripped), f"byte drips: {dripped}")
    return [f"busy{n}.{run}@reliability.example" for n, reply in enumerate(trusted) if reply == "250"]


async def flood(plan: Hostile, relay: RelayProcess, outcome: Outcome, run: str) -> list[str]:
    async def open_one(n: int):
        try:
            reader, writer = await asyncio.wait_for(connect(relay.port, untrusted(n)), 20)
            line = await asyncio.wait_for(reader.readline(), 20)
            return writer, line.strip()[:3].decode(errors="replace") or "closed"
        except (OSError, asyncio.TimeoutError) as error:
            return None, type(error).__name__

    opened = await asyncio.gather(*(open_one(n) for n in range(plan.flood)))
    greetings = Counter(code for _, code in opened)
    started = time.monotonic()
    trusted = await asyncio.to_thread(trusted_send, relay, f"flood.{run}@reliability.example")
    trusted_seconds = time.monotonic() - started

    def status() -> dict:
        with ControlClient(str(relay.workdir / "control.sock"), timeout=5) as control:
            return control.call("io.postern.Status.Get")["status"]

    started = time.monotonic()
    try:
        answered = f"answered in {(await asyncio.to_thread(status)) and time.monotonic() - started:.2f} s"
    except Exception as error:
        answered = f"{type(error).__name__}: {error}"
    for writer, _ in opened:
        if writer is not None:
            writer.close()
    await asyncio.sleep(0.5)
    try:
        reader, writer = await connect(relay.port, untrusted(plan.flood + 1))
        after = (await asyncio.wait_for(reader.readline(), 10)).strip()[:3].decode()
        writer.close()
    except (OSError, asyncio.TimeoutError) as error:
        after = type(error).__name__
    outcome.figures.update({
        "flood": f"{plan.flood} connections from {len({untrusted(n) for n in range(plan.flood)})} addresses, "
                 f"max_connections {plan.max_connections}",
        "flood greetings": ", ".join(f"{code} x{n}" for code, n in sorted(greetings.items())),
        "trusted mail during the flood": f"{trusted} in {trusted_seconds:.2f} s",
        "control API during the flood": answered,
        "untrusted client after the flood": after,
    })
    outcome.check(greetings == Counter({"220": plan.max_connections, "421": plan.flood - plan.max_connections}),
                  f"flood greetings: {dict(greetings)}")
    outcome.check(trusted == "250", f"the trusted client was not served during the flood: {trusted}")
    outcome.check(answered.startswith("answered"), f"the control API did not answer during the flood: {answered}")
    outcome.check(after == "220", f"after the flood: {after}")
    return [f"flood.{run}@reliability.example"] if trusted == "250" else []


async def one_address_flood(plan: Hostile, relay: RelayProcess, outcome: Outcome, run: str) -> list[str]:
    """Many connections from one address: only its share is greeted; others are not locked out."""
    source = untrusted(plan.flood + 20)

    async def open_one():
        try:
            reader, writer = await asyncio.wait_for(connect(relay.port, source), 20)
            line = await asyncio.wait_for(reader.readline(), 20)
            return writer, line.decode(errors="replace").strip()
        except (OSError, asyncio.TimeoutError) as error:
            return None, type(error).__name__

    opened = await asyncio.gather(*(open_one() for _ in range(plan.one_address)))
    greetings = Counter(line[:3] for _, line in opened)
    refusals = {line for _, line in opened if line.startswith("421")}
    try:
        reader, writer = await connect(relay.port, untrusted(plan.flood + 21))
        stranger = (await asyncio.wait_for(reader.readline(), 10)).strip()[:3].decode()
        writer.close()
    except (OSError, asyncio.TimeoutError) as error:
        stranger = type(error).__name__
    trusted = await asyncio.to_thread(trusted_send, relay, f"one-address.{run}@reliability.example")
    for writer, _ in opened:
        if writer is not None:
            writer.close()
    limit = plan.client_connection_count_limit
    outcome.figures.update({
        "one address": f"{plan.one_address} connections from {source}, client_connection_count_limit {limit}",
        "one address greetings": ", ".join(f"{code} x{n}" for code, n in sorted(greetings.items())),
        "one address was told": "; ".join(sorted(refusals))[:120] or "(no refusal)",
        "another stranger meanwhile": stranger,
        "trusted mail meanwhile (one address)": trusted,
    })
    outcome.check(greetings == Counter({"220": limit, "421": plan.one_address - limit}),
                  f"one address greetings: {dict(greetings)}")
    outcome.check(all("too many connections from" in line for line in refusals), f"refusals: {refusals}")
    outcome.check(stranger == "220", f"another stranger during the one-address flood: {stranger}")
    outcome.check(trusted == "250", f"the trusted client during the one-address flood: {trusted}")
    return [f"one-address.{run}@reliability.example"] if trusted == "250" else []


def flooded_header(size: int) -> bytes:
    """A message of about `size` bytes: one header field of folded 4-byte continuation lines."""
    head = b"Subject: header flood\r\nX-Flood: start\r\n"
    return head + b" ab\r\n" * ((size - len(head) - 8) // 5) + b"\r\nbody\r\n"


async def header_flood(plan: Hostile, relay: RelayProcess, size: int) -> dict:
    """Send one flooded header from an untrusted address; meanwhile probe another session and the control API."""
    message = flooded_header(size)
    reader, writer = await connect(relay.port, untrusted(plan.flood + 10))
    other_reader, other_writer = await asyncio.open_connection("127.0.0.1", relay.port)
    control = ControlClient(str(relay.workdir / "control.sock"), timeout=plan.header_patience)
    smtp_waits, control_waits = [], []
    try:
        for stream, name in ((reader, writer), (other_reader, other_writer)):
            await stream.readline()
            name.write(b"EHLO probe.example.net\r\n")
            while not (await stream.readline()).startswith(b"250 "):
                pass
        writer.write(b"MAIL FROM:<mallory@example.net>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        for _ in range(3):
            await reader.readline()
        started = time.monotonic()

        async def send() -> tuple[str, float]:
            writer.write(message + b".\r\n")
            await writer.drain()
            sent = time.monotonic()
            reply = await asyncio.wait_for(reader.readline(), plan.header_patience)
            return reply.decode(errors="replace").strip(), time.monotonic() - sent

        sending = asyncio.ensure_future(send())
        await asyncio.to_thread(control.connect)
        while not sending.done() or not smtp_waits:
            asked = time.monotonic()
            other_writer.write(b"NOOP\r\n")
            try:
                await asyncio.wait_for(other_reader.readline(), plan.header_patience)
            except asyncio.TimeoutError:
                smtp_waits.append(float("inf"))
                break
            smtp_waits.append(time.monotonic() - asked)
            asked = time.monotonic()
            try:
                await asyncio.to_thread(control.call, "io.postern.Status.Get")
            except Exception:
                control_waits.append(float("inf"))
                break
            control_waits.append(time.monotonic() - asked)
            await asyncio.sleep(0.05)
        try:
            reply, after_dot = await asyncio.wait_for(sending, plan.header_patience)
        except (asyncio.TimeoutError, OSError) as error:
            reply, after_dot = type(error).__name__, float("inf")
        return {"size": len(message), "reply": reply, "after_dot": after_dot, "total": time.monotonic() - started,
                "smtp": max(smtp_waits), "control": max(control_waits, default=float("inf")),
                "probes": len(smtp_waits)}
    finally:
        control.close()
        writer.close()
        other_writer.close()


def seconds(value: float, patience: float) -> str:
    return f"more than {patience:.0f} s (no answer)" if value == float("inf") else f"{value:.2f} s"


async def header_floods(plan: Hostile, relay: RelayProcess, outcome: Outcome) -> None:
    for size in plan.header_floods:
        result = await header_flood(plan, relay, size)
        label = f"{result['size'] / 1e6:.1f} MB folded header"
        outcome.figures.update({
            f"{label}: reply": f"{result['reply'][:60]}, {seconds(result['after_dot'], plan.header_patience)} "
                               f"after the final dot ({result['total']:.1f} s in all)",
            f"{label}: longest wait of another SMTP client": f"{seconds(result['smtp'], plan.header_patience)} "
                                                           f"({result['probes']} NOOPs)",
            f"{label}: longest wait of the control API": seconds(result["control"], plan.header_patience),
        })
        outcome.check(result["reply"].startswith("250"), f"{label}: {result['reply']}")
        outcome.check(result["smtp"] < 5 and result["control"] < 5,
                      f"{label}: another client waited {result['smtp']:.1f} s, the control API {result['control']:.1f} s")


def run(plan: Hostile | None = None) -> Outcome:
    plan = plan or Hostile()
    outcome = Outcome("slow and hostile clients")
    sink = Sink().start()
    run_id = f"{time.time_ns()}"
    try:
        with scratch(outcome) as relays:
            limits = relays.make(sink.port, idle_timeout=plan.idle_timeout, session_timeout=plan.session_timeout,
                                 junk_command_limit=plan.junk_command_limit,
                                 max_connections=plan.idle + plan.noop_loops + plan.drips + 10)
            sent = asyncio.run(timeouts_and_junk(plan, limits, outcome, run_id))
            crowded = relays.make(sink.port, max_connections=plan.max_connections,
                                  client_connection_count_limit=plan.client_connection_count_limit)
            sent += asyncio.run(flood(plan, crowded, outcome, run_id))
            sent += asyncio.run(one_address_flood(plan, crowded, outcome, run_id))
            asyncio.run(header_floods(plan, crowded, outcome))
            wait_for(lambda: len(sink.messages) >= len(sent) + len(plan.header_floods), 15)
            delivered = {message_id_of(m.content) for m in sink.messages}
            outcome.figures["trusted mail delivered"] = f"{len(delivered & set(sent))} of {len(sent)}"
            outcome.check(set(sent) <= delivered, "trusted mail accepted during the attack was not delivered")
            outcome.check(limits.process.poll() is None and crowded.process.poll() is None, "a relay died")
    finally:
        sink.stop()
    return outcome
