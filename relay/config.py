"""The relay's configuration: the `mta:` section of the appliance YAML file.

Keys mirror the CipherMail MTA page so that an admin following that guide finds
every setting under the same name. `parse_mta` validates a whole section and
returns every problem at once, each naming the field and what to do about it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .addresses import control_char_problem, shown

# Patterns are used with fullmatch: `$` would also match before a final newline.
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_DURATION = re.compile(r"(\d+)\s*([smhdw]?)")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = 3650 * 86400
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 field name: printable ASCII but the colon
_LISTEN = (re.compile(r"\[([0-9a-fA-F:.]+)\]:(\d+)"), re.compile(r"([0-9.]+):(\d+)"))

MAX_NAME = 253  # a domain name in text form (RFC 1035 2.3.4), its labels at most 63
# The greeting "220 <hostname> <banner>" with its CRLF must fit in an SMTP reply line
# of 512 octets (RFC 5321 4.5.3.1.5): 4 + 253 + 1 + 200 + 2 leaves room.
MAX_BANNER = 200
# The loop marker "<header>: <value>" stays far below RFC 5322's 998 octets per line.
MAX_HEADER_NAME = 64
MAX_HEADER_VALUE = 200
MAX_USERNAME = 255

TLS_LEVELS = ("none", "may", "encrypt", "verify")
INBOUND_TLS_LEVELS = ("may", "require")
VERIFY_CODES = (450, 550)

# Exchange Online's published outbound ranges (Microsoft 365 URLs and IP address ranges, ID 10).
EXCHANGE_ONLINE_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in ("40.92.0.0/15", "40.107.0.0/16", "52.100.0.0/14", "104.47.0.0/17",
                "2a01:111:f400::/48", "2a01:111:f403::/48")
)
# Headers a marker must never be, because stripping it from untrusted mail would destroy them.
_RESERVED_HEADERS = {
    "received", "return-path", "from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date",
    "message-id", "mime-version", "content-type", "content-transfer-encoding", "x-ms-exchange-crosstenant-id",
}


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` has one line per field."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class RelayHost:
    host: str = ""
    port: int = 25
    mx: bool = False
    tls: str = "may"
    tls_name: str = ""
    username: str = ""
    password_file: str = ""
    # Read from password_file when the file is loaded; never shown or written back.
    password: str = field(default="", repr=False, compare=False)


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TlsFiles:
    cert_file: str = ""
    key_file: str = ""
    inbound: str = "may"
    client_cert_file: str = ""
    client_key_file: str = ""
    ca_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True)
class M365Tenants:
    """Exchange Online clients may relay outward only for these tenants (off without tenant_ids)."""

    tenant_ids: tuple[str, ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = EXCHANGE_ONLINE_NETWORKS

    def covers(self, ip: str) -> bool:
        """Is this client Exchange Online, and is the tenant check on?"""
        return bool(self.tenant_ids) and _in_networks(ip, self.networks)


@dataclass(frozen=True)
class RecipientVerification:
    enabled: bool = False
    code: int = 450
    positive_expire_time: int = 31 * 86400
    negative_expire_time: int = 3 * 86400


@dataclass(frozen=True)
class LoopMarker:
    enabled: bool = True
    header: str = "X-Postern-Processed"
    value: str = ""  # empty: the hostname
    loop_limit: int = 2


@dataclass(frozen=True)
class QueueTimes:
    minimal_backoff_time: int = 300
    maximal_backoff_time: int = 4000
    maximal_queue_lifetime: int = 5 * 86400
    delay_warning_time: int = 0  # Postfix's default: no "delayed" notices


@dataclass(frozen=True)
class DeliverySettings:
    destination_concurrency_limit: int = 20
    connect_timeout: int = 30
    command_timeout: int = 300
    data_init_timeout: int = 120  # Postfix's smtp_data_init_timeout: the reply to DATA
    data_xfer_timeout: int = 180  # smtp_data_xfer_timeout: each write of the message content
    data_done_timeout: int = 600  # smtp_data_done_timeout: the reply after the final dot


@dataclass(frozen=True)
class MtaConfig:
    hostname: str = "postern.localdomain"
    helo_name: str = ""
    banner: str = "ESMTP Postern"
    listen: tuple[ListenAddress, ...] = (ListenAddress("0.0.0.0", 25),)
    relay_domains: tuple[str, ...] = ()
    match_subdomains: bool = False
    my_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    internal_relay: RelayHost = RelayHost()
    external_relay: RelayHost = RelayHost()
    message_size_limit: int = 10240000
    header_size_limit: int = 102400  # Postfix's default
    recipient_limit: int = 1000
    hopcount_limit: int = 50
    max_connections: int = 100
    client_connection_count_limit: int = 20
    client_connection_rate_limit: int = 0
    idle_timeout: int = 300
    session_timeout: int = 3600
    junk_command_limit: int = 100
    dns_servers: tuple[str, ...] = ()
    tls: TlsFiles = TlsFiles()
    queue: QueueTimes = QueueTimes()
    delivery: DeliverySettings = DeliverySettings()
    smtps_listen: tuple[ListenAddress, ...] = ()
    m365: M365Tenants = M365Tenants()
    reject_unverified_recipient: RecipientVerification = RecipientVerification()
    marker: LoopMarker = LoopMarker()
    paused_domains: tuple[str, ...] = ()
    peername_lookup: bool = True
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def outgoing_helo(self) -> str:
        return self.helo_name or self.hostname

    @property
    def marker_value(self) -> str:
        return self.marker.value or self.hostname

    def is_trusted(self, ip: str) -> bool:
        return _in_networks(ip, self.my_networks)

    def is_relay_domain(self, domain: str) -> bool:
        return _domain_in(domain, self.relay_domains, self.match_subdomains)

    def is_paused(self, domain: str) -> bool:
        return _domain_in(domain, self.paused_domains, self.match_subdomains)


def _in_networks(ip: str, networks) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in networks if net.version == addr.version)


def _domain_in(domain: str, domains: tuple[str, ...], subdomains: bool) -> bool:
    domain = domain.lower().rstrip(".")
    for listed in domains:
        if domain == listed or (subdomains and domain.endswith("." + listed)):
            return True
    return False


# --- field checkers: each returns the clean value or raises ValueError(message) ---


def check_length(value: str, limit: int, reason: str) -> None:
    """ValueError when `value` is longer than `limit` characters; the message does not repeat the value."""
    if len(value) > limit:
        raise ValueError(f"is {len(value)} characters long: {reason} (at most {limit}): shorten it")


def check_fqdn(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a fully qualified host name such as gw.example.com")
    check_length(value.rstrip("."), MAX_NAME, "too long for a host name")
    name = value.lower().rstrip(".")
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{value!r} is not a fully qualified host name: use letters, digits and "
            "hyphens in dot-separated labels, such as gw.example.com"
        )
    return name


def check_domain(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a domain name such as example.com")
    check_length(value.rstrip("."), MAX_NAME, "too long for a domain name")
    name = value.lower().rstrip(".")
    labels = name.split(".")
    if not name or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{value!r} is not a domain name: write it like example.com")
    return name


def check_optional_fqdn(value: Any) -> str:
    if value in ("", None):
        return ""
    return check_fqdn(value)


def check_banner(value: Any) -> str:
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        raise ValueError("must be printable ASCII text on one line, such as 'ESMTP Postern'")
    check_length(value, MAX_BANNER, "the greeting with the host name must fit in one 512-octet SMTP reply line")
    return value


def check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def check_port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{value!r} is not a port number: use 1 to 65535")
    return value


def positive_int(minimum: int = 1) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{value!r} is not a whole number of at least {minimum}")
        return value

    return check


def check_duration(value: Any) -> int:
    """Seconds, as a number or with a unit like Postfix: 300s, 10m, 1h, 5d, 1w; at most ten years."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        seconds = value
    else:
        match = _DURATION.fullmatch(str(value).strip()) if isinstance(value, str) else None
        if not match or int(match.group(1)) == 0:
            raise ValueError(f"{value!r} is not a duration: use seconds or a number with s, m, h, d or w, such as 5d")
        seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > MAX_DURATION:  # a timer takes a float: 10**400 seconds would fail every session
        raise ValueError(f"{value!r} is too long: at most 3650d")
    return seconds


