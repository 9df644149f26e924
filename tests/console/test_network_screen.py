"""The network screen: the live interfaces, checks as you type, and the safe apply with its countdown.

Changes are applied for real only inside a network namespace the test creates (and
deletes), with documentation addresses; without one, under a temporary root, only files
change. The host's own network is only ever read.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid

import psutil
import pytest

from console.network_form import SPECS, NetworkForm, changes, place, proposed
from tests.appliance.conftest import COMMAND, Namespace, ip
from tests.console.conftest import text_of, until
from tests.support.console_font import unreadable

from .appliance_support import (ETH0_MAC, addresses, console, default_gateways, netns, read_config, root,
                                write_config)

__all__ = ["netns", "root"]

CONFIG = {
    "network": {
        "interfaces": {"eth0": {"address": "198.51.100.5/24", "gateway": "198.51.100.1"}},
        "dns": {"servers": ["198.51.100.53"]},
    },
    "mta": {"hostname": "gw.example.com"},
}


async def network_screen(pilot):
    await pilot.press("f7")
    await until(pilot, lambda: pilot.app.screen.view is not None, what="the network screen to load")
    return pilot.app.screen


async def type_into(pilot, widget_id: str, text: str) -> None:
    """Put text in a field as if typed (Input.Changed follows), without a keypress per character."""
    field = pilot.app.screen.query_one(f"#{widget_id}")
    field.focus()
    field.value = text
    await pilot.pause()


def notice(app) -> str:
    """The network screen's notice line, also while a dialog is on top of it."""
    screen = next(s for s in app.screen_stack if type(s).__name__ == "NetworkScreen")
    return str(screen.query_one("#area-notice").render())


def table_text(app) -> str:
    table = app.screen.query_one("#net-interfaces")
    return "\n".join(" ".join(str(cell) for cell in row) for row in
                     (table.get_row_at(index) for index in range(table.row_count)))


async def test_shows_the_live_interfaces_and_checks_fields_as_you_type(tmp_path, root, netns):
    config = write_config(tmp_path / "postern.yaml", CONFIG)
    app = console(tmp_path, config, root, netns=netns.name)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await network_screen(pilot)
        listed = table_text(app)
        assert f"eth0 {ETH0_MAC} up 1500 static 198.51.100.5/24 198.51.100.1" in listed
        assert "peer0" in listed
        assert "198.51.100.53" in text_of(app, "#net-live") and "example.net" in text_of(app, "#net-live")
        # The form starts from the configuration file.
        assert screen.form() == NetworkForm("eth0", False, "198.51.100.5/24", "198.51.100.1", "", "198.51.100.53", "")
        # Enter on a row of the table edits that interface; peer0 is not configured: its live state.
        table = screen.query_one("#net-interfaces")
        table.focus()
        table.move_cursor(row=table.get_row_index("peer0"))
        await pilot.press("enter")
        await until(pilot, lambda: screen.form().interface == "peer0", what="peer0 in the form")
        assert (screen.form().dhcp, screen.form().address) == (False, "")
        screen.query_one("#net-interface").value = "eth0"
        await until(pilot, lambda: screen.form().address == "198.51.100.5/24", what="eth0 in the form again")

        await type_into(pilot, "net-gateway", "")
        await pilot.press(*"192.0.2.1")  # typed, key by key
        assert screen.error_text("gateway").startswith("192.0.2.1 is not inside 198.51.100.0/24")
        await type_into(pilot, "net-address", "198.51.100.0/24")
        await pilot.pause()
        assert "is the network address of 198.51.100.0/24" in screen.error_text("address")
        await type_into(pilot, "net-hostname", "not a name")
        await type_into(pilot, "net-dns", "198.51.100.53 banana")
        await pilot.pause()
        assert "'not a name' is not a fully qualified host name" in screen.error_text("hostname")
        assert "'banana' is not an IP address" in screen.error_text("dns")
        assert screen.error_text("gateway") == ""  # until the address is right, the gateway is not judged
        assert "3 problems" in notice(app)

        await pilot.press("ctrl+s")  # refused: nothing is asked, nothing applied
        await pilot.pause()
        assert type(app.screen).__name__ == "NetworkScreen"
        assert "Not applied" in notice(app)
        assert addresses(netns) == ["198.51.100.5/24"]

        # DHCP needs no address: the fields are disabled and their problems go.
        await type_into(pilot, "net-hostname", "gw.example.com")
        await type_into(pilot, "net-dns", "198.51.100.53")
        mode = screen.query_one("#net-mode")
        mode.focus()
        await pilot.press("left")
        await pilot.pause()
        assert mode.value is True and screen.query_one("#net-address").disabled
        assert screen.error_text("address") == screen.error_text("gateway") == ""
        assert "change" in notice(app)
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "DashboardScreen", what="Escape to go back")


