"""The relay daemon and the system layer run on an appliance without the console's UI libraries."""

import importlib
import pkgutil
import subprocess
import sys

import pytest

from tests.support.relay import ROOT

FORBIDDEN = ("textual", "console")

CHECK = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
    if leaked:
        sys.exit(f"importing {{name}} loads {{leaked[0]}}")
"""


def modules_of(package_name: str) -> list[str]:
    package = importlib.import_module(package_name)
    return [package_name] + sorted(m.name for m in pkgutil.walk_packages(package.__path__, package_name + "."))


@pytest.mark.parametrize("package", ["relay", "appliance"])
def test_package_never_imports_the_console_or_textual(package):
    names = modules_of(package)
    if package == "relay":
        assert {"relay.daemon", "relay.smtpd", "relay.config", "relay.queue.store"} <= set(names)
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(forbidden=set(FORBIDDEN)), *names],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_check_notices_a_leak():
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(forbidden=set(FORBIDDEN)), "relay.config", "textual"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "importing textual loads textual" in result.stderr