def check_duration_or_off(value: Any) -> int:
    """A duration, or 0 for off (Postfix's delay_warning_time)."""
    zero = value == 0 and not isinstance(value, bool)
    if zero or (isinstance(value, str) and re.fullmatch(r"0+[smhdw]?", value.strip())):
        return 0
    return check_duration(value)


def check_network(value: Any):
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP network: write it like 192.168.1.10/32 or 10.0.0.0/8") from None


def check_host(value: Any) -> str:
    """A host name or IP address, for relay hosts; empty means none."""
    if value in ("", None):
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a host name or IP address")
    if value.startswith("["):
        raise ValueError(f"write the host without brackets ({value.strip('[]')}); mx: false already skips the MX lookup")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    try:
        return check_domain(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a host name or IP address") from None


def check_listen(value: Any) -> ListenAddress:
    text = str(value)
    match = _LISTEN[0].fullmatch(text) or _LISTEN[1].fullmatch(text)
    if not match:
        raise ValueError(f"{value!r} is not an address and port: write it like 0.0.0.0:25 or [::]:25")
    try:
        host = str(ipaddress.ip_address(match.group(1)))
    except ValueError:
        raise ValueError(f"{value!r}: {match.group(1)!r} is not an IP address") from None
    return ListenAddress(host, check_port(int(match.group(2))))


def check_optional_tls_name(value: Any) -> str:
    """The name a next hop's certificate must carry: a host name, or *.domain for any host in it."""
    if value in ("", None):
        return ""
    text = str(value) if isinstance(value, str) else ""
    try:
        if text.startswith("*."):
            return "*." + check_domain(text[2:])
        return check_host(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a certificate name: write it like mx.example.com or *.mail.protection.outlook.com") from None


def check_dns_server(value: Any) -> str:
    text = str(value)
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    try:
        ipaddress.ip_address(host.strip("[]"))
        if port:
            if not port.isascii() or not port.isdigit():  # int() would take " 53\n"
                raise ValueError
            check_port(int(port))
    except ValueError:
        raise ValueError(f"{value!r} is not a DNS server address: write it like 192.0.2.53 or 127.0.0.1:5353") from None
    return text


def one_of(*choices) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(str(c) for c in choices)}")
        return value

    return check


def check_tenant_id(value: Any) -> str:
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if not _GUID.fullmatch(text):
        raise ValueError(
            f"{value!r} is not a tenant ID: copy the GUID from the overview page of Microsoft Entra ID, "
            "such as 72f988bf-86f1-41af-91ab-2d7cd011db47"
        )
    return text


def check_header_name(value: Any) -> str:
    if isinstance(value, str):
        check_length(value, MAX_HEADER_NAME, "too long for a header name")
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a header name: use letters, digits and hyphens, such as X-Postern-Processed")
    if value.lower() in _RESERVED_HEADERS:
        raise ValueError(f"{value!r} is a standard header that mail needs: use a name of your own, such as X-Postern-Processed")
    return value


def check_header_value(value: Any) -> str:
    if value in ("", None):
        return ""
    if isinstance(value, str):
        check_length(value, MAX_HEADER_VALUE, "too long for the marker's header value")
    if not isinstance(value, str) or not value.isascii() or not value.isprintable() or value != value.strip():
        raise ValueError(f"{value!r} is not a header value: use printable ASCII text on one line, such as gw.example.com")
    return value


def check_username(value: Any) -> str:
    if value in ("", None):
        return ""
    if not isinstance(value, str) or not value.isprintable() or value != value.strip():
        raise ValueError("must be the login name on one line, without spaces around it")
    check_length(value, MAX_USERNAME, "too long for a login name")
    return value


def check_secret_file(value: Any) -> str:
    """A file with a password: it must exist and must not be readable by every user."""
    if value in ("", None):
        return ""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute file path, such as /etc/postern/smarthost.password")
    try:
        info = os.stat(value)
    except OSError as error:
        raise ValueError(f"cannot use {value}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{value} is not a regular file")
    if info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ValueError(
            f"{value} is readable by every user (mode {stat.S_IMODE(info.st_mode):04o}): "
            f"let only root and the daemon read it: chown root:postern {value} && chmod 640 {value}"
        )
    return value


def list_of(check: Callable[[Any], Any]):
    """Marker: the field is a list whose items are checked one by one."""
    return ("list", check)


def section(cls, fields: dict):
    """Marker: the field is a nested mapping with its own fields."""
    return ("section", cls, fields)


_RELAY_HOST_FIELDS = {
    "host": check_host,
    "port": check_port,
    "mx": check_bool,
    "tls": one_of(*TLS_LEVELS),
    "tls_name": check_optional_tls_name,
}
_SMART_HOST_FIELDS = {**_RELAY_HOST_FIELDS, "username": check_username, "password_file": check_secret_file}

MTA_FIELDS: dict[str, Any] = {
    "hostname": check_fqdn,
    "helo_name": check_optional_fqdn,
    "banner": check_banner,
    "listen": list_of(check_listen),
    "relay_domains": list_of(check_domain),
    "match_subdomains": check_bool,
    "my_networks": list_of(check_network),
    "internal_relay": section(RelayHost, _RELAY_HOST_FIELDS),
    "external_relay": section(RelayHost, _SMART_HOST_FIELDS),
    "message_size_limit": positive_int(1024),
    "header_size_limit": positive_int(1024),
    "recipient_limit": positive_int(),
    "hopcount_limit": positive_int(),
    "max_connections": positive_int(),
    "client_connection_count_limit": positive_int(0),
    "client_connection_rate_limit": positive_int(0),
    "idle_timeout": check_duration,
    "session_timeout": check_duration,
    "junk_command_limit": positive_int(),
    "dns_servers": list_of(check_dns_server),
    "tls": section(
        TlsFiles,
        {
            "cert_file": str,
            "key_file": str,
            "inbound": one_of(*INBOUND_TLS_LEVELS),
            "client_cert_file": str,
            "client_key_file": str,
            "ca_file": str,
        },
    ),
    "queue": section(
        QueueTimes,
        {
            "minimal_backoff_time": check_duration,
            "maximal_backoff_time": check_duration,
            "maximal_queue_lifetime": check_duration,
            "delay_warning_time": check_duration_or_off,
        },
    ),
    "delivery": section(
        DeliverySettings,
        {
            "destination_concurrency_limit": positive_int(),
            "connect_timeout": check_duration,
            "command_timeout": check_duration,
            "data_init_timeout": check_duration,
            "data_xfer_timeout": check_duration,
            "data_done_timeout": check_duration,
        },
    ),
    "smtps_listen": list_of(check_listen),
    "m365": section(M365Tenants, {"tenant_ids": list_of(check_tenant_id), "networks": list_of(check_network)}),
    "reject_unverified_recipient": section(
        RecipientVerification,
        {
            "enabled": check_bool,
            "code": one_of(*VERIFY_CODES),
            "positive_expire_time": check_duration,
            "negative_expire_time": check_duration,
        },
    ),
    "marker": section(
        LoopMarker,
        {"enabled": check_bool, "header": check_header_name, "value": check_header_value, "loop_limit": positive_int()},
    ),
    "paused_domains": list_of(check_domain),
    "peername_lookup": check_bool,
}


def _parse_fields(path: str, data: Any, fields: dict, problems: list[str]) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path}: must be a mapping of keys to values")
        return {}
    values = {}
    for key, value in data.items():
        where = f"{path}.{key}"
        spec = fields.get(key)
        if spec is None:
            problems.append(f"{where}: unknown key; known keys are {', '.join(fields)}")
            continue
        if isinstance(spec, tuple) and spec[0] == "section":
            _, cls, subfields = spec
            values[key] = cls(**_parse_fields(where, value, subfields, problems))
        elif isinstance(spec, tuple) and spec[0] == "list":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                problems.append(f"{where}: must be a list")
                continue
            items = []
            for index, item in enumerate(value):
                try:
                    items.append(spec[1](item))
                except ValueError as error:
                    problems.append(f"{where}[{index}]: {error}")
            values[key] = tuple(items)
        elif spec is str:
            if not isinstance(value, str):
                problems.append(f"{where}: must be text (a file path)")
            else:
                values[key] = value
        else:
            try:
                values[key] = spec(value)
            except ValueError as error:
                problems.append(f"{where}: {error}")
    return values


