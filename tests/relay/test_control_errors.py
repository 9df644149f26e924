"""The control API's error names: written once, in relay/control/errors.py, and the same as its interface files."""

import re
from pathlib import Path

from relay.control import errors

ROOT = Path(__file__).resolve().parents[2]
INTERFACES = ROOT / "relay/control"


def declared() -> set[str]:
    """Every error the `*.varlink` files declare, by its full name."""
    names = set()
    for path in INTERFACES.glob("*.varlink"):
        text = path.read_text()
        interface = re.search(r"^interface (\S+)", text, re.M).group(1)
        names |= {f"{interface}.{name}" for name in re.findall(r"^error (\w+)", text, re.M)}
    return names


def named() -> set[str]:
    return {value for key, value in vars(errors).items() if key.isupper()}


def test_every_named_error_is_declared_and_every_postern_error_is_named():
    assert named() - declared() == set()
    assert {name for name in declared() if name.startswith("io.postern.")} - named() == set()


def test_no_error_name_is_written_out_anywhere_else():
    written_out = []
    for package in ("relay", "appliance", "console"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "relay/control/errors.py":
                continue
            text = path.read_text()
            written_out += [f"{path.relative_to(ROOT)}: {name}" for name in named() if f'"{name}"' in text]
    assert written_out == []
