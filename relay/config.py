"""The relay's configuration: the `mta:` section of the appliance YAML file.

Keys mirror the CipherMail MTA page so that an admin following that guide finds
every setting under the same name. Each field is described once in `MTA_FIELDS`
(a `relay.fields.Field`: kind, check, choices, label, help, the reference's words),
from which `parse_mta` validates, the console builds its MTA form and docs/config.md
gets its table. `parse_mta` validates a whole section and returns every problem at
once, each naming the field and what to do about it.
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
from .fields import WRONG, Field, one_of, parse_section

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

# Outbound TLS levels, Postfix's smtp_tls_security_level (relay/tls_policy.py says what each one does).
TLS_LEVELS = ("none", "may", "encrypt", "dane", "dane-only", "verify", "secure")
# The levels at which a smart host may be sent the password: its certificate is checked.
LOGIN_LEVELS = ("verify", "secure", "dane-only")
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
class TlsPolicy:
    """One entry of `tls_policy`: the TLS level for mail to a destination domain, as in Postfix's
    smtp_tls_policy_maps; `match`, the names one of which the certificate must carry (verify, secure);
    `ca_file`, authorities trusted for this destination instead of `tls.ca_file`."""

    level: str = "may"
    match: tuple[str, ...] = ()
    ca_file: str = ""


@dataclass(frozen=True)
class DkimKey:
    """A key that signs mail from one domain: its selector and its private key file."""

    selector: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class MailAuthentication:
    """DKIM signing of outbound mail, SPF/DKIM/DMARC results on inbound mail, ARC sealing (docs/authentication.md)."""

    dkim_keys: dict[str, DkimKey] = field(default_factory=dict)
    check_inbound: bool = True
    dmarc_policy: str = "annotate"
    arc_seal: bool = True
    arc_domain: str = ""
    authserv_id: str = ""


DMARC_POLICIES = ("annotate", "enforce")


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
class MetricsSettings:
    """The Prometheus endpoint (relay/metrics.py): off without `listen`. Beyond loopback it needs a login;
    with `cert_file` and `key_file` it speaks HTTPS."""

    listen: ListenAddress | str = ""  # "": off
    username: str = ""
    password_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @property
    def loopback(self) -> bool:
        return bool(self.listen) and ipaddress.ip_address(self.listen.host).is_loopback


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
    external_relay: RelayHost = RelayHost(tls="dane")
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
    soft_error_limit: int = 10
    hard_error_limit: int = 20
    error_sleep_time: int = 1
    dns_servers: tuple[str, ...] = ()
    tls: TlsFiles = TlsFiles()
    tls_policy: dict[str, TlsPolicy] = field(default_factory=dict)
    tls_reports: bool = True
    authentication: MailAuthentication = MailAuthentication()
    queue: QueueTimes = QueueTimes()
    delivery: DeliverySettings = DeliverySettings()
    smtps_listen: tuple[ListenAddress, ...] = ()
    m365: M365Tenants = M365Tenants()
    reject_unverified_recipient: RecipientVerification = RecipientVerification()
    marker: LoopMarker = LoopMarker()
    paused_domains: tuple[str, ...] = ()
    peername_lookup: bool = True
    metrics: MetricsSettings = MetricsSettings()
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

    @property
    def authserv_id(self) -> str:
        """The name in our Authentication-Results headers (RFC 8601 2.5): the hostname unless set."""
        return self.authentication.authserv_id or self.hostname

    def tls_policy_for(self, domain: str) -> TlsPolicy | None:
        """The `tls_policy` entry for a destination domain: its own, else the nearest `.parent` entry."""
        key = self.tls_policy_domain(domain)
        return self.tls_policy[key] if key else None

    def tls_policy_domain(self, domain: str) -> str:
        """The `tls_policy` key that covers a domain, "" when none does."""
        domain = domain.lower().rstrip(".")
        if domain in self.tls_policy:
            return domain
        labels = domain.split(".")
        for start in range(1, len(labels)):
            key = "." + ".".join(labels[start:])
            if key in self.tls_policy:
                return key
        return ""

    def is_paused(self, domain: str) -> bool:
        return bool(self.paused_entry(domain))

    def paused_entry(self, domain: str) -> str:
        """The paused_domains entry that covers `domain` ("" for none)."""
        return _listed_entry(domain, self.paused_domains, self.match_subdomains)


def _in_networks(ip: str, networks) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in networks if net.version == addr.version)


def _domain_in(domain: str, domains: tuple[str, ...], subdomains: bool) -> bool:
    return bool(_listed_entry(domain, domains, subdomains))


def _listed_entry(domain: str, domains: tuple[str, ...], subdomains: bool) -> str:
    domain = domain.lower().rstrip(".")
    for listed in domains:
        if domain == listed or (subdomains and domain.endswith("." + listed)):
            return listed
    return ""


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


def check_policy_domain(value: Any) -> str:
    """A `tls_policy` key: a domain (example.org) or every domain below one (.example.org)."""
    if isinstance(value, str) and value.startswith("."):
        return "." + check_domain(value[1:])
    try:
        return check_domain(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a destination: write a domain like example.org, "
                         "or .example.org for every domain below it") from None


def check_match_name(value: Any) -> str:
    """A name a certificate must carry: a host name, .domain (any name below it) or *.domain."""
    text = value if isinstance(value, str) else ""
    try:
        if text.startswith("."):
            return "." + check_domain(text[1:])
        return check_optional_tls_name(text) or check_host(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a certificate name: write it like mx.example.org, "
                         "or .example.org for any name below it") from None


def check_selector(value: Any) -> str:
    """A DKIM selector: one or more DNS labels (RFC 6376 3.1)."""
    try:
        return check_domain(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a selector: write a DNS label such as s2026") from None


def check_optional_domain(value: Any) -> str:
    return "" if value in ("", None) else check_domain(value)


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
    """An address or a network. A prefix with host bits set (`10.0.0.3/8`) is refused, as Postfix refuses it
    ("non-null host address bits"): it is either a typo for the network or a host given a prefix."""
    try:
        network = ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP network: write it like 192.168.1.10/32 or 10.0.0.0/8") from None
    host, prefix, _ = str(value).partition("/")
    if prefix and network.network_address != ipaddress.ip_address(host):
        raise ValueError(f"{value!r} has host bits set: write {network} for the network, or "
                         f"{host}/{network.max_prefixlen} for that one host")
    return network


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


def check_optional_listen(value: Any) -> ListenAddress | str:
    """An address and port, or "" for none (off)."""
    return "" if value in ("", None) else check_listen(value)


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


def check_file_path(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be text (a file path)")
    return value


_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60))


def duration_text(seconds: int) -> str:
    """Seconds in the largest unit that divides them: 300 -> 5m, 4000 -> 4000s (as check_duration reads them back)."""
    for unit, size in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# --- the fields: each described once, for the validator, the console's form and docs/config.md ---


def _relay_host_fields(smart_host: bool) -> tuple[Field, ...]:
    """A next hop's fields (docs/config.md describes them under "Relay hosts")."""
    fields = (
        Field("host", "text", check_host, "Host", "host name or IP address; empty: none"),
        Field("port", "number", check_port, "Port", "usually 25"),
        Field("mx", "bool", check_bool, "MX lookup", "look up the host's MX records (usually off)"),
        Field("tls", "choice", None, "TLS", "none, may, encrypt, dane, dane-only, verify, secure",
              ("TLS level toward this next hop (see [TLS policy](#tls-policy) and [TLS](tls.md)). The internal relay's "
               "default is `may`; the external relay's is `dane` (DANE where the host publishes TLSA records with "
               "DNSSEC, else `may`), or `verify` with a `username`.") if smart_host else
              "TLS level toward this next hop (see [TLS policy](#tls-policy)); default `may`.", choices=TLS_LEVELS),
        Field("tls_name", "text", check_optional_tls_name, "TLS name",
              "the name its certificate must carry, with verify or secure"),
    )
    if smart_host:
        fields += (
            Field("username", "text", check_username, "User name", "login for the smart host (sent over TLS only)"),
            Field("password_file", "text", check_secret_file, "Password file",
                  "file holding the password (mode 640, root:postern)"),
        )
    return fields


