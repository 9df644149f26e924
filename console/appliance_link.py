"""The console's access to the appliance's system layer: network, diagnostics, certificates, power.

Every method here blocks (netlink, files, DNS, SMTP, subprocesses): the screens call them
only from thread workers. Nothing here imports Textual.

Where changes go depends on the root directory and the network namespace:

- root `/`, no namespace: the appliance itself. Network changes go through
  `appliance.network.trial` (files, then systemd-networkd or netlink, and the hostname).
- a namespace (tests): the same trial, on that namespace's kernel, with the files under the
  root; the hostname is left alone (the UTS namespace is shared).
- another root and no namespace (`make run`, a test): the files only; the running
  system is never touched. The countdown still runs, and restores the files when declined.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from relay.config_file import DEFAULT_CONFIG

if TYPE_CHECKING:
    from appliance import certificates
    from appliance.certificates import CertificateInfo
    from appliance.diagnostics.dns_lookup import Answer
    from appliance.diagnostics.helo import HeloVerdict
    from appliance.diagnostics.next_hop import NextHopReport
    from appliance.files import FileSnapshot
    from appliance.network import trial
    from appliance.network.live import LiveState
    from appliance.schema import ApplianceConfig

# The system layer (netlink, DNS, X.509) is imported where it is used: the console starts
# without it, and each screen's first worker pays for what it needs.

DEFAULT_CERT = Path("/etc/postern/tls/postern.pem")
DEFAULT_KEY = Path("/etc/postern/tls/postern.key")
TRY_SECONDS = 60.0
RECORD_TYPES = ("ALL", "A", "AAAA", "MX", "TXT", "PTR", "NS", "CNAME")
SHELL_FALLBACK = "/bin/bash"


class FieldError(Exception):
    """Input the admin must correct; `field` names the form field it belongs to."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


# --- running commands ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str = ""


Runner = Callable[..., CommandResult]


def run_command(argv: list[str], interactive: bool = False) -> CommandResult:
    """Run a command; interactive ones get the terminal, the others have their output captured."""
    try:
        if interactive:
            return CommandResult(subprocess.run(argv).returncode)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        return CommandResult(127, f"{argv[0]}: no such program on this system")
    except subprocess.TimeoutExpired:
        return CommandResult(124, f"{' '.join(argv)}: no answer within 120 s")
    return CommandResult(done.returncode, (done.stderr or done.stdout).strip())


# --- a network change waiting to be kept ---------------------------------------------------------


class PendingChange:
    """A network change in force until it is kept or rolled back (like `postern-appliance try`)."""

    deadline: float
    lines: list[str]

    def __init__(self):
        self._settling = threading.Lock()
        self.settled = False

    def settle(self, keep: bool) -> bool:
        """Keep or roll back, once: False when that was already done (the countdown and a closing console
        may both try)."""
        with self._settling:
            if self.settled:
                return False
            self.keep() if keep else self.roll_back()
            self.settled = True
            return True

    @property
    def confirmed(self) -> bool:  # by `postern-appliance confirm` from another shell
        return False

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.time())

    def keep(self) -> None:
        raise NotImplementedError

    def roll_back(self) -> None:
        raise NotImplementedError


class LiveChange(PendingChange):
    def __init__(self, pending: trial.Trial):
        super().__init__()
        self.trial = pending
        self.deadline = pending.deadline
        applied = pending.applied
        self.lines = [f"wrote /{relative}" for relative in applied.files.write]
        self.lines += [f"removed /{relative}" for relative in applied.files.remove]
        self.lines += [f"note: {note}" for note in applied.notes]
        self.lines.append(f"applied through {applied.backend}")

    @property
    def confirmed(self) -> bool:
        return self.trial.confirmed

    def keep(self) -> None:
        self.trial.keep()

    def roll_back(self) -> None:
        self.trial.roll_back()


class FilesChange(PendingChange):
    """Under a root other than /: the network files only, restored exactly when not kept."""

    def __init__(self, root: Path, snapshot: FileSnapshot, written: list[str], removed: list[str], timeout: float):
        super().__init__()
        self.snapshot = snapshot
        self.deadline = time.time() + timeout
        self.lines = [f"wrote {root / relative}" for relative in written]
        self.lines += [f"removed {root / relative}" for relative in removed]
        self.lines.append(f"files only: the running system is not changed under the root {root}")

    def keep(self) -> None:
        pass

    def roll_back(self) -> None:
        self.snapshot.restore()


