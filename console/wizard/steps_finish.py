"""Steps 9 to 11: the TLS certificate, the summary with the other side's steps, apply and test."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import yaml
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Input, RadioButton, RadioSet, Static

from appliance import admin_login, certificates
from appliance.certificates import CertificateError
from appliance.network.apply import ApplyError
from appliance.network.kernel import KernelError
from appliance.network.networkd import ServiceError
from appliance.provision import Plan, carry_out
from appliance.topology import TOPOLOGIES, other_side
from relay.config import ConfigError
from relay.control.client import ControlError, PermissionDenied, Unreachable

from ..relay_link import explain
from ..screens.smtp_test import styled
from ..smtp_session import Line, TestMessage, send_test_message
from .draft import Draft, field_of, reason_of
from .step import Pick, StepScreen, Tick, field_input, value_of

DELIVERY_WAIT = 20.0
FINAL_STATUS = re.compile(r"status=(sent|deferred|bounced|expired)")
QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")


class TlsStep(StepScreen):
    NAME = "tls"
    TITLE = "TLS certificate"
    FIELDS = {"tls.cert": ("cert", "Certificate file"), "tls.key": ("key", "Key file"),
              "tls.chain": ("chain", "Chain file"), "tls": ("mode", "Certificate"), "mta.tls": ("mode", "Certificate")}

    def help_text(self) -> str:
        text = ("The certificate the gateway shows to servers that connect with STARTTLS. A self-signed one "
                "encrypts; servers that verify names need one from a CA: import it as PEM files copied to the "
                "appliance (scp), with the chain in order.")
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
              "wizard.password2": ("password2", "Password again"), "admin": ("key", "SSH public key")}

    def compose_fields(self) -> ComposeResult:
        yield field_input("key", "SSH public key", placeholder="ssh-ed25519 AAAA... you@laptop")
        with Horizontal(classes="row"):
            yield field_input("password", "Password (10 characters or more)", password=True)
            yield field_input("password2", "Password again", password=True)
        yield Static(id="login", classes="report")

    def load(self, draft: Draft) -> None:
        keys = draft.get("admin.ssh_keys") or []
        self.query_one("#key", Input).value = keys[0] if keys else ""
        for widget_id in ("password", "password2"):
            self.query_one(f"#{widget_id}", Input).value = draft.get("admin.password") or ""
        root = self.wizard.root
        keys_now, password_now = len(admin_login.current_keys(root)), admin_login.has_password(root)
        login = self.query_one("#login", Static)
        login.border_title = "Now"
        if keys_now or password_now:
            login.update(f"admin has {keys_now} SSH key{'s' if keys_now != 1 else ''} and "
                         f"{'a password' if password_now else 'no password'}.")
        else:
            login.update(Text("admin has no SSH key and no password: only this console gets in.", style="yellow"))

    def store(self, draft: Draft) -> None:
        key, password = value_of(self, "key"), self.query_one("#password", Input).value
        admin: dict = {}
        if key:
            admin["ssh_keys"] = [key]
        if password:
            admin["password"] = password
        if admin:
            draft.set("admin", admin)
        else:
            draft.remove("admin")
        draft.set("wizard.password2", self.query_one("#password2", Input).value)

    def own_problems(self, draft: Draft) -> list[str]:
        if (draft.get("admin.password") or "") != (draft.get("wizard.password2") or ""):
            return ["wizard.password2: the two passwords differ: type the same password twice"]
        if not draft.get("admin") and not admin_login.has_login(self.wizard.root):
            return ["admin: give an SSH key or a password: without one, nobody can log in over SSH"]
        return []


def listen_target(mta) -> tuple[str, int]:
    """Where this gateway's own test client connects: its first listening address."""
    listen = mta.listen[0]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.host, listen.host)
    return host, listen.port


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
        text.append(f"{shape.title}", style="bold")
        text.append(f": {shape.summary}\n")
        for note in plan.notes:
            text.append(f"note: {note}\n", style="yellow")
        if plan.admin is not None:
            keys = len(plan.admin.ssh_keys)
            text.append(f"Administrator login: {keys} SSH key{'s' if keys != 1 else ''} added"
                        f"{', and a new password' if plan.admin.password else ''}\n")
        text.append("\nOn the other side\n", style="bold underline")
        for side in other_side(plan.topology, plan.config.mta, address):
            text.append(f"{side.title}\n", style="bold")
            for step in side.steps:
                text.append(f" - {step}\n")
        text.append("\nThe configuration (/etc/postern/postern.yaml)\n", style="bold underline")
        text.append(self.wizard.shown(yaml.safe_dump(plan.document, sort_keys=False, default_flow_style=False)))
        text.rstrip()
        self.query_one("#summary-text", Static).update(text)