def _duration(name: str, label: str, help: str, doc: str = "", check: Callable[[Any], int] = check_duration) -> Field:
    return Field(name, "duration", check, label, help, doc)


def _number(name: str, label: str, help: str, doc: str = "", minimum: int = 1) -> Field:
    return Field(name, "number", positive_int(minimum), label, help, doc)


def _domains(name: str, label: str, help: str, doc: str) -> Field:
    return Field(name, "list", check_domain, label, help, doc)


_TLS_POLICY_SHAPE = "must be a level (such as secure) or a mapping with level, match and ca_file"
_TLS_POLICY_FIELDS = (
    Field("level", "choice", None, "Level", "none, may, encrypt, dane, dane-only, verify, secure", choices=TLS_LEVELS),
    Field("match", "list", check_match_name, "Match", "names the certificate may carry (verify, secure), one per line",
          "With `verify` or `secure`: the names, one of which the certificate must carry (`mx.partner.org`, "
          "`.partner.org` for any name below it); empty: the MX host's name (`verify`), or the domain and the names "
          "below it (`secure`)."),
    Field("ca_file", "text", check_file_path, "CA file", "CAs trusted for this destination; empty: tls.ca_file",
          "Authorities (PEM) trusted for this destination with `verify` or `secure`, instead of `tls.ca_file`."),
)