def field_paths(fields: dict = MTA_FIELDS, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], bool]]:
    """Every field of the section as (path of keys, is it a list), sections opened: what a tool walks."""
    paths = []
    for key, spec in fields.items():
        if isinstance(spec, tuple) and spec[0] == "section":
            paths += field_paths(spec[2], path + (key,))
        else:
            paths.append((path + (key,), isinstance(spec, tuple) and spec[0] == "list"))
    return paths


def control_char_problems(data: Any, where: str) -> list[tuple[str, str]]:
    """(field, problem line) for each text in `data`, a key or a value at any depth, with a control character.

    A newline, a carriage return or a terminal escape is never part of a setting: in a value it would
    end a line of a file written from it (/etc/hostname, a networkd file, a mail header), in a key
    it would do the same to the problem line that names it."""
    found: list[tuple[str, str]] = []
    pending = [(where, data)]  # a list, not recursion: however deep the document, this answers
    while pending:
        where, data = pending.pop()
        if isinstance(data, str):
            reason = control_char_problem(data)
            if reason:
                found.append((where, f"{shown(where)}: {reason}"))
        elif isinstance(data, dict):
            inside = []
            for key, value in data.items():
                field_name = f"{where}.{key}" if where else str(key)
                reason = control_char_problem(key) if isinstance(key, str) else None
                if reason:
                    found.append((field_name, f"{shown(field_name)}: the name {reason}"))
                else:
                    inside.append((field_name, value))
            pending += reversed(inside)
        elif isinstance(data, list):
            pending += reversed([(f"{where}[{index}]", item) for index, item in enumerate(data)])
    return found


