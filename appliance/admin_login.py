"""How the administrator logs in over SSH: the `admin` user's public keys and password.

The image ships with neither (no default password, no key): the first-boot setup sets them,
from the wizard or from a seed's `admin:` section:

```yaml
admin:
  ssh_keys: ["ssh-ed25519 AAAAC3Nza... alice@laptop"]
  password: a long passphrase        # or password_hash: "$y$j9T$..." (crypt format)
```

Keys are added to `~admin/.ssh/authorized_keys` (kept ones stay); the password is set with
`chpasswd`, which hashes it (yescrypt). Under a root other than `/`, `chpasswd --root` changes
that root's `/etc/shadow` only. Where a password must be remembered before it is set (the
wizard's resume file, the scrubbed seed), only its hash is kept: `hash_password` asks the
system's libcrypt (libxcrypt, what chpasswd and /etc/shadow use) for a yescrypt hash.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from .files import atomic_write

USER = "admin"
KEYS = ("ssh_keys", "password", "password_hash")
MIN_PASSWORD = 10


_CRYPT_OUTPUT_SIZE = 384  # libxcrypt's CRYPT_OUTPUT_SIZE and sizeof(struct crypt_data)
_CRYPT_DATA_SIZE = 32768


def _libcrypt() -> ctypes.CDLL:
    library = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    library.crypt_gensalt_rn.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int,
                                         ctypes.c_char_p, ctypes.c_int]
    library.crypt_gensalt_rn.restype = ctypes.c_char_p
    library.crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    library.crypt_rn.restype = ctypes.c_char_p
    return library


def _crypt(password: str, setting: bytes) -> str | None:
    data = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
    result = _libcrypt().crypt_rn(password.encode("utf-8"), setting, data, _CRYPT_DATA_SIZE)
    return result.decode("ascii") if result and not result.startswith(b"*") else None


def hash_password(password: str) -> str:
    """A yescrypt hash of the password with a random salt, as /etc/shadow holds it ($y$...)."""
    setting = ctypes.create_string_buffer(_CRYPT_OUTPUT_SIZE)
    if not _libcrypt().crypt_gensalt_rn(b"$y$", 0, None, 0, setting, _CRYPT_OUTPUT_SIZE):
        raise RuntimeError("admin: the system's libcrypt cannot make a yescrypt salt")
    hashed = _crypt(password, setting.value)
    if hashed is None:
        raise RuntimeError("admin: the system's libcrypt cannot hash the password")
    return hashed


def password_matches(password: str, hashed: str) -> bool:
    return _crypt(password, hashed.encode("ascii")) == hashed


@dataclass(frozen=True)
class AdminLogin:
    ssh_keys: tuple[str, ...] = ()
    password: str = ""
    password_hash: str = ""


def check_ssh_key(value: Any) -> str:
    """One line of authorized_keys: type, base64 key, optional comment."""
    text = value.strip() if isinstance(value, str) else ""
    if not text or "\n" in text or "\r" in text:
        raise ValueError("must be one public key on one line, such as the contents of ~/.ssh/id_ed25519.pub")
    try:
        load_ssh_public_key(" ".join(text.split()[:2]).encode())
    except (ValueError, TypeError, IndexError, UnsupportedAlgorithm):  # a key type it does not know, too
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ValueError(
            f"{shown!r} is not an SSH public key: paste the line from ~/.ssh/id_ed25519.pub "
            "(it starts with ssh-ed25519, ssh-rsa or ecdsa-sha2-...)"
        ) from None
    return text


def check_admin(data: Any) -> tuple[AdminLogin | None, list[str]]:
    """Validate a seed's `admin:` section; (None, []) when there is none."""
    if data is None:
        return None, []
    if not isinstance(data, dict):
        return None, ["admin: must be a mapping such as {ssh_keys: [...]} or {password: ...}"]
    problems = [f"admin.{key}: unknown key; known keys are {', '.join(KEYS)}" for key in data if key not in KEYS]
    keys = data.get("ssh_keys") or []
    if isinstance(keys, str):
        keys = [keys]
    clean = []
    if not isinstance(keys, list):
        problems.append("admin.ssh_keys: must be a list of public keys")
        keys = []
    for index, key in enumerate(keys):
        try:
            clean.append(check_ssh_key(key))
        except ValueError as error:
            problems.append(f"admin.ssh_keys[{index}]: {error}")
    password = data.get("password") or ""
    password_hash = data.get("password_hash") or ""
    if password and password_hash:
        problems.append("admin.password: give the password or password_hash, not both")
    if password:
        problems += [f"admin.password: {reason}" for reason in password_problems(password)]
    if password_hash and (not isinstance(password_hash, str) or not password_hash.startswith("$")
                          or any(c in password_hash for c in ":\n\r ")):
        problems.append("admin.password_hash: must be a crypt hash such as $y$j9T$... (mkpasswd output)")
    if not (clean or password or password_hash) and not problems:
        problems.append("admin: set ssh_keys or a password, or leave the section out")
    if problems:
        return None, problems
    return AdminLogin(tuple(clean), password, password_hash), []


