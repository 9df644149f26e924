"""Pilot tests of the SMTP test client against real recording SMTP servers on loopback."""

import email
import email.policy

from appliance.diagnostics.smtp_probe import Line
from console.app import make_app
from console.screens.smtp_test import styled
from tests.console.conftest import text_of, until
from tests.support.scripted_hop import Script, ScriptedHop

NO_RELAY = "/nonexistent/control.sock"  # the SMTP test client needs no relay


def fill(app, **values) -> None:
    """Set the send form's fields (what typing or pasting would leave in them)."""
    for name, value in values.items():
        widget = app.screen.query_one(f"#send-{name}")
        if hasattr(widget, "load_text"):
            widget.load_text(value)
        else:
            widget.value = value


async def open_send_view(pilot, app):
    await pilot.press("f6")
    await until(pilot, lambda: app.screen.__class__.__name__ == "SmtpTestScreen", what="the SMTP screen")
    await pilot.press("ctrl+t")
    await until(pilot, lambda: app.screen.view == "send-view", what="the send view")


async def test_send_a_test_email_with_starttls_and_save_the_transcript(tls_sink, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    app = make_app(NO_RELAY)
    async with app.run_test(size=(80, 25)) as pilot:
        await open_send_view(pilot, app)
        screen = app.screen
        fill(app, server="127.0.0.1", port=str(tls_sink.port), sender="alice@example.net", to="bob@example.com",
             subject="Hello over TLS")
        # TLS: none -> STARTTLS with the arrow key; AUTH becomes available only then.
        assert screen.query_one("#send-auth").disabled
        screen.query_one("#send-tls").focus()
        await pilot.press("right")
        assert screen.query_one("#send-tls").value == "starttls"
        assert not screen.query_one("#send-auth").disabled
        fill(app, port=str(tls_sink.port))
        await pilot.press("ctrl+g")
        await until(pilot, lambda: "Sent" in text_of(app, "#send-notice"), what="the message sent")
        [received] = tls_sink.wait_for(1)
        assert received.tls and received.recipients == ["bob@example.com"]
        transcript = screen.transcript_text("send-view")
        for expected in ("<- 220", "-> STARTTLS", "TLS started", "certificate subject CN=gw.example.com",
                         "not verified", "-> MAIL FROM:<alice@example.net>", "<- 250 2.1.5 Ok", "<- 354",
                         "-> Subject: Hello over TLS", "<- 250 2.0.0 Ok: recorded", "-> QUIT", "<- 221"):
            assert expected in transcript, expected
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "Transcript saved to" in text_of(app, "#send-notice"), what="the file saved")
        saved = screen.saved_path
        assert saved.parent == tmp_path and str(saved) in text_of(app, "#send-notice")
        assert "<- 250 2.0.0 Ok: recorded" in saved.read_text()


async def test_line_breaks_in_fields_never_reach_the_wire(sink):
    app = make_app(NO_RELAY)
    async with app.run_test(size=(80, 25)) as pilot:
        await open_send_view(pilot, app)
        screen = app.screen
        fill(app, server="127.0.0.1", port=str(sink.port), sender="alice@example.net",
             to="bob@example.com\r\nRCPT TO:<victim@example.org>", subject="Hi\r\nBcc: victim@example.org")
        await pilot.press("ctrl+g")
        await until(pilot, lambda: "Not sent" in text_of(app, "#send-notice"), what="the refusal")
        notice = text_of(app, "#send-notice")
        assert "subject: line breaks are not allowed" in notice and "to: line breaks" in notice
        assert screen.query_one("#send-subject").has_class("-invalid")
        assert sink.connections == 0 and not sink.messages

        # Fixed fields; the multi-line fields try to smuggle commands, and each line is only what it says.
        fill(app, to="bob@example.com", subject="Hi", headers="X-Test: yes\nX-Second: two",
             body="first line\n.\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.org>\rDATA\n.hidden\nlast")
        await pilot.press("ctrl+g")
        await until(pilot, lambda: "Sent" in text_of(app, "#send-notice"), what="the message sent")
        [received] = sink.wait_for(1)
        await pilot.pause(0.3)
        assert len(sink.messages) == 1 and sink.connections == 1
        assert received.sender == "alice@example.net" and received.recipients == ["bob@example.com"]
        parsed = email.message_from_bytes(received.content, policy=email.policy.SMTP)
        assert list(parsed.keys()) == ["Date", "From", "To", "Subject", "Message-ID", "MIME-Version", "Content-Type",
                                       "Content-Transfer-Encoding", "X-Mailer", "X-Test", "X-Second"]
        assert parsed["Subject"] == "Hi" and parsed["To"] == "bob@example.com" and parsed["X-Test"] == "yes"
        assert parsed.get_content().splitlines() == [
            "first line", ".", "MAIL FROM:<evil@example.org>", "RCPT TO:<victim@example.org>", "DATA", ".hidden",
            "last"]
        transcript = screen.transcript_text("send-view")
        assert "-> .." in transcript and "-> ..hidden" in transcript  # dot-stuffed on the wire


