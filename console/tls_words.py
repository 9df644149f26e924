"""The relay's transport security answers (io.postern.Tls) in an admin's words, without any user interface.

The Transport security view and the Diagnostics next-hop check both show what the relay
says about a destination: the counts of the last 24 hours, the policy in force, and what
a delivery would do now. They say it the same way because they say it with these functions.
"""

from __future__ import annotations

import time

from rich.text import Text

from relay.printable import printable
from relay.queue.query import age_text

# (Summary key, column heading): what the connections to a destination achieved, best first.
COLUMNS = (("dane", "DANE"), ("mta_sts", "MTA-STS"), ("verified", "Verified"), ("unverified", "Unverified"),
           ("plain", "Plain"), ("failed", "Failed"))
SHORT_HEADINGS = {"unverified": "Unverif."}  # where the columns must be narrow (80 columns)
NAME_MIN = 16

# What each level asks of a connection, as relay/tls_policy.py describes them.
LEVELS = {
    "none": "never TLS",
    "may": "TLS when offered, any certificate; else plain text",
    "encrypt": "TLS or no delivery; any certificate",
    "dane": "DANE where the domain publishes it (DNSSEC), else its MTA-STS policy, else as may",
    "dane-only": "DANE or no delivery",
    "verify": "TLS with a trusted certificate carrying the host's name (or a match name), or no delivery",
    "secure": "TLS with a trusted certificate for the domain or a name below it, or no delivery",
}

# What a connection that would deliver gets (HostCheck.security).
SECURITY = {
    "dane": "DANE",
    "mta-sts": "MTA-STS (verified TLS)",
    "verified": "verified TLS",
    "unverified": "TLS (certificate not checked)",
    "plain": "no TLS (plain text)",
}


def traffic(row: dict) -> int:
    return sum(row[key] for key, _ in COLUMNS)


def table_layout(width: int) -> tuple[int, int, dict[str, str]]:
    """(domain columns, count columns, headings) for a table `width` wide: counts get 10 columns
    where that leaves the domain room, else 8 with shorter headings."""
    for count_width, headings in ((10, {}), (8, SHORT_HEADINGS)):
        name_cols = width - len(COLUMNS) * (count_width + 1)
        if name_cols >= 30 or count_width == 8:
            return max(NAME_MIN, name_cols), count_width, headings
    raise AssertionError("unreachable")


def table_header(width: int) -> Text:
    name_cols, count_width, headings = table_layout(width)
    line = f"{'DESTINATION':{name_cols}}" + "".join(
        f" {headings.get(key, heading):>{count_width}}" for key, heading in COLUMNS)
    return Text(line, style="bold", no_wrap=True)


def table_row(row: dict, width: int) -> Text:
    """One destination: failures in red (or yellow when none stopped the mail: an MTA-STS policy in
    testing), a destination without traffic dimmed (it has a tls_policy entry, but no mail went)."""
    name_cols, count_width, _ = table_layout(width)
    name = printable(row["domain"])
    shown = name if len(name) <= name_cols else name[: name_cols - 1] + "…"
    quiet = traffic(row) == 0
    text = Text(f"{shown:{name_cols}}", style="dim" if quiet else ("bold red" if row["failed"] else ""),
                no_wrap=True)
    for key, _ in COLUMNS:
        count = row[key]
        style = "dim" if not count else ("bold red" if key == "failed" else "")
        if key == "failed" and not count and row.get("failures"):
            style = "yellow"
        text.append(f" {count:>{count_width}}", style=style)
    return text


def empty_row(domain: str) -> dict:
    """A destination no mail went to in the period (shown for its tls_policy entry)."""
    return {"domain": domain, **{key: 0 for key, _ in COLUMNS}, "failures": []}


def rows_with_entries(domains: list[dict], entries: dict) -> list[dict]:
    """The Summary's rows, busiest first, then each tls_policy entry that had no mail."""
    seen = {row["domain"] for row in domains}
    return list(domains) + [empty_row(key) for key in sorted(entries) if key not in seen]


def counts_line(row: dict) -> Text:
    text = Text()
    for key, heading in COLUMNS:
        count = row[key]
        style = "bold red" if key == "failed" and count else ("" if count else "dim")
        text.append(f"{heading} {count}", style=style)
        text.append("  ")
    text.rstrip()
    return text


def failure_lines(row: dict, indent: str = "  ") -> list[Text]:
    """Why connections failed: '3x certificate-not-trusted at mx.partner.org: <detail>'."""
    lines = []
    for failure in row.get("failures", []):
        where = f" at {printable(failure['mx_host'])}" if failure["mx_host"] else ""
        text = Text(f"{indent}{failure['count']}x {failure['result_type']}{where}",
                    style="bold red" if row["failed"] else "yellow")
        if failure["detail"]:
            text.append(f": {printable(failure['detail'])}")
        lines.append(text)
    return lines


def source_words(source: str) -> str:
    if source.startswith("tls_policy "):
        return f"the tls_policy entry {source.split(' ', 1)[1]}"
    return {"external_relay.tls": "external_relay.tls (the default for other mail)",
            "internal_relay.tls": "internal_relay.tls (mail for the relay domains)"}.get(source, source)


def when(timestamp: float, now: float) -> str:
    moment = time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))
    left = timestamp - now
    return f"{moment} (in {age_text(left)})" if left > 0 else f"{moment} ({age_text(-left)} ago)"


