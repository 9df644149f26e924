"""Unattended provisioning: a seed file answers the first-boot wizard's questions.

A seed is the appliance configuration itself (`network:`, `mta:` and any other section the
configuration file has) plus what only setup needs:

- `topology:` direct, via-relay, virus-scanner, virus-scanner-via-relay or m365 (optional:
  without it, the `mta:` section tells; `appliance.topology` has the mapping);
- `tls:` how the certificate comes about: `{mode: self-signed}` (for the hostname), `{mode:
  import, cert: FILE, key: FILE, chain: FILE}` (paths relative to the seed), `{mode: keep}`
  (use the files `mta.tls` names) or `{mode: none}`;
- `admin:` the administrator's SSH keys and password (`appliance.admin_login`);
- `dkim:` DKIM signing keys to make: `{domains: [example.com], algorithm: rsa, selector: s202612}`
  (algorithm rsa or ed25519, default rsa; selector default `s` and the year and month). Each
  domain that `mta.authentication.dkim_keys` does not list yet gets a key under
  /etc/postern/dkim and an entry there; one it lists keeps its key;
- `security_updates:` true (the default, as the image ships) or false: whether Debian's security
  updates are installed automatically, daily (`appliance.security_updates`);
- `mta.external_relay.password`: the smart host's password, which is written to its own
  file (root:postern 0640) and named by `password_file`, so the configuration never holds it.

After a successful provision, `scrub_seed` replaces the seed by a root-only copy without
the passwords (`<seed>.provisioned`), so that no secret stays at rest in /boot.

`check_seed` validates all of it, changing nothing, and returns every problem, one line
each, naming the field. `carry_out` then makes the changes under a root directory: the
network (applied on the appliance itself, only rendered into files under any other root),
the certificate, the password file, the security updates' switch and the configuration file (through the configuration
store). The wizard and `postern-appliance provision` both come through here.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from relay.addresses import control_char_problem
from relay.config import ConfigError, check_domain, check_fqdn, check_selector, refuse_control_chars
from relay.control.errors import ControlError, NoAnswer, PermissionDenied, Unreachable

from . import admin_login, certificates, dkim, security_updates, topology
from .admin_login import AdminLogin, apply_admin, check_admin, hash_password
from .certificates import Bundle, CertificateError
from .files import atomic_write, remove_file
from .firstboot import CONFIG, SMARTHOST_PASSWORD, SetupState
from .network.apply import ApplyError, Applied, Target, apply_network, missing_interfaces
from .network.kernel import KernelError, netlink, read_state
from .network.render import plan as plan_files
from .network.render import write_plan
from .schema import ApplianceConfig, field_paths as config_field_paths, parse_text, validate_document
from .store import ConfigStore

SEED_ONLY = ("topology", "tls", "admin", "dkim", "security_updates")
TLS_MODES = ("self-signed", "import", "keep", "none")
TLS_KEYS = ("mode", "key_type", "days", "cert", "chain", "key")
DKIM_KEYS = ("domains", "algorithm", "selector")
# Where a made or imported certificate goes, under the appliance's root: where `postern-appliance cert` puts it.
CERT = str(certificates.DEFAULT_CERT.relative_to("/"))
KEY = str(certificates.DEFAULT_KEY.relative_to("/"))


@dataclass(frozen=True)
class NewDkimKey:
    """A DKIM key the seed asks for: made by `carry_out` at `path`, unless a key is already there."""

    domain: str
    selector: str
    algorithm: str
    path: Path


@dataclass
class Plan:
    """A validated seed: what `carry_out` writes."""

    topology: str
    config: ApplianceConfig
    document: dict  # the configuration file's sections, as they will be written
    bundle: Bundle | None = None  # a certificate to install (made or imported)
    admin: AdminLogin | None = None  # the administrator's SSH keys and password
    password: str | None = None  # the smart host's password, for its file
    dkim_keys: list[NewDkimKey] = field(default_factory=list)  # signing keys to make
    security_updates: bool = True  # Debian's security updates installed automatically
    notes: list[str] = field(default_factory=list)  # warnings: not wrong, but worth a look

    @property
    def public_address(self) -> str:
        for interface in self.config.network.interfaces:
            for address in interface.addresses:
                return str(address.ip)
        return ""


def read_seed(path: Path | str) -> dict:
    """The seed file as a mapping; ConfigError with one line when it cannot be read or is not YAML."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigError([f"{path}: cannot read the seed: {reason}"]) from None
    document = parse_text(text, str(path))
    if not isinstance(document, dict):
        raise ConfigError([f"{path}: the seed must be a mapping with sections such as topology, network, mta, tls"])
    return document


