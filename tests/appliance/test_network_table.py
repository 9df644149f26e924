"""docs/appliance.md's network table is the model's own field descriptions."""

from .network_table import DOC, generated, keys_table


def test_the_network_table_is_current():
    text = DOC.read_text()
    assert generated(text) == text, "docs/appliance.md is stale: run python -m tests.appliance.network_table --write"


def test_the_table_names_every_field_where_the_file_holds_it():
    table = keys_table()
    for key in ("hostname", "interfaces.NAME", ".dhcp", ".address", ".gateway", ".broadcast", ".mtu", "dns.servers",
                "dns.search", "hosts"):
        assert f"| `{key}` |" in table
    assert "at most 15 bytes" in table and "Up to 3 addresses" in table