def covering_entry(domain: str, entries: dict) -> str:
    """The key of the tls_policy entry for a domain: its own, else the nearest .parent ("" if none),
    found as the relay finds it."""
    from relay.config import MtaConfig

    return MtaConfig(tls_policy=entries).tls_policy_domain(domain) if entries else ""


def policy_lines(policy: dict, now: float | None = None, entries: dict | None = None) -> list[Text]:
    """The policy in force for a domain (Tls.Policy): where its mail goes, the level and where it comes
    from, the certificate names, and MTA-STS: whether it applies, the cached policy, the last error.
    `entries` (the tls_policy table) lets it say when the domain's entry does not apply."""
    entries = entries or {}
    now = time.time() if now is None else now
    domain = printable(policy["domain"])
    hop = printable(policy["next_hop"])
    direct = hop.split(":")[0] == domain
    lines = [Text(f"Next hop   {'the MX hosts of ' + domain if direct else 'the relay host ' + hop}")]
    level = Text("TLS level  ")
    level.append(policy["level"], style="bold")
    level.append(f", from {source_words(policy['source'])}")
    lines.append(level)
    if policy["level"] in LEVELS:
        lines.append(Text(f"           {LEVELS[policy['level']]}", style="dim"))
    if policy["match"]:
        names = ", ".join(map(printable, policy["match"]))
        lines.append(Text(f"Names      the certificate must carry one of: {names}"))
    entry = covering_entry(domain, entries)
    if entry and not policy["source"].startswith("tls_policy "):
        lines.append(Text(f"           the tls_policy entry {entry} does not apply: mail to {domain} goes to a relay "
                          "host, which follows its own tls (MTA settings, F4)", style="yellow"))
    sts = policy.get("sts")
    if policy["mta_sts"]:
        lines.append(Text("MTA-STS    applies" + ("" if sts else ": no policy cached (none published, or not yet "
                                                              "fetched)")))
    elif policy["source"].startswith("tls_policy "):
        lines.append(Text("MTA-STS    does not apply: the tls_policy entry overrides it", style="dim"))
    elif not direct:
        lines.append(Text("MTA-STS    does not apply: mail goes to a relay host", style="dim"))
    else:
        lines.append(Text(f"MTA-STS    does not apply at level {policy['level']}", style="dim"))
    if sts:
        mode_style = "bold" if sts["mode"] == "enforce" else ("yellow" if sts["mode"] == "testing" else "dim")
        cached = Text("           cached policy: mode ")
        cached.append(sts["mode"], style=mode_style)
        cached.append(f", MX {', '.join(map(printable, sts['mx'])) or '(none)'}")
        lines.append(cached)
        lines.append(Text(f"           expires {when(sts['expires'], now)}",
                          style="yellow" if sts["expires"] <= now else ""))
    if policy.get("sts_error"):
        lines.append(Text(f"           last fetch failed: {printable(policy['sts_error'])}", style="yellow"))
    return lines


def verdict_text(host: dict) -> Text:
    """One host of a Tls.Check: 'mx.partner.org[192.0.2.25]:25: would deliver with verified TLS', or
    'would defer: <why>' where the policy in force refuses it."""
    where = printable(host["address"] or host["host"])
    verdict, detail = host["verdict"], printable(host["detail"])
    if verdict == "deliver":
        text = Text(f"{where}: ")
        text.append(f"would deliver with {SECURITY.get(host['security'], host['security'])}", style="bold green")
        if detail:
            text.append(f" ({detail})", style="dim")
        return text
    words = {"refuse": ("would defer", "bold red"), "defer": ("would defer", "bold red"),
             "bounce": ("would bounce", "bold red"), "unreachable": ("unreachable", "yellow")}
    said, style = words.get(verdict, (verdict, "yellow"))
    text = Text(f"{where}: ")
    text.append(said, style=style)
    if detail:
        text.append(f": {detail}")
    return text


def check_lines(answer: dict, indent: str = "  ") -> list[Text]:
    """A Tls.Check answer: each host's verdict, then what it comes to for the domain."""
    hosts = answer["hosts"]
    lines = []
    for host in hosts:
        lines.append(Text(indent) + verdict_text(host))
        lines += [Text(f"{indent}  TLSA {printable(record)}", style="dim") for record in host.get("tlsa", [])]
    domain = printable(answer["policy"]["domain"])
    if any(host["verdict"] == "deliver" for host in hosts):
        lines.append(Text(f"{indent}Mail to {domain} would be delivered now.", style="bold green"))
    elif any(host["verdict"] == "bounce" for host in hosts):
        lines.append(Text(f"{indent}Mail to {domain} would bounce.", style="bold red"))
    else:
        lines.append(Text(f"{indent}Mail to {domain} would defer: it waits in the queue.", style="bold red"))
    return lines


def hang_of(plain: str) -> int:
    """Where a line's continuation lines start: under the value of a labelled line ('TLS level  verify'),
    under an indented line's own text, two further in for the items of a list."""
    if plain[:1] != " " and plain[9:11] == "  ":
        return 11
    leading = len(plain) - len(plain.lstrip(" "))
    return leading if leading >= 11 else leading + 2


def hanging(lines: list[Text], width: int, console) -> Text:
    """The lines as one text `width` wide, each wrapped under itself rather than at the left edge."""
    out = Text()
    for number, line in enumerate(lines):
        if number:
            out.append("\n")
        hang = hang_of(line.plain)
        if width <= hang + 10 or line.cell_len <= width:
            out.append_text(line)
            continue
        first, *rest = line.wrap(console, width - hang)
        out.append_text(first)
        for part in rest:
            out.append("\n" + " " * hang)
            out.append_text(part)
    return out
