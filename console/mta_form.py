"""The MTA settings form, without any user interface: which fields, their text, the diff, the problems.

The form is built from data: the running `mta` section (io.postern.Config.Get) and
relay.config.MTA_FIELDS. A key this module has no words for still gets a field
(its name as the label); a value of a shape it does not know is edited as YAML
text. So keys added to the relay later show up without a change here.
"""

from __future__ import annotations

import copy
import inspect
import re
from dataclasses import dataclass
from typing import Any

import yaml

from relay.config import MTA_FIELDS, MtaConfig, check_bool, check_duration, parse_mta, to_dict

# label, one-line help: the words admins know from the MTA settings pages of other mail gateways.
WORDS: dict[str, tuple[str, str]] = {
    "hostname": ("My hostname", "the internet hostname of this mail system"),
    "helo_name": ("SMTP HELO name", "name sent in EHLO when delivering; empty: My hostname"),
    "banner": ("Banner", "the text after the hostname in the 220 greeting"),
    "listen": ("Listen on", "address:port to receive mail on, one per line"),
    "relay_domains": ("Relay domains", "domains this system relays mail to, one per line"),
    "match_subdomains": ("Match subdomains", "subdomains of the relay domains match too"),
    "my_networks": ("My networks", "trusted clients allowed to relay out, one per line"),
    "internal_relay": ("Internal relay host", "next hop for mail to the relay domains (the internal mail server)"),
    "external_relay": ("External relay host", "next hop for other mail; empty host: direct delivery by MX"),
    "message_size_limit": ("Message size limit", "the largest message accepted, in bytes"),
    "header_size_limit": ("Header size limit", "longest header field kept, in bytes; the rest is cut"),
    "recipient_limit": ("Recipient limit", "most recipients accepted for one message"),
    "hopcount_limit": ("Hop count limit", "most Received: headers before mail counts as looping"),
    "max_connections": ("Max connections", "most SMTP clients served at once"),
    "client_connection_count_limit": ("Connections per client", "most sessions one address may hold; 0: no limit"),
    "client_connection_rate_limit": ("Connection rate per client", "most connections per minute from one address; 0: off"),
    "idle_timeout": ("Idle timeout", "drop a client silent this long (seconds, or 5m, 1h)"),
    "session_timeout": ("Session timeout", "the longest one SMTP session may last"),
    "junk_command_limit": ("Junk command limit", "most useless commands before hanging up"),
    "dns_servers": ("DNS servers", "resolvers for MX lookups, one per line; empty: system"),
    "tls": ("TLS (receiving)", "the certificate this system offers with STARTTLS"),
    "tls.cert_file": ("Certificate file", "PEM certificate chain; empty: no STARTTLS"),
    "tls.key_file": ("Key file", "the certificate's private key (PEM)"),
    "tls.inbound": ("Inbound TLS", "may: offer STARTTLS; require: refuse mail without it"),
    "tls.client_cert_file": ("Client certificate", "shown to next hops that ask for one"),
    "tls.client_key_file": ("Client key file", "the client certificate's private key"),
    "tls.ca_file": ("CA file", "CAs trusted for tls: verify; empty: the system's"),
    "queue": ("Queue", "when deferred mail is tried again, and for how long"),
    "queue.minimal_backoff_time": ("Minimal backoff", "shortest wait before trying deferred mail again"),
    "queue.maximal_backoff_time": ("Maximal backoff", "longest wait between two tries"),
    "queue.maximal_queue_lifetime": ("Queue lifetime", "bounce mail still not delivered after this long"),
    "queue.delay_warning_time": ("Delay warning", "tell the sender once mail waits this long; 0: never"),
    "delivery": ("Delivery", "how the relay talks to next hops"),
    "delivery.destination_concurrency_limit": ("Concurrency limit", "most deliveries at once to one destination"),
    "delivery.connect_timeout": ("Connect timeout", "give up connecting to a next hop after this long"),
    "delivery.command_timeout": ("Command timeout", "give up on a next hop silent this long"),
    "delivery.data_init_timeout": ("DATA timeout", "wait this long for the reply to DATA"),
    "delivery.data_xfer_timeout": ("Transfer timeout", "give up when one write of a message stalls this long"),
    "delivery.data_done_timeout": ("Final-dot timeout", "wait this long for the reply after the message"),
    "smtps_listen": ("SMTPS listen", "address:port for TLS on connect (465), one per line"),
    "m365": ("Microsoft 365", "Exchange Online tenants that may relay out through this system"),
    "m365.tenant_ids": ("Tenant IDs", "tenant GUIDs allowed to relay out, one per line"),
    "m365.networks": ("Exchange networks", "Exchange Online's outbound ranges, one per line"),
    "reject_unverified_recipient": ("Reject unverified recipient",
                                    "ask the internal server whether a recipient exists first"),
    "reject_unverified_recipient.enabled": ("Enabled", "refuse recipients the internal server does not know"),
    "reject_unverified_recipient.code": ("Reject code", "450 (try later) while testing, 550 once it works"),
    "reject_unverified_recipient.positive_expire_time": ("Known for", "how long a valid recipient is remembered"),
    "reject_unverified_recipient.negative_expire_time": ("Unknown for", "how long an invalid one is remembered"),
    "marker": ("Loop marker", "a header on relayed mail that shows a loop"),
    "marker.enabled": ("Enabled", "add the header; refuse mail carrying it too often"),
    "marker.header": ("Header", "the marker's header name"),
    "marker.value": ("Value", "the marker's value; empty: My hostname"),
    "marker.loop_limit": ("Loop limit", "this many markers mean the message loops"),
    "paused_domains": ("Paused domains", "mail for these domains waits in the queue, one per line"),
    "peername_lookup": ("Client name lookup", "log and stamp each client's verified DNS name; off: unknown"),
}
# The same words for each next hop (internal_relay.*, external_relay.*).
SUBFIELD_WORDS: dict[str, tuple[str, str]] = {
    "host": ("Host", "host name or IP address; empty: none"),
    "port": ("Port", "usually 25"),
    "mx": ("MX lookup", "look up the host's MX records (usually off)"),
    "tls": ("TLS", "none, may, encrypt (required), verify (checks name)"),
    "tls_name": ("TLS name", "the name its certificate must carry, with verify"),
    "username": ("User name", "login for the smart host (sent over TLS only)"),
    "password_file": ("Password file", "file holding the password (mode 640, root:postern)"),
}
UNKNOWN_HELP = "see the configuration reference"
_PROBLEM = re.compile(r"mta\.([A-Za-z0-9_.\-]+?)((?:\[\d+\])*)\s*:\s*(.*)", re.S)
_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60))