def password_problems(password: Any) -> list[str]:
    if not isinstance(password, str):
        return ["must be text"]
    if "\n" in password or "\r" in password or ":" in password:
        return ["must be one line without a colon"]
    if len(password) < MIN_PASSWORD:
        return [f"at least {MIN_PASSWORD} characters: the appliance is reachable over SSH"]
    return []


def authorized_keys_path(root: Path | str) -> Path:
    return Path(root) / "home" / USER / ".ssh" / "authorized_keys"


def current_keys(root: Path | str) -> list[str]:
    try:
        text = authorized_keys_path(root).read_text(encoding="utf-8")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def has_password(root: Path | str) -> bool:
    """Does admin have a usable password hash in (root)/etc/shadow?"""
    try:
        lines = (Path(root) / "etc/shadow").read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split(":")
        if fields[0] == USER and len(fields) > 1:
            return fields[1].startswith("$")
    return False


def has_login(root: Path | str) -> bool:
    return bool(current_keys(root)) or has_password(root)


def _owner(root: Path) -> tuple[int, int] | None:
    if root.resolve() != Path("/") or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def apply_admin(login: AdminLogin, root: Path | str = "/") -> list[str]:
    """Add the keys and set the password; returns what was done. OSError or RuntimeError on failure."""
    root = Path(root)
    lines = []
    if login.ssh_keys:
        path = authorized_keys_path(root)
        kept = current_keys(root)
        known = {" ".join(key.split()[:2]) for key in kept}
        added = [key for key in login.ssh_keys if " ".join(key.split()[:2]) not in known]
        owner = _owner(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        if owner:
            os.chown(path.parent, *owner)
        atomic_write(path, "".join(f"{key}\n" for key in kept + added), 0o600, owner)
        lines.append(f"admin: {len(added)} SSH key{'s' if len(added) != 1 else ''} added to {path}")
    if (login.password or login.password_hash) and root.resolve() != Path("/") and not (root / "etc/shadow").exists():
        lines.append(f"admin: password not set: {root} has no /etc/shadow")
    elif login.password or login.password_hash:
        command = ["chpasswd"]
        if root.resolve() != Path("/"):
            command += ["--root", str(root.resolve())]
        command += ["--encrypted"] if login.password_hash else ["--crypt-method", "YESCRYPT"]
        secret = login.password_hash or login.password
        try:
            result = subprocess.run(command, input=f"{USER}:{secret}\n", capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RuntimeError(f"admin: setting the password failed: {error}") from None
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
            raise RuntimeError(f"admin: setting the password failed: {reason}")
        lines.append(f"admin: password set{' (from its hash)' if login.password_hash else ''}")
    return lines
