"""Receiving processes (`--receivers N`): SMTP received on more than one core, into one queue.

Real daemons with real child processes, real sockets and real signals: every message any
process accepts is delivered exactly once, whatever happens to the process that took it."""

import asyncio
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from relay.control.client import ControlClient
from relay.queue.entry import Envelope
from relay.queue.store import QueueStore, slot_of
from tests.relay.test_metrics import scrape, value
from tests.support.net import free_port, wait_until
from tests.support.next_hop import NextHop
from tests.support.relay import base_mta

OUTSIDER = "127.0.0.2"  # not in my_networks: its connections count against the client limits


def receivers(relay) -> list[psutil.Process]:
    return psutil.Process(relay.process.pid).children()


def status(relay) -> dict:
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        return client.call("io.postern.Status.Get")["status"]


def queued_as(relay, subject: str, source: str = "127.0.0.1", body: str = "body\r\n") -> str:
    """Send one message; the queue ID in the 250 reply."""
    with relay.smtp(source) as client:
        client.mail("alice@example.net")
        client.rcpt("bob@example.com")
        code, text = client.data(f"Subject: {subject}\r\n\r\n{body}".encode())
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[-1]


def test_mail_taken_by_every_receiving_process_is_delivered_once(make_relay, sink):
    relay = make_relay(sink.port, args=("--receivers", "2"))
    assert len(receivers(relay)) == 2
    ids = [queued_as(relay, f"m{number}") for number in range(30)]
    delivered = sink.wait_for(30)
    assert sorted(m.content.split(b"Subject: ")[1][:3].strip() for m in delivered) == \
        sorted(f"m{number}".encode() for number in range(30))
    assert {slot_of(queue_id) for queue_id in ids} == {1, 2}, "the kernel spread the connections over both"
    assert len(set(ids)) == 30
    wait_until(lambda: relay.queue_files() == [], 10, what="the queue to empty")
    time.sleep(1)
    assert len(sink.messages) == 30
    counters = status(relay)["counters"]
    assert (counters["received"], counters["delivered"]) == (30, 30)
    # The receiving processes' log lines are the daemon's, in the journal and in Log.Tail alike
    relay.wait_log(rf"postern/smtpd: {ids[0]}: from=<alice@example\.net>, size=\d+, nrcpt=1 \(queue active\)")
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        tail = next(client.stream("io.postern.Log.Tail", lines=400))
    assert any(f"{ids[-1]}: client=unknown[127.0.0.1]" in line["text"] for line in tail["lines"]), tail


def test_a_message_acknowledged_is_in_the_next_control_answer(make_relay):
    """The 250 comes from a receiving process; the control API answers from the daemon, which has
    heard of the message by then, whichever process took it."""
    relay = make_relay(1, args=("--receivers", "2"))  # nothing listens on port 1: the mail stays queued
    big = "x" * 998 + "\r\n"
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        for number in range(20):  # 4 MB each: the daemon reads its word about the message a while
            queue_id = queued_as(relay, f"m{number}", body=big * 4000)
            listed = {m["id"] for m in client.call("io.postern.Queue.List")["messages"]}
            assert queue_id in listed, number
            assert client.call("io.postern.Status.Get")["status"]["counters"]["received"] == number + 1


def test_a_message_too_big_to_hand_over_whole_is_read_back_and_delivered_whole(make_relay, sink):
    relay = make_relay(sink.port, args=("--receivers", "1"))
    body = "".join(f"line {number:07d} " + "y" * 60 + "\r\n" for number in range(40_000))  # 3 MB
    queued_as(relay, "big", body=body)
    [message] = sink.wait_for(1)
    assert message.content.endswith(body.encode())


