"""The first screen: is mail flowing? Host, relay, queue, traffic, recent log, disk and memory."""

from __future__ import annotations

import collections
import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.geometry import Size
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Static
from textual.worker import Worker

from appliance.security_updates import age_words, read_state
from relay.printable import printable
from relay.queue.query import age_text

from ..host import HostFacts, read_facts
from ..messages import HostFactsRead, RelayStatus
from ..warnings import CRITICAL, SAMPLE_INTERVAL, History, Warning, warnings
from ..widgets.status_line import StatusLine
from .logs import styled

RECENT_LINES = 6
HOST_INTERVAL = 5.0  # seconds between readings of the host's facts
TICK = 1.0  # seconds between redraws of the ages and rates, which change without a word from the relay


def panel(title: str, widget_id: str) -> Static:
    widget = Static(id=widget_id, classes="panel")
    widget.border_title = title
    return widget


def relay_text(status: dict | None, problem: str) -> Text:
    if status is None:
        return Text(f"{problem or 'not running'}\nThe console keeps trying to reach it.", style="red")
    text = Text()
    text.append("running", style="bold green")
    text.append(f"  {status['version']}, up {age_text(status['uptime'])}\n")
    if status.get("loading"):
        loading = status["loading"]
        text.append(f"Loading the queue: {loading['loaded']:,} of {loading['total']:,}\n", style="yellow")
    text.append(f"Listening  {', '.join(status['listeners']) or 'nowhere'}\n")
    text.append(f"STARTTLS   {'on' if status['tls'] else 'off'}\n")
    for error in latest_errors(status["last_errors"]):
        text.append(f"Last error {error['destination']}:\n", style="bold")
        text.append(f" {printable(error['reply'])}\n", style="yellow")  # a next hop chose it
    return text


def latest_errors(errors: list[dict], count: int = 2) -> list[dict]:
    """The `count` latest next-hop errors, newest first, one per destination as the panel names it
    (two next hops on one host and port, such as both relays pointed at one server, are one line)."""
    shown: dict[str, dict] = {}
    for error in sorted(errors, key=lambda error: -error["time"]):
        shown.setdefault(error["destination"], error)
    return list(shown.values())[:count]


def queue_text(status: dict | None) -> Text:
    if status is None:
        return Text("-", style="dim")
    queue = status["queue"]
    text = Text()
    text.append(f"Total     {queue['total']:>7}\n", style="bold")
    text.append(f"Active    {queue['active']:>7}\n")
    text.append(f"Deferred  {queue['deferred']:>7}\n", style="yellow" if queue["deferred"] else "")
    text.append(f"Hold      {queue['hold']:>7}\n", style="magenta" if queue["hold"] else "")
    text.append(f"Oldest    {age_text(status['oldest_age']):>7}")
    if queue["corrupt"]:
        text.append(f"\nDamaged   {queue['corrupt']:>7}", style="bold red")
    return text


def aged(status: dict, seconds: float) -> dict:
    """The status as it stands `seconds` after the relay sent it: the relay has been up longer, and
    the oldest message is older. The relay sends a status only when something changes."""
    status = {**status, "uptime": status["uptime"] + seconds}
    if status["oldest_age"] is not None:
        status["oldest_age"] += seconds
    return status


class TrafficRate:
    """Messages per minute from successive counter readings."""

    def __init__(self):
        self.samples: collections.deque[tuple[float, int, int]] = collections.deque()
        self.uptime = 0.0

    def add(self, status: dict, now: float | None = None) -> tuple[float, float]:
        """Messages received and delivered during the last minute."""
        now = time.monotonic() if now is None else now
        counters = status["counters"]
        if self.samples and (status["uptime"] < self.uptime - 1 or counters["received"] < self.samples[-1][1]
                             or counters["delivered"] < self.samples[-1][2]):
            self.samples.clear()  # the relay restarted: its counters began again at zero
        self.uptime = status["uptime"]
        self.samples.append((now, counters["received"], counters["delivered"]))
        while now - self.samples[0][0] > 60:
            self.samples.popleft()
        first = self.samples[0]
        return float(counters["received"] - first[1]), float(counters["delivered"] - first[2])