def real_path(root: Path | str, relative: str) -> Path:
    """Where a file of the appliance is on this machine: /etc/... on the appliance, DIR/etc/... under --root DIR."""
    return Path(root) / relative


def check_seed(seed: Any, root: Path | str = "/", base_dir: Path | str | None = None,
               check_interfaces: bool | None = None) -> tuple[Plan | None, list[str]]:
    """Validate a whole seed; returns (plan, []) or (None, every problem). Changes nothing."""
    plan, problems = _check_seed(seed, root, base_dir, check_interfaces)
    if isinstance(seed, dict):  # the configuration's sections have had the same check from their validators
        problems = refuse_control_chars("", {key: seed[key] for key in SEED_ONLY if key in seed}, problems)
    return (None, problems) if problems else (plan, [])


def _check_seed(seed: Any, root: Path | str, base_dir: Path | str | None,
                check_interfaces: bool | None) -> tuple[Plan | None, list[str]]:
    root = Path(root)
    base_dir = Path(base_dir) if base_dir else Path.cwd()
    if seed is None:
        seed = {}
    if not isinstance(seed, dict):
        return None, ["the seed must be a mapping with sections such as topology, network, mta, tls"]
    if "twin" in seed:  # what `config export --for-another` writes: another gateway's shared settings
        return None, ["twin: this file carries another gateway's shared settings, not a whole setup: provision "
                      "this gateway with its own network and hostname first, then run "
                      "postern-appliance config import on the file"]
    problems: list[str] = []

    name = seed.get("topology")
    if name is not None:
        try:
            name = topology.check_name(name)
        except ValueError as error:
            problems.append(f"topology: {error}")
            name = None

    document = {key: copy.deepcopy(value) for key, value in seed.items() if key not in SEED_ONLY}
    mta = document.get("mta")
    if mta is None:
        mta = document["mta"] = {}
    hostname_copied = False
    if isinstance(mta, dict):
        network = document.get("network")
        if "hostname" not in mta and isinstance(network, dict) and isinstance(network.get("hostname"), str):
            # The relay greets with the appliance's own name unless the seed says otherwise.
            mta = document["mta"] = {"hostname": network["hostname"], **mta}
            hostname_copied = True
        if name:
            mta = document["mta"] = topology.fill_defaults(name, mta)
    password = _take_password(mta, problems)
    tls, tls_problems = _tls_request(seed.get("tls"))
    problems += tls_problems
    admin, admin_problems = check_admin(seed.get("admin"))
    problems += admin_problems
    if isinstance(mta, dict) and tls.get("mode") in ("self-signed", "import"):
        problems += _set_certificate_paths(mta, root)
    new_keys, dkim_problems = _dkim_request(seed.get("dkim"), mta, root)
    problems += dkim_problems
    updates = seed.get("security_updates", True)
    if not isinstance(updates, bool):
        problems.append(f"security_updates: must be true (Debian's security updates installed automatically, "
                        f"the default) or false, not {_shown(updates)}")

    with tempfile.TemporaryDirectory(prefix="postern-seed-") as scratch:
        if password is not None and isinstance(mta, dict):
            # The password file does not exist yet: validate against a stand-in with the same rules.
            stand_in = Path(scratch) / "password"
            atomic_write(stand_in, password + "\n", 0o600)
            relay = mta["external_relay"]
            relay["password_file"] = str(stand_in)
        config, section_problems = validate_document(document)
        if password is not None and isinstance(mta, dict):
            mta["external_relay"]["password_file"] = str(real_path(root, SMARTHOST_PASSWORD))
    if hostname_copied:  # one problem with the name is enough: it was written once
        section_problems = [p for p in section_problems if not p.startswith("mta.hostname:")]
    problems += section_problems
    if config is None:
        return None, problems

    if name is None:
        name = topology.infer(config.mta)
    problems += topology.check(name, config.mta)
    plan = Plan(name, config, document, password=password, admin=admin, dkim_keys=new_keys,
                security_updates=updates is not False)
    problems += _certificate(plan, tls, base_dir, root)
    if topology.TOPOLOGIES[name].m365 and not config.mta.tls.cert_file and plan.bundle is None:
        problems.append(
            "tls.mode: Microsoft 365 connectors send only over TLS: use self-signed for a first test, "
            "or import a certificate from a trusted CA for the connectors to accept it"
        )
    if check_interfaces if check_interfaces is not None else SetupState(root).is_live:
        problems += _check_interfaces_exist(config)
    if problems:
        return None, problems
    return plan, []


