"""The SMTP test client, two ways: a telnet-style session, and a guided test message like swaks.

All network I/O is in appliance.diagnostics.smtp_probe (the session) and smtp_send (the
test message), run in workers; this screen only draws what they report. Ctrl+T switches between the two views; each keeps its own transcript,
which Ctrl+S saves to a file in the home directory.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Footer, Input, Label, RichLog, Static
from textual.worker import Worker

from appliance.diagnostics.smtp_probe import FieldProblem, Line, SmtpFailure, TelnetSession
from appliance.diagnostics.smtp_send import TLS_MODE_NAMES, TestMessage, check, send_test_message

from ..widgets.choice import Choice
from ..widgets.status_line import StatusLine
from ..widgets.text_box import TextBox

REPLY_STYLES = {2: "green", 3: "cyan", 4: "yellow", 5: "bold red"}
KIND_STYLES = {"client": "bold", "info": "blue", "error": "bold red"}
VIEWS = {"session-view": "Telnet session", "send-view": "Send test email"}
SESSION_IDLE = "Not connected: type the server and port, then Enter (or ctrl+o)."
SEND_IDLE = "Fill in the form; Tab moves on, ctrl+g sends. AUTH is offered with TLS only."


def styled(line: Line) -> Text:
    """A transcript line: timing, arrow, and the reply coloured by its class (2xx green ... 5xx red)."""
    plain = line.plain()
    text = Text(plain[:9], style="dim")
    code = line.code
    style = REPLY_STYLES.get(code // 100, "") if code else KIND_STYLES.get(line.kind, "")
    text.append(plain[9:], style=style)
    return text


def transcript_path(kind: str) -> Path:
    return Path.home() / f"postern-smtp-{kind}-{time.strftime('%Y%m%d-%H%M%S')}.txt"


class CommandInput(Input):
    """The session's command line: Up and Down recall earlier commands."""

    BINDINGS = [
        Binding("up", "recall(-1)", "Previous command", show=False),
        Binding("down", "recall(1)", "Next command", show=False),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.history: list[str] = []
        self.position = 0

    def remember(self, command: str) -> None:
        if command and (not self.history or self.history[-1] != command):
            self.history.append(command)
        self.position = len(self.history)

    def action_recall(self, delta: int) -> None:
        if not self.history:
            return
        self.position = max(0, min(len(self.history), self.position + delta))
        self.value = self.history[self.position] if self.position < len(self.history) else ""
        self.cursor_position = len(self.value)


def row(label: str, *widgets: Widget, classes: str = "") -> Horizontal:
    return Horizontal(Label(label, classes="smtp-label"), *widgets, classes=f"smtp-row {classes}".strip())


class SmtpTestScreen(Screen):
    BINDINGS = [
        Binding("ctrl+t", "switch_view", "Session/Send", id="smtp.switch"),
        Binding("ctrl+o", "connect", "Connect", id="smtp.connect"),
        Binding("ctrl+g", "send", "Send", id="smtp.send"),
        Binding("ctrl+s", "save", "Save", id="smtp.save"),
        Binding("ctrl+l", "clear", "Clear", id="smtp.clear", show=False),
        Binding("escape", "cancel", "Back", id="smtp.back"),
    ]

    def __init__(self):
        super().__init__()
        self.session: TelnetSession | None = None
        self.session_target = ""
        self.transcripts: dict[str, list[Line]] = {"session-view": [], "send-view": []}
        self.sending: Worker | None = None
        self.saved_path: Path | None = None

    def compose(self) -> ComposeResult:
        yield StatusLine("SMTP test")
        yield Static(id="smtp-views")
        with ContentSwitcher(initial="session-view", id="smtp-switcher"):
            with Vertical(id="session-view"):
                yield row("Server",
                          Input(placeholder="host or address", id="session-host", compact=True),
                          Label("Port", classes="smtp-label-short"),
                          Input("25", id="session-port", compact=True, restrict=r"\d{0,5}", classes="smtp-port"),
                          Choice([(False, "plain"), (True, "TLS on connect")], id="session-tls"))
                yield RichLog(id="session-log", wrap=True, markup=False)
                yield CommandInput(placeholder="SMTP command: Enter sends, Up recalls", id="session-command",
                                   compact=True)
                yield Static(SESSION_IDLE, id="session-notice", classes="smtp-notice")
            with Vertical(id="send-view"):
                with Vertical(id="send-form"):
                    yield row("Server",
                              Input("127.0.0.1", placeholder="host or address", id="send-server", compact=True),
                              Label("Port", classes="smtp-label-short"),
                              Input("25", id="send-port", compact=True, restrict=r"\d{0,5}", classes="smtp-port"),
                              Label("TLS", classes="smtp-label-short"),
                              Choice(list(TLS_MODE_NAMES.items()), "none", id="send-tls"))
                    yield row("AUTH",
                              Choice([("none", "none"), ("plain", "PLAIN"), ("login", "LOGIN")], id="send-auth"),
                              Label("User", classes="smtp-label-short"),
                              Input(placeholder="login", id="send-username", compact=True),
                              Label("Password", classes="smtp-label-mid"),
                              Input(placeholder="password", id="send-password", password=True, compact=True))
                    yield row("From",
                              Input(placeholder="sender (empty: <>)", id="send-sender", compact=True),
                              Label("EHLO", classes="smtp-label-short"),
                              Input(placeholder="name (default: this host)", id="send-helo", compact=True))
                    yield row("To", Input(placeholder="recipients, comma-separated", id="send-to", compact=True))
                    yield row("Subject", Input("Test from Postern", id="send-subject", compact=True))
                    yield row("Headers", TextBox(id="send-headers", compact=True,
                                                  placeholder="extra headers, one per line: X-Test: yes"),
                              classes="smtp-headers")
                    yield row("Body", TextBox("This is a test message sent from the Postern console.",
                                               id="send-body", compact=True), classes="smtp-body")
                yield Static(SEND_IDLE, id="send-notice", classes="smtp-notice")
                yield RichLog(id="send-log", wrap=True, markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._show_views()
        self._auth_allowed()
        self.query_one("#session-host", Input).focus()

    # --- views ------------------------------------------------------------------------------------

    @property
    def view(self) -> str:
        return self.query_one(ContentSwitcher).current or "session-view"

    def _show_views(self) -> None:
        text = Text(" ")
        for view, title in VIEWS.items():
            text.append(f" {title} ", style="reverse bold" if view == self.view else "dim")
            text.append("  ")
        text.append("ctrl+t switches", style="dim")
        self.query_one("#smtp-views", Static).update(text)

    def action_switch_view(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        switcher.current = "send-view" if self.view == "session-view" else "session-view"
        self._show_views()
        first = "#session-command" if self.session and self.view == "session-view" else (
            "#session-host" if self.view == "session-view" else "#send-server")
        self.query_one(first).focus()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "connect":
            return self.view == "session-view"
        if action == "send":
            return self.view == "send-view"
        return True

    def notice(self, view: str, text: str | Text, style: str = "") -> None:
        widget_id = "#session-notice" if view == "session-view" else "#send-notice"
        self.query_one(widget_id, Static).update(Text(text, style=style) if isinstance(text, str) else text)

    def _record(self, view: str, line: Line) -> None:
        self.transcripts[view].append(line)
        log_id = "#session-log" if view == "session-view" else "#send-log"
        self.query_one(log_id, RichLog).write(styled(line))

    def transcript_text(self, view: str) -> str:
        return "\n".join(line.plain() for line in self.transcripts[view])

    # --- the telnet-style session -----------------------------------------------------------------

    def action_connect(self) -> None:
        host = self.query_one("#session-host", Input).value.strip()
        port = self.query_one("#session-port", Input).value.strip()
        if not host or " " in host or any(c in host for c in "\r\n\0"):
            self.notice("session-view", "Name the server: a host name or IP address.", "red")
            self.query_one("#session-host").focus()
            return
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            self.notice("session-view", "The port is a number from 1 to 65535 (25, 465 or 587).", "red")
            self.query_one("#session-port").focus()
            return
        tls = self.query_one("#session-tls", Choice).value
        self.session_target = f"{host}:{port}"
        self.transcripts["session-view"].clear()
        self.query_one("#session-log", RichLog).clear()
        self.notice("session-view", f"Connecting to {self.session_target}...")
        self._run_session(host, int(port), tls)
        self.query_one("#session-command").focus()

    @work(group="smtp-session", exclusive=True)
    async def _run_session(self, host: str, port: int, tls: bool) -> None:
        session = TelnetSession(lambda line: self._session_line(session, line))
        self.session = session
        try:
            await session.run(host, port, tls)
        finally:
            if self.session is session:
                self.session = None
                if self.is_attached:  # not when the console is quitting
                    self.notice("session-view", f"Disconnected from {host}:{port}. " + SESSION_IDLE)

    def _session_line(self, session: TelnetSession, line: Line) -> None:
        if self.session is not session:
            return
        self._record("session-view", line)
        if line.text.startswith("connected to"):
            self.notice("session-view", f"Connected to {self.session_target}: type commands, Esc disconnects.",
                        "green")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("session-host", "session-port"):
            self.action_connect()
        elif event.input.id == "session-command":
            self._send_command(event.input)
        elif event.input.id and event.input.id.startswith("send-"):
            self.focus_next()

    def _send_command(self, field: CommandInput) -> None:
        session = self.session
        if session is None or not session.connected:
            self.notice("session-view", SESSION_IDLE, "red")
            return
        try:
            session.send(field.value)
        except (FieldProblem, SmtpFailure) as error:
            self.notice("session-view", f"Not sent: {error}", "red")
            return
        field.remember(field.value)
        field.value = ""

    # --- the guided test message ------------------------------------------------------------------

    def on_choice_changed(self, event: Choice.Changed) -> None:
        if event.choice.id == "send-tls":
            self._auth_allowed()
            port = self.query_one("#send-port", Input)
            defaults = {"none": "25", "starttls": "587", "tls": "465"}
            if port.value in defaults.values():
                port.value = defaults[event.value]

    def _auth_allowed(self) -> None:
        """AUTH, user and password only with TLS: a password never crosses the network in clear text."""
        over_tls = self.query_one("#send-tls", Choice).value != "none"
        auth = self.query_one("#send-auth", Choice)
        if not over_tls:
            auth.value = "none"
        for selector in ("#send-auth", "#send-username", "#send-password"):
            self.query_one(selector).disabled = not over_tls

    def message(self) -> TestMessage:
        def value(name: str) -> str:
            return self.query_one(f"#send-{name}", Input).value

        return TestMessage(
            server=value("server").strip(), port=value("port").strip(), tls=self.query_one("#send-tls", Choice).value,
            auth=self.query_one("#send-auth", Choice).value, username=value("username"), password=value("password"),
            helo=value("helo").strip(), sender=value("sender").strip(), to=value("to"), subject=value("subject"),
            headers=self.query_one("#send-headers", TextBox).text, body=self.query_one("#send-body", TextBox).text,
        )

    def action_send(self) -> None:
        message = self.message()
        problems = check(message)
        for widget in self.query("#send-form Input, #send-form TextArea"):
            widget.set_class(False, "-invalid")
        if problems:
            for problem in problems:
                for widget in self.query(f"#send-{problem.field}"):
                    widget.add_class("-invalid")
            self.notice("send-view", "Not sent: " + "; ".join(str(p) for p in problems), "red")
            self.query_one(f"#send-{problems[0].field}").focus()
            return
        self.transcripts["send-view"].clear()
        self.query_one("#send-log", RichLog).clear()
        self.notice("send-view", f"Sending to {message.server}:{message.port}...")
        self.sending = self._send(message)

    @work(group="smtp-send", exclusive=True)
    async def _send(self, message: TestMessage) -> None:
        try:
            outcome = await send_test_message(message, lambda line: self._record("send-view", line))
        except asyncio.CancelledError:
            self.notice("send-view", "Cancelled.", "yellow")
            raise
        if outcome.ok:
            self.notice("send-view", outcome.summary[0].upper() + outcome.summary[1:], "green")
        else:
            self.notice("send-view", f"Not sent: {outcome.summary}", "red")

    # --- both --------------------------------------------------------------------------------------

    def action_save(self) -> None:
        view = self.view
        lines = list(self.transcripts[view])
        if not lines:
            self.notice(view, "Nothing to save yet.", "yellow")
            return
        kind = "session" if view == "session-view" else "send"
        self.run_worker(self._save(view, kind, lines), group="smtp-save")

    async def _save(self, view: str, kind: str, lines: list[Line]) -> None:
        path = transcript_path(kind)
        heading = f"# Postern SMTP {kind} transcript, {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
        content = heading + "".join(line.plain() + "\n" for line in lines)
        try:
            await asyncio.to_thread(path.write_text, content, encoding="utf-8")
        except OSError as error:
            self.notice(view, f"Cannot save the transcript to {path}: {error.strerror}", "red")
            return
        self.saved_path = path
        self.notice(view, f"Transcript saved to {path}", "green")

    def action_clear(self) -> None:
        view = self.view
        self.transcripts[view].clear()
        self.query_one("#session-log" if view == "session-view" else "#send-log", RichLog).clear()

    def action_cancel(self) -> None:
        """Esc: end the session or the sending under way; otherwise back to the dashboard."""
        if self.view == "session-view" and self.session is not None:
            self.workers.cancel_group(self, "smtp-session")
            self.session = None
            self.notice("session-view", f"Disconnected from {self.session_target}. " + SESSION_IDLE)
            self.query_one("#session-host").focus()
            return
        if self.view == "send-view" and self.sending is not None and self.sending.is_running:
            self.sending.cancel()
            return
        self.app.switch_mode("dashboard")