def _parse_tls_policy(where: str, value: Any, problems: list[str]) -> Any:
    """One `tls_policy` entry: a level alone (`secure`), or a mapping with level, match and ca_file."""
    if isinstance(value, str):
        try:
            return TlsPolicy(one_of(TLS_LEVELS)(value))
        except ValueError as error:
            problems.append(f"{where}: {error}")
            return WRONG
    before = len(problems)
    values = parse_section(where, value, _TLS_POLICY_FIELDS, problems, _TLS_POLICY_SHAPE)
    if values is None or len(problems) > before:
        return WRONG
    if "level" not in values:
        problems.append(f"{where}.level: required: name the TLS level, such as secure")
        return WRONG
    policy = TlsPolicy(**values)
    for key in ("match", "ca_file"):
        if getattr(policy, key) and policy.level not in ("verify", "secure"):
            problems.append(f"{where}.{key}: only used with level verify or secure: set one, or remove {key}")
    return WRONG if len(problems) > before else policy


MTA_FIELDS: tuple[Field, ...] = (
    Field("hostname", "text", check_fqdn, "My hostname", "the internet hostname of this mail system",
          '"My hostname": the name in the `220` greeting and in `Received:` headers. A fully qualified name that '
          "matches the PTR record of the public address (see the HELO/PTR notes below)."),
    Field("helo_name", "text", check_optional_fqdn, "SMTP HELO name", "name sent in EHLO when delivering; empty: My hostname",
          "Name sent in `EHLO` on outgoing connections; empty means `hostname`."),
    Field("banner", "text", check_banner, "Banner", "the text after the hostname in the 220 greeting",
          "Text after `220 <hostname> ` in the greeting."),
    Field("listen", "list", check_listen, "Listen on", "address:port to receive mail on, one per line",
          "Addresses and ports to accept SMTP on: `IP:PORT` or `[IPv6]:PORT`."),
    _domains("relay_domains", "Relay domains", "domains this system relays mail to, one per line",
             "Domains this gateway accepts mail for from anyone (inbound mail). Their mail goes to `internal_relay`."),
    Field("match_subdomains", "bool", check_bool, "Match subdomains", "subdomains of the relay domains match too",
          "Also accept subdomains of `relay_domains` (`sales.example.com`)."),
    Field("my_networks", "list", check_network, "My networks", "trusted clients allowed to relay out, one per line",
          "Trusted clients (your mail server, your virus scanner) that may send to any domain (outbound mail). "
          "Networks like `192.168.1.10/32` or `10.0.0.0/8`; a bare address means that one host."),
    Field("internal_relay", "section", None, "Internal relay host",
          "next hop for mail to the relay domains (the internal mail server)",
          "Next hop for mail to `relay_domains`: the internal mail server or virus scanner. Required when "
          "`relay_domains` is set. See [Relay hosts](#relay-hosts).",
          fields=_relay_host_fields(smart_host=False), make=RelayHost),
    Field("external_relay", "section", None, "External relay host",
          "next hop for other mail; empty host: direct delivery by MX",
          "Next hop for all other mail: a smart host. Empty `host` delivers straight to each domain's MX hosts. "
          "See [Relay hosts](#relay-hosts).",
          fields=_relay_host_fields(smart_host=True), make=RelayHost),
    _number("message_size_limit", "Message size limit", "the largest message accepted, in bytes",
            "Largest message in bytes; larger ones get `552 5.3.4` at `MAIL` (when the client announces `SIZE`) "
            "or at the end of `DATA`.", minimum=1024),
    _number("header_size_limit", "Header size limit", "longest header field kept, in bytes; the rest is cut",
            "Largest header field in bytes, with its folded continuation lines (Postfix's `header_size_limit`, "
            "same default, at least `1024`). As Postfix does by default, a longer field is cut and the message "
            "still accepted: at its last line end within the limit when that keeps at least 90% of it, else at "
            "the limit itself; the rest of the field is dropped, and the log says `header(s) from CLIENT cut to "
            "header_size_limit N`. The header section as a whole is bounded only by `message_size_limit`, as in "
            "Postfix; every check of it (hop count, loop marker, tenant check) takes time in proportion to its "
            "size, however it is folded.", minimum=1024),
    _number("recipient_limit", "Recipient limit", "most recipients accepted for one message",
            "Recipients per message; more get `452 4.5.3` (Postfix's `smtpd_recipient_limit`)."),
    _number("hopcount_limit", "Hop count limit", "most Received: headers before mail counts as looping",
            "A message with this many `Received:` headers is a mail loop: `554 5.4.0`."),
    _number("max_connections", "Max connections", "most SMTP clients served at once",
            "Concurrent SMTP sessions; one more gets `421 4.7.0` and is closed. Clients in `my_networks` are "
            "always let in (their sessions count too), so a flood from outside never locks out your own mail "
            "server."),
    _number("client_connection_count_limit", "Sessions per client", "most sessions one address may hold; 0: no limit",
            "Sessions one client address may hold at once (Postfix's `smtpd_client_connection_count_limit`); one "
            "more gets `421 4.7.0 <hostname> Error: too many connections from <address>` and the log line "
            "`warning: Connection concurrency limit exceeded: N from unknown[address] for service smtp`. `0` "
            "turns it off. Postfix's 50 is half its default process limit, so two addresses could take every "
            "slot; our 20 is a fifth of the default `max_connections`, so it takes five, while a sending server "
            "at the usual 20 parallel deliveries (Postfix's and our own `destination_concurrency_limit`) still "
            "fits. Raising `max_connections`, raise this in step. `my_networks` are exempt and not counted.",
            minimum=0),
    _number("client_connection_rate_limit", "Connect rate/client",
            "most connections per minute from one address; 0: off",
            "Connection attempts one client address may make per minute (Postfix's "
            "`smtpd_client_connection_rate_limit` with `anvil_rate_time_unit` 60 s), refused ones included; more "
            "get the same `421` and `warning: Connection rate limit exceeded: ...`. `0` (Postfix's default) turns "
            "it off; `my_networks` are exempt. The peaks are logged as Postfix's anvil does: `statistics: max "
            "connection count 5 for (smtp:192.0.2.7) at Dec  6 04:21:03` at shutdown and with the first "
            "connection ten minutes after the last report.", minimum=0),
    _duration("idle_timeout", "Idle timeout", "drop a client silent this long (seconds, or 5m, 1h)",
              "A client silent this long is disconnected (Postfix's `smtpd_timeout`)."),
    _duration("session_timeout", "Session timeout", "the longest one SMTP session may last",
              "Longest SMTP session, however busy; then `421 4.4.2`."),
    _number("junk_command_limit", "Junk command limit", "most useless commands before hanging up",
            "`NOOP`, `VRFY`, `EXPN`, `HELP`, `ETRN` allowed per session, counted afresh after each message "
            "taken (as Postfix's `smtpd_junk_command_limit`); then `421`."),
    _number("soft_error_limit", "Soft error limit", "errors before every reply is slowed down",
            "Errors a client may make before each reply waits `error_sleep_time` (Postfix's "
            "`smtpd_soft_error_limit`, same default). An error is a command refused with `4xx` or `5xx` (a "
            "line too long aside, as in Postfix); a message taken forgives the errors before it."),
    _number("hard_error_limit", "Hard error limit", "errors before the client is disconnected",
            "The error that reaches this count is followed by `421 4.7.0 <hostname> Error: too many errors` "
            "and the end of the session, logged as `too many errors after RCPT from CLIENT` (Postfix's "
            "`smtpd_hard_error_limit`, same default). It bounds what one client can make the relay refuse and "
            "log, such as a dictionary attack on recipient addresses."),
    Field("error_sleep_time", "duration", check_duration_or_off, "Error sleep time",
          "wait for each reply past the soft limit; 0: none",
          "How long each reply waits once a client has made `soft_error_limit` errors (Postfix's "
          "`smtpd_error_sleep_time`, same default); `0` for no wait."),
    Field("dns_servers", "list", check_dns_server, "DNS servers", "resolvers for MX lookups, one per line; empty: system",
          "DNS servers for delivery lookups (`192.0.2.53` or `127.0.0.1:5353`); empty uses the system's resolver."),
    Field("tls", "section", None, "TLS (receiving)", "the certificate this system offers with STARTTLS", make=TlsFiles, fields=(
        Field("cert_file", "text", check_file_path, "Certificate file", "PEM certificate chain; empty: no STARTTLS",
              "Certificate (PEM, with its chain) for inbound `STARTTLS` and `smtps_listen`; without it STARTTLS is "
              "not offered. Every `tls.` file must be a regular file: a FIFO, device or directory is refused at once "
              "(`mta.tls.cert_file: ... is a FIFO, not a regular file`), never read."),
        Field("key_file", "text", check_file_path, "Key file", "the certificate's private key (PEM)",
              "The private key (PEM) of `tls.cert_file`."),
        Field("inbound", "choice", None, "Inbound TLS", "may: offer STARTTLS; require: refuse mail without it",
              "`may` offers STARTTLS; `require` answers `MAIL` before STARTTLS with `530 5.7.0` (needs the "
              "certificate).", choices=INBOUND_TLS_LEVELS),
        Field("client_cert_file", "text", check_file_path, "Client certificate", "shown to next hops that ask for one",
              "Certificate shown to next hops that ask for one (see [TLS policy](#tls-policy))."),
        Field("client_key_file", "text", check_file_path, "Client key file", "the client certificate's private key",
              "The private key of `tls.client_cert_file`."),
        Field("ca_file", "text", check_file_path, "CA file", "CAs trusted for tls: verify; empty: the system's",
              "Authorities (PEM) that next hops under `tls: verify` are checked against; empty uses the system's "
              "store."),
    )),
    Field("tls_policy", "map", None, "TLS policy", "TLS level per destination; easier in Transport security (F8, ^t)",
          "TLS level for mail delivered straight to a domain's MX hosts (Postfix's `smtp_tls_policy_maps`): "
          "`partner.org: secure`, or `.partner.org` for every domain below it, or a mapping "
          "`{level: verify, match: [mx.partner.org], ca_file: /etc/postern/partner-ca.pem}`. An entry "
          "overrides DANE and MTA-STS for its domain; mail to a relay host follows that host's `tls`. "
          "See [TLS](tls.md).",
          key_check=check_policy_domain,
          entry=Field("entry", "section", None, "Destination", "its level, and the names and CAs to check",
                      fields=_TLS_POLICY_FIELDS, parse=_parse_tls_policy, shape=_TLS_POLICY_SHAPE)),
    Field("tls_reports", "bool", check_bool, "TLS reports", "send the daily TLS reports (RFC 8460) domains ask for",
          "Once a day, send each destination domain that publishes a `_smtp._tls` TXT record the report of "
          "yesterday's TLS sessions with it (RFC 8460), by mail or HTTPS. See [TLS](tls.md#tls-reports)."),
    Field("authentication", "section", None, "Mail authentication",
          "DKIM signing, SPF/DKIM/DMARC checks, ARC sealing", make=MailAuthentication, fields=(
              Field("dkim_keys", "map", None, "DKIM keys", "domain: its selector and key file",
                    "Mail from these domains (its `From:` address) is signed with DKIM: `example.com: {selector: "
                    "s2026, key_file: /etc/postern/dkim/example.com.s2026.key}`. `postern-appliance dkim new "
                    "example.com` makes a key and prints the DNS record to publish. See "
                    "[authentication](authentication.md).",
                    key_check=check_domain,
                    entry=Field("entry", "section", None, "Key", "its selector and key file", make=DkimKey, fields=(
                        Field("selector", "text", check_selector, "Selector", "the DNS label before ._domainkey"),
                        Field("key_file", "text", check_file_path, "Key file",
                              "the private key (PEM, root:postern 0640)"),
                    ))),
              Field("check_inbound", "bool", check_bool, "Check inbound", "SPF, DKIM and DMARC on mail from outside",
                    "Check SPF, DKIM and DMARC on mail from outside (not from `my_networks` or the Microsoft 365 "
                    "tenant) and add one `Authentication-Results:` header; forged ones with our name are removed."),
              Field("dmarc_policy", "choice", None, "DMARC policy", "annotate: add results only; enforce: act on p=",
                    "`annotate` (default) only adds the results; `enforce` refuses mail failing DMARC with "
                    "`p=reject` (`550 5.7.1`) and holds mail failing with `p=quarantine`.", choices=DMARC_POLICIES),
              Field("arc_seal", "bool", check_bool, "ARC seal", "seal mail from outside passed on (RFC 8617)",
                    "Seal mail from outside that goes on to the internal relay with ARC, carrying the results, "
                    "with the key of `arc_domain` (so that Microsoft 365, trusting Postern as an ARC sealer, keeps "
                    "them). Needs a DKIM key."),
              Field("arc_domain", "text", check_optional_domain, "ARC domain", "the dkim_keys domain that seals; "
                    "empty: the first with an RSA key"),
              Field("authserv_id", "text", check_optional_fqdn, "Authserv-id",
                    "the name in Authentication-Results; empty: My hostname"),
          )),
    Field("queue", "section", None, "Queue", "when deferred mail is tried again, and for how long", make=QueueTimes, fields=(
        _duration("minimal_backoff_time", "Minimal backoff", "shortest wait before trying deferred mail again",
                  "Shortest wait before retrying a deferred message."),
        _duration("maximal_backoff_time", "Maximal backoff", "longest wait between two tries",
                  "Longest wait between retries."),
        _duration("maximal_queue_lifetime", "Queue lifetime", "bounce mail still not delivered after this long",
                  "A message still undeliverable after this long is returned to its sender."),
        _duration("delay_warning_time", "Delay warning", "tell the sender once mail waits this long; 0: never",
                  'Once a message has waited this long (`4h`, or seconds), its sender gets one "delayed" notice '
                  "(`Delayed Mail (still being retried)`, `Action: delayed`) for the recipients still deferred whose "
                  "`NOTIFY` allows it; Postfix's `delay_warning_time`. `0` (Postfix's default) sends none. See "
                  "[the queue](queue.md#notices-to-the-sender).", check=check_duration_or_off),
    )),
    Field("delivery", "section", None, "Delivery", "how the relay talks to next hops", make=DeliverySettings, fields=(
        _number("destination_concurrency_limit", "Concurrency limit", "most deliveries at once to one destination",
                "Parallel connections to one next hop."),
        _duration("connect_timeout", "Connect timeout", "give up connecting to a next hop after this long",
                  "Time to establish a connection and read the greeting."),
        _duration("command_timeout", "Command timeout", "give up on a next hop silent this long",
                  "Time to wait for each reply of the next hop: to `EHLO`/`HELO`, `STARTTLS`, `MAIL`, `RCPT`, `RSET` "
                  "(Postfix's `smtp_helo_timeout`, `smtp_starttls_timeout`, `smtp_mail_timeout`, "
                  "`smtp_rcpt_timeout`, all 300s; `RSET` too, where Postfix waits 20s; the greeting waits "
                  "`connect_timeout`, and `QUIT` 5s)."),
        _duration("data_init_timeout", "DATA timeout", "wait this long for the reply to DATA",
                  "Time to wait for the reply to `DATA` (Postfix's `smtp_data_init_timeout`)."),
        _duration("data_xfer_timeout", "Transfer timeout", "give up when one write of a message stalls this long",
                  "Time each write of the message content may take (`smtp_data_xfer_timeout`): a slow link that "
                  "keeps moving finishes, however long the whole message takes."),
        _duration("data_done_timeout", "Final-dot timeout", "wait this long for the reply after the message",
                  "Time to wait for the reply after the final dot (`smtp_data_done_timeout`)."),
    )),
    Field("smtps_listen", "list", check_listen, "SMTPS listen", "address:port for TLS on connect (465), one per line",
          "Addresses to accept SMTPS on (TLS from the first byte, port 465), like `listen`; needs the certificate."),
    Field("m365", "section", None, "Microsoft 365", "Exchange Online tenants that may relay out through this system",
          make=M365Tenants, fields=(
              Field("tenant_ids", "list", check_tenant_id, "Tenant IDs", "tenant GUIDs allowed to relay out, one per line",
                    "Your Microsoft 365 tenant IDs (GUIDs); with none the tenant check is off. See "
                    "[Microsoft 365](#microsoft-365-tenant-restriction)."),
              Field("networks", "list", check_network, "Exchange networks", "Exchange Online's outbound ranges, one per line",
                    "Where Exchange Online connects from: by default its published outbound ranges."),
          )),
    Field("reject_unverified_recipient", "section", None, "Reject unverified recipient",
          "ask the internal server whether a recipient exists first", make=RecipientVerification, fields=(
              Field("enabled", "bool", check_bool, "Enabled", "refuse recipients the internal server does not know",
                    "Ask `internal_relay` whether it takes a recipient before accepting `RCPT` for a relay domain."),
              Field("code", "choice", None, "Reject code", "450 (try later) while testing, 550 once it works",
                    "Reply to an address the internal server refused: `450` (try later) or `550` (refused).",
                    choices=VERIFY_CODES),
              _duration("positive_expire_time", "Known for", "how long a valid recipient is remembered",
                        'How long a "deliverable" answer is remembered.'),
              _duration("negative_expire_time", "Unknown for", "how long an invalid one is remembered",
                        'How long an "undeliverable" answer is remembered.'),
          )),
    Field("marker", "section", None, "Loop marker", "a header on relayed mail that shows a loop", make=LoopMarker, fields=(
        Field("enabled", "bool", check_bool, "Enabled", "add the header; refuse mail carrying it too often",
              "Stamp every relayed message with the marker header and strip it from untrusted mail."),
        Field("header", "text", check_header_name, "Header", "the marker's header name",
              "The marker's name, for an Exchange transport rule's exception."),
        Field("value", "text", check_header_value, "Value", "the marker's value; empty: My hostname",
              "The marker's value; empty means `hostname`."),
        _number("loop_limit", "Loop limit", "this many markers mean the message loops",
                "A message arriving with our marker more times than this is a loop: `554 5.4.6`."),
    )),
    _domains("paused_domains", "Paused domains", "mail from or to these is refused (451, the sender retries), one per line",
             "Domains on migration hold: mail from or to them gets `451 4.3.2` at `RCPT`."),
    Field("peername_lookup", "bool", check_bool, "Client name lookup",
          "log and stamp each client's verified DNS name; off: unknown",
          "Look up each client's name for the log and the `Received:` header: its PTR record, kept only if that "
          "name's A/AAAA record leads back to the address (Postfix's verified name); otherwise, or after 5 seconds "
          "without an answer, `unknown`. Uses `dns_servers`; answers are kept an hour, and clients of one address "
          "that arrive while its lookup runs share that lookup (a client that leaves before the answer does not "
          "stop it). `false` writes `unknown` "
          "and asks no DNS server."),
    Field("metrics", "section", None, "Metrics (Prometheus)", "an HTTP endpoint for Prometheus; off without an address",
          make=MetricsSettings, fields=(
              Field("listen", "text", check_optional_listen, "Listen on", "address:port for Prometheus; empty: off",
                    "Address and port of the Prometheus endpoint `/metrics` (see [Monitoring](monitoring.md)), such "
                    "as `127.0.0.1:9325`; empty (the default) turns it off. "
                    "Any address but a loopback one needs `username` and `password_file`: the queue's destinations "
                    "and next hops' replies are never shown to anyone who can reach the address."),
              Field("username", "text", check_username, "User name", "the login Prometheus sends (basic auth)",
                    "With `password_file`: every request must carry this login (HTTP basic auth), or gets `401`."),
              Field("password_file", "text", check_secret_file, "Password file",
                    "file holding the password (mode 640, root:postern)",
                    "The file holding the login's password on one line, not readable by every user (640, "
                    "root:postern); read again on each reload."),
              Field("cert_file", "text", check_file_path, "Certificate file", "PEM certificate chain; empty: plain HTTP",
                    "With `key_file`: the endpoint speaks HTTPS with this certificate (PEM, with its chain), read "
                    "again on each reload. Its own, not `tls.cert_file`: Prometheus reaches it by the management "
                    "address, which the SMTP certificate does not name."),
              Field("key_file", "text", check_file_path, "Key file", "the certificate's private key (PEM)",
                    "The private key (PEM) of `metrics.cert_file`."),
          )),
)