async def test_apply_in_a_namespace_and_keep_with_enter(tmp_path, root, netns):
    config = write_config(tmp_path / "postern.yaml", CONFIG)
    app = console(tmp_path, config, root, netns=netns.name)
    async with app.run_test(size=(80, 25)) as pilot:
        await network_screen(pilot)
        await type_into(pilot, "net-address", "192.0.2.10/24")
        await type_into(pilot, "net-gateway", "192.0.2.1")
        await type_into(pilot, "net-hostname", "gw.example.com")
        await type_into(pilot, "net-search", "example.com")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the list of changes")
        question = text_of(app, "#question")
        assert "~ network.interfaces.eth0.address: 198.51.100.5/24 -> 192.0.2.10/24" in question
        assert "+ network.hostname: gw.example.com" in question
        await pilot.press("y")
        await until(pilot, lambda: type(app.screen).__name__ == "KeepSettingsScreen", what="the countdown")
        assert "Keep these settings? Reverting in" in text_of(app, "#keep-countdown")
        # In force already, in the namespace: the new address and gateway, and the files.
        assert addresses(netns) == ["192.0.2.10/24"] and default_gateways(netns) == ["192.0.2.1"]
        assert "Gateway=192.0.2.1" in (root / "etc/systemd/network/10-postern-eth0.network").read_text()
        assert (root / "run/postern/network-try.json").exists()
        await pilot.press("enter")
        await until(pilot, lambda: "Kept" in notice(app), what="the change kept")
        assert addresses(netns) == ["192.0.2.10/24"]
        assert not (root / "run/postern/network-try.json").exists()
        saved = read_config(config)
        assert saved["network"] == {"hostname": "gw.example.com",
                                    "interfaces": {"eth0": {"address": "192.0.2.10/24", "gateway": "192.0.2.1"}},
                                    "dns": {"servers": ["198.51.100.53"], "search": ["example.com"]}}
        assert saved["mta"] == CONFIG["mta"]  # the rest of the file as it was
        await until(pilot, lambda: "192.0.2.10/24" in table_text(app), what="the table to show the new address")


async def test_any_other_key_restores_the_previous_settings(tmp_path, root, netns):
    config = write_config(tmp_path / "postern.yaml", CONFIG)
    before = config.read_text()
    app = console(tmp_path, config, root, netns=netns.name)
    async with app.run_test(size=(80, 25)) as pilot:
        await network_screen(pilot)
        await type_into(pilot, "net-address", "192.0.2.10/24")
        await type_into(pilot, "net-gateway", "192.0.2.1")
        await pilot.press("ctrl+s", "y")
        await until(pilot, lambda: type(app.screen).__name__ == "KeepSettingsScreen", what="the countdown")
        assert addresses(netns) == ["192.0.2.10/24"]
        await pilot.press("f2")  # not Enter: no switching areas either, the change is undone
        await until(pilot, lambda: "previous network settings are back" in notice(app),
                    what="the rollback")
        assert type(app.screen).__name__ == "NetworkScreen"
    assert addresses(netns) == ["198.51.100.5/24"] and default_gateways(netns) == ["198.51.100.1"]
    assert not (root / "etc/systemd/network/10-postern-eth0.network").exists()
    assert config.read_text() == before


