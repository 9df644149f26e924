"""docs/config.md's settings table is the relay's own field descriptions (no server needed)."""

from .config_table import DOC, generated, keys_table


def test_the_settings_table_is_current():
    text = DOC.read_text()
    assert generated(text) == text, "docs/config.md is stale: run python -m tests.relay.config_table --write"


def test_the_table_names_every_field_and_its_default_as_the_form_shows_it():
    table = keys_table()
    assert "| `queue.maximal_queue_lifetime` | `5d` |" in table  # durations in the unit the console shows
    assert "| `delivery.connect_timeout` | `30s` |" in table and "| `idle_timeout` | `5m` |" in table
    assert "| `listen` | `[\"0.0.0.0:25\"]` |" in table and "| `helo_name` | `\"\"` |" in table
    assert "| `internal_relay` | `{host: \"\", port: 25, mx: false, tls: may, tls_name: \"\"}` |" in table
    assert "| `tls.key_file` | `\"\"` |" in table and "`tls.inbound` | `may` |" in table