def refuse_control_chars(where: str, data: Any, problems: list[str]) -> list[str]:
    """`problems` with a line for each text in `data` that has a control character, in place of the
    other lines about the same field (they would only repeat it, control character and all)."""
    found = control_char_problems(data, where)
    if not found:
        return problems

    def about_found(problem: str) -> bool:
        return any(problem.startswith(name) and problem[len(name):len(name) + 1] in (":", ".", "[")
                   for name, _ in found)

    return [line for _, line in found] + [problem for problem in problems if not about_found(problem)]


def _check_whole(config: MtaConfig, problems: list[str]) -> None:
    if config.relay_domains and not config.internal_relay.host:
        problems.append(
            "mta.internal_relay.host: required when relay_domains is set: "
            "name the internal mail server (or virus scanner) that takes mail for those domains"
        )
    if not config.listen:
        problems.append("mta.listen: needs at least one address, such as 0.0.0.0:25")
    if config.tls.cert_file and not config.tls.key_file:
        problems.append("mta.tls.key_file: required with cert_file: name the certificate's private key file")
    if config.tls.key_file and not config.tls.cert_file:
        problems.append("mta.tls.cert_file: required with key_file: name the certificate file")
    if config.queue.maximal_backoff_time < config.queue.minimal_backoff_time:
        problems.append("mta.queue.maximal_backoff_time: must not be less than minimal_backoff_time")
    _check_tls(config, problems)
    for name in ("internal_relay", "external_relay"):
        _check_relay_host(name, getattr(config, name), problems)
    verification = config.reject_unverified_recipient
    if verification.enabled and not (config.relay_domains and config.internal_relay.host):
        problems.append(
            "mta.reject_unverified_recipient.enabled: recipients are verified at internal_relay for the "
            "relay_domains: set both, or turn verification off"
        )