def field_paths() -> list[tuple[tuple[str, ...], bool]]:
    """Every field of a seed, as (path of keys, is it a list): the configuration's and setup's own."""
    keys = {"topology": (), "tls": TLS_KEYS, "admin": admin_login.KEYS, "dkim": DKIM_KEYS, "security_updates": ()}
    assert set(keys) == set(SEED_ONLY), "a section only seeds have is missing here"
    paths = config_field_paths() + [(("mta", "external_relay", "password"), False)]
    for section, section_keys in keys.items():
        paths += [((section, key), key in ("ssh_keys", "domains")) for key in section_keys] or [((section,), False)]
    return paths


def _shown(value: Any) -> str:
    """A wrong value named in a problem: short, and its control characters are said by the seed's own check."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _take_password(mta: Any, problems: list[str]) -> str | None:
    relay = mta.get("external_relay") if isinstance(mta, dict) else None
    if not isinstance(relay, dict) or "password" not in relay:
        return None
    password = relay.pop("password")
    reason = control_char_problem(password) if isinstance(password, str) else None
    if reason:  # the reason names the character and where it is, never the password
        problems.append(f"mta.external_relay.password: {reason}")
        return None
    if not isinstance(password, str) or not password:
        problems.append("mta.external_relay.password: must be the smart host's password on one line")
        return None
    if relay.get("password_file"):
        problems.append("mta.external_relay.password: give the password or password_file, not both")
        return None
    return password


def _tls_request(data: Any) -> tuple[dict, list[str]]:
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, ["tls: must be a mapping such as {mode: self-signed} or {mode: import, cert: FILE, key: FILE}"]
    problems = [f"tls.{key}: unknown key; known keys are {', '.join(TLS_KEYS)}" for key in data if key not in TLS_KEYS]
    mode = data.get("mode")
    if mode not in TLS_MODES:
        problems.append(f"tls.mode: {mode!r} is not one of {', '.join(TLS_MODES)}")
    if mode == "import":
        for key in ("cert", "key"):
            if not isinstance(data.get(key), str) or not data.get(key):
                problems.append(f"tls.{key}: required with mode: import: name the PEM file")
    for key, check in (("key_type", certificates.check_key_type), ("days", certificates.check_days)):
        if key in data:  # the checks `postern-appliance cert` and the console make
            try:
                check(data[key])
            except certificates.InputError as error:
                problems.append(f"tls.{key}: {error}")
    return data, problems


def _dkim_request(data: Any, mta: Any, root: Path) -> tuple[list[NewDkimKey], list[str]]:
    """The keys `dkim:` asks for, each named in `mta.authentication.dkim_keys` (where the relay finds it)."""
    if data is None:
        return [], []
    if not isinstance(data, dict):
        return [], ["dkim: must be a mapping such as {domains: [example.com], algorithm: rsa}"]
    problems = [f"dkim.{key}: unknown key; known keys are {', '.join(DKIM_KEYS)}" for key in data if key not in DKIM_KEYS]
    algorithm = data.get("algorithm", "rsa")
    if algorithm not in dkim.ALGORITHMS:
        problems.append(f"dkim.algorithm: {algorithm!r} is not one of {', '.join(dkim.ALGORITHMS)}")
    try:
        selector = check_selector(data.get("selector") or dkim.default_selector())
    except ValueError as error:
        problems.append(f"dkim.selector: {error}")
    domains = data.get("domains") or []
    if not isinstance(domains, list):
        problems.append("dkim.domains: must be a list of domains such as [example.com]")
        domains = []
    wanted = []
    for index, domain in enumerate(domains):
        try:
            wanted.append(check_domain(domain))
        except ValueError as error:
            problems.append(f"dkim.domains[{index}]: {error}")
    if problems or not isinstance(mta, dict):
        return [], problems
    auth = mta.setdefault("authentication", {})
    listed = auth.get("dkim_keys") if isinstance(auth, dict) else None
    if not isinstance(auth, dict) or (listed is not None and not isinstance(listed, dict)):
        return [], []  # the configuration's own validation names the field
    listed = auth.setdefault("dkim_keys", {})
    new_keys = []
    for domain in dict.fromkeys(wanted):
        if domain in listed:  # signed already: its published key stays
            continue
        path = dkim.key_path(real_path(root, str(dkim.DEFAULT_DIRECTORY.relative_to("/"))), domain, selector)
        listed[domain] = {"selector": selector, "key_file": str(path)}
        new_keys.append(NewDkimKey(domain, selector, algorithm, path))
    return new_keys, []


def make_dkim_keys(keys: list[NewDkimKey], root: Path) -> list[str]:
    """Make the keys a plan asks for; a key already at its path (an earlier, interrupted run) is kept."""
    lines = []
    for key in keys:
        if key.path.exists():
            dkim.record_value(key.path)  # CertificateError when it is not a key this relay can use
            lines.append(f"dkim: kept the key in {key.path} for {key.domain} (selector {key.selector})")
            continue
        _, notes = dkim.create_key(key.path.parent, key.domain, key.selector, key.algorithm, root)
        lines.append(f"dkim: made an {key.algorithm.upper() if key.algorithm == 'rsa' else 'Ed25519'} key for "
                     f"{key.domain} (selector {key.selector}): publish its TXT record in DNS "
                     f"(postern-appliance dkim show {key.domain})")
        lines += [f"dkim: {note}" for note in notes]
    return lines


def _set_certificate_paths(mta: dict, root: Path) -> list[str]:
    """A made or imported certificate goes to the appliance's own place; mta.tls names it."""
    section = mta.setdefault("tls", {})
    if not isinstance(section, dict):
        return []
    problems = []
    for key, relative, default in (("cert_file", CERT, certificates.DEFAULT_CERT),
                                   ("key_file", KEY, certificates.DEFAULT_KEY)):
        target = str(real_path(root, relative))
        given = section.get(key)
        if given not in (None, "", target, str(default)):
            problems.append(f"mta.tls.{key}: the certificate from tls: is installed as {target}: leave {key} out")
        section[key] = target
    return problems


