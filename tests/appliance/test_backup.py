"""Backup and restore: real files under temporary roots, a real relay where the queue matters.

Every refusal is checked for what the admin sees (one line naming the problem) and for what
they would otherwise find out too late: that nothing under the target root changed.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from appliance import backup
from appliance.cli import exit_codes
from appliance.cli.main import main
from appliance.store import ConfigStore
from relay.control.client import ControlClient
from tests.support.net import wait_until
from tests.support.sink import Sink

CONFIG = {
    "network": {"hostname": "gw.example.com",
                "interfaces": {"eth0": {"address": "192.0.2.10/24", "gateway": "192.0.2.1"}},
                "dns": {"servers": ["192.0.2.53"]}},
    "mta": {"hostname": "gw.example.com", "relay_domains": ["example.com"],
            "internal_relay": {"host": "mail.example.com", "port": 25},
            "external_relay": {"host": "smtp.example.net", "port": 587, "username": "gw",
                               "password_file": "/etc/postern/smarthost.password"}},
}
SECRET_KEY = b"-----BEGIN PRIVATE KEY-----\nnot really a key, but private all the same\n-----END PRIVATE KEY-----\n"


def accounts(root: Path, postern: int, admin: int) -> None:
    """passwd and group files: the same names, under ids of this root's own."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/sh\npostern:x:{postern}:{postern}::/var/lib/postern:"
                                     f"/usr/sbin/nologin\nadmin:x:{admin}:{admin}::/home/admin:/bin/bash\n")
    (root / "etc/group").write_text(f"root:x:0:\npostern:x:{postern}:\nadmin:x:{admin}:\n")