def _check_tls(config: MtaConfig, problems: list[str]) -> None:
    tls = config.tls
    if tls.inbound == "require" and not tls.cert_file:
        problems.append("mta.tls.inbound: require needs a certificate: set tls.cert_file and tls.key_file")
    if config.smtps_listen and not tls.cert_file:
        problems.append("mta.smtps_listen: needs a certificate: set tls.cert_file and tls.key_file")
    for index, address in enumerate(config.smtps_listen):
        if address in config.listen:
            problems.append(f"mta.smtps_listen[{index}]: {address} is also in listen: use another port, such as 465")
    if tls.client_cert_file and not tls.client_key_file:
        problems.append("mta.tls.client_key_file: required with client_cert_file: name the certificate's private key file")
    if tls.client_key_file and not tls.client_cert_file:
        problems.append("mta.tls.client_cert_file: required with client_key_file: name the certificate file")


def _check_relay_host(name: str, relay: RelayHost, problems: list[str]) -> None:
    where = f"mta.{name}"
    if relay.tls_name and relay.tls != "verify":
        problems.append(
            f"{where}.tls_name: only checked with tls: verify: set tls: verify, or remove tls_name"
        )
    if relay.tls == "verify" and not relay.tls_name and is_ip(relay.host):
        problems.append(
            f"{where}.tls_name: required with tls: verify when host is an IP address: "
            "name the host name its certificate carries"
        )
    if relay.username and not relay.password_file:
        problems.append(f"{where}.password_file: required with username: name the file that holds the password")
    if relay.password_file and not relay.username:
        problems.append(f"{where}.username: required with password_file: name the login for the smart host")
    if relay.username and not relay.host:
        problems.append(f"{where}.host: required with username: name the smart host that wants the login")
    if relay.username and relay.tls == "none":
        problems.append(f"{where}.tls: the login is only sent over TLS: set tls: may, encrypt or verify")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def parse_mta(data: Any) -> tuple[MtaConfig | None, list[str]]:
    """Validate an `mta:` section; returns (config, []) or (None, problems)."""
    problems: list[str] = []
    values = _parse_fields("mta", data, MTA_FIELDS, problems)
    if isinstance(data, dict):  # else "must be a mapping" says it all
        problems = refuse_control_chars("mta", data, problems)
    config = MtaConfig(**values, raw=dict(data) if isinstance(data, dict) else {})
    # The checks across fields run even when some fields are wrong, so that one run names
    # every problem; but not on a key whose own fields are wrong: they would only repeat them.
    whole: list[str] = []
    _check_whole(config, whole)
    wrong_keys = {_top_key(problem) for problem in problems}
    problems += [problem for problem in whole if _top_key(problem) not in wrong_keys]
    return (None, problems) if problems else (config, [])


