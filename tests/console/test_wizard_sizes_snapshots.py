"""The first-boot wizard on a larger SSH terminal: each step at 120x40 and 200x60, as at 80x25
(test_wizard_snapshots) from saved progress, on the fixed machine, with no relay running."""

import pytest

from tests.console.test_wizard_snapshots import STEPS, settled, steady, wizard_at  # noqa: F401
from tests.console.wizard_support import complete_draft, dns, machine  # noqa: F401

SIZES = [(120, 40), (200, 60)]
sizes = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")


@sizes
@pytest.mark.parametrize("step", ["topology", "domains", "internal", "external", "networks", "tls", "admin",
                                  "summary", "apply"])
def test_step(snap_compare, tmp_path, machine, step, size):
    number = STEPS.index(step) + 1
    app = wizard_at(tmp_path, step, complete_draft("via-relay" if step == "external" else "direct"))
    assert snap_compare(app, terminal_size=size, run_before=lambda pilot: settled(pilot, number))