def dom_id(key: str) -> str:
    """A widget id for a dotted key (ids allow letters, digits, _ and - only)."""
    return "mta-" + re.sub(r"[^A-Za-z0-9_-]", "_", key.replace(".", "--"))


@dataclass(frozen=True)
class Field:
    path: tuple[str, ...]
    kind: str  # text, number, duration, bool, choice, list, yaml
    label: str
    help: str
    choices: tuple = ()
    int_items: bool = False  # a list of numbers

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def dom_id(self) -> str:
        return dom_id(self.key)


@dataclass(frozen=True)
class Group:
    """A section such as internal_relay, or (path empty) the top-level fields around it."""

    path: tuple[str, ...]
    title: str
    help: str
    fields: tuple[Field, ...]

    @property
    def key(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any


def _words(path: tuple[str, ...]) -> tuple[str, str]:
    key = ".".join(path)
    if key in WORDS:
        return WORDS[key]
    if len(path) > 1 and path[-1] in SUBFIELD_WORDS:
        return SUBFIELD_WORDS[path[-1]]
    return path[-1].replace("_", " ").capitalize(), UNKNOWN_HELP


def _choices(spec: Any) -> tuple:
    """The values a `one_of(...)` checker allows, or () for any other checker."""
    if not callable(spec) or not getattr(spec, "__closure__", None):
        return ()
    try:
        choices = inspect.getclosurevars(spec).nonlocals.get("choices")
    except (TypeError, ValueError):
        return ()
    return tuple(choices) if isinstance(choices, tuple) else ()


def _is_marker(spec: Any, name: str) -> bool:
    return isinstance(spec, tuple) and bool(spec) and spec[0] == name


def _field(path: tuple[str, ...], spec: Any, value: Any) -> Field:
    label, help_text = _words(path)
    choices = _choices(spec)
    if spec is check_bool or isinstance(value, bool):
        kind = "bool" if isinstance(value, bool) else "yaml"
    elif choices and any(value == c and type(value) is type(c) for c in choices):
        kind = "choice"
    elif spec is check_duration and isinstance(value, (int, str)):
        kind = "duration"
    elif isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return Field(path, "list", label, help_text, int_items=bool(value) and all(isinstance(v, int) for v in value))
    elif isinstance(value, int) and not isinstance(value, bool):
        kind = "number"
    elif isinstance(value, str) or value is None:
        kind = "text"
    else:
        kind = "yaml"
    return Field(path, kind, label, help_text, choices if kind == "choice" else ())


def build(running: dict, specs: dict = MTA_FIELDS) -> list[Group]:
    """The form for a running section: known keys in MTA_FIELDS order, then any others."""
    order = [key for key in specs if key in running] + [key for key in running if key not in specs]
    groups: list[Group] = []
    loose: list[Field] = []
    for key in order:
        spec, value = specs.get(key), running[key]
        if isinstance(value, dict) and (_is_marker(spec, "section") or spec is None) and value:
            if loose:
                groups.append(Group((), "", "", tuple(loose)))
                loose = []
            subspecs = spec[2] if _is_marker(spec, "section") else {}
            suborder = [k for k in subspecs if k in value] + [k for k in value if k not in subspecs]
            fields = tuple(_field((key, sub), subspecs.get(sub), value[sub]) for sub in suborder)
            title, help_text = _words((key,))
            groups.append(Group((key,), title, help_text, fields))
        else:
            loose.append(_field((key,), spec, value))
    if loose:
        groups.append(Group((), "", "", tuple(loose)))
    return groups


def fields_of(groups: list[Group]) -> list[Field]:
    return [field for group in groups for field in group.fields]


def shape(groups: list[Group]) -> tuple:
    return tuple((field.key, field.kind, field.choices) for field in fields_of(groups))


# --- values: running value -> what the widget shows -> value for the section ---


def duration_text(seconds: int) -> str:
    for unit, size in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def shown(field: Field, value: Any) -> Any:
    """What the field's widget holds for a value: text, or the value itself for bool and choice."""
    if field.kind in ("bool", "choice"):
        return value
    if field.kind == "list":
        return "\n".join(str(item) for item in value)
    if field.kind == "duration":
        return duration_text(value) if isinstance(value, int) and value > 0 else str(value)
    if field.kind == "yaml":
        return yaml.safe_dump(value, default_flow_style=False, sort_keys=False).strip()
    return "" if value is None else str(value)


def _number(text: str) -> Any:
    text = text.strip()
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else text


def read(field: Field, raw: Any) -> Any:
    """The section's value for what the widget holds; ValueError (in words) for unreadable YAML."""
    if field.kind in ("bool", "choice"):
        return raw
    text = str(raw)
    if field.kind in ("number", "duration"):
        return _number(text)
    if field.kind == "list":
        items = [item.strip() for item in re.split(r"[\n,]", text) if item.strip()]
        return [_number(item) for item in items] if field.int_items else items
    if field.kind == "yaml":
        try:
            return yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ValueError(f"not valid YAML{where}: {getattr(error, 'problem', None) or error}") from None
    return text.strip()


def proposed(running: dict, groups: list[Group], raws: dict[str, Any]) -> tuple[dict, list[str]]:
    """The running section with the form's values in it, and the fields that could not be read."""
    section = copy.deepcopy(running)
    problems = []
    for field in fields_of(groups):
        if field.key not in raws:
            continue
        try:
            value = read(field, raws[field.key])
        except ValueError as error:
            problems.append(f"mta.{field.key}: {error}")
            continue
        target = section
        for part in field.path[:-1]:
            target = target.setdefault(part, {})
        target[field.path[-1]] = value
    return section, problems


def validate(section: dict, specs: dict = MTA_FIELDS) -> tuple[MtaConfig | None, list[str]]:
    """relay.config.parse_mta on the keys this console knows (the daemon checks the others on Apply)."""
    return parse_mta({key: value for key, value in section.items() if key in specs})


def normalized(section: dict, config: MtaConfig, specs: dict = MTA_FIELDS) -> dict:
    """The section as the relay will run it (durations in seconds, networks with prefix...)."""
    clean = to_dict(config)
    return {key: clean[key] if key in specs else value for key, value in section.items()}


def payload(section: dict, config: MtaConfig, specs: dict = MTA_FIELDS) -> dict:
    """What Apply sends: the admin's values, without the ones that are only defaults.

    Get reports every key with its default; writing them all would pin today's
    defaults in the file. A key the console does not know is always kept.
    """
    defaults = to_dict(MtaConfig())
    clean = to_dict(config)
    result: dict = {}
    for key, value in section.items():
        if key not in specs or key not in defaults:
            result[key] = value
        elif isinstance(value, dict) and isinstance(clean[key], dict):
            kept = {sub: v for sub, v in value.items()
                    if sub not in clean[key] or clean[key][sub] != defaults[key].get(sub)}
            if kept:
                result[key] = kept
        elif clean[key] != defaults[key]:
            result[key] = value
    return result


def diff(old: dict, new: dict) -> list[Change]:
    """Every changed setting by its dotted key, in the order of the form."""
    changes = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in list(a) + [s for s in b if s not in a]:
                if a.get(sub) != b.get(sub):
                    changes.append(Change(f"{key}.{sub}", a.get(sub), b.get(sub)))
        elif a != b:
            changes.append(Change(key, a, b))
    return changes


def _value_text(value: Any, kind: str = "") -> str:
    if value is None or value == "" or value == []:
        return "(empty)"
    if kind == "duration" and isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return duration_text(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return str(value)


def describe(change: Change, kind: str = "") -> list[str]:
    """A change in words: old -> new, or the items added (+) and removed (-) for a list."""
    if isinstance(change.old, list) and isinstance(change.new, list):
        lines = [f"{change.key}:"]
        lines += [f"  + {item}" for item in change.new if item not in change.old]
        lines += [f"  - {item}" for item in change.old if item not in change.new]
        if len(lines) == 1:
            lines[0] += " the same items in another order"
        return lines
    return [f"{change.key}: {_value_text(change.old, kind)} -> {_value_text(change.new, kind)}"]


def place(problem: str, keys: set[str]) -> tuple[str, str]:
    """Where a problem belongs: (the field or section key, or "" for the whole form; its words).

    'mta.my_networks[1]: ...' -> ('my_networks', 'line 2: ...').
    """
    match = _PROBLEM.fullmatch(problem)
    if not match:
        return "", problem
    key, index, words = match.groups()
    if index:
        first = int(re.findall(r"\d+", index)[0])
        words = f"line {first + 1}: {words}"
    path = key.split(".")
    while path:
        if ".".join(path) in keys:
            return ".".join(path), words
        path.pop()
    return "", problem