def _top_key(problem: str) -> str:
    """'mta.internal_relay.port: ...' -> 'internal_relay'; 'mta.listen[1]: ...' -> 'listen'."""
    return re.split(r"[.\[:]", problem.removeprefix("mta."), maxsplit=1)[0]


def load_file(path: str | Path) -> MtaConfig:
    """Read the appliance YAML file and return its validated `mta` section."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read the configuration file: {error.strerror}"]) from None
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError([f"{path}: not valid YAML: {error}"]) from None
    if not isinstance(document, dict):
        raise ConfigError([f"{path}: must be a mapping with an mta: section"])
    config, problems = parse_mta(document.get("mta"))
    if problems:
        raise ConfigError(problems)
    return read_secrets(config)


def read_secrets(config: MtaConfig) -> MtaConfig:
    """The config with the smart host's password read from its password_file."""
    relay = config.external_relay
    if not relay.password_file:
        return config
    try:
        text = Path(relay.password_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigError([
            f"mta.external_relay.password_file: cannot read {relay.password_file}: {reason}: "
            "let the daemon's group read it (chown root:postern, chmod 640)"
        ]) from None
    password = text.rstrip("\r\n")
    if not password or "\n" in password:
        raise ConfigError([
            f"mta.external_relay.password_file: {relay.password_file} must hold the password on one line"
        ])
    return dataclasses.replace(config, external_relay=dataclasses.replace(relay, password=password))


def to_dict(config: MtaConfig) -> dict:
    """The whole running `mta` section, defaults included, in the file's own shape (never a password)."""

    def plain(spec, value):
        if isinstance(spec, tuple) and spec[0] == "section":
            return {name: plain(subspec, getattr(value, name)) for name, subspec in spec[2].items()}
        if isinstance(value, tuple):
            return [plain(None, v) for v in value]
        if isinstance(value, (ListenAddress, ipaddress.IPv4Network, ipaddress.IPv6Network)):
            return str(value)
        return value

    return {name: plain(spec, getattr(config, name)) for name, spec in MTA_FIELDS.items()}
