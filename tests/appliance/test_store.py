"""The configuration store: validated atomic saves, kept versions, import/export, diffs."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from appliance.store import MISSING, ConfigStore, diff_documents
from relay.config import ConfigError, parse_mta

from .conftest import COMMAND, ROOT

GOOD = """\
# the gateway in front of Exchange
network:
  hostname: gw.example.com
  interfaces:
    eth0: {dhcp: false, address: 192.0.2.10/24, gateway: 192.0.2.1}
  dns: {servers: [192.0.2.53], search: [example.com]}
mta:
  hostname: gw.example.com
  relay_domains: [example.com]
  internal_relay: {host: mail.example.com, port: 25}
"""


@pytest.fixture
def store(tmp_path):
    return ConfigStore(tmp_path / "etc/postern/postern.yaml", keep=3)


def test_a_save_is_the_current_file_and_a_version_and_leaves_no_temporary_files(store):
    version = store.save_text(GOOD)
    assert store.current_text() == GOOD  # comments and layout kept
    assert [v.id for v in store.versions()] == [version.id]
    assert store.version_text(0) == GOOD
    assert store.load().network.hostname == "gw.example.com"
    assert sorted(p.name for p in store.path.parent.rglob("*") if p.name.startswith(".")) == []
    assert (store.history / f"postern-{version.id}.yaml").stat().st_mode & 0o777 == 0o600


def test_only_the_last_n_versions_are_kept_newest_first(store):
    ids = [store.save_text(GOOD.replace("gw.example.com", f"gw{n}.example.com")).id for n in range(5)]
    versions = store.versions()
    assert [v.id for v in versions] == ids[::-1][:3]
    assert versions[0].saved_at > versions[1].saved_at > versions[2].saved_at
    assert "gw4.example.com" in store.current_text()


def test_a_file_written_by_other_means_becomes_a_version_before_it_is_replaced(store):
    store.path.parent.mkdir(parents=True)
    store.path.write_text("mta: {hostname: first.example.com}\n")
    os.chmod(store.path, 0o640)
    store.save_text(GOOD)
    assert [store.version_text(n).split()[2] for n in (1,)] == ["first.example.com}"]
    assert store.path.stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a file of another user needs root")
def test_a_file_planted_by_a_group_member_does_not_stay_theirs(store):
    """The configuration directory is writable by the relay's group: a member may rename a file
    of their own over the configuration. The next save by root makes it root's again, 0640, in
    the directory's group, so the planter can no longer change it."""
    store.path.parent.mkdir(parents=True)
    os.chown(store.path.parent, 0, 4242)
    os.chmod(store.path.parent, 0o2770)
    store.path.write_text("mta: {hostname: planted.example.com}\n")
    os.chown(store.path, 65534, 65534)
    os.chmod(store.path, 0o666)
    store.save_text(GOOD)
    info = store.path.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, 4242, 0o640)
    assert store.current_text() == GOOD


@pytest.mark.parametrize("text, line", [
    ("network: {hostname: gw}\n", "network.hostname: 'gw' is not a fully qualified host name"),
    ("mta: {listen: ['0.0.0.0:0']}\n", "mta.listen[0]: 0 is not a port number: use 1 to 65535"),
    ("network: [\n", "not valid YAML at line 2"),
    ("- a list\n", "the file must be a mapping with sections such as network, mta"),
    ("ntp: {}\n", "ntp: unknown section; known sections are network, mta"),
])
def test_import_validates_everything_and_changes_nothing_on_error(store, tmp_path, text, line):
    store.save_text(GOOD)
    before = sorted((p.name, p.read_bytes()) for p in store.path.parent.rglob("*") if p.is_file())
    source = tmp_path / "new.yaml"
    source.write_text(text)
    with pytest.raises(ConfigError) as caught:
        store.import_file(source)
    assert any(line in problem for problem in caught.value.problems), caught.value.problems
    assert sorted((p.name, p.read_bytes()) for p in store.path.parent.rglob("*") if p.is_file()) == before


def test_the_mta_section_gets_exactly_the_relays_messages(store):
    mta = {"hostname": "gw", "internal_relay": {"port": 0}, "my_networks": ["10.0.0.300/8"]}
    with pytest.raises(ConfigError) as caught:
        store.save({"mta": mta})
    assert caught.value.problems == parse_mta(mta)[1]


def test_diff_lists_changed_added_and_removed_keys(store):
    store.save_text(GOOD)
    changed = yaml.safe_load(GOOD)
    changed["network"]["interfaces"]["eth0"]["address"] = "192.0.2.11/24"
    changed["network"]["dns"]["search"] = ["example.com", "corp.example.com"]
    del changed["mta"]["internal_relay"]["port"]
    changed["mta"]["match_subdomains"] = True
    store.save(changed)
    assert [str(c) for c in store.diff(1, 0)] == [  # in the file's order, as the console's forms show them
        "~ network.interfaces.eth0.address: 192.0.2.10/24 -> 192.0.2.11/24",
        "~ network.dns.search: [example.com] -> [example.com, corp.example.com]",
        "- mta.internal_relay.port: 25",
        "+ mta.match_subdomains: true",
    ]
    assert "-    eth0: {dhcp: false, address: 192.0.2.10/24" in store.unified_diff(1, 0)
    assert diff_documents({"a": 1}, {"a": 1}) == []
    assert diff_documents({}, {"a": {"b": 2}})[0].old is MISSING


def test_restore_makes_an_old_version_current_again(store):
    store.save_text(GOOD)
    store.save_text(GOOD.replace("192.0.2.10/24", "192.0.2.11/24"))
    store.restore(1)
    assert store.current_text() == GOOD
    assert len(store.versions()) == 3


def test_the_config_commands(store, tmp_path):
    def run(*args):
        return subprocess.run([COMMAND, "config", "--file", str(store.path), *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    source = tmp_path / "import.yaml"
    source.write_text(GOOD)
    assert run("import", str(source)).returncode == 0
    source.write_text(GOOD.replace("gw.example.com", "gw2.example.com"))
    assert run("import", str(source)).returncode == 0
    listing = run("versions")
    assert len(listing.stdout.splitlines()) == 2 and listing.stdout.startswith("  0  ")
    diff = run("diff")
    assert diff.stdout.splitlines() == ["~ network.hostname: gw.example.com -> gw2.example.com",
                                        "~ mta.hostname: gw.example.com -> gw2.example.com"]
    exported = tmp_path / "out.yaml"
    assert run("export", str(exported)).returncode == 0 and exported.read_text() == store.current_text()
    source.write_text("network: {interfaces: {eth0: {address: 192.0.2.10}}}\n")
    bad = run("import", str(source))
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        "postern-appliance: network.interfaces.eth0.address: '192.0.2.10' has no prefix length: write the address "
        "with its netmask, like 192.0.2.10/24 or 192.0.2.10/255.255.255.0",
    ]
    assert len(run("versions").stdout.splitlines()) == 2
    missing = run("show", "7")
    assert missing.returncode == 1 and "version 7: only 2 versions are kept (0 to 1)" in missing.stderr