class ApplyStep(StepScreen):
    NAME = "apply"
    TITLE = "Apply and test"
    HELP = ("Next writes the configuration, puts it in force and sends a test message through the gateway to the "
            "address below (Ctrl+T sends another). Then Next finishes the setup.")
    FIELDS = {"wizard.test_from": ("from", "From"), "wizard.test_to": ("to", "To")}
    BINDINGS = [Binding("ctrl+t", "test", "Send test", id="wizard.test")]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.applied = False
        self.plan: Plan | None = None

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#step-body").can_focus = True  # the transcript can be longer than the screen

    def compose_fields(self) -> ComposeResult:
        yield Static(id="apply-report", classes="report")
        yield field_input("from", "Test message from")
        yield field_input("to", "Test message to")
        yield Static(id="transcript", classes="report")

    def load(self, draft: Draft) -> None:
        hostname = draft.get("mta.hostname") or "postern.localdomain"
        domains = draft.get("mta.relay_domains") or ["example.com"]
        self.query_one("#from", Input).value = draft.get("wizard.test_from") or f"postmaster@{hostname}"
        self.query_one("#to", Input).value = draft.get("wizard.test_to") or f"postmaster@{domains[0]}"
        report = self.query_one("#apply-report", Static)
        report.border_title = "Apply"
        report.update(Text("Not applied yet: Next applies.", style="dim"))
        transcript = self.query_one("#transcript", Static)
        transcript.border_title = "Test message"
        transcript.display = False

    def store(self, draft: Draft) -> None:
        draft.set("wizard.test_from", value_of(self, "from"))
        draft.set("wizard.test_to", value_of(self, "to"))

    def own_problems(self, draft: Draft) -> list[str]:
        problems = []
        for key, label in (("test_from", "From"), ("test_to", "To")):
            value = draft.get(f"wizard.{key}") or ""
            if not re.fullmatch(r"[^\s<>@]+@[^\s<>@]+\.[^\s<>@]+", value):
                problems.append(f"wizard.{key}: {value!r} is not a mail address: write it like postmaster@example.com")
        return problems

    async def leave(self, draft: Draft) -> bool:
        if self.applied:
            return True
        self.wizard.draft = draft
        if await self.apply(draft):
            self.applied = True
            await self.send_test(draft)
            self.show_busy("Next finishes the setup.")
        return False

    async def apply(self, draft: Draft) -> bool:
        report = self.query_one("#apply-report", Static)
        report.remove_class("-ok", "-bad")
        self.show_busy("Applying...")
        live = self.wizard.state.is_live
        plan, problems = await asyncio.to_thread(draft.check, self.wizard.root, live)
        if problems:
            self.show_problems(problems)
            report.add_class("-bad")
            return False
        try:
            lines = await asyncio.to_thread(carry_out, plan, self.wizard.root)
        except ApplyError as error:
            self.show_problems(error.problems)
            return False
        except ConfigError as error:
            self.show_problems(error.problems)
            return False
        except (CertificateError, KernelError, ServiceError, OSError, RuntimeError) as error:
            self.show_problems([f"apply: {error}"])
            return False
        lines.append(await self.reload_relay(plan.document["mta"]))
        self.plan = plan
        text = Text()
        for line in lines:
            text.append(self.wizard.shown(line) + "\n")
        report.add_class("-ok")
        text.rstrip()
        report.update(text)
        self.show_problems([])
        return True

    async def reload_relay(self, mta: dict) -> str:
        try:
            await self.app.link.call("io.postern.Config.Apply", mta=mta)
        except Unreachable:
            return "relay: not running; it reads the new configuration when it starts"
        except (ControlError, PermissionDenied) as error:
            return f"relay: kept its previous configuration: {explain(error)}"
        return "relay: the new configuration is in force"

    def action_test(self) -> None:
        if self.busy or self.plan is None:
            return
        candidate = self.draft.copy()
        self.store(candidate)
        problems = self.own_problems(candidate)
        if problems:
            self.show_problems(problems)
            return
        self.wizard.draft = candidate
        self.busy = True
        self.run_worker(self._test(candidate), group="wizard-step", exclusive=True)

    async def _test(self, draft: Draft) -> None:
        try:
            await self.send_test(draft)
        finally:
            self.busy = False

    async def send_test(self, draft: Draft) -> None:
        """Through the console's own test client, to this gateway's first listening address."""
        assert self.plan is not None
        mta = self.plan.config.mta
        host, port = listen_target(mta)
        self.transcript: list[Line] = []
        self.delivery: list[str] = []
        self.outcome = ""
        self.query_one("#transcript", Static).display = True
        message = TestMessage(server=host, port=port, tls="starttls" if mta.tls.cert_file else "none",
                              helo=mta.hostname, sender=draft.get("wizard.test_from"), to=draft.get("wizard.test_to"),
                              subject="Postern setup test message",
                              body="This message was sent by the Postern first-boot wizard to test the mail path.")
        outcome = await send_test_message(message, self.add_line)
        self.outcome = "" if outcome.ok else outcome.summary
        self.show_transcript()
        queued = QUEUED_AS.search(outcome.summary) if outcome.ok else None
        if queued:
            await self.follow_delivery(queued.group(1))

    def add_line(self, line: Line) -> None:
        self.transcript.append(line)
        self.show_transcript()

    def show_transcript(self) -> None:
        transcript = self.query_one("#transcript", Static)
        text = Text()
        for line in self.transcript:
            text.append_text(styled(line))
            text.append("\n")
        for line in self.delivery:
            text.append(line + "\n", style="bold green" if "status=sent" in line else "yellow")
        transcript.set_class(bool(self.outcome), "-bad")
        transcript.set_class(not self.outcome, "-ok")
        text.rstrip()
        transcript.update(text)
        self.call_after_refresh(self.query_one("#step-body").scroll_end, animate=False)

    async def follow_delivery(self, queue_id: str) -> None:
        """The relay's log lines about the test message, until it is delivered, deferred or returned."""

        async def watch() -> None:
            async for answer in self.app.link.client.stream("io.postern.Log.Tail", lines=200):
                for line in answer["lines"]:
                    text = line["text"]
                    if queue_id in text and text not in self.delivery:
                        self.delivery.append(text)
                        self.show_transcript()
                        if FINAL_STATUS.search(text):
                            return

        try:
            await asyncio.wait_for(watch(), DELIVERY_WAIT)
        except (asyncio.TimeoutError, Unreachable, ControlError, PermissionDenied):
            pass
        if not any(FINAL_STATUS.search(line) for line in self.delivery):
            self.delivery.append(f"no delivery result for {queue_id} within {DELIVERY_WAIT:.0f} s: "
                                 "the queue screen (F3) shows where it is")
            self.show_transcript()
