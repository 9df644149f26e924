import asyncio
import json
import time

import pytest

from console import login


@pytest.fixture(autouse=True)
def no_console_login(request, monkeypatch):
    """These tests run as root: the console would start locked. Only the login tests (marked
    `console_login`, run in a private mount namespace with their own admin) keep the real rule."""
    if request.node.get_closest_marker("console_login") is None:
        monkeypatch.setattr(login, "login_required", lambda euid=None: False)


async def until(pilot, condition, timeout: float = 10.0, what: str = "the console to show it"):
    """Let the app run until condition() is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause()
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def text_of(app, selector: str) -> str:
    """What a Static shows, as plain text."""
    widget = app.screen.query_one(selector)
    return str(widget.render())


FIXED_MESSAGES = [
    ("6600000000000000", "alice@example.net", ["bob@example.com"], "Quarterly report", 2_000),
    ("6600000000001000", "alice@example.net", ["carol@partner.org", "dave@partner.org"], "Contract", 48_000),
    ("6600000000002000", "", ["eve@example.net"], "Undelivered Mail Returned to Sender", 3_100),
]


@pytest.fixture
def fixed_queue_relay(make_relay):
    """A relay whose queue holds three deferred messages with fixed IDs, two hours old, not due for a day:
    the same screen every run, for snapshots."""
    from relay.queue.entry import DEFERRED, Envelope, QueueEntry
    from relay.queue.store import MAGIC, QueueStore

    relay = make_relay(1, start=False)
    store = QueueStore(relay.state_dir)
    store.open()
    arrival = time.time() - 2 * 3600 - 60
    for queue_id, sender, recipients, subject, size in FIXED_MESSAGES:
        body = (f"Subject: {subject}\r\n\r\n".encode() + b"x" * size)[:size]
        envelope = Envelope(queue_id, sender, recipients, arrival, len(body), "unknown[192.0.2.25]",
                            "mail.example.net", subject=subject)
        (store.msg / queue_id).write_bytes(MAGIC + json.dumps(envelope.to_dict()).encode() + b"\n" + body)
        entry = QueueEntry.new(envelope)
        entry.attempts, entry.next_attempt = 3, time.time() + 86400
        entry.last_reply = "host mx.partner.org[198.51.100.7]:25 said: 451 4.7.1 Greylisted, try again later"
        for recipient in entry.recipients:
            recipient.status, recipient.attempts, recipient.last_reply = DEFERRED, 3, entry.last_reply
        (store.state / queue_id).write_text(json.dumps(entry.state_dict()))
    relay.start()
    relay.socket = relay.workdir / "control.sock"
    return relay


@pytest.fixture
def tls_sink(tmp_path):
    """A recording SMTP server on loopback that offers STARTTLS with a self-signed gw.example.com certificate."""
    import ssl

    from tests.support.certs import self_signed
    from tests.support.sink import Sink

    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = Sink(tls_context=context).start()
    yield server
    server.stop()
