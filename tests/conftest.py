import pytest

from tests.support.certs import Authority
from tests.support.net import free_port
from tests.support.relay import RelayProcess, base_mta
from tests.support.sink import Sink


@pytest.fixture
def sink():
    server = Sink().start()
    yield server
    server.stop()


@pytest.fixture
def make_relay(tmp_path):
    """Start relays with `base_mta` plus overrides; stopped at the end of the test."""
    started = []

    def make(next_hop_port: int, start: bool = True, args: tuple[str, ...] = (), **overrides) -> RelayProcess:
        port = free_port()
        mta = {**base_mta(port, next_hop_port), **overrides}
        workdir = tmp_path / f"relay{len(started)}"
        workdir.mkdir()
        relay = RelayProcess(workdir, mta, port, args)
        started.append(relay)
        return relay.start() if start else relay

    yield make
    for relay in started:
        relay.kill()


@pytest.fixture
def relay(make_relay, sink):
    return make_relay(sink.port)


@pytest.fixture
def queued_relay(make_relay):
    """A relay whose next hop is down, with three messages queued over SMTP."""
    relay = make_relay(1)  # nothing listens on port 1: every delivery defers
    relay.send("alice@example.net", ["bob@example.com"], "Subject: one\r\n\r\n1\r\n")
    relay.send("alice@example.net", ["carol@partner.org", "dave@partner.org"], "Subject: two\r\n\r\n2\r\n")
    relay.send("eve@example.net", ["frank@example.com"], "Subject: three\r\n\r\n3\r\n")
    relay.wait_log(r"status=deferred", count=4)
    relay.socket = relay.workdir / "control.sock"
    return relay


@pytest.fixture
def authority(tmp_path):
    """A certificate authority of the test's own, for servers whose certificates verify."""
    directory = tmp_path / "ca"
    directory.mkdir()
    return Authority(directory)