async def test_no_answer_in_time_restores_and_confirm_from_another_shell_keeps(tmp_path, root, netns):
    config = write_config(tmp_path / "postern.yaml", CONFIG)
    app = console(tmp_path, config, root, netns=netns.name)
    app.appliance.try_seconds = 2
    async with app.run_test(size=(80, 25)) as pilot:
        await network_screen(pilot)
        await type_into(pilot, "net-address", "192.0.2.10/24")
        await type_into(pilot, "net-gateway", "192.0.2.1")
        await pilot.press("ctrl+s", "y")
        await until(pilot, lambda: type(app.screen).__name__ == "KeepSettingsScreen", what="the countdown")
        await until(pilot, lambda: "previous network settings are back" in notice(app),
                    timeout=10, what="the deadline to restore the settings")
        assert addresses(netns) == ["198.51.100.5/24"]

        # `postern-appliance confirm` in another shell keeps it, as with `postern-appliance try`.
        app.appliance.try_seconds = 30
        await type_into(pilot, "net-address", "192.0.2.10/24")
        await type_into(pilot, "net-gateway", "192.0.2.1")
        await pilot.press("ctrl+s", "y")
        await until(pilot, lambda: type(app.screen).__name__ == "KeepSettingsScreen", what="the countdown")
        confirmed = await asyncio.to_thread(subprocess.run, [COMMAND, "confirm", "--root", str(root)],
                                            capture_output=True, text=True, timeout=30)
        assert confirmed.returncode == 0, confirmed.stderr
        await until(pilot, lambda: "Kept" in notice(app), what="the change kept")
        assert addresses(netns) == ["192.0.2.10/24"]
        assert read_config(config)["network"]["interfaces"]["eth0"]["address"] == "192.0.2.10/24"


async def test_under_a_root_only_files_change(tmp_path, root):
    document = {"network": {"hostname": "gw.example.com", "dns": {"servers": ["192.0.2.53"]}}}
    config = write_config(tmp_path / "postern.yaml", document)
    app = console(tmp_path, config, root)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await network_screen(pilot)
        # The host's own interfaces, read (never changed).
        host = [name for name in psutil.net_if_stats() if name != "lo"]
        assert all(name in table_text(app) for name in host)
        assert screen.form().interface in host
        await type_into(pilot, "net-search", "example.com")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the list of changes")
        assert f"files only, under {root}" in text_of(app, "#question")
        assert "network.interfaces" not in text_of(app, "#question")  # only looked at, not changed
        await pilot.press("y")
        await until(pilot, lambda: type(app.screen).__name__ == "KeepSettingsScreen", what="the countdown")
        assert (root / "etc/hostname").read_text() == "gw.example.com\n"
        assert "search example.com" in (root / "etc/resolv.conf").read_text()
        await pilot.press("n")
        await until(pilot, lambda: "are back" in notice(app), what="the files restored")
        assert not (root / "etc/hostname").exists()
        assert (root / "etc/resolv.conf").read_text() == "nameserver 198.51.100.53\nsearch example.net\n"
    assert read_config(config) == document


async def test_an_interface_this_system_lacks_is_named_at_its_field(tmp_path, root):
    document = {"network": {"interfaces": {"eth9": {"address": "192.0.2.10/24", "gateway": "192.0.2.1"}},
                            "dns": {"servers": ["192.0.2.53"]}}}
    config = write_config(tmp_path / "postern.yaml", document)
    app = console(tmp_path, config, root)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await network_screen(pilot)
        assert screen.form().interface == "eth9"  # configured, though this system has none
        await type_into(pilot, "net-address", "192.0.2.11/24")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the list of changes")
        await pilot.press("y")
        await until(pilot, lambda: "no interface eth9 on this system" in screen.error_text("interface"),
                    what="the refusal at the interface")
        assert "Not applied, nothing changed" in notice(app)
        assert screen.form().address == "192.0.2.11/24"  # the edit is still there to correct
    assert not (root / "etc/systemd").exists()
    assert read_config(config) == document


