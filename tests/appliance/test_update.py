"""Update bundles and the update itself: real signatures, real tar files, real pip into real virtual
environments, and a real relay restarted from the `current` link the way systemd starts it.

The wheels are small but real: a `postern` distribution whose `postern-relay` and `postern-appliance`
scripts run this tree's relay and system layer (so the relay that answers after an update was started
through the new release's directory), or a deliberately broken relay. The image's own bundle (every
dependency, Debian's Python) is checked end to end by `make image-test`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import smtplib
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from appliance import bundle as bundles
from appliance import migrations, update
from appliance.cli import exit_codes
from appliance.cli.main import main
from relay import VERSION
from relay.control.client import ControlClient
from tests.support.bundles import BROKEN_RELAY, make_bundle, make_wheel, trust
from tests.support.net import free_port
from tests.support.relay import base_mta


@pytest.fixture(scope="module")
def key():
    return bundles.new_key()


# --- the bundle ---------------------------------------------------------------------------------------


def rewrite(source: Path, target: Path, change) -> Path:
    """A copy of a bundle with its members passed through change(list of (TarInfo, bytes))."""
    with tarfile.open(source) as tar:
        members = [(info, tar.extractfile(info).read() if info.isreg() else b"") for info in tar.getmembers()]
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in change(members):
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return target


def test_a_bundle_verifies_and_carries_its_wheels(tmp_path, key):
    bundle = make_bundle(tmp_path, "good", key)
    trust(tmp_path / "root", key)
    out = tmp_path / "out"
    out.mkdir()
    manifest = bundles.verify(bundle, tmp_path / "root", out)
    assert manifest.version == VERSION and manifest.python == bundles.python_tag()
    assert manifest.release == f"{VERSION}-{manifest.digest[:12]}"
    assert [p.name for p in out.iterdir()] == [f"postern-{VERSION}-py3-none-any.whl"]
    assert (out / f"postern-{VERSION}-py3-none-any.whl").read_bytes() == \
        (tmp_path / "wheels-good" / f"postern-{VERSION}-py3-none-any.whl").read_bytes()


def flip_wheel_byte(members):
    for info, data in members:
        if info.name.endswith(".whl"):
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        yield info, data


def add_member(name: str, data: bytes = b"x", kind=tarfile.REGTYPE):
    def change(members):
        yield from members
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/shadow"
        yield info, data
    return change


def drop_wheels(members):
    return [(info, data) for info, data in members if not info.name.endswith(".whl")]


def swap_first_two(members):
    return [members[1], members[0], *members[2:]]


@pytest.mark.parametrize("change, words", [
    (flip_wheel_byte, "does not match its sha256"),
    (add_member("postern-update/wheels/../../../etc/evil.whl"), "is not one of the manifest's wheels"),
    (add_member("postern-update/wheels/extra-1.0-py3-none-any.whl"), "is not one of the manifest's wheels"),
    (add_member("postern-update/wheels/link.whl", kind=tarfile.SYMTYPE), "is not one of the manifest's wheels"),
    (drop_wheels, "wheel(s) missing"),
    (swap_first_two, "not an update bundle"),
])
def test_an_altered_bundle_is_refused(tmp_path, key, change, words):
    good = make_bundle(tmp_path, "good", key)
    trust(tmp_path / "root", key)
    bad = rewrite(good, tmp_path / "bad.update", change)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(bundles.BundleError) as refused:
        bundles.verify(bad, tmp_path / "root", out)
    assert words in str(refused.value)
    assert not (tmp_path / "etc").exists()


def test_a_bundle_signed_with_another_key_or_altered_manifest_is_refused(tmp_path, key):
    trust(tmp_path / "root", key)
    foreign = make_bundle(tmp_path, "foreign", bundles.new_key())
    with pytest.raises(bundles.BundleError, match="signature does not verify .*postern.pem"):
        bundles.verify(foreign, tmp_path / "root")

    def more_space(members):
        for info, data in members:
            if info.name.endswith("manifest.json"):
                data = data.replace(b'"format": 1', b'"format":  1')
            yield info, data

    altered = rewrite(make_bundle(tmp_path, "good", key), tmp_path / "altered.update", more_space)
    with pytest.raises(bundles.BundleError, match="signature does not verify"):
        bundles.verify(altered, tmp_path / "root")


def test_damaged_missing_and_untrusted(tmp_path, key):
    good = make_bundle(tmp_path, "good", key)
    with pytest.raises(bundles.BundleError, match="no update keys"):
        bundles.verify(good, tmp_path / "root")
    trust(tmp_path / "root", key)
    cut = tmp_path / "cut.update"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(bundles.BundleError, match="damaged or cut short|missing"):
        bundles.verify(cut, tmp_path / "root")
    with pytest.raises(bundles.BundleError, match="no such file"):
        bundles.verify(tmp_path / "absent.update", tmp_path / "root")
    text = tmp_path / "text.update"
    text.write_text("hello\n")
    with pytest.raises(bundles.BundleError, match="not an update bundle"):
        bundles.verify(text, tmp_path / "root")


# --- the update -----------------------------------------------------------------------------------------


class RelayService:
    """Starts the relay from /opt/postern/current as the unit does, and stops the one before."""

    def __init__(self, layout: update.Layout, work: Path):
        self.layout = layout
        self.work = work
        self.process: subprocess.Popen | None = None
        self.console_restarts = 0

    def restart_relay(self) -> None:
        self.stop()
        log = open(self.work / "relay.log", "ab")
        self.process = subprocess.Popen(
            [str(self.layout.current_link / "bin" / "postern-relay"), "--config", str(self.layout.config),
             "--state-dir", str(self.work / "state"), "--socket", str(self.work / "control.sock")],
            stdout=log, stderr=log, cwd=self.work)
        log.close()

    def relay_failure(self) -> str:
        code = self.process.poll() if self.process else None
        return f"the relay exited with {code}" if code is not None else ""

    def restart_consoles(self) -> None:
        self.console_restarts += 1

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)


@pytest.fixture(scope="module")
def first_release(tmp_path_factory, key) -> Path:
    """Release `first`, installed once (the image build's part); each test gets a copy."""
    work = tmp_path_factory.mktemp("first")
    trust(work / "root", key)
    updater = update.Updater(work / "root", say=lambda line: None)
    return updater.layout.releases / updater._install(make_bundle(work, "first", key)).release


@pytest.fixture
def appliance(tmp_path, key, first_release):
    """A root with release `first` running, and a message deferred in its queue."""
    root = tmp_path / "root"
    trust(root, key)
    layout = update.Layout(root)
    layout.config.parent.mkdir(parents=True)
    port = free_port()
    layout.config.write_text(yaml.safe_dump({"mta": base_mta(port, free_port())}))
    service = RelayService(layout, tmp_path)
    updater = update.Updater(root, service, str(tmp_path / "control.sock"), timeout=30, say=lambda line: None)
    shutil.copytree(first_release, layout.releases / first_release.name, symlinks=True)
    updater._point(first_release.name, None)
    service.restart_relay()
    assert update.check_health(updater.socket_path, 0, VERSION, 30) == ""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("a@example.org", ["b@example.com"], "Subject: kept\r\n\r\nkept across updates\r\n")
    yield updater, service, first_release.name
    service.stop()


def queued(updater) -> list[str]:
    with ControlClient(updater.socket_path) as client:
        return [m["id"] for m in client.call("io.postern.Queue.List")["messages"]]


def relay_started(updater) -> int:
    with ControlClient(updater.socket_path) as client:
        return client.call("io.postern.Status.Get")["status"]["started"]


def test_update_switches_checks_and_keeps_the_queue_then_rolls_back(appliance, tmp_path, key):
    updater, service, first = appliance
    layout = updater.layout
    before = queued(updater)
    assert len(before) == 1
    old_process = service.process

    outcome = updater.update(make_bundle(tmp_path, "second", key))
    second = outcome.current
    assert (layout.current, layout.previous) == (second, first) == (outcome.current, outcome.previous)
    assert old_process.poll() is not None, "the relay of the first release still runs"
    assert os.readlink(layout.current_link) == f"releases/{second}"
    assert (layout.releases / second / "bin" / "postern-relay").exists()
    assert queued(updater) == before
    assert service.console_restarts == 1
    assert not layout.pending.exists()

    # Installing the running release again changes nothing.
    with pytest.raises(update.UpdateError, match="running already"):
        updater.update(tmp_path / "second.update")

    outcome = updater.rollback()
    assert (layout.current, layout.previous) == (first, second)
    assert queued(updater) == before
    assert update.check_health(updater.socket_path, 0, VERSION, 5) == ""


def test_a_release_that_does_not_start_is_switched_back_by_itself(appliance, tmp_path, key):
    updater, service, first = appliance
    layout = updater.layout
    before = queued(updater)
    broken = make_bundle(tmp_path, "broken", key, relay=BROKEN_RELAY)
    with pytest.raises(update.UpdateFailed) as failed:
        updater.update(broken)
    assert "the relay exited with 1" in str(failed.value) and "control API" in str(failed.value)
    assert (layout.current, layout.previous) == (first, None)
    assert not layout.previous_link.exists()
    assert [r.name for r in layout.installed()] == [first], "the failed release was not removed"
    assert failed.value.outcome.lines[-1].startswith("the relay is healthy again")
    assert "deliberately broken" in (tmp_path / "relay.log").read_text()
    assert queued(updater) == before
    assert not layout.pending.exists()
    assert service.console_restarts == 0

    # A good one afterwards still goes through, and rolling back from it returns to `first`.
    second = updater.update(make_bundle(tmp_path, "second", key)).current
    assert (layout.current, layout.previous) == (second, first)


def test_refusals_change_nothing(appliance, tmp_path, key):
    updater, service, first = appliance
    layout = updater.layout
    started = relay_started(updater)
    foreign = make_bundle(tmp_path, "foreign", bundles.new_key())
    with pytest.raises(bundles.BundleError, match="signature does not verify"):
        updater.update(foreign)
    other_python = tmp_path / "other-python.update"
    make_wheel(tmp_path / "wheels-other", "other")
    bundles.write_bundle(tmp_path / "wheels-other", other_python, key, VERSION, migrations.SCHEMA, python="cp399")
    with pytest.raises(update.UpdateError, match="for Python cp399"):
        updater.update(other_python)
    # A configuration the new release refuses: nothing is switched.
    refusing = make_bundle(tmp_path, "refusing", key, relay='#!/bin/sh\necho "mta.listen: refused" >&2\nexit 1\n')
    with pytest.raises(update.UpdateError, match="refuses this configuration.*mta.listen: refused"):
        updater.update(refusing)
    with pytest.raises(update.UpdateError, match="no previous release"):
        updater.rollback()
    assert (layout.current, layout.previous) == (first, None)
    assert relay_started(updater) == started, "the relay was restarted by a refused update"
    assert not layout.pending.exists()


def test_a_schema_change_migrates_forward_before_and_back_before_the_rollback(appliance, tmp_path, key):
    """The newer release's own `postern-appliance config migrate` runs in both directions."""
    updater, service, first = appliance
    calls = tmp_path / "migrate-calls"
    recorder = f'#!/bin/sh\necho "$*" >> {calls}\n'
    newer = updater.update(make_bundle(tmp_path, "schema2", key, schema=migrations.SCHEMA + 1,
                                       appliance=recorder)).current
    updater.rollback()
    config = updater.layout.config
    assert calls.read_text().splitlines() == [
        f"config --file {config} migrate --from 1 --to 2",
        f"config --file {config} migrate --from 2 --to 1",
    ]
    assert updater.layout.previous == newer


def test_an_update_interrupted_after_the_switch_is_finished_at_boot(appliance, tmp_path, key):
    """The machine stopped between the switch and the check: the boot unit checks, and switches back."""
    updater, service, first = appliance
    layout = updater.layout
    broken = updater._install(make_bundle(tmp_path, "broken", key, relay=BROKEN_RELAY)).release
    started = time.time()
    (layout.pending).write_text(json.dumps({"from": first, "to": broken, "previous": None, "action": "update",
                                            "started": started}))
    updater._point(broken, first)
    service.restart_relay()  # the boot starts the broken relay
    with pytest.raises(update.UpdateFailed):
        updater.finish_pending()
    assert (layout.current, layout.previous) == (first, None)
    assert update.check_health(updater.socket_path, started, VERSION, 5) == ""
    assert updater.finish_pending() is None


# --- the migrations and the command line ---------------------------------------------------------------


def test_migrations_run_step_by_step_both_ways():
    steps = (
        migrations.Migration(2, "rename a key", lambda d: {**d, "b": d["a"]} if "a" in d else d,
                             lambda d: {k if k != "b" else "a": v for k, v in d.items()}),
        migrations.Migration(3, "add a default", lambda d: {**d, "c": 1}, lambda d: {k: v for k, v in d.items() if k != "c"}),
    )
    forward = migrations.migrate({"a": 5}, 1, 3, steps)
    assert forward == {"a": 5, "b": 5, "c": 1}
    assert migrations.migrate({"b": 5, "c": 1}, 3, 1, steps) == {"a": 5}
    with pytest.raises(migrations.MigrationError, match="schema 4 is unknown"):
        migrations.migrate({}, 1, 4, steps)


def test_config_migrate_and_update_commands(appliance, tmp_path, key, capsys):
    updater, service, first = appliance
    root = updater.layout.root
    config = str(updater.layout.config)
    assert main(["config", "--file", config, "migrate", "--from", "1", "--to", "1"]) == exit_codes.OK
    assert main(["config", "--file", config, "migrate", "--from", "1", "--to", "2"]) == exit_codes.INVALID
    assert "--from/--to: schema 2 is unknown" in capsys.readouterr().err

    assert main(["update", "--status", "--root", str(root)]) == exit_codes.OK
    out = capsys.readouterr().out
    assert "current" in out and first in out
    assert main(["update", "--check", str(make_bundle(tmp_path, "second", key)), "--root", str(root)]) == exit_codes.OK
    assert "signature good" in capsys.readouterr().out
    foreign = make_bundle(tmp_path, "foreign", bundles.new_key())
    assert main(["update", "--check", str(foreign), "--root", str(root)]) == exit_codes.INVALID
    assert "signature does not verify" in capsys.readouterr().err
    assert main(["update", "--root", str(root)]) == exit_codes.USAGE
    # An update or rollback restarts the system's relay: never for another root.
    assert main(["update", "--rollback", "--root", str(root)]) == exit_codes.INVALID
    assert "--root goes with --status and --check only" in capsys.readouterr().err
