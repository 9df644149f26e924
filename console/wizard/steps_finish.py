"""Steps 9, 11 and 12: the TLS certificate, the administrator's login (and the security updates), the summary
with the other side's steps."""

from __future__ import annotations

from pathlib import Path

import yaml
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, RadioButton, RadioSet, Static

from appliance import admin_login, certificates, security_updates
from appliance.certificates import CertificateError
from appliance.topology import TOPOLOGIES, other_side
from relay.config_file import DEFAULT_CONFIG

from .draft import Draft, field_of, reason_of
from .step import Pick, StepScreen, Tick, field_input, value_of

UPDATES_ON = "Security updates: installed automatically, daily; no automatic reboot"
UPDATES_OFF = "Security updates: not installed automatically: install them yourself (apt)"


def updates_now(root: Path) -> bool:
    """Whether the appliance installs its security updates automatically now; on when nothing says
    (an image ships them on; a system without the switch file gets it written at apply)."""
    if not (root / security_updates.AUTO_UPGRADES).exists():
        return True
    return security_updates.read_state(root, read_log=False).enabled


class TlsStep(StepScreen):
    NAME = "tls"
    TITLE = "TLS certificate"
    FIELDS = {"tls.cert": ("cert", "Certificate file"), "tls.key": ("key", "Key file"),
              "tls.chain": ("chain", "Chain file"), "tls": ("mode", "Certificate"), "mta.tls": ("mode", "Certificate")}

    def help_text(self) -> str:
        text = ("The certificate shown to servers that use STARTTLS. Self-signed encrypts; servers that check "
                "names need one from a CA. Import reads PEM files already on the appliance: if yours are not, "
                "choose self-signed now and, after setup, copy them over SSH (as admin) and import them on the "
                "Certificates screen (F9), which also makes the request for the CA.")
        if TOPOLOGIES[self.draft.topology].m365:
            text += " Microsoft 365 connectors accept only a certificate from a trusted CA."
        return text

    @property
    def current_certificate(self) -> str:
        path = self.draft.get("mta.tls.cert_file") or ""
        return path if path and Path(path).is_file() else ""

    def compose_fields(self) -> ComposeResult:
        hostname = self.draft.get("mta.hostname") or "the hostname"
        buttons = [Pick(f"Generate a self-signed certificate for {hostname}", name="self-signed"),
                   Pick("Import a certificate, its chain and its key (PEM files)", name="import")]
        if self.current_certificate:
            buttons.append(Pick("Keep the current certificate", name="keep"))
        mode = RadioSet(*buttons, id="mode")
        mode.border_title = "Certificate"
        yield mode
        yield field_input("cert", "Certificate file (PEM)", placeholder="/root/gw.example.com.pem", classes="import")
        yield field_input("key", "Private key file (PEM)", placeholder="/root/gw.example.com.key", classes="import")
        yield field_input("chain", "Chain file (PEM, optional)", placeholder="/root/chain.pem", classes="import")
        yield Static(id="cert-info", classes="report")

    def load(self, draft: Draft) -> None:
        mode = draft.get("tls.mode") or "self-signed"
        if mode == "keep" and not self.current_certificate:
            mode = "self-signed"
        for button in self.query(RadioButton):
            button.value = button.name == mode
        for key in ("cert", "key", "chain"):
            self.query_one(f"#{key}", Input).value = draft.get(f"tls.{key}") or ""
        self.show_mode(mode)

    @property
    def mode(self) -> str:
        button = self.query_one("#mode", RadioSet).pressed_button
        return button.name if button is not None and button.name else "self-signed"

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        self.show_mode(self.mode)

    def show_mode(self, mode: str) -> None:
        for widget in self.query(".import"):
            widget.display = mode == "import"
        info = self.query_one("#cert-info", Static)
        info.border_title = "Certificate"
        text = Text()
        if mode == "keep":
            text.append_text(self.describe_file(self.current_certificate))
        elif mode == "self-signed":
            text.append("A new ECDSA P-256 key and a certificate valid for two years, made when the setup is applied.")
        else:
            text.append("The files are checked when you press Next: the key must belong to the certificate.",
                        style="dim")
        if TOPOLOGIES[self.draft.topology].m365 and mode == "self-signed":
            text.append("\nMicrosoft 365 refuses a self-signed certificate: fine for a first test only.",
                        style="yellow")
        info.update(text)

    def describe_file(self, path: str) -> Text:
        try:
            found = certificates.load_certificates(Path(path).read_bytes(), path)
        except (OSError, CertificateError) as error:
            return Text(str(error), style="yellow")
        info = certificates.describe(found[0])
        text = Text("\n".join(line for line in info.lines() if not line.startswith("SHA-256")))
        for warning in certificates.warnings(info, self.draft.get("mta.hostname")):
            text.append(f"\nwarning: {warning}", style="yellow")
        return text

    def store(self, draft: Draft) -> None:
        mode = self.mode
        if mode == "import":
            tls = {"mode": "import", "cert": value_of(self, "cert"), "key": value_of(self, "key")}
            if value_of(self, "chain"):
                tls["chain"] = value_of(self, "chain")
        else:
            tls = {"mode": mode}
        draft.set("tls", tls)
        if mode != "keep":  # the new certificate goes to the appliance's own place
            draft.remove("mta.tls.cert_file")
            draft.remove("mta.tls.key_file")


