"""The queue on disk is the truth: what the relay acknowledged survives a crash, damage is set aside."""

import json
import socket

from tests.support.mail import make_message, message_id
from tests.support.net import free_port, wait_until
from tests.support.sink import Sink


def queue_dir(relay, name: str):
    return relay.state_dir / "queue" / name


def queue_file_of(relay, mid: str):
    """The msg/ file holding the message with this Message-ID."""
    for path in queue_dir(relay, "msg").iterdir():
        if f"<{mid}>".encode() in path.read_bytes():
            return path
    raise AssertionError(f"no queue file for {mid}")


def test_every_acknowledged_message_is_delivered_after_a_kill_9(make_relay):
    port = free_port()
    relay = make_relay(port)
    sent = [f"crash{n}@example.net" for n in range(12)]
    with relay.smtp() as client:
        for mid in sent:
            assert client.sendmail("alice@example.net", ["bob@example.com", "carol@example.org"],
                                   make_message(mid)) == {}
    relay.wait_log(r"status=deferred", count=2)
    relay.kill()  # SIGKILL: no chance to tidy up
    assert len(relay.queue_files()) == len(sent)

    sink = Sink(port=port).start()
    try:
        relay.start()
        relay.wait_log(r"queue loaded: 12 messages")
        sink.wait_for(len(sent))
        wait_until(lambda: relay.queue_files() == [], what="an empty queue")
        got = [message_id(m.content) for m in sink.messages]
        assert sorted(got) == sorted(sent)  # all of them, none twice
        assert all(sorted(m.recipients) == ["bob@example.com", "carol@example.org"] for m in sink.messages)
    finally:
        sink.stop()


def test_damaged_queue_files_are_set_aside_and_the_rest_is_delivered(make_relay):
    port = free_port()
    relay = make_relay(port)
    for mid in ("keep1@example.net", "cut@example.net", "keep2@example.net"):
        relay.send("alice@example.net", ["bob@example.com"], make_message(mid, body=("x" * 70 + "\r\n") * 30))
    relay.wait_log(r"status=deferred", count=3)
    relay.kill()

    truncated = queue_file_of(relay, "cut@example.net")
    truncated.write_bytes(truncated.read_bytes()[:-500])
    garbage = queue_dir(relay, "msg") / "garbage"
    garbage.write_bytes(b"\x00\x01 this is not a queue file\n" * 10)
    empty = queue_dir(relay, "msg") / "0000000000000000"
    empty.write_bytes(b"")

    sink = Sink(port=port).start()
    try:
        relay.start()
        sink.wait_for(2)
        wait_until(lambda: relay.queue_files() == [], what="the good messages to leave the queue")
        assert sorted(message_id(m.content) for m in sink.messages) == ["keep1@example.net", "keep2@example.net"]
        corrupt = sorted(p.name for p in queue_dir(relay, "corrupt").iterdir())
        # the damaged message's delivery state goes with it, if it had any yet
        assert set(corrupt) - {f"{truncated.name}.state"} == {truncated.name, "garbage", empty.name}
        assert (queue_dir(relay, "corrupt") / "garbage").read_bytes().startswith(b"\x00\x01 this")  # kept, not deleted
        relay.wait_log(rf"{truncated.name}: damaged queue file moved to \S+corrupt: message is truncated")
        relay.wait_log(r"garbage: damaged queue file moved to \S+corrupt: not a Postern queue file")
        relay.wait_log(rf"{empty.name}: damaged queue file moved to \S+corrupt: ")
        relay.wait_log(r"queue loaded: 2 messages")
    finally:
        sink.stop()


def test_files_left_in_queue_tmp_are_never_delivered(make_relay):
    """A file still in tmp/ was never acknowledged: the client will send it again, so delivering it would double it."""
    port = free_port()
    relay = make_relay(port)
    relay.send("alice@example.net", ["bob@example.com"], make_message("acked@example.net"))
    relay.wait_log(r"status=deferred")
    relay.kill()

    # Copies of a real queue file under new IDs, as if the relay died before the rename:
    # one complete (written and fsynced), one cut off half way through writing.
    original = queue_file_of(relay, "acked@example.net")
    data = original.read_bytes()
    for suffix, content in (("A", data), ("B", data[: len(data) // 2])):
        new_id = original.name[:-1] + suffix
        assert new_id != original.name
        header, _, rest = content.partition(b"\n")
        envelope, _, body = rest.partition(b"\n")
        moved = json.loads(envelope) if suffix == "A" else None
        if moved:
            moved["id"] = new_id
            envelope = json.dumps(moved, separators=(",", ":")).encode()
        body = body.replace(b"acked@example.net", f"ghst{suffix}@example.net".encode())  # same length
        (queue_dir(relay, "tmp") / new_id).write_bytes(header + b"\n" + envelope + b"\n" + body)

    sink = Sink(port=port).start()
    try:
        relay.start()
        [message] = sink.wait_for(1)
        assert message_id(message.content) == "acked@example.net"
        relay.wait_log(r"removing unfinished queue file \w+A")
        relay.wait_log(r"removing unfinished queue file \w+B")
        wait_until(lambda: relay.queue_files() == [], what="an empty queue")
        assert list(queue_dir(relay, "tmp").iterdir()) == []
        assert list(queue_dir(relay, "corrupt").iterdir()) == []
        assert len(sink.messages) == 1
    finally:
        sink.stop()


def test_a_next_hop_that_is_done_gets_nothing_again_when_another_is_still_busy_at_a_kill_9(make_relay, sink):
    """Each next hop's recipients are saved as it settles, not once the slowest hop is done."""
    silent = socket.create_server(("127.0.0.1", 0))  # the slow hop: takes the connection, never greets
    slow_port = silent.getsockname()[1]
    try:
        relay = make_relay(sink.port, external_relay={"host": "127.0.0.1", "port": slow_port, "mx": False},
                           delivery={"connect_timeout": 120})
        relay.send("alice@example.net", ["bob@example.com", "carol@example.org"], make_message("two@example.net"))
        [queue_id] = relay.queue_files()
        sink.wait_for(1)
        state = queue_dir(relay, "state") / queue_id
        wait_until(lambda: state.exists() and '"sent"' in state.read_text(), timeout=5,
                   what="bob's delivery saved while carol's next hop is still silent")
        relay.kill()
    finally:
        silent.close()

    relay.write_config({**relay.mta, "external_relay": {"host": "127.0.0.1", "port": sink.port, "mx": False}})
    relay.start()
    wait_until(lambda: relay.queue_files() == [], what="an empty queue")
    assert sorted(r for m in sink.messages for r in m.recipients) == ["bob@example.com", "carol@example.org"]