def test_the_form_writes_only_what_changed_and_places_problems_at_fields():
    document = {"network": {"interfaces": {"eth0": {"dhcp": True, "mtu": 1400}}}, "mta": {"hostname": "a.example"}}
    start = NetworkForm("eth1", True, "", "", "", "", "")
    # Looking at an interface does not add it.
    assert proposed(document, start, start) == document
    # Nor does looking at the DNS servers in force, and a file without a network section has no changes.
    shown = NetworkForm("eth0", False, "192.0.2.10/24", "192.0.2.1", "", "192.0.2.53", "example.net")
    assert changes({"mta": {}}, proposed({"mta": {}}, shown, shown)) == []
    # Another edit writes them with it: a static address needs its DNS servers in the file.
    readdressed = NetworkForm("eth0", False, "192.0.2.11/24", "192.0.2.1", "", "192.0.2.53", "example.net")
    assert proposed({"mta": {}}, readdressed, shown)["network"] == {
        "interfaces": {"eth0": {"address": "192.0.2.11/24", "gateway": "192.0.2.1"}},
        "dns": {"servers": ["192.0.2.53"], "search": ["example.net"]}}
    edited = NetworkForm("eth0", False, "192.0.2.10/24, 2001:db8::10/64", "192.0.2.1", "gw.example.com",
                         "192.0.2.53 192.0.2.54", "")
    assert proposed(document, edited, NetworkForm("eth0", True, "", "", "", "", ""))["network"] == {
        "interfaces": {"eth0": {"dhcp": False, "address": ["192.0.2.10/24", "2001:db8::10/64"],
                                "gateway": "192.0.2.1", "mtu": 1400}},
        "hostname": "gw.example.com",
        "dns": {"servers": ["192.0.2.53", "192.0.2.54"]},
    }
    assert place("network.interfaces.eth0.gateway: 198.51.100.1 is not inside", "eth0") == (
        "gateway", "198.51.100.1 is not inside")
    assert place("network.dns.servers[1]: 'x' is not an IP address", "eth0") == ("dns", "[1] 'x' is not an IP address")
    assert place("network.interfaces.eth1.gateway: eth0 already has", "eth0")[0] == ""


async def test_the_palette_over_the_countdown_or_quitting_restores_the_previous_settings(tmp_path, root, netns):
    config = write_config(tmp_path / "postern.yaml", CONFIG)
    app = console(tmp_path, config, root, netns=netns.name)
    async with app.run_test(size=(80, 25)) as pilot:
        await network_screen(pilot)
        await type_into(pilot, "net-address", "192.0.2.10/24")
        await type_into(pilot, "net-gateway", "192.0.2.1")
        await pilot.press("ctrl+s", "y")
        await until(pilot, lambda: type(app.screen).__name__ == "KeepSettingsScreen", what="the countdown")
        await pilot.press("ctrl+p")  # a key the app takes first: still not Enter
        await until(pilot, lambda: "previous network settings are back" in notice(app), what="the rollback")
        assert addresses(netns) == ["198.51.100.5/24"]
        await pilot.press("escape")  # the palette closes; the countdown has gone with the change
        await until(pilot, lambda: type(app.screen).__name__ == "NetworkScreen", what="the network screen")

        await type_into(pilot, "net-address", "192.0.2.10/24")
        await type_into(pilot, "net-gateway", "192.0.2.1")
        await pilot.press("ctrl+s", "y")
        await until(pilot, lambda: type(app.screen).__name__ == "KeepSettingsScreen", what="the countdown")
        assert addresses(netns) == ["192.0.2.10/24"]
        await pilot.press("ctrl+q")
    assert addresses(netns) == ["198.51.100.5/24"] and default_gateways(netns) == ["198.51.100.1"]
    assert not (root / "run/postern/network-try.json").exists()
    assert read_config(config) == CONFIG