class AdminStep(StepScreen):
    NAME = "admin"
    TITLE = "Administrator login"
    HELP = ("The appliance ships with no password and no SSH key. Give the admin user an SSH public key (the "
            "line from ~/.ssh/id_ed25519.pub), a password, or both: ssh admin@this-address then opens this "
            "console. Leave them empty to keep the current login.")
    FIELDS = {"admin.ssh_keys": ("key", "SSH public key"), "admin.password": ("password", "Password"),
              "wizard.password2": ("password2", "Password again"), "admin": ("key", "SSH public key"),
              "security_updates": ("security-updates", "Security updates")}

    def compose_fields(self) -> ComposeResult:
        yield field_input("key", "SSH public key", placeholder="ssh-ed25519 AAAA... you@laptop")
        with Horizontal(classes="row"):
            yield field_input("password", "Password (10 characters or more)", password=True)
            yield field_input("password2", "Password again", password=True)
        yield Static(id="login", classes="report")
        yield Tick("Install Debian security updates automatically", id="security-updates")

    def load(self, draft: Draft) -> None:
        updates = draft.get("security_updates")
        self.query_one("#security-updates", Tick).value = (updates if isinstance(updates, bool)
                                                           else updates_now(self.wizard.root))
        keys = draft.get("admin.ssh_keys") or []
        self.query_one("#key", Input).value = keys[0] if keys else ""
        for widget_id in ("password", "password2"):
            field = self.query_one(f"#{widget_id}", Input)
            field.value = draft.get("admin.password") or ""
            if draft.get("admin.password_hash") and not field.value:  # typed before a restart: only its hash is kept
                field.placeholder = "(kept: leave empty)"
        root = self.wizard.root
        self.keys_now, self.password_now = len(admin_login.current_keys(root)), admin_login.has_password(root)
        self.query_one("#login", Static).border_title = "Login"
        self.show_login()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.show_login()

    def show_login(self) -> None:
        """What the admin's login is now, and what it will be with what is typed on this step."""
        keys, password = self.keys_now, self.password_now
        text = Text("Now: ")
        if keys or password:
            text.append(f"admin has {keys} SSH key{'s' if keys != 1 else ''} and "
                        f"{'a password' if password else 'no password'}.\n")
        else:
            text.append("admin has no SSH key and no password: only this console gets in.\n", style="yellow")
        typed_key = bool(value_of(self, "key"))
        typed_password = bool(self.query_one("#password", Input).value or self.draft.get("admin.password_hash"))
        if typed_key or typed_password:
            added = [what for what, typed in (("the SSH key above", typed_key), ("the password typed here", typed_password))
                     if typed]
            text.append("After setup: admin logs in with " + " and ".join(added) + ".")
        elif keys or password:
            text.append("After setup: the same (nothing typed here).", style="dim")
        else:
            text.append("Type an SSH key or a password: without one, nobody can log in over SSH.", style="yellow")
        self.query_one("#login", Static).update(text)

    def store(self, draft: Draft) -> None:
        key, password = value_of(self, "key"), self.query_one("#password", Input).value
        admin: dict = {}
        if key:
            admin["ssh_keys"] = [key]
        if password:
            admin["password"] = password
        elif draft.get("admin.password_hash"):
            admin["password_hash"] = draft.get("admin.password_hash")
        if admin:
            draft.set("admin", admin)
        else:
            draft.remove("admin")
        draft.set("wizard.password2", self.query_one("#password2", Input).value)
        draft.set("security_updates", self.query_one("#security-updates", Tick).value)

    def own_problems(self, draft: Draft) -> list[str]:
        if (draft.get("admin.password") or "") != (draft.get("wizard.password2") or ""):
            return ["wizard.password2: the two passwords differ: type the same password twice"]
        if not draft.get("admin") and not admin_login.has_login(self.wizard.root):
            return ["admin: give an SSH key or a password: without one, nobody can log in over SSH"]
        return []


