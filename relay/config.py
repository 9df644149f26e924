"""The relay's configuration: the `mta:` section of the appliance YAML file.

Keys mirror the CipherMail MTA page so that an admin following that guide finds
every setting under the same name. `parse_mta` validates a whole section and
returns every problem at once, each naming the field and what to do about it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

DEFAULT_CONFIG = "/etc/postern/postern.yaml"

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True)
class QueueTimes:
    minimal_backoff_time: int = 300
    maximal_backoff_time: int = 4000
    maximal_queue_lifetime: int = 5 * 86400


@dataclass(frozen=True)
class DeliverySettings:
    destination_concurrency_limit: int = 20
    connect_timeout: int = 30
    command_timeout: int = 300


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
    recipient_limit: int = 1000
    hopcount_limit: int = 50
    max_connections: int = 100
    idle_timeout: int = 300
    session_timeout: int = 3600
    junk_command_limit: int = 100
    dns_servers: tuple[str, ...] = ()
    tls: TlsFiles = TlsFiles()
    queue: QueueTimes = QueueTimes()
    delivery: DeliverySettings = DeliverySettings()
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def outgoing_helo(self) -> str:
        return self.helo_name or self.hostname

    def is_trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.my_networks if net.version == addr.version)

    def is_relay_domain(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        for relay_domain in self.relay_domains:
            if domain == relay_domain:
                return True
            if self.match_subdomains and domain.endswith("." + relay_domain):
                return True
        return False


# --- field checkers: each returns the clean value or raises ValueError(message) ---


def check_fqdn(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a fully qualified host name such as gw.example.com")
    name = value.lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(
            f"{value!r} is not a fully qualified host name: use letters, digits and "
            "hyphens in dot-separated labels, such as gw.example.com"
        )
    return name


def check_domain(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a domain name such as example.com")
    name = value.lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{value!r} is not a domain name: write it like example.com")
    return name


def check_optional_fqdn(value: Any) -> str:
    if value in ("", None):
        return ""
    return check_fqdn(value)


def check_banner(value: Any) -> str:
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        raise ValueError("must be printable ASCII text on one line, such as 'ESMTP Postern'")
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
    """Seconds, as a number or with a unit like Postfix: 300s, 10m, 1h, 5d, 1w."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{value!r} is not a duration: use seconds or a number with s, m, h, d or w, such as 5d")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


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
    match = re.match(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$", text) or re.match(r"^([0-9.]+):(\d+)$", text)
    if not match:
        raise ValueError(f"{value!r} is not an address and port: write it like 0.0.0.0:25 or [::]:25")
    try:
        host = str(ipaddress.ip_address(match.group(1)))
    except ValueError:
        raise ValueError(f"{value!r}: {match.group(1)!r} is not an IP address") from None
    return ListenAddress(host, check_port(int(match.group(2))))


def check_dns_server(value: Any) -> str:
    text = str(value)
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    try:
        ipaddress.ip_address(host.strip("[]"))
        if port:
            check_port(int(port))
    except ValueError:
        raise ValueError(f"{value!r} is not a DNS server address: write it like 192.0.2.53 or 127.0.0.1:5353") from None
    return text


def list_of(check: Callable[[Any], Any]):
    """Marker: the field is a list whose items are checked one by one."""
    return ("list", check)


def section(cls, fields: dict):
    """Marker: the field is a nested mapping with its own fields."""
    return ("section", cls, fields)


_RELAY_HOST_FIELDS = {"host": check_host, "port": check_port, "mx": check_bool}

MTA_FIELDS: dict[str, Any] = {
    "hostname": check_fqdn,
    "helo_name": check_optional_fqdn,
    "banner": check_banner,
    "listen": list_of(check_listen),
    "relay_domains": list_of(check_domain),
    "match_subdomains": check_bool,
    "my_networks": list_of(check_network),
    "internal_relay": section(RelayHost, _RELAY_HOST_FIELDS),
    "external_relay": section(RelayHost, _RELAY_HOST_FIELDS),
    "message_size_limit": positive_int(1024),
    "recipient_limit": positive_int(),
    "hopcount_limit": positive_int(),
    "max_connections": positive_int(),
    "idle_timeout": check_duration,
    "session_timeout": check_duration,
    "junk_command_limit": positive_int(),
    "dns_servers": list_of(check_dns_server),
    "tls": section(TlsFiles, {"cert_file": str, "key_file": str}),
    "queue": section(
        QueueTimes,
        {
            "minimal_backoff_time": check_duration,
            "maximal_backoff_time": check_duration,
            "maximal_queue_lifetime": check_duration,
        },
    ),
    "delivery": section(
        DeliverySettings,
        {
            "destination_concurrency_limit": positive_int(),
            "connect_timeout": check_duration,
            "command_timeout": check_duration,
        },
    ),
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


def parse_mta(data: Any) -> tuple[MtaConfig | None, list[str]]:
    """Validate an `mta:` section; returns (config, []) or (None, problems)."""
    problems: list[str] = []
    values = _parse_fields("mta", data, MTA_FIELDS, problems)
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
    return config


def to_dict(config: MtaConfig) -> dict:
    """The whole running `mta` section, defaults included, in the file's own shape."""

    def plain(value):
        if isinstance(value, (RelayHost, TlsFiles, QueueTimes, DeliverySettings)):
            return {k: plain(v) for k, v in value.__dict__.items()}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, (ListenAddress, ipaddress.IPv4Network, ipaddress.IPv6Network)):
            return str(value)
        return value

    return {name: plain(getattr(config, name)) for name in MTA_FIELDS}