def _certificate(plan: Plan, tls: dict, base_dir: Path, root: Path) -> list[str]:
    mta = plan.config.mta
    mode = tls.get("mode") or ("keep" if mta.tls.cert_file else "none")
    if mode == "self-signed":
        try:
            hostname = check_fqdn(mta.hostname)
        except ValueError as error:
            return [f"mta.hostname: {error}: the self-signed certificate is made for it"]
        certificate, key = certificates.self_signed(hostname, days=tls.get("days", certificates.DEFAULT_DAYS),
                                                    key_type=tls.get("key_type", "ecdsa"))
        plan.bundle = Bundle(certificate, (), key)
        plan.notes.append(f"a self-signed certificate for {hostname}: servers that verify certificates will refuse it")
        return []
    if mode == "import":
        return _import(plan, tls, base_dir)
    if mode == "keep":
        problems = []
        for key in ("cert_file", "key_file"):
            path = getattr(mta.tls, key)
            if not path:
                problems.append(f"mta.tls.{key}: tls mode keep needs the file named here")
            elif not Path(path).is_file():
                problems.append(
                    f"mta.tls.{key}: {path} does not exist on this appliance: add tls: {{mode: self-signed}} "
                    "or tls: {mode: import, cert: FILE, key: FILE} to the seed"
                )
        return problems
    if mode == "none" and mta.tls.cert_file:
        return ["tls.mode: none, but mta.tls.cert_file names a certificate: remove mta.tls, or use mode: keep"]
    return []