class SummaryStep(StepScreen):
    NAME = "summary"
    TITLE = "Summary"
    HELP = "What will be written, and what to set up on the other side. Up and down scroll; Next goes on to apply."
    FIELDS = {"": ("", "")}

    def compose_fields(self) -> ComposeResult:
        yield Static(id="summary-text")

    def on_mount(self) -> None:
        super().on_mount()
        body = self.query_one("#step-body")
        body.can_focus = True
        body.focus()

    def focus_first(self) -> None:
        self.query_one("#step-body").focus()

    def label_of(self, field: str) -> tuple[str, str]:
        return "", field

    def load(self, draft: Draft) -> None:
        plan, problems = draft.check(self.wizard.root)
        text = Text()
        if problems:
            text.append("Fix these first (Back leads to the step with each field):\n", style="bold red")
            for problem in problems:
                text.append(f"{field_of(problem)}: ", style="bold")
                text.append(reason_of(problem) + "\n")
            self.query_one("#summary-text", Static).update(text)
            return
        shape = TOPOLOGIES[plan.topology]
        address = draft.get("wizard.public_address") or plan.public_address
        text.append("In three parts: this setup, the steps on the other side, and the configuration file "
                    "at the end (PageDown).\n\n", style="dim")
        text.append(f"{shape.title}", style="bold")
        text.append(f": {shape.summary}\n")
        for note in plan.notes:
            text.append(f"note: {note}\n", style="yellow")
        if plan.admin is not None:
            keys = len(plan.admin.ssh_keys)
            text.append(f"Administrator login: {keys} SSH key{'s' if keys != 1 else ''} added"
                        f"{', and a new password' if plan.admin.password or plan.admin.password_hash else ''}\n")
        text.append((UPDATES_ON if plan.security_updates else UPDATES_OFF) + "\n",
                    style="" if plan.security_updates else "yellow")
        text.append("\nOn the other side\n", style="bold underline")
        algorithms = {key.domain: key.algorithm for key in plan.dkim_keys}
        for side in other_side(plan.topology, plan.config.mta, address, algorithms):
            text.append(f"{side.title}\n", style="bold")
            for step in side.steps:
                text.append(f" - {step}\n")
        text.append(f"\nThe configuration ({DEFAULT_CONFIG})\n", style="bold underline")
        text.append(self.wizard.shown(yaml.safe_dump(plan.document, sort_keys=False, default_flow_style=False)))
        text.rstrip()
        self.query_one("#summary-text", Static).update(text)
