"""Each recipient's delivery history: every attempt, kept as runs of equal results, across restarts."""

import time

from relay.control.client import ControlClient
from relay.queue.entry import HISTORY_RUNS, Envelope, QueueEntry, Recipient


def test_attempts_with_the_same_result_are_one_run_and_a_new_result_starts_another():
    recipient = Recipient("bob@partner.org")
    for when in (100.0, 200.0, 300.0):
        recipient.record("deferred", "4.7.1", "451 4.7.1 greylisted", "mx[192.0.2.7]:25", when)
    recipient.record("deferred", "4.4.1", "connect to mx[192.0.2.7]:25: timed out", "mx[192.0.2.7]:25", 400.0)
    recipient.record("sent", "2.0.0", "250 2.0.0 ok", "mx[192.0.2.7]:25", 500.0)
    assert recipient.attempts == 5 and recipient.status == "sent" and recipient.last_reply == "250 2.0.0 ok"
    assert [(r["first"], r["last"], r["count"], r["dsn"]) for r in recipient.history] == [
        (100.0, 300.0, 3, "4.7.1"), (400.0, 400.0, 1, "4.4.1"), (500.0, 500.0, 1, "2.0.0")]


def test_the_history_keeps_the_latest_runs_only():
    recipient = Recipient("bob@partner.org")
    for n in range(HISTORY_RUNS + 5):
        recipient.record("deferred", "4.0.0", f"451 try {n}", "", float(n))
    assert len(recipient.history) == HISTORY_RUNS
    assert recipient.history[0]["reply"] == "451 try 5" and recipient.history[-1]["reply"] == f"451 try {HISTORY_RUNS + 4}"


def test_the_history_is_saved_with_the_state():
    envelope = Envelope("6600000000000000", "a@example.net", ["bob@partner.org"], time.time(), 10)
    entry = QueueEntry.new(envelope)
    entry.recipients[0].record("deferred", "4.7.1", "451 greylisted", "mx:25", 100.0)
    again = QueueEntry.new(envelope)
    again.apply_state(entry.state_dict())
    assert again.recipients[0].history == entry.recipients[0].history


def test_show_gives_every_attempt_and_a_restart_keeps_them(make_relay, sink):
    # A next hop that greylists, and a backoff long enough that only the flush below tries again.
    sink.rcpt_replies = {"bob@example.com": "451 4.7.1 Greylisted, try again later"}
    relay = make_relay(sink.port, queue={"minimal_backoff_time": 3600, "maximal_backoff_time": 7200})
    relay.socket = relay.workdir / "control.sock"
    relay.send("alice@example.net", ["bob@example.com"], "Subject: one\r\n\r\n1\r\n")
    relay.wait_log(r"to=<bob@example.com>.*status=deferred")

    def shown() -> dict:
        with ControlClient(str(relay.socket)) as client:
            [message] = client.call("io.postern.Queue.List", filter={"recipient": "bob@"})["messages"]
            assert "history" not in message["recipients"][0], "List stays light: the history is Show's"
            return client.call("io.postern.Queue.Show", id=message["id"])["message"]["recipients"][0]

    first = shown()
    assert [run["count"] for run in first["history"]] == [1]
    assert "451 4.7.1 Greylisted" in first["history"][0]["reply"] and first["history"][0]["status"] == "deferred"
    with ControlClient(str(relay.socket)) as client:
        client.call("io.postern.Queue.Flush")
    relay.wait_log(r"to=<bob@example.com>.*status=deferred", count=2)
    deadline = time.time() + 10
    while shown()["attempts"] < 2 and time.time() < deadline:
        time.sleep(0.1)
    second = shown()
    assert second["attempts"] == 2 and len(second["history"]) == 1 and second["history"][0]["count"] == 2
    assert second["history"][0]["last"] > second["history"][0]["first"]
    relay.stop()
    relay.start()
    assert shown()["history"] == second["history"]