def _import(plan: Plan, tls: dict, base_dir: Path) -> list[str]:
    contents = {}
    problems = []
    for key in ("cert", "chain", "key"):
        if not tls.get(key):
            continue
        path = Path(tls[key])
        path = path if path.is_absolute() else base_dir / path
        try:
            contents[key] = path.read_bytes()
        except OSError as error:
            problems.append(f"tls.{key}: cannot read {path}: {error.strerror}")
    if problems:
        return problems
    try:
        plan.bundle = certificates.check_bundle(contents["cert"], contents.get("chain"), contents["key"])
    except CertificateError as error:
        words = str(error)
        for said in ("certificate: ", "chain: ", "key: "):  # the field's name is said once, as tls.FIELD
            words = words.removeprefix(said)
        return [f"tls.{error.field or 'cert'}: {words}"]
    info = certificates.describe(plan.bundle.certificate)
    plan.notes += [f"certificate: {warning}" for warning in certificates.warnings(info, plan.config.mta.hostname)]
    return []


def _check_interfaces_exist(config: ApplianceConfig) -> list[str]:
    if not config.network.interfaces:
        return []
    try:
        with netlink(None) as ipr:
            state = read_state(ipr)
    except KernelError as error:
        return [f"network: cannot read the interfaces: {error}"]
    return missing_interfaces(config.network, state)


# --- making the changes ---


def write_network(config: ApplianceConfig, root: Path | str) -> tuple[list[str], Applied | None]:
    """The network section put in force: applied on the appliance (root /), else only its files rendered."""
    root = Path(root)
    network = config.network
    if not (network.interfaces or network.hostname or network.dns.servers or network.dns.search):
        return [], None
    if SetupState(root).is_live:
        applied = apply_network(network, Target(root))
        lines = [f"network: wrote /{relative}" for relative in applied.files.write]
        return lines + [f"network: {note}" for note in applied.notes] + [f"network: applied through {applied.backend}"], applied
    files = plan_files(network, root)
    write_plan(files)
    return [f"network: wrote {root / relative}" for relative in files.write], None


def write_password(password: str, path: Path, root: Path | str = "/") -> None:
    """Readable by root and the relay's group only (root:postern 0640), as the relay demands."""
    mode, owner, _ = certificates.key_access(root)
    atomic_write(path, password + "\n", mode, owner)