def put(path: Path, data: bytes | str, mode: int, owner: tuple[int, int] = (0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chown(path, *owner)
    os.chmod(path, mode)


def make_appliance(root: Path) -> None:
    """What a configured appliance has: the configuration with history, keys, network, admin keys."""
    accounts(root, postern=998, admin=1000)
    relay = (0, 998)
    put(root / "etc/postern/smarthost.password", "s3cret\n", 0o640, relay)
    store = ConfigStore(root / "etc/postern/postern.yaml")
    store.write(yaml.safe_dump({"mta": {"hostname": "old.example.com"}}))
    store.write(yaml.safe_dump(CONFIG, sort_keys=False))
    os.chown(root / "etc/postern", *relay)
    os.chmod(root / "etc/postern", 0o2770)
    os.chown(root / "etc/postern/postern.yaml", *relay)
    put(root / "etc/postern/tls/postern.pem", "-----BEGIN CERTIFICATE-----\n", 0o644)
    put(root / "etc/postern/tls/postern.key", SECRET_KEY, 0o640, relay)
    put(root / "etc/postern/dkim/example.com.s202612.key", SECRET_KEY, 0o640, relay)
    put(root / "etc/postern/setup-complete", "topology: gateway\n", 0o644)
    put(root / "etc/apt/apt.conf.d/20auto-upgrades", 'APT::Periodic::Unattended-Upgrade "0";\n', 0o644)
    put(root / "etc/systemd/network/10-postern-eth0.network", "[Match]\nName=eth0\n", 0o644)
    put(root / "etc/hostname", "gw.example.com\n", 0o644)
    put(root / "etc/hosts", "127.0.0.1\tlocalhost\n192.0.2.10\tgw.example.com gw\n", 0o644)
    put(root / "etc/resolv.conf", "nameserver 192.0.2.53\n", 0o644)
    put(root / "home/admin/.ssh/authorized_keys", "ssh-ed25519 AAAAC3Nza admin@laptop\n", 0o600, (1000, 1000))
    os.chown(root / "home/admin/.ssh", 1000, 1000)
    os.chmod(root / "home/admin/.ssh", 0o700)


def tree(root: Path, skip=("etc/passwd", "etc/group")) -> dict[str, tuple]:
    """Every file and directory under root: content, mode, owner by name (as the root's own files say)."""
    users = {uid: name for name, uid in backup._ids(root, "etc/passwd").items()}
    groups = {gid: name for name, gid in backup._ids(root, "etc/group").items()}
    found = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if relative in skip:
            continue
        info = path.lstat()
        owner = (users.get(info.st_uid, info.st_uid), groups.get(info.st_gid, info.st_gid))
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        found[relative] = (content, oct(stat.S_IMODE(info.st_mode)), owner)
    return found


def run(*argv, root: Path | None = None) -> int:
    return main([*argv, *(["--root", str(root)] if root else [])])


@pytest.fixture
def appliance(tmp_path) -> Path:
    root = tmp_path / "old"
    make_appliance(root)
    return root


@pytest.fixture
def fresh(tmp_path) -> Path:
    """A fresh image: the accounts exist, under other ids than on the old appliance."""
    root = tmp_path / "new"
    accounts(root, postern=997, admin=1001)
    return root


@pytest.fixture
def archive(tmp_path, appliance) -> Path:
    path = tmp_path / "backup.tar.gz"
    assert run("backup", "-o", str(path), root=appliance) == exit_codes.OK
    return path


def test_restore_onto_a_fresh_root_brings_back_every_file_with_its_mode_and_owner(tmp_path, appliance, fresh, capsys):
    archive = tmp_path / "backup.tar.gz"
    old = os.umask(0)  # whatever the umask, the archive is the admin's alone
    try:
        assert run("backup", "-o", str(archive), root=appliance) == exit_codes.OK
    finally:
        os.umask(old)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    made = capsys.readouterr().out
    assert "holds the private keys" in made and "0600" in made
    assert run("restore", str(archive), root=fresh) == exit_codes.OK
    out = capsys.readouterr().out
    assert "every file matches its checksum" in out
    assert "network: the settings of gw.example.com restored (interfaces eth0)" in out
    assert "--without-network" in out
    before, after = tree(appliance), tree(fresh)
    assert before.keys() <= after.keys() | {"home", "home/admin", "etc", "etc/systemd", "etc/systemd/network"}
    for relative in before:
        if before[relative][0] is not None or relative.startswith(("etc/postern", "home/admin/.ssh")):
            assert after[relative] == before[relative], relative
    # owners by name: the key is the new image's postern group (997), not the number it had (998)
    assert (fresh / "etc/postern/tls/postern.key").stat().st_gid == 997
    assert (fresh / "home/admin/.ssh/authorized_keys").stat().st_uid == 1001
    assert oct(stat.S_IMODE((fresh / "etc/postern").stat().st_mode)) == "0o2770"
    assert len(ConfigStore(fresh / "etc/postern/postern.yaml").versions()) == 2
    assert not [p for p in fresh.rglob("*.restore")]


def test_check_lists_what_would_be_restored_and_changes_nothing(fresh, archive, capsys):
    before = tree(fresh)
    assert run("restore", str(archive), "--check", root=fresh) == exit_codes.OK
    out = capsys.readouterr().out
    assert f"{fresh}/etc/postern/tls/postern.key  0640 root:postern" in out
    assert f"{fresh}/home/admin/.ssh/authorized_keys  0600 admin:admin" in out
    assert "nothing was changed (--check)" in out
    assert tree(fresh) == before


def test_without_network_keeps_this_machines_files_and_network_section(fresh, archive, capsys):
    mine = {"hostname": "other.example.com", "interfaces": {"ens18": {"dhcp": True}}}
    put(fresh / "etc/postern/postern.yaml", yaml.safe_dump({"network": mine, "mta": {}}), 0o640)
    put(fresh / "etc/systemd/network/10-postern-ens18.network", "[Match]\nName=ens18\n", 0o644)
    put(fresh / "etc/hostname", "other.example.com\n", 0o644)
    assert run("restore", str(archive), "--without-network", root=fresh) == exit_codes.OK
    assert "this machine's settings kept" in capsys.readouterr().out
    assert (fresh / "etc/hostname").read_text() == "other.example.com\n"
    assert (fresh / "etc/systemd/network/10-postern-ens18.network").exists()
    assert not (fresh / "etc/systemd/network/10-postern-eth0.network").exists()
    restored = yaml.safe_load((fresh / "etc/postern/postern.yaml").read_text())
    assert restored == {"network": mine, "mta": CONFIG["mta"]}
    # and by default the old appliance's network comes back, our files for other interfaces go
    assert run("restore", str(archive), root=fresh) == exit_codes.OK
    assert f"removed {fresh}/etc/systemd/network/10-postern-ens18.network" in capsys.readouterr().out
    assert (fresh / "etc/hostname").read_text() == "gw.example.com\n"
    assert yaml.safe_load((fresh / "etc/postern/postern.yaml").read_text()) == CONFIG


def refused(archive: Path, fresh: Path, capsys, *extra: str) -> str:
    """Restore must fail with one line and leave the root exactly as it was; returns that line."""
    before = tree(fresh)
    code = run("restore", str(archive), *extra, root=fresh)
    err = capsys.readouterr().err.strip()
    assert code != exit_codes.OK
    assert len(err.splitlines()) == 1, err
    assert err.endswith("nothing was changed"), err
    assert tree(fresh) == before
    return err


def test_a_flipped_byte_anywhere_is_refused(tmp_path, fresh, archive, capsys):
    data = archive.read_bytes()
    for at in (len(data) // 3, len(data) // 2, len(data) - 12):
        damaged = tmp_path / f"flipped{at}.tar.gz"
        damaged.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:])
        assert "damaged" in refused(damaged, fresh, capsys)


@pytest.mark.parametrize("keep", [0.5, 0.97, -9])
def test_a_truncated_archive_is_refused(tmp_path, fresh, archive, capsys, keep):
    data = archive.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[:int(len(data) * keep)] if keep > 0 else data[:keep])
    assert "damaged or truncated archive" in refused(cut, fresh, capsys)


