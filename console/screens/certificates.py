"""Certificates: the one the relay offers, a new self-signed one, a request for a CA, or an import.

The installed certificate is the file `mta.tls.cert_file` names (by default
/etc/postern/tls/postern.pem, with its key beside it). `s`, `r` and `i` open the form for
a self-signed certificate, a certificate signing request or an import; Enter in a field
runs it. Everything is checked first (an import: the key belongs to the certificate and
the chain is in order) and a problem is shown at its field; nothing is replaced without
a yes. An empty validity is the default shown (two years).

`t` has the relay use the installed certificate for STARTTLS at once: mta.tls.cert_file and
key_file are set to its files through `io.postern.Config.Apply`, as the MTA screen applies,
which reloads the relay; the changes are shown. It is offered after each new certificate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Footer, Input, Label, Static

from appliance.certificates import DEFAULT_DAYS, KEY_TYPES, Bundle
from relay.control import errors

from ..relay_link import RELAY_ERRORS
from ..system import FieldError
from ..system.certificates import InstalledCertificate
from ..widgets.choice import Choice
from ..widgets.status_line import StatusLine
from .area import AreaScreen
from .confirm import ConfirmScreen

FORMS = {
    "self": ("Self-signed certificate (Enter makes it)", ("hostname", "key_type", "days")),
    "csr": ("Certificate signing request (Enter makes it)", ("hostname", "key_type", "out")),
    "import": ("Import a certificate (Enter checks it)", ("cert", "chain", "key")),
}
LABELS = {"hostname": "Hostname", "key_type": "Key type", "days": "Valid for days", "out": "Save to",
          "cert": "Certificate", "chain": "Chain (optional)", "key": "Private key"}
MAIN_NOTICE = "s self-signed, r request for a CA, i import, t use for STARTTLS; Esc goes back."
PLACEHOLDERS = {"hostname": "gw.example.com", "days": str(DEFAULT_DAYS), "out": "/root/request.pem",
                "cert": "/root/gw.example.com.pem", "chain": "/root/chain.pem", "key": "/root/gw.example.com.key"}


@dataclass
class CertificateShown(Message):
    installed: InstalledCertificate


@dataclass
class CertificateDone(Message):
    lines: list[str]
    pem: str = ""
    out: str = ""


@dataclass
class CertificateProblem(Message):
    form: str
    field: str
    words: str


@dataclass
class BundleChecked(Message):
    bundle: Bundle
    lines: list[str]


def installed_text(installed: InstalledCertificate) -> Text:
    text = Text()
    if installed.info is None:
        text.append(installed.problem, style="yellow")
        text.append("\ns makes a self-signed one, r a request for a CA, i imports one.", style="dim")
        return text
    lines = installed.info.lines()
    fingerprint = installed.info.sha256  # 95 characters: two lines, 16 bytes and 16 bytes
    lines[-1] = f"SHA-256:     {fingerprint[:48]}\n             {fingerprint[48:]}"
    text.append("\n".join(lines))
    for line in installed.chain:
        text.append(f"\nchain:       {line}")
    for warning in installed.warnings:
        text.append(f"\nwarning: {warning}", style="bold yellow")
    if not installed.in_use:
        text.append("\nmta.tls.cert_file does not name it: t has STARTTLS use it.", style="yellow")
    return text


def form_rows(form: str) -> list[Widget]:
    rows: list[Widget] = []
    for name in FORMS[form][1]:
        widget_id = f"cert-{form}-{name}"
        if name == "key_type":
            editor: Widget = Choice([(k, k) for k in KEY_TYPES], "ecdsa", id=widget_id)
        else:
            editor = Input(placeholder=PLACEHOLDERS.get(name, ""), id=widget_id, compact=True)
        rows.append(Horizontal(Label(LABELS[name], classes="cert-label"), editor, classes="cert-row"))
        rows.append(Static(id=f"note-{widget_id}", classes="cert-note"))
    return rows


class CertificatesScreen(AreaScreen):
    AUTO_FOCUS = ""  # s, r and i open a form; a focused field would take them as text
    BINDINGS = [
        Binding("s", "open('self')", "Self-signed", id="cert.self"),
        Binding("r", "open('csr')", "Request", id="cert.csr"),
        Binding("i", "open('import')", "Import", id="cert.import"),
        Binding("t", "use", "Use for STARTTLS", id="cert.use"),
        Binding("escape", "back", "Back", id="cert.back"),
        Binding("down", "app.focus_next", "Next field", id="cert.next", show=False),
        Binding("up", "app.focus_previous", "Previous field", id="cert.previous", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.installed: InstalledCertificate | None = None
        self.form = ""

    def compose(self) -> ComposeResult:
        yield StatusLine("Certificates")
        installed = Static("Reading the certificate...", id="cert-installed")
        installed.border_title = "Installed certificate"
        yield installed
        with ContentSwitcher(id="cert-forms"):
            for form, (title, _) in FORMS.items():
                box = Vertical(*form_rows(form), id=f"cert-form-{form}", classes="cert-form")
                box.border_title = title
                yield box
        with VerticalScroll(id="cert-pem"):
            yield Static(id="cert-pem-text")
        yield Static(MAIN_NOTICE, id=self.NOTICE_ID)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.load()

    def on_screen_resume(self) -> None:
        if self.installed is not None:
            self.load()

    @work(thread=True, exclusive=True, group="cert-load", name="Reading the certificate", exit_on_error=False)
    def load(self) -> None:
        self.post_message(CertificateShown(self.appliance.certificates.installed()))

    def on_certificate_shown(self, message: CertificateShown) -> None:
        self.installed = message.installed
        box = self.query_one("#cert-installed", Static)
        box.border_title = f"Installed certificate ({message.installed.shown_path})"
        box.update(installed_text(message.installed))
        for form in ("self", "csr"):
            field = self.query_one(f"#cert-{form}-hostname", Input)
            if not field.value:
                field.value = message.installed.hostname
        out = self.query_one("#cert-csr-out", Input)
        if not out.value:
            out.value = str(message.installed.path.with_name(f"{message.installed.hostname}.csr"))

    # --- the forms ---------------------------------------------------------------------------------

    def action_open(self, form: str) -> None:
        self.form = form
        switcher = self.query_one("#cert-forms", ContentSwitcher)
        switcher.display = True
        switcher.current = f"cert-form-{form}"
        self.query_one("#cert-pem").display = False
        self.clear_problems()
        first = FORMS[form][1][0]
        self.query_one(f"#cert-{form}-{first}").focus()
        self.notice({"self": "A new key and a certificate for the hostname, signed by itself.",
                     "csr": "A request for a CA, with the installed key (a new one if there is none).",
                     "import": "The files a CA sent: certificate, its chain (intermediates, in order) and the key."
                     }[form] + " Enter runs it; Esc closes the form.")

    def action_back(self) -> None:
        if self.form:
            self.form = ""
            self.query_one("#cert-forms").display = False
            self.query_one("#cert-pem").display = False
            self.notice(MAIN_NOTICE)
            self.set_focus(None)
            return
        super().action_back()

    def value(self, name: str) -> str:
        widget = self.query_one(f"#cert-{self.form}-{name}")
        return str(widget.value) if widget.value is not None else ""

    def clear_problems(self) -> None:
        for note in self.query(".cert-note"):
            note.display = False
        for widget in self.query(".cert-row Input"):
            widget.remove_class("-invalid")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if not self.form:
            return
        self.clear_problems()
        form = self.form
        values = {name: self.value(name) for name in FORMS[form][1]}
        if form == "self" and self.installed is not None and self.installed.info is not None:
            def answered(yes: bool | None) -> None:
                if yes:
                    self.run_form(form, values)

            self.app.push_screen(ConfirmScreen(
                f"Replace the installed certificate ({self.installed.info.subject}) with a new self-signed one "
                f"for {values['hostname'].strip()}? The old certificate and key are overwritten."), answered)
            return
        self.run_form(form, values)

    @work(thread=True, exclusive=True, group="cert-run", name="The certificate", exit_on_error=False)
    def run_form(self, form: str, values: dict[str, str]) -> None:
        certificates = self.appliance.certificates
        try:
            if form == "self":
                lines = certificates.make_self_signed(values["hostname"], values["key_type"], values["days"])
                self.post_message(CertificateDone(lines))
            elif form == "csr":
                pem, lines = certificates.make_request(values["hostname"], values["key_type"], values["out"])
                self.post_message(CertificateDone(lines, pem, values["out"].strip()))
            else:
                bundle, lines = certificates.check_import(values["cert"], values["chain"], values["key"])
                self.post_message(BundleChecked(bundle, lines))
        except FieldError as error:
            self.post_message(CertificateProblem(form, error.field, error.message))

    def on_certificate_problem(self, message: CertificateProblem) -> None:
        widget_id = f"cert-{message.form}-{message.field}"
        found = self.query(f"#{widget_id}")
        if found:
            note = self.query_one(f"#note-{widget_id}", Static)
            note.update(Text(message.words, style="bold red"))
            note.display = True
            found.first().add_class("-invalid")
            found.first().focus()
        self.notice(f"{LABELS.get(message.field, message.field)}: {message.words}", "bold red")

    def on_bundle_checked(self, message: BundleChecked) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.install(message.bundle)
            else:
                self.notice("Not imported: nothing changed.")

        self.app.push_screen(ConfirmScreen(
            "The certificate, chain and key belong together:\n\n" + "\n".join(message.lines)
            + "\n\nInstall it in place of the current one?"), answered)

    @work(thread=True, exclusive=True, group="cert-run", name="Installing the certificate", exit_on_error=False)
    def install(self, bundle: Bundle) -> None:
        self.post_message(CertificateDone(self.appliance.certificates.install(bundle)))

    def on_certificate_done(self, message: CertificateDone) -> None:
        text = "Done: " + "; ".join(message.lines) + "."
        if message.pem:
            self.notice(text, "green")
            self.show_box(f"Request, saved to {Path(message.out)}", message.pem.rstrip("\n"))
        else:  # a new certificate: the form closes, so that t is a key again
            self.query_one("#cert-forms").display = False
            self.form = ""
            self.set_focus(None)
            self.notice(text + " t: use it for STARTTLS now (sets mta.tls.cert_file and key_file, the relay "
                        "reloads).", "green")
        self.load()

    def show_box(self, title: str, text: str) -> None:
        box = self.query_one("#cert-pem", VerticalScroll)
        box.border_title = title
        self.query_one("#cert-pem-text", Static).update(Text(text))
        box.display = True
        self.query_one("#cert-forms").display = False
        self.form = "shown"

    # --- STARTTLS ----------------------------------------------------------------------------------

    def action_use(self) -> None:
        if self.installed is None or self.installed.info is None:
            self.notice("No certificate is installed: s makes a self-signed one, i imports one.", "red")
            return
        self.use_for_starttls()

    @work(group="cert-use", exclusive=True, exit_on_error=False)
    async def use_for_starttls(self) -> None:
        self.notice("Setting mta.tls.cert_file and key_file...")
        try:
            running = await self.app.link.call("io.postern.Config.Get")
            payload, lines = await asyncio.to_thread(self.appliance.certificates.starttls_change, running["mta"])
            answer = await self.app.link.call("io.postern.Config.Apply", mta=payload)
        except RELAY_ERRORS as error:
            words = errors.explain(error)
            if isinstance(error, errors.ControlError) and error.name == errors.APPLY_FAILED:
                words = error.parameters.get("reason", words)
            elif isinstance(error, errors.ControlError) and error.name == errors.INVALID_CONFIG:
                words = "; ".join(error.parameters.get("problems", [])) or words
            self.notice(f"Not in use, nothing changed: {words}", "red")
            return
        changed = lines or ["mta.tls.cert_file and key_file name these files already: the relay loaded them again"]
        self.show_box("STARTTLS uses the installed certificate", "\n".join(changed))
        self.notice(f"In force: STARTTLS offers the installed certificate. Saved to {answer['path']} "
                    f"(version {answer['version']}).", "green")
        self.load()
