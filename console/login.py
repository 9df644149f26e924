"""Who may change the appliance from a console: the admin's password, checked through PAM.

The console on the VM's screen and serial port runs as root. After setup it shows a locked
status screen (like ESXi's DCUI and Proxmox Mail Gateway's console) until the admin's password
is given; during first boot it shows only the setup wizard. A console that does not run as root
and is not on a real terminal of the machine (an SSH login, `make run`) belongs to the user who
started it: that user has logged in already, so it asks for nothing, and it gives no more than
that user has.

Nothing here imports Textual.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import re
import socket
import syslog
from dataclasses import dataclass
from pathlib import Path

from appliance.admin_login import USER as ADMIN_USER

PAM_SERVICE = "postern-console"  # /etc/pam.d/postern-console (the image ships it; else PAM's "other")
IDLE_LOCK_SECONDS = 15 * 60  # the console locks itself again after this long without a key
FAIL_DELAY = 3.0  # seconds before the next try after a wrong password, as login(1) waits
REAL_TERMINAL = re.compile(r"/dev/(tty[0-9]+|ttyS[0-9]+|hvc[0-9]+|console)")


def terminal_name() -> str:
    """The console's terminal (`/dev/tty1`), or '' without one."""
    try:
        return os.ttyname(0)
    except OSError:
        return ""


def on_real_terminal() -> bool:
    """Is this the machine's own screen or serial port (not a pseudo-terminal such as SSH's)?"""
    return REAL_TERMINAL.fullmatch(terminal_name()) is not None


def login_required(euid: int | None = None) -> bool:
    """Root, or any user on the machine's own terminals, must give a password first."""
    return (os.geteuid() if euid is None else euid) == 0 or on_real_terminal()


def login_user(euid: int | None = None) -> str:
    """Whose password unlocks the console: the admin's when it runs as root, else the user's own."""
    if (os.geteuid() if euid is None else euid) == 0:
        return ADMIN_USER
    return pwd.getpwuid(os.getuid()).pw_name


def check_password(user: str, password: str, service: str = PAM_SERVICE) -> bool:
    """The password through PAM (authentication and account checks); every failure is logged."""
    import pam  # python-pam: loaded on the first try, not at start-up

    tty = terminal_name() or "no terminal"
    ok = bool(password) and pam.PamAuthenticator().authenticate(user, password, service=service)
    syslog.openlog("postern-console", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
    if ok:
        syslog.syslog(syslog.LOG_NOTICE, f"console unlocked by {user} on {tty}")
    else:
        syslog.syslog(syslog.LOG_WARNING, f"console login failed for {user} on {tty}")
    return ok


# --- what the locked screen shows ----------------------------------------------------------------


@dataclass(frozen=True)
class HostKey:
    bits: int
    fingerprint: str  # SHA256:... as `ssh-keygen -l` prints it
    kind: str  # ED25519, ECDSA, RSA

    def __str__(self) -> str:
        return f"{self.bits} {self.fingerprint} ({self.kind})"


def ssh_host_keys(root: Path | str = "/") -> list[HostKey]:
    """The SSH server's host keys, as `ssh-keygen -l -f /etc/ssh/ssh_host_*_key.pub` shows them."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    keys = []
    for path in sorted((Path(root) / "etc/ssh").glob("ssh_host_*_key.pub")):
        try:
            kind_name, blob = path.read_text(encoding="ascii").split()[:2]
            raw = base64.b64decode(blob, validate=True)
            key = load_ssh_public_key(f"{kind_name} {blob}".encode())
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(key, ed25519.Ed25519PublicKey):
            bits, kind = 256, "ED25519"
        elif isinstance(key, ec.EllipticCurvePublicKey):
            bits, kind = key.curve.key_size, "ECDSA"
        elif isinstance(key, rsa.RSAPublicKey):
            bits, kind = key.key_size, "RSA"
        else:
            continue
        digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
        keys.append(HostKey(bits, f"SHA256:{digest}", kind))
    return keys


@dataclass(frozen=True)
class LockFacts:
    name: str
    addresses: list[str]
    host_keys: list[HostKey]


def lock_facts(root: Path | str = "/") -> LockFacts:
    from .host import interface_addresses

    try:
        addresses = interface_addresses()
    except OSError:
        addresses = []
    return LockFacts(socket.gethostname(), addresses, ssh_host_keys(root))