def mta_field(path: tuple[str, ...] | str) -> Field | None:
    """The description of a field by its path of keys (or dotted key), or None for a key the relay does not know."""
    first, *rest = path.split(".") if isinstance(path, str) else path
    found = next((candidate for candidate in MTA_FIELDS if candidate.name == first), None)
    for name in rest:
        found = found.field(name) if found else None
    return found


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
    _check_authentication(config, problems)
    _check_metrics(config.metrics, problems)
    verification = config.reject_unverified_recipient
    if verification.enabled and not (config.relay_domains and config.internal_relay.host):
        problems.append(
            "mta.reject_unverified_recipient.enabled: recipients are verified at internal_relay for the "
            "relay_domains: set both, or turn verification off"
        )


def _check_authentication(config: MtaConfig, problems: list[str]) -> None:
    auth = config.authentication
    where = "mta.authentication"
    for domain, key in auth.dkim_keys.items():
        for name in ("selector", "key_file"):
            if not getattr(key, name):
                problems.append(f"{where}.dkim_keys.{domain}.{name}: required: "
                                + ("name the DNS label, such as s2026" if name == "selector" else
                                   "name the private key file (postern-appliance dkim new makes one)"))
    if auth.arc_domain and auth.arc_domain not in auth.dkim_keys:
        problems.append(f"{where}.arc_domain: {auth.arc_domain} has no key in dkim_keys: add one, or leave it empty")


