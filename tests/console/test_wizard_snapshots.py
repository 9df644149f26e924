"""Every step of the first-boot wizard at the VM console's 80x25, in the ansi theme it uses there.

Each snapshot starts the wizard from a saved progress file at that step (as after a reboot), on
the fixed machine of wizard_support, with no relay running: the same screen on every run."""

import pytest
from textual.widgets import Input, OptionList

from console.app import make_app
from tests.console.wizard_support import (complete_draft, dns, machine, make_root, save_progress,  # noqa: F401
                                          step_title)
from appliance.topology import NAMES

SIZE = (80, 25)
STEPS = ["network", "hostname", "dns", "topology", "domains", "internal", "external", "networks", "tls",
         "authentication", "admin", "summary", "apply"]


@pytest.fixture(autouse=True)
def steady(monkeypatch):
    monkeypatch.setenv("TERM", "linux")  # the VM console: 16 colours, console-safe glyphs
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)  # the cursor does not blink


def wizard_at(tmp_path, step: str, draft: dict):
    root = make_root(tmp_path)
    save_progress(root, step, draft)
    return make_app(str(tmp_path / "no-relay.sock"), first_boot=True, root=str(root))


async def settled(pilot, number: int, ready=lambda app: True) -> None:
    app = pilot.app
    for _ in range(300):
        await pilot.pause(0.05)
        if (step_title(app).startswith(f"{number}/") and "not running" in app.relay_problem
                and ready(app)):
            await pilot.pause(0.2)
            return
    raise AssertionError(f"step {number} never settled: {app.screen!r}")


def shown(app, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


@pytest.mark.parametrize("step", [s for s in STEPS if s != "hostname"])
def test_step(snap_compare, tmp_path, machine, step):
    number = STEPS.index(step) + 1
    app = wizard_at(tmp_path, step, complete_draft("via-relay" if step == "external" else "direct"))
    assert snap_compare(app, terminal_size=SIZE, run_before=lambda pilot: settled(pilot, number))


def test_hostname_with_its_ptr_check(snap_compare, tmp_path, machine):
    draft = complete_draft()
    del draft["network"]["dns"]  # the PTR check asks the machine's DNS server: the test's, on loopback
    app = wizard_at(tmp_path, "hostname", draft)
    assert snap_compare(app, terminal_size=SIZE,
                        run_before=lambda pilot: settled(pilot, 2, lambda app: "PASS" in shown(app, "#ptr")))


@pytest.mark.parametrize("topology", NAMES)
def test_topology_diagram(snap_compare, tmp_path, machine, topology):
    async def highlight(pilot):
        await settled(pilot, 4)
        options = pilot.app.screen.query_one("#topology", OptionList)
        options.highlighted = list(NAMES).index(topology)
        await pilot.pause(0.2)

    assert snap_compare(wizard_at(tmp_path, "topology", complete_draft()), terminal_size=SIZE, run_before=highlight)


@pytest.mark.parametrize("step", ["internal", "networks", "authentication", "summary"])
def test_microsoft_365(snap_compare, tmp_path, machine, step):
    number = STEPS.index(step) + 1
    app = wizard_at(tmp_path, step, complete_draft("m365"))
    assert snap_compare(app, terminal_size=SIZE, run_before=lambda pilot: settled(pilot, number))


def test_problems_name_their_fields(snap_compare, tmp_path, machine):
    async def wrong(pilot):
        await settled(pilot, 6)
        screen = pilot.app.screen
        screen.query_one("#host", Input).value = "gw.example.com"
        screen.query_one("#port", Input).value = "0"
        await pilot.press("ctrl+n")
        for _ in range(100):
            await pilot.pause(0.05)
            if "Port" in shown(pilot.app, "#step-problems"):
                break
        await pilot.pause(0.2)

    assert snap_compare(wizard_at(tmp_path, "internal", complete_draft()), terminal_size=SIZE, run_before=wrong)


def test_tls_import(snap_compare, tmp_path, machine):
    draft = complete_draft()
    draft["tls"] = {"mode": "import", "cert": "/root/gw.example.com.pem", "key": "/root/gw.example.com.key"}
    app = wizard_at(tmp_path, "tls", draft)
    assert snap_compare(app, terminal_size=SIZE, run_before=lambda pilot: settled(pilot, 9))