# --- what the screens get back -------------------------------------------------------------------


@dataclass
class NetworkView:
    live: LiveState
    document: dict
    problems: list[str] = field(default_factory=list)  # the configuration file's own


@dataclass
class DnsResult:
    name: str
    rdtype: str
    servers: str
    answers: list[Answer] = field(default_factory=list)
    spf: list[str] = field(default_factory=list)
    dmarc: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class InstalledCertificate:
    path: Path
    key_path: Path
    info: CertificateInfo | None = None
    warnings: list[str] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)
    problem: str = ""  # why there is nothing to show
    hostname: str = ""
    in_use: bool = False  # the configuration's mta.tls.cert_file names it
    shown_path: str = ""  # as the appliance names it (the root left out)


class ApplianceLink:
    def __init__(self, config_path: Path | str | None = None, root: Path | str = "/", *, netns: str | None = None,
                 run_command: Runner = run_command, allow_shell: bool = True, shell_user: str | None = None,
                 try_seconds: float = TRY_SECONDS):
        self.config_path = Path(config_path or DEFAULT_CONFIG)
        self.root = Path(root).absolute()
        self.netns = netns
        self.run = run_command
        self.allow_shell = allow_shell
        self.shell_user = shell_user  # whose shell a root console opens (the admin); None: the invoking user
        self.try_seconds = try_seconds

    @property
    def live(self) -> bool:
        """Do network changes reach a running kernel (this one, or the test's namespace)?"""
        return self.netns is not None or self.root.resolve() == Path("/")

    def rooted(self, path: Path | str) -> Path:
        """An appliance path (/etc/postern/...) under the root."""
        path = Path(path)
        return self.root / path.relative_to("/") if path.is_absolute() else self.root / path

    def unrooted(self, path: Path) -> str:
        """A path under the root as the appliance names it: /etc/postern/tls/postern.pem."""
        try:
            return "/" + str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    # --- the configuration file ---

    def document(self) -> dict:
        """The configuration file as a mapping ({} when there is none yet); ConfigError if it is not YAML."""
        from appliance.schema import parse_text
        from appliance.store import ConfigStore
        from relay.config import ConfigError

        text = ConfigStore(self.config_path).current_text()
        document = parse_text(text or "", str(self.config_path))
        if not isinstance(document, dict):
            raise ConfigError([f"{self.config_path}: must be a mapping with sections such as network and mta"])
        return document

    def settings(self) -> ApplianceConfig:
        """The validated configuration, or the defaults where the file is missing or wrong."""
        from appliance.schema import validate_document
        from relay.config import ConfigError

        try:
            config, problems = validate_document(self.document())
        except (ConfigError, OSError):
            config, problems = None, ["unreadable"]
        return config if config is not None and not problems else validate_document({})[0]

    def save_network(self, document: dict) -> str:
        """Save the document's network section into the file as it is now (its other sections may have
        changed meanwhile: the relay saves the mta section itself)."""
        from appliance.store import ConfigStore

        current = self.document()
        if document.get("network"):
            current["network"] = document["network"]
        else:
            current.pop("network", None)
        version = ConfigStore(self.config_path).save(current)
        return f"saved to {self.config_path} (version {version.id})"

    # --- network ---

    def network_view(self) -> NetworkView:
        from appliance.network.live import read_live_state
        from appliance.schema import validate_document
        from relay.config import ConfigError

        live = read_live_state(self.netns, self.root)
        try:
            document = self.document()
        except ConfigError as error:
            return NetworkView(live, {}, error.problems)
        except OSError as error:
            return NetworkView(live, {}, [f"{self.config_path}: cannot read it: {error.strerror}"])
        _, problems = validate_document(document)
        return NetworkView(live, document, problems)

    def start_network_change(self, document: dict) -> PendingChange:
        """Apply the document's network section now; it stays only if kept before the deadline.

        ConfigError with every problem when the document is wrong or names a missing interface;
        ApplyError when the system refused (the previous state is back)."""
        from appliance.files import FileSnapshot
        from appliance.network import trial
        from appliance.network.apply import ApplyError, Target, missing_interfaces
        from appliance.network.kernel import read_kernel_state
        from appliance.network.render import plan, write_plan
        from appliance.schema import validate_document
        from relay.config import ConfigError

        config, problems = validate_document(document)
        if problems:
            raise ConfigError(problems)
        network = config.network
        missing = missing_interfaces(network, read_kernel_state(self.netns))
        if missing:
            raise ConfigError(missing)
        if self.live:
            target = Target(self.root, self.netns, set_hostname=self.netns is None)
            return LiveChange(trial.start(network, target, self.root / "run/postern", self.try_seconds))
        files = plan(network, self.root)
        snapshot = FileSnapshot.take(files.paths)
        try:
            write_plan(files)
        except OSError as error:
            snapshot.restore()
            raise ApplyError([f"{error.filename or self.root}: {error.strerror}: nothing was changed"]) from None
        return FilesChange(self.root, snapshot, list(files.write), list(files.remove), self.try_seconds)

    # --- diagnostics ---

    def resolver(self, servers_text: str, timeout: float = 3.0):
        """A resolver for the servers typed, else the configuration's, else the system's; and their names."""
        from appliance.diagnostics.dns_lookup import make_resolver

        servers = [word for word in servers_text.replace(",", " ").split() if word]
        if not servers:
            settings = self.settings()
            servers = list(settings.mta.dns_servers) or [str(s) for s in settings.network.dns.servers]
        try:
            resolver = make_resolver(servers or None, timeout=timeout)
        except ValueError:
            raise FieldError("servers", f"{servers_text!r} is not a DNS server: write it like 192.0.2.53 or "
                                        "127.0.0.1:5353 (several with commas)") from None
        shown = ", ".join(servers) if servers else "the system's resolvers"
        return resolver, shown

    def dns_lookup(self, name: str, rdtype: str, servers_text: str = "") -> DnsResult:
        from appliance.diagnostics.dns_lookup import lookup, query, reverse_lookup

        name = name.strip().rstrip(".")
        if not name:
            raise FieldError("name", "type a domain name, host name or IP address to look up")
        resolver, shown = self.resolver(servers_text)
        result = DnsResult(name, rdtype, shown)
        address = _ip_or_none(name)
        if rdtype in ("ALL", "PTR") and address:
            result.answers.append(reverse_lookup(resolver, address))
            return result
        if rdtype == "PTR":
            raise FieldError("name", f"{name} is not an IP address: a PTR lookup needs one, such as 192.0.2.10")
        if rdtype == "ALL":
            report = lookup(resolver, name)
            result.answers, result.spf, result.dmarc, result.notes = report.answers, report.spf, report.dmarc, report.notes
            return result
        result.answers.append(query(resolver, name, rdtype))
        if rdtype == "TXT":
            result.spf = [r for r in result.answers[0].records if r.lower().startswith("v=spf1")]
            if result.answers[0].status != "no such domain":
                dmarc = query(resolver, f"_dmarc.{name}", "TXT")
                result.dmarc = [r for r in dmarc.records if r.lower().startswith("v=dmarc1")]
        return result

    def helo_check(self, address: str, helo_name: str, servers_text: str = "") -> HeloVerdict:
        from appliance.diagnostics.helo import check_helo
        from relay.config import check_fqdn

        address = address.strip()
        if not _ip_or_none(address):
            raise FieldError("address", f"{address!r} is not an IP address: type the public address your mail "
                                        "leaves from, such as 203.0.113.10" if address else
                             "type the public address your mail leaves from, such as 203.0.113.10")
        helo_name = helo_name.strip() or self.settings().mta.outgoing_helo
        try:
            helo_name = check_fqdn(helo_name)
        except ValueError as error:
            raise FieldError("helo", str(error)) from None
        resolver, _ = self.resolver(servers_text)
        return check_helo(resolver, helo_name, address)

    def next_hop_targets(self, text: str) -> list[tuple[str, int]]:
        text = text.strip()
        if not text:
            settings = self.settings()
            targets = [(r.host, r.port) for r in (settings.mta.internal_relay, settings.mta.external_relay) if r.host]
            if not targets:
                raise FieldError("hop", "type a HOST:PORT; the configuration names no relay host to check")
            return targets
        host, port = text, "25"
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else "25"
        elif text.count(":") == 1:
            host, port = text.split(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise FieldError("hop", f"{text!r}: write the next hop as HOST:PORT, such as mail.example.com:25 "
                                    "or [2001:db8::25]:25")
        return [(host, int(port))]

    def next_hop(self, host: str, port: int, servers_text: str = "", timeout: float = 10.0) -> NextHopReport:
        from appliance.diagnostics.next_hop import check_next_hop
        from appliance.network.kernel import KernelError, read_kernel_state

        settings = self.settings()
        resolver, _ = self.resolver(servers_text)
        own = (socket.gethostname(), settings.mta.hostname, settings.mta.helo_name, settings.network.hostname or "")
        try:
            local = {a.address for link in read_kernel_state(self.netns).links for a in link.addresses}
        except KernelError:
            local = set()
        return check_next_hop(host, port, resolver=resolver, helo_name=settings.mta.outgoing_helo,
                              own_names=own, local_addresses=local,
                              listen_ports={listen.port for listen in settings.mta.listen}, timeout=timeout)

    # --- certificates ---

    def certificate_paths(self) -> tuple[Path, Path, bool]:
        """Where the certificate and key are (under the root), and whether the configuration uses them."""
        tls = self.settings().mta.tls
        cert = Path(tls.cert_file) if tls.cert_file else DEFAULT_CERT
        key = Path(tls.key_file) if tls.key_file else DEFAULT_KEY
        return self.rooted(cert), self.rooted(key), bool(tls.cert_file)

    def hostname(self) -> str:
        settings = self.settings()
        if settings.network.hostname:
            return settings.network.hostname
        if settings.mta.hostname != "postern.localdomain":
            return settings.mta.hostname
        return socket.getfqdn()

    def installed_certificate(self) -> InstalledCertificate:
        from appliance import certificates
        from appliance.certificates import CertificateError

        cert_path, key_path, in_use = self.certificate_paths()
        hostname = self.hostname()
        found = InstalledCertificate(cert_path, key_path, hostname=hostname, in_use=in_use,
                                     shown_path=self.unrooted(cert_path))
        try:
            pem = cert_path.read_bytes()
        except FileNotFoundError:
            found.problem = f"no certificate is installed at {cert_path}"
            return found
        except OSError as error:
            found.problem = f"{cert_path}: cannot read it: {error.strerror}"
            return found
        try:
            chain = certificates.load_certificates(pem, str(cert_path))
        except CertificateError as error:
            found.problem = str(error)
            return found
        found.info = certificates.describe(chain[0])
        found.warnings = certificates.warnings(found.info, hostname)
        found.chain = [f"{certificates.subject_text(c)}, issued by {c.issuer.rfc4514_string()}" for c in chain[1:]]
        return found

    def _check_request(self, hostname: str, key_type: str) -> str:
        from appliance.certificates import KEY_TYPES
        from relay.config import check_fqdn

        try:
            hostname = check_fqdn(hostname.strip())
        except ValueError as error:
            raise FieldError("hostname", str(error)) from None
        if key_type not in KEY_TYPES:
            raise FieldError("key_type", f"{key_type!r}: use ecdsa or rsa")
        return hostname

    def make_self_signed(self, hostname: str, key_type: str = "ecdsa", days: str | int = 730) -> list[str]:
        from appliance import certificates

        hostname = self._check_request(hostname, key_type)
        try:
            days = int(str(days).strip())
        except ValueError:
            days = 0
        if not 1 <= days <= 3650:
            raise FieldError("days", "the validity is a number of days from 1 to 3650 (two years: 730)")
        cert_path, key_path, _ = self.certificate_paths()
        certificate, key = certificates.self_signed(hostname, days=days, key_type=key_type)
        notes = certificates.install(certificates.Bundle(certificate, (), key), cert_path, key_path, self.root)
        return [f"wrote {cert_path} and {key_path} (a new {key_type} key); the relay loads them", *notes]

    def make_request(self, hostname: str, key_type: str, out: str) -> tuple[str, list[str]]:
        """A CSR for the hostname, with the installed key (a new one if there is none); (PEM, what was done)."""
        from appliance import certificates
        from appliance.certificates import CertificateError
        from appliance.files import atomic_write

        hostname = self._check_request(hostname, key_type)
        if not out.strip():
            raise FieldError("out", "name the file the request is saved to, such as /root/request.pem")
        out_path = Path(out.strip()).expanduser()
        _, key_path, _ = self.certificate_paths()
        done = []
        if key_path.exists():
            try:
                key = certificates.load_key(key_path.read_bytes(), str(key_path))
            except CertificateError as error:
                raise FieldError("key_type", str(error)) from None
            done.append(f"used the installed key {key_path}")
        else:
            key = certificates.new_key(key_type)
            notes = certificates.write_key(key_path, key, self.root)
            done += [f"wrote a new {key_type} key to {key_path}", *notes]
        pem = certificates.csr_pem(certificates.signing_request(hostname, key)).decode("ascii")
        try:
            atomic_write(out_path, pem, 0o644)
        except (OSError, ValueError) as error:
            raise FieldError("out", f"{out_path}: cannot write it: {getattr(error, 'strerror', None) or error}"
                             ) from None
        done.append(f"saved the request to {out_path}: send it to your CA, then import its answer with this key")
        return pem, done

    def check_import(self, cert: str, chain: str, key: str) -> tuple[certificates.Bundle, list[str]]:
        """Read and check a certificate, its chain and its key; (bundle, what it is) or FieldError."""
        from appliance import certificates
        from appliance.certificates import CertificateError

        texts = {}
        for name, value, required in (("cert", cert, True), ("chain", chain, False), ("key", key, True)):
            value = value.strip()
            if not value:
                if required:
                    raise FieldError(name, f"name the {'certificate' if name == 'cert' else 'key'} file (PEM)")
                continue
            try:
                texts[name] = Path(value).expanduser().read_bytes()
            except (OSError, ValueError) as error:
                raise FieldError(name, f"{value}: cannot read it: {getattr(error, 'strerror', None) or error}"
                                 ) from None
        try:
            bundle = certificates.check_bundle(texts["cert"], texts.get("chain"), texts["key"])
        except CertificateError as error:
            words = str(error)
            where = words.partition(":")[0]
            raise FieldError({"chain": "chain", "key": "key"}.get(where, "cert"), words) from None
        info = certificates.describe(bundle.certificate)
        lines = info.lines() + [f"chain {index}: {certificates.subject_text(c)}"
                                for index, c in enumerate(bundle.chain, 1)]
        lines += [f"warning: {w}" for w in certificates.warnings(info, self.hostname())]
        return bundle, lines

    def install_bundle(self, bundle: certificates.Bundle) -> list[str]:
        from appliance import certificates

        cert_path, key_path, _ = self.certificate_paths()
        notes = certificates.install(bundle, cert_path, key_path, self.root)
        return [f"installed {cert_path} (with {len(bundle.chain)} chain certificates) and {key_path}; "
                "the relay loads them", *notes]

    # --- the machine ---

    def shell_permission(self) -> tuple[bool, str]:
        """May the System screen open a shell, and the words that say so. The screen is reached only
        after the login (and never during first boot), so this is about whose shell it is."""
        if not self.allow_shell:
            return False, "not offered on this console (it was started with --no-allow-shell)"
        try:
            user = self._shell_account()
        except KeyError:
            return False, f"not offered: there is no user {self.shell_user} on this system"
        extra = "; sudo for root tasks" if os.geteuid() == 0 else ""
        return True, f"press s for {user.pw_name}'s own login shell ({self._login_shell(user)}{extra})"

    def _shell_account(self) -> pwd.struct_passwd:
        if os.geteuid() == 0:
            return pwd.getpwnam(self.shell_user or "admin")
        return pwd.getpwuid(os.getuid())

    @staticmethod
    def _login_shell(user: pwd.struct_passwd) -> str:
        """The user's shell, unless it is missing or is the login shell that starts this console."""
        shell = user.pw_shell if os.geteuid() == 0 else (os.environ.get("SHELL") or user.pw_shell)
        if not shell or "postern" in shell or not shutil.which(shell):
            shell = SHELL_FALLBACK
        return shell

    def shell(self) -> list[str]:
        """The command for the shell: as the admin (never root) when the console runs as root, through
        runuser's login (the admin's groups, home and environment; sudo asks the admin's password);
        else the invoking user's own shell."""
        user = self._shell_account()
        shell = self._login_shell(user)
        if os.geteuid() == 0:
            return ["runuser", "--login", "--shell", shell, user.pw_name]
        return [shell]

    def power(self, verb: str) -> CommandResult:
        return self.run(["systemctl", verb])


def _ip_or_none(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def uptime_text(seconds: float) -> str:
    delta = datetime.timedelta(seconds=int(seconds))
    days, rest = delta.days, delta.seconds
    return f"{days} d {rest // 3600} h {rest % 3600 // 60} min" if days else f"{rest // 3600} h {rest % 3600 // 60} min"