def _check_metrics(metrics: MetricsSettings, problems: list[str]) -> None:
    """The endpoint's pairs of fields, and its rule: beyond loopback, never without a login."""
    where = "mta.metrics"
    pairs = (("username", "password_file", "name the file that holds the password"),
             ("password_file", "username", "name the login Prometheus sends"),
             ("cert_file", "key_file", "name the certificate's private key file"),
             ("key_file", "cert_file", "name the certificate file"))
    for given, needed, what in pairs:
        if getattr(metrics, given) and not getattr(metrics, needed):
            problems.append(f"{where}.{needed}: required with {given}: {what}")
    if metrics.listen and not metrics.loopback and not metrics.username:
        problems.append(
            f"{where}.listen: {metrics.listen} is not a loopback address: the endpoint shows the queue's destinations "
            "and next hops' replies: set username and password_file (and cert_file, key_file for HTTPS), "
            "or listen on 127.0.0.1")


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
    verified = relay.tls in ("verify", "secure")
    if relay.tls_name and not verified:
        problems.append(
            f"{where}.tls_name: only checked with tls: verify or secure: set one, or remove tls_name"
        )
    if verified and not relay.tls_name and is_ip(relay.host):
        problems.append(
            f"{where}.tls_name: required with tls: {relay.tls} when host is an IP address: "
            "name the host name its certificate carries"
        )
    if relay.tls == "dane-only" and is_ip(relay.host):
        problems.append(f"{where}.tls: dane-only finds TLSA records by the host's name: "
                        "give host as a name, or choose another level")
    if relay.username and not relay.password_file:
        problems.append(f"{where}.password_file: required with username: name the file that holds the password")
    if relay.password_file and not relay.username:
        problems.append(f"{where}.username: required with password_file: name the login for the smart host")
    if relay.username and not relay.host:
        problems.append(f"{where}.host: required with username: name the smart host that wants the login")
    if relay.username and relay.tls not in LOGIN_LEVELS:
        # Over unverified TLS, anyone on the path who answers STARTTLS with any certificate reads the password.
        problems.append(
            f"{where}.tls: {relay.tls} would send the password to a server whose certificate is not checked: "
            "set tls: verify (trust its CA with tls.ca_file if it is not a public one), secure or dane-only"
        )


