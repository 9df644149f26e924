"""Secrets at rest and the files the relay must read: the seed after provisioning, the wizard's resume file,
the smart host's password, and certificate keys (root:postern 0640, loaded by the relay as its own user)."""

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
import yaml

from appliance import admin_login
from appliance.cli.main import main
from appliance.firstboot import Progress, SetupState
from appliance.provision import check_seed
from tests.appliance.test_provision import fake_accounts, provision, seed_for, write_seed
from tests.support.certs import self_signed

RELAY_UID = RELAY_GID = 64123  # the relay's user and group in the test root: no account of this machine
ADMIN_PASSWORD = "correct horse battery"
SMARTHOST_PASSWORD = "s3cret smart-host pass"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners and the relay's user need root")


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


@pytest.fixture
def system():
    """A root the relay's user can walk into (pytest's own temporary directories are root-only), with the
    accounts of the image: admin, and postern as the relay's user and group."""
    directory = Path(tempfile.mkdtemp(prefix="postern-root-"))
    directory.chmod(0o755)
    fake_accounts(directory)
    with open(directory / "etc/passwd", "a") as passwd:
        passwd.write(f"postern:x:{RELAY_UID}:{RELAY_GID}:Postern relay:/var/lib/postern:/usr/sbin/nologin\n")
    with open(directory / "etc/group", "a") as group:
        group.write(f"postern:x:{RELAY_GID}:\n")
    yield directory
    shutil.rmtree(directory)


def cert(*args: str) -> int:
    return main(["cert", *args])


# --- certificates ---


@needs_root
def test_a_key_made_by_the_cert_command_is_root_postern_0640_and_the_relay_loads_it(system, capsys):
    assert cert("self-signed", "--hostname", "gw.example.com", "--root", str(system)) == 0
    out = capsys.readouterr().out
    key, pem = system / "etc/postern/tls/postern.key", system / "etc/postern/tls/postern.pem"
    assert f"wrote {pem} and {key} (a new ecdsa key); the relay loads them" in out
    assert owner_and_mode(key) == (0, RELAY_GID, 0o640)
    assert owner_and_mode(pem) == (0, 0, 0o644)

    key.unlink()
    assert cert("csr", "--hostname", "gw.example.com", "--root", str(system), "--out", str(system / "req.pem")) == 0
    assert owner_and_mode(key) == (0, RELAY_GID, 0o640)