def traffic_text(status: dict | None, rates: tuple[float, float]) -> Text:
    if status is None:
        return Text("-", style="dim")
    c = status["counters"]
    text = Text()
    text.append(f"Received  {c['received']:>7}   {rates[0]:6.1f}/min\n")
    text.append(f"Delivered {c['delivered']:>7}   {rates[1]:6.1f}/min\n", style="green")
    text.append(f"Deferred  {c['deferred']:>7}\n", style="yellow" if c["deferred"] else "")
    text.append(f"Bounced   {c['bounced']:>7}\n", style="red" if c["bounced"] else "")
    text.append(f"Rejected  {c['rejected']:>7}")
    return text


def host_text(facts: HostFacts) -> Text:
    text = Text()
    text.append(f"{facts.hostname}\n", style="bold")
    for address in facts.addresses[:3]:
        text.append(f"{address}\n")
    text.append(f"Disk {facts.disk_used_percent:.0f}% used, {facts.disk_free_gb:.1f} GB free\n")
    text.append(f"Memory {facts.memory_used_percent:.0f}% used, load {facts.load:.2f}")
    updates = facts.security_updates
    if updates is not None and updates.installed and updates.enabled:
        # When they last ran fits the panel; what they did is on the System screen.
        failed = updates.last_outcome.startswith("failed")
        when = f"{'failed' if failed else 'ran'} {age_words(updates.last_run)}" if updates.last_run else "not run yet"
        text.append(f"\nSecurity updates {when}", style="yellow" if failed else "")
    if updates is not None and updates.reboot_required:
        count = len(updates.reboot_packages)
        text.append(f"\nReboot needed ({count} security update{'s' if count != 1 else ''})" if count
                    else "\nReboot needed", style="yellow")
    if updates is not None and updates.installed and not updates.enabled:
        text.append("\nSecurity updates off", style="yellow")
    return text


class KeyLine(Widget):
    """Where each key goes: the areas' F-keys, the palette, quitting. The footer has room only for the
    current screen's own keys. Lines break between keys, never inside one."""

    GAP = 2

    def keys(self) -> list[tuple[str, str]]:
        app = self.app
        return [(app.get_key_display(Binding(b.key.split(",")[0], b.action)), b.description) for b in app.BINDINGS
                if b.id and b.id.split(".")[0] in ("area", "app") and b.id != "app.keys"
                and app.check_action(b.action, ())]

    def lines(self, width: int) -> list[Text]:
        lines = [Text()]
        for key, title in self.keys():
            if lines[-1] and lines[-1].cell_len + self.GAP + len(key) + 1 + len(title) > width:
                lines.append(Text())
            if lines[-1]:
                lines[-1].append(" " * self.GAP)
            lines[-1].append(key, style="bold reverse")
            lines[-1].append(f" {title}")
        return lines

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.lines(width))

    def render(self) -> Text:
        return Text("\n").join(self.lines(self.content_size.width))


class WarningsPanel(Widget):
    """The alert rules' verdicts (console/warnings.py): each warning in its severity's colour, what to do on the
    line under it. When the rows run short, the last warnings lose their fix line first, then the rest are
    counted: every warning keeps at least its count on screen. Hidden when all is well."""

    def __init__(self):
        super().__init__(id="warnings", classes="panel")
        self.border_title = "Warnings"
        self.found: list[Warning] = []

    def show(self, found: list[Warning]) -> None:
        self.found = found
        self.display = bool(found)
        self.set_class(any(warning.severity == CRITICAL for warning in found), "critical")
        self.refresh(layout=True)

    def lines(self, rows: int) -> list[Text]:
        lines: list[Text] = []
        for index, warning in enumerate(self.found):
            later = len(self.found) - index - 1
            if later and len(lines) + 2 > rows:  # room for this one's line and a count of the rest: no more
                lines.append(Text(f"and {later + 1} more", style="bold"))
                break
            lines.append(Text(warning.text, style="bold red" if warning.severity == CRITICAL else "yellow"))
            if len(lines) + 1 + later <= rows:
                lines.append(Text(warning.fix))
        return lines

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return 2 * len(self.found)

    def render(self) -> Text:
        return Text("\n").join(self.lines(self.content_size.height or 2 * len(self.found)))