def test_open_sessions_and_refusals_in_receiving_processes_show_in_the_status_and_metrics(make_relay, sink):
    port = free_port()
    relay = make_relay(sink.port, args=("--receivers", "2"), metrics={"listen": f"127.0.0.1:{port}"})
    assert status(relay)["listeners"] == [f"127.0.0.1:{relay.port}"]
    pids = sorted(p.pid for p in receivers(relay))
    assert sorted(status(relay)["receiving_processes"]) == pids
    shown = subprocess.run([sys.executable, "-m", "relay.ctl", "--socket", str(relay.workdir / "control.sock"),
                            "status"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"receiving processes: 2 (pid {', '.join(map(str, status(relay)['receiving_processes']))})" in shown
    sessions = [relay.smtp(OUTSIDER) for _ in range(4)]
    wait_until(lambda: value(scrape(port), "postern_smtp_connections") == 4, 10, what="4 open sessions counted")
    assert value(scrape(port), "postern_smtp_clients") in (1, 2)  # one address, counted by each process it is on
    sessions[0].mail("someone@example.net")
    code, _ = sessions[0].rcpt("someone@elsewhere.org")  # relaying for an outsider: refused
    assert code == 554
    wait_until(lambda: status(relay)["counters"]["rejected"] == 1, 10, what="the refusal counted")
    assert value(scrape(port), "postern_smtp_refusals_total", stage="RCPT", reason="relay_denied", code="554") == 1
    relay.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.2\]: 554 5\.7\.1 <someone@elsewhere\.org>")
    for session in sessions:
        session.quit()
    wait_until(lambda: value(scrape(port), "postern_smtp_connections") == 0, 10, what="no open session counted")


def test_recipients_turned_away_by_the_migration_hold_are_counted_by_the_daemon(make_relay, sink):
    relay = make_relay(sink.port, args=("--receivers", "2"), paused_domains=["example.com"])
    for _ in range(4):
        with relay.smtp() as client:
            client.mail("alice@example.net")
            assert client.rcpt("bob@example.com")[0] == 451
    wait_until(lambda: status(relay)["paused"][0]["turned_away"] == 4, 10, what="4 turned away in Status.Get")


def test_the_client_limits_are_shared_out_never_exceeded(make_relay, sink):
    relay = make_relay(sink.port, args=("--receivers", "2"), client_connection_count_limit=4)
    greetings = []
    held = []
    for _ in range(12):
        client = smtplib.SMTP()
        code, _ = client.connect("127.0.0.1", relay.port, source_address=(OUTSIDER, 0))
        greetings.append(code)
        held.append(client)
    assert 2 <= greetings.count(220) <= 4 and greetings.count(421) >= 8, greetings  # 2 each process
    relay.wait_log(r"Connection concurrency limit exceeded: 3 from unknown\[127\.0\.0\.2\] for service smtp")
    for client in held:
        client.close()


def commit_as_receiver(relay, slot: int, subject: str) -> str:
    """A message committed in a receiving process's slot that the daemon was never told of: what a
    process leaves when it dies between its commit and its word to the daemon."""
    store = QueueStore(relay.state_dir, slot=slot)
    message = f"Subject: {subject}\r\n\r\nbody\r\n".encode()
    envelope = Envelope(id=store.new_id(), sender="alice@example.net", recipients=["bob@example.com"],
                        arrival=time.time(), size=len(message), client="unknown[127.0.0.1]", protocol="ESMTP")
    asyncio.run(store.commit(envelope, message))
    return envelope.id


def test_a_receiving_process_killed_loses_nothing_and_is_replaced(make_relay, sink):
    relay = make_relay(sink.port, args=("--receivers", "1"))
    [child] = receivers(relay)
    delivered_before = [queued_as(relay, f"before{number}") for number in range(3)]
    sink.wait_for(3)
    wait_until(lambda: relay.queue_files() == [], 10, what="the first three delivered and removed")
    # Told and not yet heard: the daemon stopped while the process queues a message and says so.
    os.kill(relay.process.pid, signal.SIGSTOP)
    try:
        told = queued_as(relay, "told")
        untold = commit_as_receiver(relay, 1, "untold")
        child.kill()  # a zombie until the stopped daemon reaps it
        wait_until(lambda: child.status() == psutil.STATUS_ZOMBIE, 10, what="the receiving process dead")
    finally:
        os.kill(relay.process.pid, signal.SIGCONT)
    relay.wait_log(r"receiving process 1 \(pid \d+\) exited with status -9; starting another")
    relay.wait_log(rf"{untold}: queued by receiving process 1, which ended before it said so")
    delivered = sink.wait_for(5)
    time.sleep(1.5)  # nothing else arrives: not the three delivered before, not `told` twice
    subjects = sorted(m.content.split(b"Subject: ")[1].split(b"\r\n")[0] for m in sink.messages)
    assert subjects == [b"before0", b"before1", b"before2", b"told", b"untold"], subjects
    assert len(delivered) == 5 and told not in relay.queue_files() and delivered_before
    wait_until(lambda: len(receivers(relay)) == 1 and receivers(relay)[0].pid != child.pid, 10,
               what="a new receiving process")
    assert queued_as(relay, "after")  # and it takes mail
    sink.wait_for(6)


def test_a_reload_hands_over_to_new_processes_and_open_sessions_finish(make_relay, sink):
    relay = make_relay(sink.port, args=("--receivers", "1"))
    [old] = receivers(relay)
    open_session = relay.smtp()
    relay.reload({**relay.mta, "hostname": "new.example.com"})
    relay.wait_log(r"reload -- configuration")
    wait_until(lambda: any(p.pid != old.pid for p in receivers(relay)), 10, what="the new process")
    client = smtplib.SMTP()
    _, banner = client.connect("127.0.0.1", relay.port)
    assert banner.startswith(b"new.example.com"), banner
    client.quit()
    # The session opened before the reload goes on in the old process, to the end
    open_session.mail("alice@example.net")
    open_session.rcpt("bob@example.com")
    code, _ = open_session.data(b"Subject: across\r\n\r\nbody\r\n")
    assert code == 250
    open_session.quit()
    [message] = sink.wait_for(1)
    assert b"Subject: across" in message.content
    old.wait(10)  # retired: gone once its last session ended
    relay.wait_log(r"receiving process 1 ended")


def test_clients_connecting_through_reloads_are_all_greeted(make_relay, sink):
    """The listening sockets outlive the processes: none is closed with connections waiting in it."""
    relay = make_relay(sink.port, args=("--receivers", "2"))
    greetings, stop = [], threading.Event()

    def connect_again_and_again():
        while not stop.is_set():
            client = smtplib.SMTP(timeout=10)
            try:
                greetings.append(client.connect("127.0.0.1", relay.port)[0])
                client.quit()
            except (OSError, smtplib.SMTPException) as error:
                greetings.append(repr(error))

    clients = [threading.Thread(target=connect_again_and_again) for _ in range(3)]
    for thread in clients:
        thread.start()
    try:
        for number in range(3):
            relay.reload({**relay.mta, "hostname": f"gw{number}.example.com"})
            relay.wait_log(r"reload -- configuration", count=number + 1)
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in clients:
            thread.join(15)
    assert len(greetings) > 20 and set(greetings) == {220}, [g for g in greetings if g != 220]


def test_a_reload_that_cannot_listen_keeps_the_processes_running(make_relay, sink):
    relay = make_relay(sink.port, args=("--receivers", "1"))
    [old] = receivers(relay)
    relay.reload({**relay.mta, "listen": [f"127.0.0.1:{relay.port}", "192.0.2.1:25"]})
    relay.wait_log(r"reload refused: mta\.listen: cannot listen on 192\.0\.2\.1:25")
    assert [p.pid for p in receivers(relay)] == [old.pid]
    assert queued_as(relay, "still")
    sink.wait_for(1)


def test_a_stop_tells_idle_sessions_421_and_ends_every_process(make_relay, sink):
    relay = make_relay(sink.port, args=("--receivers", "2"))
    children = receivers(relay)
    idle = relay.smtp()
    relay.stop()
    code, text = idle.getreply()
    assert code == 421 and b"shutting down" in text.lower(), (code, text)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
    assert relay.process.returncode == 0


def test_receiving_processes_die_with_the_daemon(make_relay, sink):
    relay = make_relay(sink.port, args=("--receivers", "2"))
    children = receivers(relay)
    relay.kill()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, "no receiver outlives a killed daemon: a restart must not load the queue beside one"


def test_recipient_verification_asks_the_daemon_so_there_is_one_cache(make_relay):
    internal = NextHop().start()
    try:
        relay = make_relay(internal.port, args=("--receivers", "2"),
                           internal_relay={"host": "127.0.0.1", "port": internal.port, "mx": False},
                           reject_unverified_recipient={"enabled": True})
        for number in range(6):  # over both processes
            with relay.smtp(OUTSIDER) as client:
                client.mail("someone@example.net")
                assert client.rcpt("bob@example.com")[0] == 250
                client.rset()
        assert internal.probes() == ["bob@example.com"], "asked once, whichever process took the session"
        with ControlClient(str(relay.workdir / "control.sock")) as client:
            assert client.call("io.postern.Verify.Lookup", address="bob@example.com")["entry"]["status"] == \
                "deliverable"
    finally:
        internal.stop()


@pytest.mark.parametrize("count", ["-1", "9", "two"])
def test_a_receiver_count_out_of_range_is_refused(tmp_path, count):
    result = subprocess.run([sys.executable, "-m", "relay.daemon", "--config", str(tmp_path / "none.yaml"),
                             "--receivers", count, "--check"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "--receivers" in result.stderr, result.stderr


def test_a_port_held_by_another_program_is_not_shared_with_it(make_relay, sink):
    """SO_REUSEPORT joins only sockets of the same user that all set it: a program already on the
    port makes the start fail with the field named, as without receiving processes."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        relay = make_relay(sink.port, start=False, args=("--receivers", "1"), listen=[f"127.0.0.1:{port}"])
        relay.start(wait=False)
        relay.process.wait(20)
        assert relay.process.returncode == 1
        assert f"mta.listen: cannot listen on 127.0.0.1:{port}" in relay.log()
    finally:
        squatter.close()


def test_auto_is_one_receiving_process_per_cpu_and_none_on_one_cpu():
    from relay.daemon import receiver_count

    cpus = len(os.sched_getaffinity(0))
    assert receiver_count("auto") == (min(cpus, 8) if cpus > 1 else 0)
    assert receiver_count(" 3 ") == 3
    original = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(original)})
        assert receiver_count("AUTO") == 0, "one CPU: receiving in the daemon itself, as before"
    finally:
        os.sched_setaffinity(0, original)


async def test_a_daemon_that_cannot_start_receiving_processes_receives_itself(tmp_path, monkeypatch, sink):
    """An interpreter the daemon's user may not run (a development tree under /root, run as nobody)
    or no memory for a process: the mail must still come in, so the daemon listens itself."""
    import yaml

    import relay.receiving
    from relay.config import load_file
    from relay.daemon import Relay

    async def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", args[0])

    monkeypatch.setattr(relay.receiving.asyncio, "create_subprocess_exec", refused)
    path = tmp_path / "postern.yaml"
    port = free_port()
    path.write_text(yaml.safe_dump({"mta": base_mta(port, sink.port)}))
    daemon = Relay(load_file(path), str(path), str(tmp_path / "state"), str(tmp_path / "control.sock"), receivers=2)
    try:
        await daemon.start()
        assert daemon.receiving is None and daemon.listening()[0] == list(daemon.config.listen)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"220 gw.example.com")
        writer.close()
    finally:
        await daemon.stop(grace=1)


async def test_frames_cut_anywhere_on_the_channel_come_out_whole_and_in_order():
    """The channel carries frames in whatever pieces the socket gives: a turn's frames in one write, a
    body larger than one read, a frame cut in its length prefix. The end of the channel mid-frame ends
    the reading quietly (the other side died)."""
    import random

    from relay.receiving import frame, frames

    rng = random.Random(18)
    sent = [({"t": "log", "lines": [f"line {n}"] * (n % 4)}, b"") for n in range(200)]
    sent += [({"t": "queued", "n": n}, bytes([n % 251]) * rng.choice((1, 1000, 70_000))) for n in range(50)]
    sent.append(({"t": "queued", "n": "big"}, b"x" * (3 << 20)))  # more than one read of the reader
    rng.shuffle(sent)
    data = b"".join(frame(header, body) for header, body in sent) + frame({"t": "cut"}, b"y" * 100)[:-7]
    ours, theirs = socket.socketpair()
    reader, _ = await asyncio.open_unix_connection(sock=ours)

    def write_in_pieces():
        position = 0
        while position < len(data):
            size = rng.choice((1, 2, 3, 7, 8, 9, 4096, 65536, 300_000))
            theirs.sendall(data[position:position + size])
            position += size
        theirs.close()

    writer = threading.Thread(target=write_in_pieces)
    writer.start()
    got = [received async for received in frames(reader)]
    writer.join()
    assert got == sent


async def test_a_lone_session_commits_on_the_event_loops_thread_and_two_in_a_worker(tmp_path, monkeypatch):
    """A receiving process's Receiver, served on a real socket: with one session open, nothing else waits
    on its loop, so the message is fsynced on the loop's thread (no hand-off); once a second session is
    open, in a worker thread again, so that the other session is answered meanwhile. The daemon's own
    Receiver (`--receivers 0`), whose loop also delivers, always hands it off."""
    import ipaddress

    from relay.config import MtaConfig
    from relay.queue.entry import Counters
    from relay.receiving import SharedReceiver
    from relay.smtpd import Receiver

    store = QueueStore(tmp_path)
    store.open()
    fsynced: dict[str, int] = {}
    real_fsync = os.fsync

    def fsync(fd):
        real_fsync(fd)
        fsynced[os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))] = threading.get_ident()

    monkeypatch.setattr(os, "fsync", fsync)
    config = MtaConfig(hostname="gw.example.com", relay_domains=("example.com",), peername_lookup=False,
                       my_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    receiver = Receiver(config=lambda: config, store=store, counters=Counters(), verify=None,
                        enqueue=lambda entry, body: None, resolver=None, tls_context=lambda: None)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(receiver.protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def session():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"220 ")
        return reader, writer

    async def send(reader, writer) -> str:
        """One message; the thread that fsynced it."""
        writer.write(b"HELO client.example.net\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        for _ in range(4):
            await reader.readline()
        writer.write(b"Subject: t\r\n\r\nbody\r\n.\r\nRSET\r\n")
        queued = (await reader.readline()).decode()
        assert queued.startswith("250 2.0.0 Ok: queued as "), queued
        assert (await reader.readline()).startswith(b"250 ")
        return fsynced[queued.split()[-1]]

    try:
        first = await session()
        assert await send(*first) != threading.get_ident()  # the daemon's Receiver
        receiver.alone_in_process = SharedReceiver.alone_in_process
        assert await send(*first) == threading.get_ident()
        second = await session()
        assert await send(*first) != threading.get_ident()
        second[1].close()
        await wait_until_async(lambda: receiver.connections == 1)
        assert await send(*first) == threading.get_ident()
    finally:
        server.close()


async def wait_until_async(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
