"""The image's pieces of the console login, on this machine: GRUB's lock and its first-boot password,
resolved without LLMNR and multicast DNS. The boot test (`make image-test`) checks them in the
booted image too; here they run in private mount namespaces (tmpfs over /boot and /root), so the
host's files are never touched."""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOTFS = Path(__file__).resolve().parents[2] / "image-build/rootfs"
GRUB_CFG = ROOTFS / "boot/grub/grub.cfg"
HOOK = ROOTFS / "usr/lib/postern/grub-password"


def test_grub_lets_anyone_boot_but_only_its_superuser_edit():
    text = GRUB_CFG.read_text()
    if shutil.which("grub-script-check"):
        subprocess.run(["grub-script-check", str(GRUB_CFG)], check=True)
    first_entry = text.index("menuentry ")
    assert re.search(r'^set superusers="admin"$', text[:first_entry], re.M), "no superuser before the menu"
    assert re.search(r"^\s*source /boot/grub/password\.cfg$", text[:first_entry], re.M)
    entries = re.findall(r"^menuentry .*$", text, re.M)
    assert entries and all(entry.rstrip().endswith("--unrestricted {") for entry in entries), entries


def in_namespace(script: str) -> subprocess.CompletedProcess:
    """Run script with fresh, empty /boot and /root (tmpfs) in a private mount namespace."""
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    setup = "mount -t tmpfs none /boot && mkdir /boot/grub && mount -t tmpfs none /root && "
    return subprocess.run(["unshare", *user, "--mount", "--propagation", "private", "sh", "-c", setup + script],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not shutil.which("grub-mkpasswd-pbkdf2") or not shutil.which("unshare"),
                    reason="needs grub-mkpasswd-pbkdf2 (grub-common) and unshare")
def test_the_first_boot_makes_a_grub_password_only_root_can_read():
    done = in_namespace(f"{HOOK} && {HOOK} && stat -c '%n %a' /root/grub-password /boot/grub/password.cfg"
                        " && cat /root/grub-password /boot/grub/password.cfg")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "already set" in lines[1]  # the second run keeps the first password
    assert lines[2:4] == ["/root/grub-password 600", "/boot/grub/password.cfg 600"]
    password = lines[4]
    assert len(password) >= 20 and password.isalnum()
    found = re.search(r"^password_pbkdf2 admin grub\.pbkdf2\.sha512\.(\d+)\.([0-9A-F]+)\.([0-9A-F]+)$",
                      done.stdout, re.M)
    assert found, done.stdout
    rounds, salt, digest = int(found[1]), bytes.fromhex(found[2]), found[3].lower()
    assert hashlib.pbkdf2_hmac("sha512", password.encode(), salt, rounds, len(digest) // 2).hex() == digest
    assert password not in done.stdout.split("password_pbkdf2")[1]  # only its hash is where GRUB reads


def test_resolved_answers_no_llmnr_or_multicast_dns():
    conf = configparser.ConfigParser()
    conf.read(ROOTFS / "etc/systemd/resolved.conf.d/50-postern.conf")
    assert conf["Resolve"]["LLMNR"] == "no" and conf["Resolve"]["MulticastDNS"] == "no"


def test_the_console_pam_service_checks_the_password_and_the_account():
    lines = [line.split() for line in (ROOTFS / "etc/pam.d/postern-console").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert ["@include", "common-auth"] in lines and ["@include", "common-account"] in lines
