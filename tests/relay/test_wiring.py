"""`Relay` wires the components: each is given what it uses, none keeps the `Relay`, and the
configuration a reload puts in force reaches every one of them through its getter."""

import yaml

from relay.config import load_file
from relay.daemon import Relay
from tests.support.net import free_port
from tests.support.relay import base_mta


async def test_no_component_keeps_the_relay_and_each_sees_what_a_reload_puts_in_force(tmp_path):
    path = tmp_path / "postern.yaml"
    mta = base_mta(free_port(), free_port())
    path.write_text(yaml.safe_dump({"mta": mta}))
    relay = Relay(load_file(path), str(path), str(tmp_path / "state"), str(tmp_path / "control.sock"))
    components = [relay.receiver, relay.scheduler, relay.verifier, relay.delivery]
    for component in components:
        assert all(value is not relay for value in vars(component).values()), type(component).__name__

    path.write_text(yaml.safe_dump({"mta": {**mta, "hostname": "renamed.example.com"}}))
    try:
        assert await relay.reload() == []
        seen = [relay.receiver.protocol().config, relay.scheduler.config(), relay.verifier.config(),
                relay.delivery.config()]
        assert [config.hostname for config in seen] == ["renamed.example.com"] * 4
        assert relay.delivery.resolver() is relay.resolver and relay.delivery.outbound_tls() is relay.outbound_tls
    finally:
        for server in relay.servers.values():
            server.close()
