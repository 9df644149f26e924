"""A private Postfix instance for the benchmark.

Everything lives in one temporary directory: its own config_directory (main.cf,
master.cf), queue_directory, data_directory and meta_directory, started with
`postfix -c DIR start`. Nothing under the system's /etc/postfix is read or
written: `postfix start` needs two metadata files the package ships (postfix-files,
dynamicmaps.cf), which are copied into the instance's meta_directory. The
instance is stopped, its processes waited for, and the directory removed afterwards.

Settings are Postfix's defaults except what a relay between two loopback ports
needs: queue files are fsynced as usual, chroot is off, in_flow_delay = 0,
relayhost = [127.0.0.1]:SINKPORT, mynetworks = 127.0.0.0/8, no local delivery.

Other users (the conformance suite under tests/conformance/) pass their own
`settings` on top, change them later with `postconf()` and `reload()`, and use
`flush()`, `delete_queue()` and `log()` as an admin would use postqueue -f,
postsuper -d ALL and the mail log. With `resolv_conf`, the instance runs in a
private mount namespace (`unshare --mount`) where that file is bind-mounted over
/etc/resolv.conf, so its DNS lookups go to a test server; the host's /etc is
never changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psutil

from .tools import HOST, BenchError, accepts_connections, tail, tree_cpu_seconds, tree_memory, wait_until

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
POSTSUPER = shutil.which("postsuper") or "/usr/sbin/postsuper"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
# Where the package installs those metadata files (Debian puts postfix-files under /etc/postfix); only read.
_META_SOURCES = [Path("/usr/share/postfix"), Path("/etc/postfix")]

# Postfix's standard master.cf services, with the chroot column set to n.
_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_version() -> str:
    try:
        out = subprocess.run([POSTCONF, "-d", "-h", "mail_version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _meta_file(name: str) -> Path:
    for directory in _META_SOURCES:
        if (directory / name).is_file():
            return directory / name
    raise BenchError(f"cannot find Postfix's {name}: is the postfix package installed?")


class PostfixInstance:
    def __init__(self, sink_port: int, parent: Path | None = None, settings: dict[str, object] | None = None,
                 resolv_conf: Path | None = None):
        if os.geteuid() != 0:
            raise BenchError("a private Postfix instance must be started as root")
        self.sink_port = sink_port
        self.resolv_conf = resolv_conf
        self.settings = dict(settings or {})  # main.cf parameters on top of the ones below
        self.port = 0
        self.root = Path(tempfile.mkdtemp(prefix="postfix-bench-", dir=parent))
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.data_dir = self.root / "data"
        self.log_path = self.root / "maillog"
        self.started = False
        self._seen: dict[int, psutil.Process] = {}  # every process of the instance seen so far

    def _write_config(self) -> None:
        os.chmod(self.root, 0o755)  # the postfix user must reach its queue and data directories
        self.config_dir.mkdir()
        for name in ("postfix-files", "dynamicmaps.cf"):
            shutil.copy(_meta_file(name), self.config_dir / name)
        for name in ("postfix-files.d", "dynamicmaps.cf.d"):
            (self.config_dir / name).mkdir()
        self.queue_dir.mkdir(mode=0o755)  # postfix start creates what is inside
        main = {
            "compatibility_level": "3.6",
            "config_directory": self.config_dir,
            "meta_directory": self.config_dir,
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix-bench.example.net",
            "mydomain": "example.net",
            "mydestination": "",
            "inet_interfaces": HOST,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": "example.com",
            "relayhost": f"[{HOST}]:{self.sink_port}",
            "in_flow_delay": "0",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "local_transport": "error:local delivery is disabled",
            "biff": "no",
            "maillog_file": self.log_path,
            "maillog_file_prefixes": self.root,
            **self.settings,
        }
        (self.config_dir / "main.cf").write_text("".join(f"{key} = {value}\n" for key, value in main.items()))
        listener = f"{HOST}:{self.port} inet  n       -       n       -       -       smtpd\n"
        (self.config_dir / "master.cf").write_text(listener + _SERVICES)

    def _postfix(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [POSTFIX, "-c", str(self.config_dir), *args]
        if self.resolv_conf is not None and args[:1] == ("start",):
            # The master and everything it starts stay in the namespace, with this resolv.conf.
            command = [UNSHARE, "--mount", "--propagation", "private", "--", "sh", "-c",
                       'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(self.resolv_conf), *command]
        return subprocess.run(
            command,
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    def start(self, port: int) -> PostfixInstance:
        self.port = port
        self._write_config()
        self.started = True  # from here on, stop() must run even if starting fails half-way
        result = self._postfix("start")
        if result.returncode != 0:
            raise BenchError(f"postfix start failed ({result.returncode}): {result.stderr.strip()} {tail(self.log_path)}")
        wait_until(lambda: self.master() is not None, 15, "the Postfix master process")
        wait_until(lambda: accepts_connections(self.port), 15, f"Postfix to listen on port {self.port}")
        return self

    def restart(self) -> None:
        """`postfix stop`, wait for the master to go, then `postfix start` again (the queue stays)."""
        self._postfix("stop", timeout=30)
        wait_until(lambda: self.master() is None, 20, "Postfix to stop")
        result = self._postfix("start")
        if result.returncode != 0:
            raise BenchError(f"postfix start failed ({result.returncode}): {result.stderr.strip()}")
        wait_until(lambda: self.master() is not None, 15, "the Postfix master process")
        wait_until(lambda: accepts_connections(self.port), 15, f"Postfix to listen on port {self.port}")

    def postconf(self, settings: dict[str, object]) -> None:
        """Change main.cf parameters (`postconf -e`); `reload()` makes running daemons see them."""
        if not settings:
            return
        result = subprocess.run(
            [POSTCONF, "-c", str(self.config_dir), "-e", *(f"{key}={value}" for key, value in settings.items())],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise BenchError(f"postconf failed: {result.stderr.strip()}")
        self.settings.update(settings)

    def reload(self) -> None:
        """`postfix reload`, returning once the master has logged that it re-read its configuration."""
        before = self.log().count("reload -- version")
        result = self._postfix("reload")
        if result.returncode != 0:
            raise BenchError(f"postfix reload failed: {result.stderr.strip()}")
        wait_until(lambda: self.log().count("reload -- version") > before, 15, "Postfix to reload")

    def flush(self) -> None:
        """Attempt every deferred message now (`postqueue -f`)."""
        subprocess.run([POSTQUEUE, "-c", str(self.config_dir), "-f"], capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL)

    def delete_queue(self) -> None:
        """Delete every queued message (`postsuper -d ALL`)."""
        subprocess.run([POSTSUPER, "-c", str(self.config_dir), "-d", "ALL"], capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL)

    def log(self) -> str:
        """The instance's mail log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def master(self) -> psutil.Process | None:
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
            process = psutil.Process(pid)
        except (OSError, ValueError, IndexError, psutil.Error):
            return None
        self._seen.setdefault(pid, process)
        return process if process.is_running() and process.status() != psutil.STATUS_ZOMBIE else None

    def processes(self) -> list[psutil.Process]:
        """The master and every process it has started (smtpd, cleanup, qmgr, smtp, ...)."""
        master = self.master()
        if master is None:
            return []
        found = [master] + master.children(recursive=True)
        for process in found:
            self._seen.setdefault(process.pid, process)
        return found

    def memory(self) -> dict[str, int] | None:
        """RSS and PSS summed over all the instance's processes (see tools.tree_memory)."""
        return tree_memory(self.processes())

    def rss(self) -> int | None:
        """The resident memory of all the instance's processes, added up (shared pages counted in each)."""
        found = self.memory()
        return found["rss"] if found else None

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU seconds used so far by the whole instance.

        Processes that have exited were reaped by the master, so their times are in
        its children's times; the live ones are added one by one (tools.tree_cpu_seconds)."""
        return tree_cpu_seconds(self.processes())

    def pss(self) -> int | None:
        """Proportional set size, added up over the instance: shared pages divided among their users."""
        found = self.memory()
        return found["pss"] if found else None

    def queue_size(self) -> int:
        count = 0
        for name in ("incoming", "active", "deferred", "hold", "maildrop"):
            for _, _, files in os.walk(self.queue_dir / name):
                count += len(files)
        return count

    def stop(self, keep: bool = False) -> None:
        """Stop the instance, wait for every process it had, and remove its directory."""
        try:
            if self.started:
                self.processes()  # remember the pids, to check they have all gone
                try:
                    self._postfix("stop", timeout=30)
                except subprocess.TimeoutExpired:
                    pass
                self._wait_gone(20)
        finally:
            if not keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def _wait_gone(self, timeout: float) -> None:
        def alive() -> list[psutil.Process]:
            found = []
            for process in self._seen.values():
                try:  # is_running() also tells a reused pid from ours
                    if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                        found.append(process)
                except psutil.Error:
                    pass
            return found

        try:
            wait_until(lambda: not alive(), timeout, "Postfix to stop", interval=0.2)
        except BenchError:
            for process in alive():
                try:
                    process.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(alive(), timeout=5)
