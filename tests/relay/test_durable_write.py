"""One durable write for every file: nothing another user planted in the directory is written through or kept."""

import os
import stat

import pytest
import yaml

from relay.config_file import ConfigFile
from relay.files import atomic_write

NOBODY = 65534  # the planter: any user other than the writer


@pytest.fixture
def umask():
    def set_to(value: int) -> None:
        os.umask(value)

    old = os.umask(0o022)
    yield set_to
    os.umask(old)


def plant(path, content=b"planted\n", mode=0o666):
    path.write_bytes(content)
    os.chown(path, NOBODY, NOBODY)
    os.chmod(path, mode)
    return path


def old_temporary_names(target):
    """Every name a writer of this project used for its temporary file next to `target`."""
    return [target.with_name(f".{target.name}.{os.getpid()}.tmp"), target.with_name(f".{target.name}.tmp")]


def test_a_file_planted_at_the_old_temporary_name_is_neither_written_through_nor_kept(tmp_path, umask):
    target = tmp_path / "firstboot.yaml"
    planted = [plant(name) for name in old_temporary_names(target)]
    atomic_write(target, "admin: secret\n", 0o600)
    info = target.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o600)
    assert target.read_text() == "admin: secret\n"
    for name in planted:  # still the planter's, and it never saw the secret
        assert name.read_bytes() == b"planted\n"
        assert name.stat().st_uid == NOBODY


def test_a_symbolic_link_at_the_old_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    target = tmp_path / "postern.key"
    for name in old_temporary_names(target):
        name.symlink_to(victim)
    atomic_write(target, b"KEY\n", 0o640)
    assert victim.read_bytes() == b"precious\n"
    assert not target.is_symlink()
    assert target.read_bytes() == b"KEY\n"


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o277])
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644])
def test_the_file_has_exactly_the_mode_asked_for_whatever_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    target = tmp_path / "file"
    atomic_write(target, b"x", mode)
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_the_owner_is_the_one_asked_for_and_the_old_file_is_replaced_not_rewritten(tmp_path):
    target = plant(tmp_path / "postern.pem", b"old\n", 0o666)
    atomic_write(target, b"new\n", 0o640, (0, NOBODY))
    info = target.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, NOBODY, 0o640)


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "postern.yaml"
    target.write_bytes(b"old\n")
    with pytest.raises(TypeError):
        atomic_write(target, [b"new", None], 0o640)  # fails half-way through the data
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["postern.yaml"]


def test_the_control_api_config_write_does_not_follow_a_planted_link(tmp_path):
    """The configuration directory is writable by the relay's group: a link planted there must not make root
    (or the relay) write the configuration into another file, nor leave the configuration a link."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    config = tmp_path / "postern.yaml"
    config.write_text(yaml.safe_dump({"mta": {"hostname": "old.example.com"}}))
    for name in old_temporary_names(config):
        name.symlink_to(victim)
    ConfigFile(config).replace_mta({"hostname": "new.example.com"})
    assert victim.read_bytes() == b"precious\n"
    assert not config.is_symlink()
    assert yaml.safe_load(config.read_text())["mta"] == {"hostname": "new.example.com"}
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