def rewritten(archive: Path, out: Path, change) -> Path:
    """The archive with its members passed through `change(name, data) -> [(name, data)]`; the manifest's
    own checksum made to match again, as a careful forger (or a future version) would."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]
    with tarfile.open(out, "w:gz") as tar:
        for member, data in members:
            for name, new in change(member.name, data):
                copy = tarfile.TarInfo(name)
                copy.mode, copy.type = member.mode, member.type
                if new is not None:
                    copy.size = len(new)
                tar.addfile(copy, io.BytesIO(new) if new is not None else None)
    return out


def resealed(manifest: dict) -> bytes:
    return json.dumps({"manifest": manifest, "sha256": backup._digest(manifest)}).encode()


def test_an_archive_from_a_newer_format_is_refused(tmp_path, fresh, archive, capsys):
    def future(name, data):
        if name == backup.MANIFEST:
            manifest = json.loads(data)["manifest"]
            manifest["format"] = backup.FORMAT + 1
            return [(name, resealed(manifest))]
        return [(name, data)]

    err = refused(rewritten(archive, tmp_path / "future.tar.gz", future), fresh, capsys)
    assert f"made by a newer Postern (backup format {backup.FORMAT + 1}" in err
    assert "update this appliance's image first" in err


def test_a_configuration_this_version_cannot_read_is_refused(tmp_path, appliance, fresh, capsys):
    document = {**CONFIG, "mta": {**CONFIG["mta"], "quantum_relay": True}}
    (appliance / "etc/postern/postern.yaml").write_text(yaml.safe_dump(document))
    archive = tmp_path / "newer.tar.gz"
    assert run("backup", "-o", str(archive), root=appliance) == exit_codes.OK
    err = refused(archive, fresh, capsys)
    assert "whose configuration this Postern" in err and "mta.quantum_relay: unknown key" in err


def test_an_archive_naming_a_file_outside_the_appliances_own_is_refused(tmp_path, fresh, archive, capsys):
    def hostile(name, data):
        if name == backup.MANIFEST:
            manifest = json.loads(data)["manifest"]
            for entry in manifest["files"]:
                if entry["path"] == "etc/hostname":
                    entry["path"], entry["part"] = "etc/../root/.bashrc", "network"
            return [("etc/../root/.bashrc", b"gw.example.com\n"), (name, resealed(manifest))]
        return [] if name == "etc/hostname" else [(name, data)]

    err = refused(rewritten(archive, tmp_path / "hostile.tar.gz", hostile), fresh, capsys)
    assert "'etc/../root/.bashrc' is not a file a backup holds" in err


def test_a_file_changed_under_a_resealed_manifest_is_refused(tmp_path, fresh, archive, capsys):
    def swapped(name, data):
        return [(name, b"ssh-ed25519 AAAAC3Nza attacker@elsewhere\n" if name == backup.AUTHORIZED_KEYS else data)]

    err = refused(rewritten(archive, tmp_path / "swapped.tar.gz", swapped), fresh, capsys)
    assert "home/admin/.ssh/authorized_keys does not match its checksum" in err


def test_an_encrypted_archive_round_trips_and_a_wrong_passphrase_is_refused(tmp_path, appliance, fresh, capsys):
    phrase = tmp_path / "phrase"
    phrase.write_text("correct horse battery staple\n")
    archive = tmp_path / "backup.tar.gz.enc"
    assert run("backup", "-o", str(archive), "--passphrase-file", str(phrase), root=appliance) == exit_codes.OK
    data = archive.read_bytes()
    assert data.startswith(backup.ENCRYPTED_MAGIC) and b"\x1f\x8b" not in data[:64]
    assert b"not really a key" not in data and b"s3cret" not in data

    wrong = tmp_path / "wrong"
    wrong.write_text("correct horse battery stable\n")
    assert "wrong passphrase, or the archive is damaged" in refused(archive, fresh, capsys, "--passphrase-file", str(wrong))
    assert "encrypted: no terminal to ask for the passphrase on: give --passphrase-file" in refused(archive, fresh, capsys)

    damaged = tmp_path / "damaged.enc"
    damaged.write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0x80]) + data[len(data) // 2 + 1:])
    err = refused(damaged, fresh, capsys, "--passphrase-file", str(phrase))
    assert "damaged or truncated archive" in err and "the passphrase is right" in err
    (tmp_path / "cut.enc").write_bytes(data[:-5])
    assert "cut short" in refused(tmp_path / "cut.enc", fresh, capsys, "--passphrase-file", str(phrase))

    assert run("restore", str(archive), "--passphrase-file", str(phrase), root=fresh) == exit_codes.OK
    assert (fresh / "etc/postern/tls/postern.key").read_bytes() == SECRET_KEY
    assert (fresh / "etc/postern/tls/postern.key").stat().st_gid == 997


def test_encryption_keeps_memory_bounded_across_many_chunks(tmp_path):
    """Several chunks, each sealed on its own: dropping or swapping whole chunks is caught too."""
    out = io.BytesIO()
    payload = os.urandom(backup.CHUNK * 2 + 1000)
    with backup.Encryptor(out, b"phrase") as sealed:
        for start in range(0, len(payload), 65536):
            sealed.write(payload[start:start + 65536])
    data = out.getvalue()
    header = len(backup.ENCRYPTED_MAGIC) + backup._HEADER.size
    keys: dict = {}
    assert backup.Decryptor(io.BytesIO(data), b"phrase", keys).read() == payload
    size = backup.CHUNK + 16
    first, second = data[header:header + size], data[header + size:header + 2 * size]
    for broken in (data[:header + size] + data[header + 2 * size:],  # a chunk dropped
                   data[:header] + second + first + data[header + 2 * size:],  # two swapped
                   data[:header + 2 * size]):  # the last one cut off: the one before is not marked last
        with pytest.raises(backup.BackupError, match="damaged or truncated"):
            backup.Decryptor(io.BytesIO(broken), b"phrase", keys).read()


# --- the queue, with a real relay --------------------------------------------------


def queue_list(socket: Path) -> list[dict]:
    with ControlClient(str(socket)) as client:
        return client.call("io.postern.Queue.List")["messages"]


def test_the_queue_comes_back_in_a_new_relay_and_is_delivered_once(tmp_path, appliance, make_relay, capsys):
    hop = Sink().start()
    try:
        recipients = ["bob@example.com", "carol@example.com", "dave@example.com"]
        hop.rcpt_replies = {address: "451 4.3.0 try again later" for address in recipients}
        old = make_relay(hop.port)
        for number, address in enumerate(recipients):
            old.send("alice@example.net", [address], f"Subject: message {number}\r\n\r\nbody {number}\r\n")
        old.wait_log(r"status=deferred", count=3)
        held = queue_list(old.workdir / "control.sock")[0]["id"]
        with ControlClient(str(old.workdir / "control.sock")) as client:
            client.call("io.postern.Queue.Hold", ids=[held])

        archive = tmp_path / "with-queue.tar.gz"
        # the relay keeps running (and retrying) while its queue is copied
        assert run("backup", "-o", str(archive), "--queue", "--state-dir", str(old.state_dir),
                   root=appliance) == exit_codes.OK
        assert "queue 3 messages" in capsys.readouterr().out

        new = make_relay(hop.port, start=False)
        fresh = tmp_path / "fresh"
        accounts(fresh, postern=997, admin=1001)
        restore = ["restore", str(archive), "--state-dir", str(new.state_dir), "--socket", str(old.workdir / "control.sock")]
        err = refused(archive, fresh, capsys, *restore[2:])
        assert "the relay is running" in err and "--force" in err
        assert not new.state_dir.exists()

        old.kill()  # the old appliance is gone; its socket file stays, and nobody answers on it
        assert run(*restore, root=fresh) == exit_codes.OK
        assert "queue: 3 messages put back" in capsys.readouterr().out
        new.start()
        listed = {m["id"]: m for m in queue_list(new.workdir / "control.sock")}
        assert sorted(listed) == sorted(old.queue_files())
        assert listed[held]["state"] == "hold"
        assert all(m["attempts"] >= 1 for m in listed.values())  # their delivery state came along

        hop.rcpt_replies.clear()
        with ControlClient(str(new.workdir / "control.sock")) as client:
            client.call("io.postern.Queue.Release", ids=[held])
            client.call("io.postern.Queue.Flush")
        wait_until(lambda: len(hop.messages) >= 3, 15, what="the restored messages to be delivered")
        wait_until(lambda: not new.queue_files(), 10, what="the queue to empty")
        time.sleep(0.5)
        delivered = sorted(address for message in hop.messages for address in message.recipients)
        assert delivered == recipients
    finally:
        hop.stop()


def test_a_backup_on_standard_output_restores_and_its_report_goes_to_standard_error(tmp_path, appliance, fresh,
                                                                                    capsysbinary):
    """`ssh appliance postern-appliance backup -o - > file`: only the archive on standard output."""
    assert run("backup", "-o", "-", root=appliance) == exit_codes.OK
    captured = capsysbinary.readouterr()
    assert b"holds the private keys" in captured.err
    (tmp_path / "piped.tar.gz").write_bytes(captured.out)
    assert run("restore", str(tmp_path / "piped.tar.gz"), root=fresh) == exit_codes.OK
    assert (fresh / "etc/postern/dkim/example.com.s202612.key").read_bytes() == SECRET_KEY


def test_a_message_delivered_while_the_queue_is_copied_is_left_out_with_its_state(tmp_path, appliance, monkeypatch):
    """The relay removes a message (delivered) between the copy reading its state and its file."""
    state_dir = tmp_path / "state"
    for name in backup.QUEUE_DIRS:
        (state_dir / name).mkdir(parents=True)
    for queue_id in ("000000000000A001", "000000000000A002"):
        put(state_dir / "queue/msg" / queue_id, b"POSTERN-QUEUE 1\n{}\nbody\r\n", 0o600)
        put(state_dir / "queue/state" / queue_id, b'{"hold": false}', 0o600)
    real_open = backup._open

    def delivering_meanwhile(path, notes):
        opened = real_open(path, notes)
        if path.name == "000000000000A001" and path.parent.name == "state":
            (state_dir / "queue/msg/000000000000A001").unlink()
            (state_dir / "queue/state/000000000000A001").unlink()
        return opened

    monkeypatch.setattr(backup, "_open", delivering_meanwhile)
    with open(tmp_path / "q.tar.gz", "wb") as out:
        manifest, notes = backup.write_archive(out, appliance, state_dir=state_dir, queue=True)
    queued = [item.path for item in manifest.items if "/queue/msg/" in item.path or "/queue/state/" in item.path]
    assert queued == ["var/lib/postern/queue/state/000000000000A002", "var/lib/postern/queue/msg/000000000000A002"]
    assert "000000000000A001: delivered during the copy, not in the archive" in notes
    assert backup.verify(tmp_path / "q.tar.gz").messages() == 1


def test_encrypt_without_a_terminal_asks_for_a_passphrase_file(tmp_path, appliance, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert run("backup", "--encrypt", "-o", str(tmp_path / "x.enc"), root=appliance) == exit_codes.INVALID
    assert "give --passphrase-file FILE" in capsys.readouterr().err
    assert not list(tmp_path.glob("*x.enc*"))
