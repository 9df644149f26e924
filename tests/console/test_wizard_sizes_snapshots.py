"""The first-boot wizard on a larger SSH terminal: each step at 120x40 and 200x60, as at 80x25
(test_wizard_snapshots) from saved progress, on the fixed machine, with no relay running."""

import pytest

from tests.console.test_wizard_snapshots import STEPS, settled, shown, steady, wizard_at  # noqa: F401
from tests.console.wizard_support import complete_draft, dns, machine  # noqa: F401

SIZES = [(120, 40), (200, 60)]
sizes = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")


@sizes
@pytest.mark.parametrize("step", [s for s in STEPS if s != "hostname"])
def test_step(snap_compare, tmp_path, machine, step, size):
    number = STEPS.index(step) + 1
    app = wizard_at(tmp_path, step, complete_draft("via-relay" if step == "external" else "direct"))
    assert snap_compare(app, terminal_size=size, run_before=lambda pilot: settled(pilot, number))


@sizes
def test_hostname_with_its_ptr_check(snap_compare, tmp_path, machine, size):
    draft = complete_draft()
    del draft["network"]["dns"]  # the PTR check asks the machine's DNS server: the test's, on loopback
    app = wizard_at(tmp_path, "hostname", draft)
    assert snap_compare(app, terminal_size=size,
                        run_before=lambda pilot: settled(pilot, 2, lambda app: "PASS" in shown(app, "#ptr")))