@needs_root
def test_an_imported_certificate_the_relay_cannot_read_is_an_error_and_the_old_files_stay(system, tmp_path, capsys):
    assert cert("self-signed", "--hostname", "gw.example.com", "--root", str(system)) == 0
    tls = system / "etc/postern/tls"
    before = {name: (tls / name).read_bytes() for name in ("postern.pem", "postern.key")}
    tls.chmod(0o700)  # a directory the relay's user cannot enter: STARTTLS would break at the next reload
    new_cert, new_key = self_signed(tmp_path, "gw.example.com")
    capsys.readouterr()
    assert cert("import", "--cert", str(new_cert), "--key", str(new_key), "--root", str(system)) == 3
    err = capsys.readouterr().err
    assert "the relay cannot load the new certificate and key: as user postern" in err
    assert "Permission denied" in err and "the previous files are kept" in err
    assert {name: (tls / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in tls.iterdir()) == ["postern.key", "postern.pem"]


@needs_root
def test_a_key_without_the_relays_group_under_the_root_stays_owner_only_and_says_so(tmp_path, capsys):
    assert cert("self-signed", "--hostname", "gw.example.com", "--root", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert f"note: no postern group in {tmp_path / 'etc/group'}: the key is readable by its owner only (0600)" in out
    assert owner_and_mode(tmp_path / "etc/postern/tls/postern.key") == (0, 0, 0o600)


# --- the seed ---


@needs_root
@pytest.mark.skipif(not shutil.which("chpasswd"), reason="needs chpasswd")
def test_after_a_provision_the_seed_keeps_no_password_and_the_log_says_so(system, capsys):
    seed = seed_for("via-relay")
    seed["mta"]["external_relay"].update(username="gateway", password=SMARTHOST_PASSWORD)
    seed["admin"] = {"password": ADMIN_PASSWORD}
    boot = system / "boot"
    boot.mkdir()
    path = write_seed(boot, seed, "postern-seed.yaml")
    assert provision(path, system) == 0
    out = capsys.readouterr().out
    kept = boot / "postern-seed.yaml.provisioned"
    assert f"seed: removed {path}; {kept} (root only) keeps it without the passwords" in out
    assert sorted(p.name for p in boot.iterdir()) == ["postern-seed.yaml.provisioned"]
    text = kept.read_text()
    assert ADMIN_PASSWORD not in text and SMARTHOST_PASSWORD not in text
    assert owner_and_mode(kept) == (0, 0, 0o600)
    scrubbed = yaml.safe_load(text)
    assert admin_login.password_matches(ADMIN_PASSWORD, scrubbed["admin"]["password_hash"])
    password_file = system / "etc/postern/smarthost.password"
    assert scrubbed["mta"]["external_relay"]["password_file"] == str(password_file)
    # the password's own file: the relay's group may read it, nobody else
    assert owner_and_mode(password_file) == (0, RELAY_GID, 0o640)
    assert owner_and_mode(system / "etc/postern/tls/postern.key") == (0, RELAY_GID, 0o640)
    # what is left is still a seed for this appliance
    assert check_seed(scrubbed, system, check_interfaces=False)[1] == []


def test_a_failed_provision_keeps_the_seed_for_the_admin_to_fix(tmp_path, capsys):
    seed = seed_for("via-relay")
    seed["mta"]["external_relay"].update(username="gateway", password=SMARTHOST_PASSWORD)
    seed["mta"]["relay_domains"] = ["not a domain"]
    path = write_seed(tmp_path, seed)
    before = path.read_bytes()
    root = tmp_path / "root"
    root.mkdir()
    assert provision(path, root) == 1
    assert path.read_bytes() == before
    assert not path.with_name(path.name + ".provisioned").exists()


def test_keep_seed_leaves_it_and_a_seed_without_secrets_stays_as_it_is(tmp_path, capsys):
    seed = seed_for("via-relay")
    seed["mta"]["external_relay"].update(username="gateway", password=SMARTHOST_PASSWORD)
    path = write_seed(tmp_path, seed)
    root = tmp_path / "root"
    root.mkdir()
    assert provision(path, root, "--keep-seed") == 0
    assert SMARTHOST_PASSWORD in path.read_text()
    plain = write_seed(tmp_path, seed_for("direct"), "plain.yaml")
    assert provision(plain, root) == 0
    assert plain.exists() and "seed:" not in capsys.readouterr().out


# --- the wizard's resume file ---


def test_the_resume_file_keeps_the_admin_password_only_as_its_hash(tmp_path):
    state = SetupState(tmp_path)
    answers = {"topology": "direct", "admin": {"password": ADMIN_PASSWORD}, "wizard": {"password2": ADMIN_PASSWORD}}
    state.save_progress(Progress("summary", answers))
    path = tmp_path / "var/lib/postern/firstboot.yaml"
    assert ADMIN_PASSWORD not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    if os.geteuid() == 0:
        assert path.stat().st_uid == 0
    resumed = state.load_progress()
    assert "password" not in resumed.document["admin"] and "password2" not in resumed.document["wizard"]
    assert admin_login.password_matches(ADMIN_PASSWORD, resumed.document["admin"]["password_hash"])
    assert answers["admin"]["password"] == ADMIN_PASSWORD  # the wizard's own draft is left alone


def test_an_imported_key_beside_the_seed_is_named_and_the_copy_left_still_provisions(tmp_path, capsys):
    certificate, key = self_signed(tmp_path, "gw.example.com")
    seed = seed_for("direct")
    seed["tls"] = {"mode": "import", "cert": certificate.name, "key": key.name}
    path = write_seed(tmp_path, seed)
    root = tmp_path / "root"
    root.mkdir()
    assert provision(path, root) == 0
    out = capsys.readouterr().out
    assert f"seed: {key}, the imported private key, is installed now: delete this copy of it" in out
    scrubbed = yaml.safe_load(path.with_name("seed.yaml.provisioned").read_text())
    assert scrubbed["tls"] == {"mode": "keep"}
    assert check_seed(scrubbed, root, check_interfaces=False)[1] == []


@needs_root
def test_a_resume_file_planted_by_another_user_neither_gets_the_answers_nor_stays_theirs(tmp_path):
    directory = tmp_path / "var/lib/postern"
    directory.mkdir(parents=True)
    planted = directory / f".firstboot.yaml.{os.getpid()}.tmp"  # the name the wizard's writer used to take
    planted.write_text("")
    os.chown(planted, 65534, 65534)
    planted.chmod(0o666)
    SetupState(tmp_path).save_progress(Progress("relay", {"mta": {"external_relay": {"password": SMARTHOST_PASSWORD}}}))
    assert owner_and_mode(directory / "firstboot.yaml") == (0, 0, 0o600)
    assert planted.read_text() == ""
