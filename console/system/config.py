"""The configuration file as the screens read it: the document as it is, or the settings in force."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.schema import ApplianceConfig


def read_document(config_path: Path) -> dict:
    """The configuration file as a mapping ({} when there is none yet); ConfigError if it is not YAML."""
    from appliance.schema import parse_text
    from appliance.store import ConfigStore
    from relay.config import ConfigError

    text = ConfigStore(config_path).current_text()
    document = parse_text(text or "", str(config_path))
    if not isinstance(document, dict):
        raise ConfigError([f"{config_path}: must be a mapping with sections such as network and mta"])
    return document


def read_settings(config_path: Path) -> ApplianceConfig:
    """The validated configuration, or the defaults where the file is missing or wrong."""
    from appliance.schema import validate_document
    from relay.config import ConfigError

    try:
        config, problems = validate_document(read_document(config_path))
    except (ConfigError, OSError):
        config, problems = None, ["unreadable"]
    return config if config is not None and not problems else validate_document({})[0]