async def test_telnet_style_session_with_starttls(tls_sink, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    app = make_app(NO_RELAY)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f6")
        await until(pilot, lambda: app.screen.__class__.__name__ == "SmtpTestScreen", what="the SMTP screen")
        screen = app.screen
        await pilot.press(*"127.0.0.1", "tab", "backspace", "backspace", *str(tls_sink.port), "enter")
        await until(pilot, lambda: "<- 220 " in screen.transcript_text("session-view"), what="the greeting")
        assert "Connected to" in text_of(app, "#session-notice")
        assert screen.query_one("#session-command").has_focus

        async def command(line: str, answer: str, typed: bool = False) -> None:
            if typed:
                await pilot.press(*line, "enter")
            else:
                screen.query_one("#session-command").value = line
                await pilot.press("enter")
            await until(pilot, lambda: answer in screen.transcript_text("session-view").rpartition(f"-> {line}")[2],
                        what=f"the answer to {line!r}")

        await command("EHLO test", "<- 250 HELP", typed=True)
        await command("STARTTLS", "EHLO again: the server forgets what it knew before TLS")
        transcript = screen.transcript_text("session-view")
        assert "<- 220 Ready to start TLS" in transcript and "certificate subject CN=gw.example.com" in transcript
        await command("EHLO test", "<- 250 HELP")
        await command("MAIL FROM:<alice@example.net>", "<- 250 OK")
        await command("RCPT TO:<bob@example.com>", "<- 250 2.1.5 Ok")
        await command("DATA", "<- 354 End data with <CR><LF>.<CR><LF>")
        for line in ("Subject: typed by hand", "", "Hello."):
            screen.query_one("#session-command").value = line
            await pilot.press("enter")
        await command(".", "<- 250 2.0.0 Ok: recorded")
        await command("QUIT", "the server closed the connection")
        [received] = tls_sink.wait_for(1)
        assert received.tls and received.recipients == ["bob@example.com"]
        assert received.content == b"Subject: typed by hand\r\n\r\nHello.\r\n"
        await until(pilot, lambda: "Disconnected" in text_of(app, "#session-notice"), what="the session ended")
        # Every server line carries its timing; the transcript goes to a file.
        assert all(line.elapsed is not None for line in screen.transcripts["session-view"] if line.kind == "server")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "Transcript saved to" in text_of(app, "#session-notice"), what="the file")
        assert "-> RCPT TO:<bob@example.com>" in screen.saved_path.read_text()
        # Up recalls the last command; Escape (not connected) goes back to the dashboard.
        await pilot.press("up")
        assert screen.query_one("#session-command").value == "QUIT"
        await pilot.press("escape")
        await until(pilot, lambda: app.current_mode == "dashboard", what="the dashboard")


async def test_session_reports_a_server_that_is_not_there():
    from tests.support.net import free_port

    app = make_app(NO_RELAY)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f6")
        await until(pilot, lambda: app.screen.__class__.__name__ == "SmtpTestScreen", what="the SMTP screen")
        screen = app.screen
        screen.query_one("#session-host").value = "127.0.0.1"
        screen.query_one("#session-port").value = str(free_port())
        await pilot.press("ctrl+o")
        await until(pilot, lambda: "connection refused" in screen.transcript_text("session-view"), what="refused")
        await until(pilot, lambda: "Disconnected" in text_of(app, "#session-notice"), what="the notice")
        screen.query_one("#session-command").value = "EHLO x"
        await pilot.press("enter")
        assert "Not connected" in text_of(app, "#session-notice")


async def test_both_views_take_an_ipv6_literal_in_brackets_and_quote_a_refusing_greeting():
    hop = ScriptedHop(Script(greeting="554 5.7.1 no mail from you"), host="::1").start()
    refusal = f"[::1]:{hop.port} takes no mail now: it greets with 554 5.7.1 no mail from you"
    try:
        app = make_app(NO_RELAY)
        async with app.run_test(size=(80, 25)) as pilot:
            await pilot.press("f6")
            await until(pilot, lambda: app.screen.__class__.__name__ == "SmtpTestScreen", what="the SMTP screen")
            screen = app.screen
            screen.query_one("#session-host").value = "[::1]"
            screen.query_one("#session-port").value = str(hop.port)
            await pilot.press("ctrl+o")
            await until(pilot, lambda: "<- 554 5.7.1" in screen.transcript_text("session-view"), what="the greeting")
            assert f"connected to ::1 port {hop.port}" in screen.transcript_text("session-view")
            await pilot.press("escape")  # the server keeps the line open after its 554: hang up
            await until(pilot, lambda: "Disconnected" in text_of(app, "#session-notice"), what="the hang-up")
            await pilot.press("ctrl+t")
            fill(app, server="[::1]", port=str(hop.port), to="bob@example.com")
            await pilot.press("ctrl+g")
            await until(pilot, lambda: refusal in text_of(app, "#send-notice"), what="the refusal")
            assert "-> QUIT" in screen.transcript_text("send-view")
    finally:
        hop.stop()


async def test_quitting_the_console_during_a_session_ends_it_quietly(sink):
    app = make_app(NO_RELAY)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f6")
        await until(pilot, lambda: app.screen.__class__.__name__ == "SmtpTestScreen", what="the SMTP screen")
        screen = app.screen
        screen.query_one("#session-host").value = "127.0.0.1"
        screen.query_one("#session-port").value = str(sink.port)
        await pilot.press("ctrl+o")
        await until(pilot, lambda: "<- 220 " in screen.transcript_text("session-view"), what="the greeting")
    # leaving run_test shuts the app down with the session still open: no error from its worker


def test_replies_are_coloured_by_class():
    colours = {text: str(styled(Line("server", text, 0.0, 0.01)).spans[-1].style)
               for text in ("250 ok", "354 go on", "451 later", "550 no")}
    assert colours == {"250 ok": "green", "354 go on": "cyan", "451 later": "yellow", "550 no": "bold red"}
    assert str(styled(Line("client", "EHLO x", 0.0)).spans[-1].style) == "bold"