@pytest.fixture
def netns_with_a_down_link_first():
    """A namespace whose first interfaces are down and unused (eth1 and its peer peer1); eth0, added after them,
    has the default route."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and ip to create a network namespace")
    name = f"postern-console-{uuid.uuid4().hex[:6]}"
    ip("netns", "add", name)
    try:
        namespace = Namespace(name)
        namespace.ip("link", "set", "lo", "up")
        namespace.ip("link", "add", "eth1", "type", "veth", "peer", "name", "peer1")
        namespace.ip("link", "add", "eth0", "address", ETH0_MAC, "type", "veth", "peer", "name", "peer0")
        namespace.ip("link", "set", "peer0", "up")
        namespace.ip("link", "set", "eth0", "up")
        namespace.ip("addr", "add", "198.51.100.5/24", "dev", "eth0")
        namespace.ip("route", "add", "default", "via", "198.51.100.1")
        yield namespace
    finally:
        ip("netns", "del", name, check=False)


def cursor_row_style(table) -> str:
    """The style of the first cell of the row under the table's cursor, as drawn."""
    y = 1 + sum(table.rows[key].height for key in list(table.rows)[:table.cursor_row])  # under the header
    return str(list(table.render_line(y))[0].style)


async def test_opens_on_the_interface_with_the_default_route_unchanged_and_marked_in_the_table(
        tmp_path, root, netns_with_a_down_link_first, monkeypatch):
    monkeypatch.setenv("TERM", "linux")  # the VM console's 16 colours, where a blurred cursor had none
    netns = netns_with_a_down_link_first
    config = write_config(tmp_path / "postern.yaml", {"mta": {"hostname": "gw.example.com"}})
    app = console(tmp_path, config, root, netns=netns.name)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await network_screen(pilot)
        table = screen.query_one("#net-interfaces")
        assert table.get_row_at(0)[0] in ("eth1", "peer1")  # listed first, down
        # The interface with the default route, as it is; the live DNS servers shown, not written.
        assert screen.form() == NetworkForm("eth0", False, "198.51.100.5/24", "198.51.100.1", "", "198.51.100.53",
                                            "example.net")
        assert "change" not in notice(app) and "Edit them" in notice(app)
        # The fields are labelled and explained by the model's own descriptions.
        gateway_row = screen.query_one("#row-gateway")
        assert str(gateway_row.query_one(".net-label").render()) == SPECS["gateway"].label == "Default gateway"
        assert screen.query_one("#net-hostname").placeholder == SPECS["hostname"].help
        # The table's cursor is on it, and visible while the form has the focus.
        assert app.focused is not table
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == "eth0"
        other_row = str(list(table.render_line(1))[0].style)
        assert cursor_row_style(table) != other_row and " on " in cursor_row_style(table)
        assert unreadable(app) == []
        # Shift+Tab from the form's first field reaches the table (no stop in between that shows nothing).
        screen.query_one("#net-interface").focus()
        await pilot.press("shift+tab")
        assert app.focused is table
        # Enter in the table edits the row under the cursor: eth0 still.
        await pilot.press("enter")
        await pilot.pause()
        assert screen.form().interface == "eth0" and screen.form().address == "198.51.100.5/24"
        # Choosing another interface in the form moves the cursor with it.
        screen.query_one("#net-interface").value = "eth1"
        await until(pilot, lambda: screen.form().interface == "eth1", what="eth1 in the form")
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == "eth1"
        # Only an edit is a change: the DNS servers typed are written, the others not.
        await type_into(pilot, "net-search", "example.com")
        assert "2 changes" in notice(app)
        assert changes(read_config(config), screen.proposed()) == ["+ network.dns.servers: [198.51.100.53]",
                                                                   "+ network.dns.search: [example.com]"]
