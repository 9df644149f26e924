"""Step 13: apply the answers, put them in force, send a test message and follow its delivery."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Static

from appliance.certificates import CertificateError
from appliance.diagnostics.smtp_probe import Line
from appliance.diagnostics.smtp_send import TestMessage, send_test_message
from appliance.network.change import SYSTEM_ERRORS, ApplyError
from appliance.provision import Plan, carry_out, relay_outcome
from relay.config import ConfigError
from relay.control.client import ControlError, PermissionDenied, Unreachable

from ..screens.authentication import NOT_CHECKED, SigningKey, check_key, read_key, record_lines
from ..screens.smtp_test import styled
from .draft import Draft
from .step import StepScreen, field_input, value_of

DELIVERY_WAIT = 20.0
FINAL_STATUS = re.compile(r"status=(sent|deferred|bounced|expired)")
QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")


def listen_target(mta) -> tuple[str, int]:
    """Where this gateway's own test client connects: its first listening address."""
    listen = mta.listen[0]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.host, listen.host)
    return host, listen.port


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
        self.records: tuple[list[SigningKey], list] | None = None  # the DKIM keys and their records, once applied

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#step-body").can_focus = True  # the transcript can be longer than the screen

    def compose_fields(self) -> ComposeResult:
        yield Static(id="apply-report", classes="report")
        yield Static(id="dkim-records", classes="report")
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
        records = self.query_one("#dkim-records", Static)
        records.border_title = "DKIM records to publish"
        records.display = False

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
            self.run_worker(self.show_records(), group="dkim-records")  # DNS may take its time: the test goes on
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
        except (CertificateError, *SYSTEM_ERRORS, RuntimeError) as error:
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

    async def show_records(self) -> None:
        """Each signing key's TXT record at once, then whether DNS has it yet (asked as the relay would ask)."""
        assert self.plan is not None
        keys = [SigningKey(domain, key.selector, key.key_file, Path(key.key_file))
                for domain, key in self.plan.config.mta.authentication.dkim_keys.items()]
        if not keys:
            return
        keys = [await asyncio.to_thread(read_key, key) for key in keys]
        records = [await asyncio.to_thread(self.record_of, key) for key in keys]
        self.draw_records(keys, records)
        servers = list(self.plan.config.mta.dns_servers)
        await asyncio.gather(*(check_key(key, servers, self.wizard.root, hint="shown here") for key in keys))
        self.draw_records(keys, records)

    def draw_records(self, keys: list[SigningKey], records: list[tuple[str, str, str] | None]) -> None:
        """The records cut to the box's width, which is known once the box is shown: a record is never
        wrapped again (a zone-file line broken at the edge would not paste)."""
        self.records = (keys, records)
        shown = self.query_one("#dkim-records", Static)
        if not shown.display or not shown.content_size.width:
            shown.display = True
            self.call_after_refresh(self.draw_records, keys, records)
            return
        width = shown.content_size.width
        text = Text()
        for key, record in zip(keys, records):
            if record is None:
                text.append(f"{key.domain}: the key cannot be read: {key.problem}\n\n", style="bold red")
                continue
            text.append_text(Text("\n").join(record_lines(*record, width)))
            if key.published == NOT_CHECKED:
                text.append("\nChecking DNS...\n\n", style="dim")
            elif key.published == "published":
                text.append("\npublished: mail from this domain verifies\n\n", style="green")
            else:
                text.append(f"\n{key.words}\n\n", style="yellow")
        text.rstrip()
        shown.update(text)

    def on_resize(self) -> None:
        if self.records is not None:
            self.call_after_refresh(self.draw_records, *self.records)

    @staticmethod
    def record_of(key: SigningKey) -> tuple[str, str, str] | None:
        from appliance import dkim

        try:
            return dkim.dns_record(key.path, key.domain, key.selector)
        except (CertificateError, OSError):
            return None

    async def reload_relay(self, mta: dict) -> str:
        try:
            await self.app.link.call("io.postern.Config.Apply", mta=mta)
        except (Unreachable, ControlError, PermissionDenied) as error:
            return relay_outcome(error)
        return relay_outcome(None)

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
