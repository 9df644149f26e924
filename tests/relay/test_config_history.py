"""Every change of the configuration file, whoever makes it, is a version in its history: a change
applied through the control API (as the console's MTA screen does) shows up in
`postern-appliance config versions` and in its diff, like one made by the system layer."""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from relay.config_file import ConfigFile
from relay.control.client import ControlClient, ControlError

ROOT = Path(__file__).resolve().parents[2]
APPLIANCE = str(Path(sys.executable).parent / "postern-appliance")


@pytest.fixture
def unprivileged_dir():
    """A directory the relay's user can reach (pytest's own are root's alone)."""
    directory = Path(tempfile.mkdtemp(prefix="postern-history-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def config(relay, *args: str) -> list[str]:
    done = subprocess.run([APPLIANCE, "config", "--file", str(relay.config_path), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
    return done.stdout.splitlines()


def test_a_change_applied_through_the_control_api_is_a_version_with_its_diff(make_relay, sink):
    relay = make_relay(sink.port)
    before = relay.config_path.read_text()
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        mta = yaml.safe_load(before)["mta"]
        answer = client.call("io.postern.Config.Apply", mta=dict(mta, banner="ESMTP Versioned"))
    versions = config(relay, "versions")
    assert len(versions) == 2 and versions[0].split()[1] == answer["version"]
    assert config(relay, "show", "1") == before.splitlines()  # the file as it was, recorded first
    assert config(relay, "diff") == ["+ mta.banner: ESMTP Versioned"]
    assert not list(relay.workdir.glob("*.prev"))


def test_pause_and_resume_are_versions_too(make_relay, sink):
    relay = make_relay(sink.port)
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        client.call("io.postern.Config.Pause", domains=["example.org"])
        assert config(relay, "diff") == ["+ mta.paused_domains: [example.org]"]
        client.call("io.postern.Config.Resume", domains=["example.org"])
        assert config(relay, "diff") == ["~ mta.paused_domains: [example.org] -> []"]
    assert len(config(relay, "versions")) == 3


def test_a_change_the_relay_cannot_put_in_force_leaves_the_file_and_no_version(make_relay, sink, tmp_path):
    relay = make_relay(sink.port)
    before = relay.config_path.read_text()
    missing = str(tmp_path / "missing.pem")
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        mta = yaml.safe_load(before)["mta"]
        with pytest.raises(ControlError) as error:
            client.call("io.postern.Config.Apply", mta=dict(mta, tls={"cert_file": missing, "key_file": missing}))
    assert error.value.name == "io.postern.Config.ApplyFailed"
    assert relay.config_path.read_text() == before
    assert [ConfigFile(relay.config_path).version_text(n) for n in range(len(config(relay, "versions")))] == [before]


def test_the_history_directory_gets_the_mode_of_the_configuration_directory(tmp_path):
    """On the appliance /etc/postern is root:postern 2770: the relay (group postern) and root both
    keep versions in history/, whichever of them made it."""
    directory = tmp_path / "postern"
    directory.mkdir()
    os.chmod(directory, 0o2770)
    ConfigFile(directory / "postern.yaml").write("mta: {}\n")
    # Its permissions; no set-ID bit asked for, since the relay's unit (RestrictSUIDSGID) refuses that
    assert stat.S_IMODE((directory / "history").stat().st_mode) == 0o770
    assert (directory / "history").stat().st_gid == directory.stat().st_gid
    assert stat.S_IMODE((directory / "postern.yaml").stat().st_mode) == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="writing as another user needs root")
def test_the_relays_user_keeps_versions_after_root_and_root_after_it(unprivileged_dir):
    """As on the appliance: root saves (the wizard), then the relay as its own user (Config.Apply), then
    root again. Root's versions are 0600, so the relay cannot read the newest to compare: it records
    the file it replaces once more rather than fail."""
    directory = unprivileged_dir / "postern"
    directory.mkdir()
    os.chown(directory, 0, 65534)
    os.chmod(directory, 0o2770)
    path = directory / "postern.yaml"
    ConfigFile(path).write("mta: {banner: root}\n")
    subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                    "import sys; from relay.config_file import ConfigFile; "
                    "ConfigFile(sys.argv[1]).replace_mta({'banner': 'relay'})", str(path)],
                   cwd=ROOT, check=True, timeout=60)
    assert yaml.safe_load(path.read_text()) == {"mta": {"banner": "relay"}}
    ConfigFile(path).write("mta: {banner: root again}\n")
    store = ConfigFile(path)
    assert [yaml.safe_load(store.version_text(n))["mta"]["banner"] for n in range(4)] == [
        "root again", "relay", "root", "root"]
    owners = [version.path.stat().st_uid for version in store.versions()]
    assert owners[1] == 65534 and owners[0] == owners[3] == 0
