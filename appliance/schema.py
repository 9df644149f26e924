"""The whole appliance configuration file: every section, validated by its owner.

One YAML document holds the appliance's settings. Each top-level section has exactly one
validator: `network:` is checked by `appliance.network.model`, and `mta:` by the relay's
own `relay.config.parse_mta`, the code the relay daemon runs, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from relay import fields
from relay.config import MTA_FIELDS, ConfigError, MtaConfig, parse_mta, refuse_control_chars
from relay.fields import Field

from .network.model import NETWORK_FIELDS, NetworkConfig, parse_network

SECTIONS: dict[str, Callable[[Any], tuple[Any, list[str]]]] = {
    "network": parse_network,
    "mta": parse_mta,
}

# Each section's field descriptions, the ones its validator walks.
FIELDS: dict[str, tuple[Field, ...]] = {
    "network": NETWORK_FIELDS,
    "mta": MTA_FIELDS,
}


def field_paths() -> list[tuple[tuple[str, ...], bool]]:
    """Every field of the configuration file as (path of keys, is it a list), its section first, such as
    ("mta", "tls", "cert_file"); "*" is a key of the admin's choosing (an interface name, a hosts address)."""
    return [((name,) + path, is_list)
            for name, described in FIELDS.items() for path, is_list in fields.field_paths(described)]


__all__ = ["ApplianceConfig", "ConfigError", "SECTIONS", "field_paths", "load_config_file", "parse_text", "validate_document"]


@dataclass(frozen=True)
class ApplianceConfig:
    network: NetworkConfig
    mta: MtaConfig
    document: dict = field(default_factory=dict, compare=False, repr=False)


def validate_document(document: Any) -> tuple[ApplianceConfig | None, list[str]]:
    """Check every section; returns (config, []) or (None, every problem found)."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        return None, [f"the file must be a mapping with sections such as {', '.join(SECTIONS)}"]
    unknown = {key: value for key, value in document.items() if key not in SECTIONS}
    problems = [f"{key}: unknown section; known sections are {', '.join(SECTIONS)}" for key in unknown]
    problems = refuse_control_chars("", dict.fromkeys(unknown), problems)  # its name is all that is shown
    parsed = {}
    for name, parse in SECTIONS.items():
        value, section_problems = parse(document.get(name))
        parsed[name] = value
        problems += section_problems
    if problems:
        return None, problems
    return ApplianceConfig(parsed["network"], parsed["mta"], document), []


def parse_text(text: str, source: str = "the configuration") -> dict:
    """The YAML document in `text`; ConfigError with one line when it is not YAML."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError([f"{source}: not valid YAML{where}: {reason}"]) from None
    return {} if document is None else document


def load_config_text(text: str, source: str = "the configuration") -> ApplianceConfig:
    config, problems = validate_document(parse_text(text, source))
    if problems:
        raise ConfigError(problems)
    return config


def load_config_file(path: Path | str) -> ApplianceConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read the configuration file: {error.strerror}"]) from None
    return load_config_text(text, str(path))
