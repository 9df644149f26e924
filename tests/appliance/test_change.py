"""A network change waiting to be kept, under a sandbox root: the files only, recorded like any `try`.

No kernel is changed here (the configurations name no interface), so these run anywhere; the
changes that reach a kernel are tested in a namespace (test_apply_netns.py, the console's tests).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from appliance.network import change, trial
from appliance.network.model import parse_network

from .conftest import COMMAND, files_under

NETWORK = {"hostname": "gw.example.com", "dns": {"servers": ["192.0.2.53"], "search": ["example.com"]}}


@pytest.fixture
def sandbox(tmp_path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/resolv.conf").write_text("nameserver 198.51.100.53\n")
    (root / "etc/hostname").write_text("old.example.net\n")
    return root


def config(section: dict = NETWORK):
    parsed, problems = parse_network(section)
    assert not problems
    return parsed


def test_where_a_change_goes_is_answered_once(tmp_path):
    assert change.reaches_system("/") and change.reaches_system(tmp_path / "..", "postern-test")
    assert not change.reaches_system(tmp_path)
    assert change.state_dir_of(tmp_path) == tmp_path / "run/postern"


def test_a_files_only_change_not_kept_by_its_deadline_restores_the_files_exactly(sandbox):
    before = files_under(sandbox)
    pending = change.start(config(), sandbox, timeout=0.3)
    assert not pending.live and not pending.confirmed
    assert pending.lines[-1] == f"files only: the running system is not changed under the root {sandbox}"
    assert f"wrote {sandbox}/etc/hostname" in pending.lines
    assert (sandbox / "etc/hostname").read_text() == "gw.example.com\n"
    assert "search example.com" in (sandbox / "etc/resolv.conf").read_text()
    record = json.loads((sandbox / "run/postern/network-try.json").read_text())
    assert record["previous"]["backend"] == "files only" and record["previous"]["files_only"]
    while pending.remaining() > 0:
        time.sleep(0.05)
    assert pending.settle(False) and not pending.settle(True)  # once: the second comes too late
    after = files_under(sandbox)
    assert {path: what for path, what in after.items() if not path.startswith("run/")} == before
    assert not (sandbox / "run/postern/network-try.json").exists()


def test_a_files_only_change_is_undone_from_its_record(sandbox):
    before = files_under(sandbox)
    change.start(config(), sandbox, timeout=30)
    trial.roll_back_recorded(change.state_dir_of(sandbox))  # as `rollback` does when its process is gone
    assert {path: what for path, what in files_under(sandbox).items() if not path.startswith("run/")} == before


def test_confirm_from_another_shell_keeps_a_files_only_change(sandbox):
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)  # `confirm` wakes the process that waits
    try:
        pending = change.start(config(), sandbox, timeout=30)
        answers = []
        confirm = threading.Thread(target=lambda: answers.append(subprocess.run(
            [COMMAND, "confirm", "--root", str(sandbox)], capture_output=True, text=True, timeout=30)))
        confirm.start()
        deadline = time.monotonic() + 10
        while not pending.confirmed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pending.confirmed
        assert pending.settle(True)
        confirm.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert answers[0].returncode == 0, answers[0].stderr
    assert "confirmed: the new network configuration stays" in answers[0].stdout
    assert (sandbox / "etc/hostname").read_text() == "gw.example.com\n"
    assert change.unchanged(config(), sandbox)  # kept: the files say it already
    assert not change.unchanged(config({**NETWORK, "hostname": "other.example.com"}), sandbox)


def test_a_second_change_waits_for_the_first(sandbox):
    pending = change.start(config(), sandbox, timeout=30)
    with pytest.raises(change.AlreadyPending, match="already waiting for confirmation"):
        change.start(config({**NETWORK, "hostname": "other.example.com"}), sandbox, timeout=30)
    pending.settle(False)
