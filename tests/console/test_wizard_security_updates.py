"""The wizard's tick for Debian's security updates: on the administrator step, ticked unless the appliance
has them off, listed in the summary, and written at apply to the switch apt reads."""

from appliance.security_updates import AUTO_UPGRADES, read_state, set_enabled
from console.wizard.step import Tick
from tests.console.test_wizard import gateway, next_step, wizard_app  # noqa: F401
from tests.console.wizard_support import at_step, complete_draft, dns, machine, save_progress, text_of, until  # noqa: F401


async def finished(pilot) -> None:
    """The apply step's test message sent and followed: leaving earlier would cut its worker short."""
    await until(pilot, lambda: "Next finishes the setup." in text_of(pilot.app, "#step-problems"), timeout=45,
                what="the test message")


async def test_unticked_the_summary_says_so_and_apply_switches_them_off(gateway, machine):
    save_progress(gateway.root, "admin", complete_draft(listen=gateway.mta["listen"][0]))
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 11)
        tick = app.screen.query_one("#security-updates", Tick)
        assert tick.value and str(tick.label) == "Install Debian security updates automatically"
        tick.focus()
        await pilot.press("space")
        assert not tick.value
        await next_step(pilot, 12)
        summary = text_of(app, "#summary-text")
        assert "Security updates: not installed automatically: install them yourself (apt)" in summary
        await pilot.press("escape")  # Back shows it as it was left
        await at_step(pilot, 11)
        assert not app.screen.query_one("#security-updates", Tick).value
        await next_step(pilot, 12)
        await next_step(pilot, 13)
        await pilot.press("ctrl+n")  # apply
        await until(pilot, lambda: "security updates: off (wrote /etc/apt/apt.conf.d/20auto-upgrades)"
                    in text_of(app, "#apply-report"), timeout=30, what="the switch written")
        await finished(pilot)
    assert (gateway.root / AUTO_UPGRADES).read_text() == (
        'APT::Periodic::Update-Package-Lists "0";\nAPT::Periodic::Unattended-Upgrade "0";\n')
    assert not read_state(gateway.root).enabled


async def test_ticked_by_default_and_applied_on(gateway, machine):
    save_progress(gateway.root, "summary", complete_draft(listen=gateway.mta["listen"][0]))
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 12)
        assert "Security updates: installed automatically, daily; no automatic reboot" in text_of(app, "#summary-text")
        await next_step(pilot, 13)
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "security updates: installed automatically, daily" in text_of(app, "#apply-report"),
                    timeout=30, what="the switch written")
        await finished(pilot)
    assert read_state(gateway.root).enabled


async def test_an_appliance_with_them_off_keeps_them_off_unless_ticked(gateway, machine):
    """Running the wizard again on an appliance whose admin switched them off: the tick starts as it is."""
    set_enabled(gateway.root, False)
    draft = complete_draft(listen=gateway.mta["listen"][0])
    save_progress(gateway.root, "admin", draft)
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 11)
        assert not app.screen.query_one("#security-updates", Tick).value
        await next_step(pilot, 12)
        assert "Security updates: not installed automatically" in text_of(app, "#summary-text")