def scrub_seed(path: Path, root: Path | str = "/") -> list[str]:
    """After a successful provision the seed's secrets do not stay at rest: a seed that holds one is
    replaced by a root-only copy (`<seed>.provisioned`, 0600) with the admin's password as its hash and the smart
    host's password replaced by the file that now holds it. Returns what was done, for the log."""
    path = Path(path)
    try:
        seed = read_seed(path)
    except ConfigError as error:
        return [f"seed: {'; '.join(error.problems)}"]
    original = copy.deepcopy(seed)
    admin = seed.get("admin")
    if isinstance(admin, dict) and isinstance(admin.get("password"), str) and admin["password"]:
        admin["password_hash"] = hash_password(admin.pop("password"))
    mta = seed.get("mta")
    relay = mta.get("external_relay") if isinstance(mta, dict) else None
    if isinstance(relay, dict) and "password" in relay:
        relay.pop("password")
        relay["password_file"] = str(real_path(root, SMARTHOST_PASSWORD))
    lines = []
    tls = seed.get("tls")
    if isinstance(tls, dict) and tls.get("mode") == "import":
        key = Path(tls["key"]) if Path(tls["key"]).is_absolute() else path.parent / tls["key"]
        seed["tls"] = {"mode": "keep"}
        if isinstance(mta, dict):
            installed = mta.get("tls") if isinstance(mta.get("tls"), dict) else {}
            mta["tls"] = {**installed, "cert_file": str(real_path(root, CERT)), "key_file": str(real_path(root, KEY))}
        lines.append(f"seed: {key}, the imported private key, is installed now: delete this copy of it")
    if seed == original:
        return []  # nothing secret in it: it stays as it is
    copy_path = path.with_name(path.name + ".provisioned")
    header = ("# A seed that provisioned this appliance; its passwords were removed (the admin's is kept\n"
              "# as its hash, the smart host's is in its own file).\n")
    try:
        atomic_write(copy_path, header + yaml.safe_dump(seed, sort_keys=False, allow_unicode=True), 0o600,
                     (0, 0) if os.geteuid() == 0 else None)
        remove_file(path)
    except OSError as error:
        return [f"seed: {path} still holds the passwords ({error.strerror}): delete it"] + lines
    return [f"seed: removed {path}; {copy_path} (root only) keeps it without the passwords"] + lines


def carry_out(plan: Plan, root: Path | str = "/", network: bool = True) -> list[str]:
    """Make the changes of a validated plan; returns what was done, one line each.

    ApplyError, CertificateError, ConfigError, OSError and RuntimeError (the admin's password) pass
    through to the caller."""
    root = Path(root)
    lines: list[str] = []
    if network:
        lines += write_network(plan.config, root)[0]
    if plan.bundle is not None:
        cert_path, key_path = real_path(root, CERT), real_path(root, KEY)
        notes = certificates.install(plan.bundle, cert_path, key_path, root)
        lines.append(f"certificate: wrote {cert_path} and {key_path}; the relay loads them")
        lines += [f"certificate: {note}" for note in notes]
    if plan.password is not None:
        path = real_path(root, SMARTHOST_PASSWORD)
        write_password(plan.password, path, root)
        lines.append(f"smart host password: wrote {path}")
    if plan.admin is not None:
        lines += apply_admin(plan.admin, root)
    lines += make_dkim_keys(plan.dkim_keys, root)
    path = security_updates.set_enabled(root, plan.security_updates)
    lines.append(f"security updates: {'installed automatically, daily' if plan.security_updates else 'off'} "
                 f"(wrote {path})")
    store = ConfigStore(real_path(root, CONFIG))
    store.save(plan.document)
    lines.append(f"configuration: wrote {store.path}")
    return lines


__all__ = ["ApplyError", "ConfigError", "Plan", "carry_out", "check_seed", "read_seed", "write_network"]


def relay_outcome(error: Exception | None) -> str:
    """What handing the new `mta:` section to the running relay (Config.Apply) came to, in one line:
    the words of `postern-appliance provision` and of the wizard's apply step."""
    if error is None:
        return "relay: the new configuration is in force"
    if isinstance(error, NoAnswer):
        return (f"relay: did not answer within {error.timeout:g} s: the configuration is saved; "
                "systemctl reload postern-relay puts it in force")
    if isinstance(error, Unreachable):
        return "relay: not running; it reads the new configuration when it starts"
    if isinstance(error, PermissionDenied):
        return "relay: not reloaded (permission denied on its control socket): run systemctl reload postern-relay"
    if isinstance(error, ControlError):
        detail = "; ".join(error.parameters.get("problems", [])) or error.parameters.get("reason", "") or error.name
        return f"relay: refused the new configuration ({detail}); it keeps running with the previous one"
    return f"relay: {error}"
