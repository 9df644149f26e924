"""Render a NetworkConfig into the files a Debian 13 system with systemd-networkd reads.

The renderer is pure: `render` turns the model into `{path: text}` with paths relative to
a root directory; `plan` compares that with what is under a given root (a test's temporary
directory, or `/` on the appliance) and lists the files to write and the files to remove.

Files written:

- `etc/systemd/network/10-postern-<interface>.network`, one per interface (older ones of
  ours for interfaces no longer configured are removed);
- `etc/hostname` and `etc/hosts`, when the hostname is set;
- DNS either as the drop-in `etc/systemd/resolved.conf.d/postern.conf`, when
  `/etc/resolv.conf` under the root is systemd-resolved's link, or as `etc/resolv.conf`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_write, remove_file
from .model import InterfaceConfig, NetworkConfig

NETWORKD_DIR = "etc/systemd/network"
NETWORK_FILE_PREFIX = "10-postern-"
RESOLVED_DROPIN = "etc/systemd/resolved.conf.d/postern.conf"
RESOLV_CONF = "etc/resolv.conf"
HOSTNAME = "etc/hostname"
HOSTS = "etc/hosts"
HEADER = "# Written by postern-appliance from the network: section of the appliance configuration.\n# Changes made here are overwritten: edit the configuration instead.\n"


def network_file(interface_name: str) -> str:
    return f"{NETWORKD_DIR}/{NETWORK_FILE_PREFIX}{interface_name}.network"


def uses_resolved(root: Path) -> bool:
    """True when /etc/resolv.conf under root is a link to systemd-resolved's file."""
    path = Path(root) / RESOLV_CONF
    return path.is_symlink() and "systemd/resolve" in os.readlink(path)


def render_interface(interface: InterfaceConfig) -> str:
    lines = [HEADER, "[Match]", f"Name={interface.name}", ""]
    if interface.mtu:
        lines += ["[Link]", f"MTUBytes={interface.mtu}", ""]
    lines.append("[Network]")
    if interface.dhcp:
        lines.append("DHCP=ipv4")
    else:
        lines.append("DHCP=no")
        lines += [f"Gateway={gateway}" for gateway in interface.gateways]
    for address in interface.addresses:
        lines += ["", "[Address]", f"Address={address}"]
        if address.version == 4 and interface.broadcast:
            lines.append(f"Broadcast={interface.broadcast}")
    return "\n".join(lines) + "\n"


def render_hosts(config: NetworkConfig) -> str:
    hostname = config.hostname or "localhost"
    short = hostname.split(".")[0]
    names = f"{hostname} {short}" if short != hostname else hostname
    static = [address.ip for interface in config.interfaces for address in interface.addresses if address.version == 4]
    own = str(static[0]) if static else "127.0.1.1"
    lines = [HEADER.rstrip("\n"), "127.0.0.1\tlocalhost", f"{own}\t{names}", ""]
    lines += ["::1\tlocalhost ip6-localhost ip6-loopback", "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters"]
    if config.hosts:
        lines.append("")
        lines += [f"{address}\t{' '.join(names)}" for address, names in config.hosts]
    return "\n".join(lines) + "\n"


def render_resolv_conf(config: NetworkConfig) -> str:
    lines = [HEADER.rstrip("\n")]
    lines += [f"nameserver {server}" for server in config.dns.servers]
    if config.dns.search:
        lines.append(f"search {' '.join(config.dns.search)}")
    return "\n".join(lines) + "\n"


def render_resolved_dropin(config: NetworkConfig) -> str:
    lines = [HEADER, "[Resolve]"]
    lines.append(f"DNS={' '.join(str(server) for server in config.dns.servers)}")
    lines.append(f"Domains={' '.join(config.dns.search)}")
    return "\n".join(lines) + "\n"


def render(config: NetworkConfig, resolved: bool = False) -> dict[str, str | None]:
    """The files for `config`, relative to the root; None means the file must not exist."""
    files: dict[str, str | None] = {network_file(i.name): render_interface(i) for i in config.interfaces}
    if config.hostname:
        files[HOSTNAME] = config.hostname + "\n"
        files[HOSTS] = render_hosts(config)
    has_dns = bool(config.dns.servers or config.dns.search)
    if resolved:
        files[RESOLVED_DROPIN] = render_resolved_dropin(config) if has_dns else None
    elif has_dns:
        files[RESOLV_CONF] = render_resolv_conf(config)
    return files


@dataclass
class FilePlan:
    """What writing a configuration under a root changes: files to write and files to remove."""

    root: Path
    write: dict[str, str] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [self.root / relative for relative in [*self.write, *self.remove]]

    @property
    def changed(self) -> bool:
        return bool(self.write or self.remove)


def plan(config: NetworkConfig, root: Path | str) -> FilePlan:
    """Compare the rendered files with those under root: which to write, which to remove."""
    root = Path(root)
    files = render(config, resolved=uses_resolved(root))
    ours = root / NETWORKD_DIR
    if ours.is_dir():
        for existing in sorted(ours.glob(f"{NETWORK_FILE_PREFIX}*.network")):
            files.setdefault(str(existing.relative_to(root)), None)
    result = FilePlan(root)
    for relative, content in sorted(files.items()):
        path = root / relative
        if content is None:
            if path.exists() or path.is_symlink():
                result.remove.append(relative)
        elif path.is_file() and not path.is_symlink() and path.read_text(encoding="utf-8", errors="replace") == content:
            result.unchanged.append(relative)
        else:
            result.write[relative] = content
    return result


def write_plan(file_plan: FilePlan) -> None:
    for relative, content in file_plan.write.items():
        atomic_write(file_plan.root / relative, content, 0o644)
    for relative in file_plan.remove:
        remove_file(file_plan.root / relative)
