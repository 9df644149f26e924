"""Programs the console runs: power off and reboot (`systemctl`), and the admin's own shell."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable

SHELL_FALLBACK = "/bin/bash"


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str = ""


Runner = Callable[..., CommandResult]


def run_command(argv: list[str], interactive: bool = False, timeout: float = 120) -> CommandResult:
    """Run a command; interactive ones get the terminal, the others have their output captured."""
    try:
        if interactive:
            return CommandResult(subprocess.run(argv).returncode)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return CommandResult(127, f"{argv[0]}: no such program on this system")
    except subprocess.TimeoutExpired:
        return CommandResult(124, f"{' '.join(argv)}: no answer within {timeout:.0f} s")
    return CommandResult(done.returncode, (done.stderr or done.stdout).strip())


class Commands:
    """`run` is the runner (tests pass a recorder); `allow_shell` False never offers a shell;
    `shell_user` is whose shell a root console opens (the admin), None: the invoking user."""

    def __init__(self, run: Runner = run_command, allow_shell: bool = True, shell_user: str | None = None):
        self.run = run
        self.allow_shell = allow_shell
        self.shell_user = shell_user

    def shell_permission(self) -> tuple[bool, str]:
        """May the System screen open a shell, and the words that say so. The screen is reached only
        after the login (and never during first boot), so this is about whose shell it is."""
        if not self.allow_shell:
            return False, "not offered on this console (it was started with --no-allow-shell)"
        try:
            user = self._shell_account()
        except KeyError:
            return False, f"not offered: there is no user {self.shell_user} on this system"
        extra = "; sudo for root tasks" if os.geteuid() == 0 else ""
        return True, f"press s for {user.pw_name}'s own login shell ({self._login_shell(user)}{extra})"

    def _shell_account(self) -> pwd.struct_passwd:
        if os.geteuid() == 0:
            return pwd.getpwnam(self.shell_user or "admin")
        return pwd.getpwuid(os.getuid())

    @staticmethod
    def _login_shell(user: pwd.struct_passwd) -> str:
        """The user's shell, unless it is missing or is the login shell that starts this console."""
        shell = user.pw_shell if os.geteuid() == 0 else (os.environ.get("SHELL") or user.pw_shell)
        if not shell or "postern" in shell or not shutil.which(shell):
            shell = SHELL_FALLBACK
        return shell

    def shell(self) -> list[str]:
        """The command for the shell: as the admin (never root) when the console runs as root, through
        runuser's login (the admin's groups, home and environment; sudo asks the admin's password);
        else the invoking user's own shell."""
        user = self._shell_account()
        shell = self._login_shell(user)
        if os.geteuid() == 0:
            return ["runuser", "--login", "--shell", shell, user.pw_name]
        return [shell]
