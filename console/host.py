"""Facts about the machine the console runs on (the appliance itself), for the dashboard and the System screen.

`read_facts` blocks: the host name goes through the resolver (a fresh appliance's may not answer for
a long time) and psutil reads /proc. Screens call it in a worker thread, which posts `HostFactsRead`.
The screens add the security updates' state (`appliance.security_updates.read_state`), read in the same
worker from the files under the console's root directory (the appliance's own /, or the sandbox's).
"""

from __future__ import annotations

import datetime
import platform
import socket
import time
from dataclasses import dataclass

import psutil

from appliance.security_updates import SecurityUpdates


@dataclass
class HostFacts:
    hostname: str
    os_name: str
    kernel: str
    uptime: float
    users: int
    addresses: list[str]
    disk_used_percent: float
    disk_free_gb: float
    memory_used_percent: float
    load: float
    security_updates: SecurityUpdates | None = None  # None: not read


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


def os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    except OSError:
        return platform.system()


def uptime_text(seconds: float) -> str:
    delta = datetime.timedelta(seconds=int(seconds))
    days, rest = delta.days, delta.seconds
    return f"{days} d {rest // 3600} h {rest % 3600 // 60} min" if days else f"{rest // 3600} h {rest % 3600 // 60} min"


def read_facts(disk_path: str = "/") -> HostFacts:
    disk = psutil.disk_usage(disk_path)
    return HostFacts(
        hostname=socket.getfqdn(),
        os_name=os_name(),
        kernel=platform.release(),
        uptime=time.time() - psutil.boot_time(),
        users=len(psutil.users()),
        addresses=interface_addresses(),
        disk_used_percent=disk.percent,
        disk_free_gb=disk.free / 2**30,
        memory_used_percent=psutil.virtual_memory().percent,
        load=psutil.getloadavg()[0],
    )