def _default_external_tls(data: Any, values: dict) -> None:
    """The external relay's `tls` when none is written: `verify` with a login (the password goes to a
    checked server only), else `dane` (DANE where TLSA records are published with DNSSEC, else `may`)."""
    external = values.get("external_relay")
    written = data.get("external_relay") if isinstance(data, dict) else None
    if isinstance(external, RelayHost) and not (isinstance(written, dict) and "tls" in written):
        values["external_relay"] = dataclasses.replace(external, tls="verify" if external.username else "dane")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def parse_mta(data: Any) -> tuple[MtaConfig | None, list[str]]:
    """Validate an `mta:` section; returns (config, []) or (None, problems)."""
    problems: list[str] = []
    values = parse_section("mta", data, MTA_FIELDS, problems) or {}
    if isinstance(data, dict):  # else "must be a mapping" says it all
        problems = refuse_control_chars("mta", data, problems)
    _default_external_tls(data, values)
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

    def plain(field: Field | None, value: Any) -> Any:
        if field is not None and field.kind == "section":
            return {sub.name: plain(sub, getattr(value, sub.name)) for sub in field.fields}
        if field is not None and field.kind == "map":  # tls_policy, dkim_keys: each entry as its mapping
            return {key: plain(field.entry, entry) for key, entry in value.items()}
        if isinstance(value, tuple):
            return [plain(None, v) for v in value]
        if isinstance(value, (ListenAddress, ipaddress.IPv4Network, ipaddress.IPv6Network)):
            return str(value)
        return value

    return {field.name: plain(field, getattr(config, field.name)) for field in MTA_FIELDS}
