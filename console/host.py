"""Facts about the machine the console runs on (the appliance itself), for the dashboard."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import psutil


@dataclass
class HostFacts:
    hostname: str
    addresses: list[str]
    disk_used_percent: float
    disk_free_gb: float
    memory_used_percent: float
    load: float


def interface_addresses() -> list[str]:
    """`eth0 192.0.2.10` for every address but loopback and link-local IPv6."""
    addresses = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        if name == "lo":
            continue
        for addr in addrs:
            if addr.family == socket.AF_INET or (addr.family == socket.AF_INET6 and not addr.address.startswith("fe80")):
                addresses.append(f"{name} {addr.address}")
    return addresses


def read_facts(disk_path: str = "/") -> HostFacts:
    addresses = interface_addresses()
    disk = psutil.disk_usage(disk_path)
    return HostFacts(
        hostname=socket.getfqdn(),
        addresses=addresses,
        disk_used_percent=disk.percent,
        disk_free_gb=disk.free / 2**30,
        memory_used_percent=psutil.virtual_memory().percent,
        load=psutil.getloadavg()[0],
    )
