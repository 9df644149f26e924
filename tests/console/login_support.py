"""A private mount namespace with an admin of its own, for the console's real login (PAM).

The host's /etc is never changed: the namespace sees, bind-mounted over /etc/passwd, /etc/group,
/etc/shadow and /etc/pam.d, copies with an `admin` user (password ADMIN_PASSWORD) and the
image's own /etc/pam.d/postern-console. Whatever runs under `PamWorld.command()` (a pytest
scenario in a subprocess, or a tmux server and the console in it) gets the real PAM stack
(pam_unix reading that shadow file) and the real runuser.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ADMIN = "admin"
ADMIN_PASSWORD = "correct horse battery"
PAM_SERVICE_FILE = REPO / "image-build/rootfs/etc/pam.d/postern-console"


def usable() -> str:
    """Why the namespace cannot be made here ('' when it can)."""
    for program in ("unshare", "openssl", "runuser"):
        if not shutil.which(program):
            return f"needs {program}"
    try:
        pwd.getpwnam(ADMIN)
        return "the host has a user admin of its own"
    except KeyError:
        pass
    probe = subprocess.run(PamWorld.unshare() + ["true"], capture_output=True, text=True)
    return "" if probe.returncode == 0 else f"cannot make a mount namespace: {probe.stderr.strip()}"


class PamWorld:
    def __init__(self, base: Path, password: str = ADMIN_PASSWORD):
        self.etc = base / "etc"
        self.home = base / "home" / ADMIN
        self.etc.mkdir(parents=True)
        self.home.mkdir(parents=True)
        taken = {entry.pw_uid for entry in pwd.getpwall()}
        self.uid = next(uid for uid in range(4242, 60000) if uid not in taken)
        os.chown(self.home, self.uid, self.uid)
        digest = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True,
                                text=True, check=True).stdout.strip()
        host_passwd = Path("/etc/passwd").read_text()
        (self.etc / "passwd").write_text(host_passwd + f"{ADMIN}:x:{self.uid}:{self.uid}:Postern administrator:"
                                         f"{self.home}:/usr/lib/postern/console-shell\n")
        (self.etc / "group").write_text(Path("/etc/group").read_text() + f"{ADMIN}:x:{self.uid}:\n")
        shadow = "".join(f"{line.split(':')[0]}:*:19000:0:99999:7:::\n" for line in host_passwd.splitlines() if line)
        (self.etc / "shadow").write_text(shadow + f"{ADMIN}:{digest}:19000:0:99999:7:::\n")
        (self.etc / "shadow").chmod(0o640)
        shutil.copytree("/etc/pam.d", self.etc / "pam.d", symlinks=True)
        shutil.copy(PAM_SERVICE_FILE, self.etc / "pam.d/postern-console")

    @staticmethod
    def unshare() -> list[str]:
        user = [] if os.geteuid() == 0 else ["--map-root-user"]
        return ["unshare", *user, "--mount", "--propagation", "private"]

    def command(self, argv: list[str]) -> list[str]:
        mounts = ('for f in passwd group shadow pam.d; do mount --bind "$0/$f" "/etc/$f" || exit 97; done; '
                  'exec "$@"')
        return self.unshare() + ["sh", "-c", mounts, str(self.etc), *argv]

    def run_scenario(self, module: str, name: str, *args: str, timeout: float = 100) -> str:
        """Run `await module.name(*args)` in the namespace; its assertion failures fail the caller."""
        code = (f"import asyncio, sys; from {module} import {name}; "
                f"asyncio.run({name}(*sys.argv[1:]))")
        done = subprocess.run(self.command([sys.executable, "-c", code, *args]), cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)
        assert done.returncode == 0, f"{name} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done.stdout