class DashboardScreen(Screen):
    # Under 30 rows there is no room for both the warnings and the recent log: the warnings take its place.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]

    def __init__(self):
        super().__init__()
        self.rate = TrafficRate()
        self.recent: collections.deque[str] = collections.deque(maxlen=RECENT_LINES)
        self.host_reading: Worker | None = None
        self.history = History()  # the relay's status once a minute, for the warnings that look back
        self.figures: tuple[float, dict] | None = None  # (when, the disk and certificates) read by read_figures

    def compose(self) -> ComposeResult:
        yield StatusLine("Dashboard")
        with Grid(id="dashboard"):
            yield panel("System", "system")
            yield panel("Relay", "relay")
            yield panel("Queue", "queue")
            yield panel("Traffic", "traffic")
        yield WarningsPanel()
        yield panel("Recent log", "recent")
        yield KeyLine(id="areas")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.show_status(self.app.relay_status, self.app.relay_problem)
        self.query_one("#system", Static).update(Text("Reading...", style="dim"))
        self.refresh_host()
        self.set_interval(HOST_INTERVAL, self.refresh_host)
        self.set_interval(TICK, self.tick)
        self.set_interval(SAMPLE_INTERVAL, self.read_figures)
        self.run_worker(self.app.link.follow("io.postern.Log.Tail", self._show_log, self._log_failed, lines=RECENT_LINES),
                        group="dashboard-log", exclusive=True)

    def on_relay_status(self, message: RelayStatus) -> None:
        self.show_status(message.status, message.problem)

    def on_screen_resume(self) -> None:
        self.show_status(self.app.relay_status, self.app.relay_problem)

    def tick(self) -> None:
        if self.app.relay_status is not None:
            self.show_status(self.app.relay_status, self.app.relay_problem)

    def show_status(self, status: dict | None, problem: str) -> None:
        if status is not None:
            status = aged(status, time.monotonic() - self.app.relay_status_at)
        rates = self.rate.add(status) if status else (0.0, 0.0)
        relay = self.query_one("#relay", Static)
        relay.set_class(status is None, "down")
        relay.update(relay_text(status, problem))
        self.query_one("#queue", Static).update(queue_text(status))
        self.query_one("#traffic", Static).update(traffic_text(status, rates))
        self.show_warnings(status)

    def show_warnings(self, status: dict | None) -> None:
        """The alert rules' verdicts (console/warnings.py) on this status and the readings before it."""
        if status is not None and self.figures and self.figures[0] > self.app.relay_status_at:
            status = {**status, **self.figures[1]}
        if status is not None:
            self.history.add(status, status["started"] + status["uptime"])
        found = warnings(status, self.history)
        self.query_one(WarningsPanel).show(found)
        self.set_class(bool(found), "-warned")

    @work(group="dashboard-figures", exclusive=True, exit_on_error=False)
    async def read_figures(self) -> None:
        """The disk and the certificates again: the relay sends its status when the queue or the configuration
        changes, and an idle relay's disk may fill with other files, its certificate be renewed in place."""
        answer = await self.app.link.attempt("io.postern.Status.Get", lambda words: None)
        if answer is not None:
            status = answer["status"]
            self.figures = (time.monotonic(), {"disk": status.get("disk"), "certificates": status.get("certificates")})

    def refresh_host(self) -> None:
        """One reading at a time: while the resolver keeps one waiting, the next is not started."""
        if self.host_reading is None or self.host_reading.is_finished:
            self.host_reading = self.read_host()

    @work(thread=True, group="dashboard-host", name="Reading the host", exit_on_error=False)
    def read_host(self) -> None:
        facts = read_facts()
        facts.security_updates = read_state(self.app.appliance.root)
        self.post_message(HostFactsRead(facts))

    def on_host_facts_read(self, message: HostFactsRead) -> None:
        self.query_one("#system", Static).update(host_text(message.facts))

    def _show_log(self, answer: dict) -> None:
        self.recent.extend(line["text"] for line in answer["lines"])
        text = Text(no_wrap=True, overflow="ellipsis")
        for index, line in enumerate(self.recent):
            text.append_text(styled(line[11:] if line[:4].isdigit() else line))
            if index < len(self.recent) - 1:
                text.append("\n")
        self.query_one("#recent", Static).update(text)

    def _log_failed(self, words: str) -> None:
        self.query_one("#recent", Static).update(Text(words, style="dim"))
