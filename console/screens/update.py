"""System -> Update: install a signed update bundle, or return to the previous release.

The screen lists the releases installed (`appliance.update.status`: which runs, which is kept for a
rollback) and the bundles found where an admin puts one (`scp postern-VERSION.update admin@gw:`
lands in the admin's home; also /var/tmp and /tmp), with a field for any other path. Enter on a
bundle checks it (`appliance.bundle.verify`: the signature and every wheel, in a worker) and says
what it holds; `i` then installs it after a yes, `b` returns to the previous release after a yes.

Both run `postern-appliance update` (docs/image.md, "Updating Postern") as a transient systemd
unit (`systemd-run --wait --pipe`), so the update carries on even when it restarts this console,
which it does once the new release is healthy: the console comes back on the new release, locked.
In the sandbox (--root: `make run`) they are refused, as the power actions are; without root they
name the command to use in the shell.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from relay.printable import printable

from ..system.commands import CommandResult
from ..widgets.status_line import StatusLine
from .area import AreaScreen
from .confirm import ConfirmScreen

PLACES = ("home/admin", "var/tmp", "tmp", "root")  # under the root: where a copied bundle is
MAX_LISTED = 20
RUN_TIMEOUT = 1800.0  # installing on a slow virtual machine, then up to two health checks


def update_command(*arguments: str) -> list[str]:
    """`postern-appliance update ...` in its own transient unit, its output passed back."""
    program = shutil.which("postern-appliance") or "/usr/local/bin/postern-appliance"
    return ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=exec",
            "--unit=postern-update", "--", program, "update", *arguments]


def find_bundles(root: Path) -> list[Path]:
    found = []
    for place in PLACES:
        directory = root / place
        try:
            found += [path for path in directory.glob("*.update") if path.is_file()]
        except OSError:
            continue
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)[:MAX_LISTED]


@dataclass
class Releases(Message):
    current: str | None
    previous: str | None
    lines: Text
    bundles: list[Path]


@dataclass
class Checked(Message):
    path: Path
    release: str  # "" when refused
    text: Text


@dataclass
class Ran(Message):
    what: str
    result: CommandResult


class UpdateScreen(AreaScreen):
    BINDINGS = [
        Binding("i", "install", "Install", id="update.install"),
        Binding("b", "rollback", "Roll back", id="update.rollback"),
        Binding("f5", "refresh", "Refresh", id="update.refresh"),
        Binding("escape", "back", "Back", id="update.back"),
    ]

    def __init__(self):
        super().__init__()
        self.checked: tuple[Path, str] | None = None  # the verified bundle and its release
        self.previous: str | None = None

    def compose(self) -> ComposeResult:
        yield StatusLine("System > Update")
        releases = Static("Reading...", id="update-releases")
        releases.border_title = "Releases"
        yield releases
        bundles = OptionList(id="update-bundles")
        bundles.border_title = "Bundles found (Enter checks one)"
        yield bundles
        yield Input(placeholder="or a bundle's full path, then Enter", id="update-path")
        verdict = Static("", id="update-verdict")
        verdict.border_title = "Bundle"
        yield verdict
        yield Static("", id=self.NOTICE_ID)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.action_refresh()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_refresh(self) -> None:
        self.read_releases()

    def on_the_appliance(self) -> bool:
        return self.appliance.root.resolve() == Path("/")

    @work(thread=True, exclusive=True, group="update-read", name="Reading the releases", exit_on_error=False)
    def read_releases(self) -> None:
        from appliance import update

        current, previous, installed = update.status(self.appliance.root)
        text = Text()
        if not installed:
            text.append("No releases: this system was not installed from an image with update bundles.", style="yellow")
        order = {current: 0, previous: 1}
        for release in sorted(installed, key=lambda release: order.get(release.name, 2)):
            mark = "running" if release.name == current else "previous" if release.name == previous else ""
            text.append(f"{mark:<9}", style="bold green" if mark == "running" else "dim")
            text.append(f"{printable(release.name):<28} installed {printable(release.installed)}\n")
        text.rstrip()
        self.post_message(Releases(current, previous, text, find_bundles(self.appliance.root)))

    def on_releases(self, message: Releases) -> None:
        self.previous = message.previous
        self.query_one("#update-releases", Static).update(message.lines)
        options = self.query_one("#update-bundles", OptionList)
        options.clear_options()
        for path in message.bundles:
            options.add_option(Option(printable(str(path.relative_to(self.appliance.root))), id=str(path)))
        if not message.bundles:
            options.add_option(Option(Text("none: copy one with scp postern-VERSION.update admin@THIS-GATEWAY:",
                                           style="dim"), id="", disabled=True))
        elif not self.query_one("#update-path", Input).has_focus:
            options.highlighted = 0
            options.focus()

    # --- checking a bundle ----------------------------------------------------------------------------

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.check(Path(event.option.id))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if text:
            self.check(self.appliance.root / text.lstrip("/"))

    def check(self, path: Path) -> None:
        self.checked = None
        self.query_one("#update-verdict", Static).update(Text(f"Checking {printable(str(path))}...", style="yellow"))
        self.verify(path)

    @work(thread=True, exclusive=True, group="update-check", name="Checking the bundle", exit_on_error=False)
    def verify(self, path: Path) -> None:
        from appliance import bundle

        try:
            manifest = bundle.verify(path, self.appliance.root)
        except bundle.BundleError as error:
            self.post_message(Checked(path, "", Text(printable(str(error)), style="bold red")))
            return
        text = Text()
        text.append("Signature good", style="bold green")
        count = len(manifest.wheels)
        text.append(f": Postern {manifest.version}, {count} wheel{'' if count == 1 else 's'}, built {manifest.built}\n")
        text.append(f"Release {manifest.release}. ")
        text.append("Press i to install it.", style="bold")
        self.post_message(Checked(path, manifest.release, text))

    def on_checked(self, message: Checked) -> None:
        self.checked = (message.path, message.release) if message.release else None
        self.query_one("#update-verdict", Static).update(message.text)

    # --- installing, rolling back ---------------------------------------------------------------------

    def refused(self, what: str, command: str) -> bool:
        """Say why this console may not run the update (and what to run instead); False when it may."""
        if not self.on_the_appliance():
            self.notice(f"{what}: refused in the sandbox (--root {self.appliance.root}): it would act on this "
                        "host, not on an appliance.", "bold red")
        elif os.geteuid() != 0:
            self.notice(f"{what} needs root: press Escape, s for the shell, then sudo postern-appliance update "
                        f"{command}", "bold red")
        else:
            return False
        return True

    def action_install(self) -> None:
        if self.checked is None:
            self.notice("Install: check a bundle first (Enter on one in the list, or type its path).", "bold red")
            return
        path, release = self.checked
        if self.refused("Install", str(path)):
            return
        question = (f"Install release {release} now? The relay restarts on it (connections in progress are cut and "
                    "their clients send again). If it is not healthy within two minutes, the running release "
                    "comes back by itself. The queue and the configuration are kept either way.")
        self.confirm(question, "Install", update_command(str(path)))

    def action_rollback(self) -> None:
        if self.refused("Roll back", "--rollback"):
            return
        if not self.previous:
            self.notice("Roll back: there is no previous release to return to.", "bold red")
            return
        question = (f"Return to release {self.previous} now? The relay restarts on it; the queue and the "
                    "configuration are kept.")
        self.confirm(question, "Roll back", update_command("--rollback"))

    def confirm(self, question: str, what: str, command: list[str]) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.notice(f"{what}: under way; this takes a few minutes, and the console may restart.", "bold yellow")
                self.run_update(what, command)
            else:
                self.notice(f"{what}: cancelled, nothing was done.")

        self.app.push_screen(ConfirmScreen(question), answered)

    @work(thread=True, exclusive=True, group="update-run", name="The update", exit_on_error=False)
    def run_update(self, what: str, command: list[str]) -> None:
        self.post_message(Ran(what, self.appliance.commands.run(command, timeout=RUN_TIMEOUT)))

    def on_ran(self, message: Ran) -> None:
        result = message.result
        lines = [printable(line) for line in result.output.splitlines()[-8:]]
        self.query_one("#update-verdict", Static).update(Text("\n".join(lines)))
        if result.returncode == 0:
            self.notice(f"{message.what}: done; the new release runs and is healthy.", "bold green")
        else:
            self.notice(f"{message.what} failed (exit code {result.returncode}); the release that ran before runs "
                        "again. The lines above say why.", "bold red")
        self.action_refresh()
