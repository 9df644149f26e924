"""`postern-appliance provision`: seeds for every topology, bad seeds that change nothing, certificates,
the smart host's password, a configuration exported from one appliance provisioning the next, and
the topology rules the wizard shares."""

import os
import shutil
from pathlib import Path

import pytest
import yaml

from appliance import topology
from appliance.cli.main import main
from appliance.firstboot import SetupState
from appliance.schema import load_config_file
from relay.config import load_file, parse_mta
from relay.control.client import ControlClient
from tests.support.certs import Authority, self_signed

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples/seed.yaml"


def seed_for(name: str) -> dict:
    seed = {
        "topology": name,
        "network": {
            "hostname": "gw.example.com",
            "interfaces": {"eth0": {"dhcp": False, "address": "192.0.2.10/24", "gateway": "192.0.2.1"}},
            "dns": {"servers": ["192.0.2.53"], "search": ["example.com"]},
        },
        "mta": {
            "relay_domains": ["example.com"],
            "internal_relay": {"host": "192.168.1.20", "port": 25},
            "my_networks": ["192.168.1.20/32"],
        },
        "tls": {"mode": "self-signed"},
    }
    if name in ("via-relay", "virus-scanner-via-relay"):
        seed["mta"]["external_relay"] = {"host": "smtp.provider.example", "port": 587}
    if name == "m365":
        seed["mta"] = {
            "relay_domains": ["example.com"],
            "internal_relay": {"host": "example-com.mail.protection.outlook.com"},
            "external_relay": {"host": "example-com.mail.protection.outlook.com"},
            "m365": {"tenant_ids": [TENANT]},
        }
    return seed


def write_seed(directory: Path, seed: dict, name: str = "seed.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(seed, sort_keys=False))
    return path


def provision(seed_path: Path, root: Path, *extra: str) -> int:
    return main(["provision", "--seed", str(seed_path), "--root", str(root), *extra])


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def root(tmp_path):
    directory = tmp_path / "root"
    directory.mkdir()
    return directory


@pytest.mark.parametrize("name", topology.NAMES)
def test_a_seed_for_each_topology_sets_the_appliance_up(tmp_path, root, capsys, name):
    assert provision(write_seed(tmp_path, seed_for(name)), root) == 0
    out = capsys.readouterr().out
    config = load_config_file(root / "etc/postern/postern.yaml")
    mta = config.mta
    assert mta.hostname == "gw.example.com"  # from network.hostname when mta names none
    assert mta.relay_domains == ("example.com",)
    assert mta.tls.cert_file == str(root / "etc/postern/tls/postern.pem")
    assert (root / "etc/postern/tls/postern.key").stat().st_mode & 0o777 == 0o600
    assert "Address=192.0.2.10/24" in (root / "etc/systemd/network/10-postern-eth0.network").read_text()
    assert (root / "etc/hostname").read_text() == "gw.example.com\n"
    assert SetupState(root).is_complete() and SetupState(root).completed_topology() == name
    assert topology.infer(mta) == {"virus-scanner": "direct", "virus-scanner-via-relay": "via-relay"}.get(name, name)
    assert "On the other side:" in out
    if name == "m365":
        assert (mta.internal_relay.tls, mta.internal_relay.tls_name) == ("verify", "*.mail.protection.outlook.com")
        assert mta.m365.tenant_ids == (TENANT,) and mta.marker.enabled
        assert "Except if the message header X-Postern-Processed matches gw.example.com" in out
    elif name.endswith("via-relay"):
        assert mta.external_relay.host == "smtp.provider.example"
        assert "On the relay server (smtp.provider.example)" in out
    else:
        assert mta.external_relay.host == ""
        assert "PTR record of the public address outgoing mail leaves from names gw.example.com" in out
    if name.startswith("virus-scanner"):
        assert "On the virus scanner (192.168.1.20)" in out
    elif name != "m365":
        assert "route mail through the smart host 192.0.2.10" in out  # the Exchange send connector


def test_a_bad_seed_names_every_problem_on_its_own_line_and_changes_nothing(tmp_path, root, capsys):
    (root / "etc/postern").mkdir(parents=True)
    shipped = "mta: {hostname: postern.localdomain}\n"
    (root / "etc/postern/postern.yaml").write_text(shipped)
    before = tree(root)
    seed = {
        "topology": "direct-ish",
        "network": {"hostname": "gw", "interfaces": {"eth0": {"address": "192.0.2.300/24"}}},
        "mta": {"relay_domains": ["exa mple.com"], "internal_relay": {"host": "mail.example.com", "port": 0},
                "colour": "blue"},
        "tls": {"mode": "import", "cert": "missing.pem"},
        "extra": {},
    }
    assert provision(write_seed(tmp_path, seed), root) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "postern-appliance: topology: 'direct-ish' is not a topology: use one of direct, via-relay, virus-scanner, "
        "virus-scanner-via-relay, m365",
        "postern-appliance: tls.key: required with mode: import: name the PEM file",
        *[line for line in lines if line.startswith("postern-appliance: extra:")],
        *[line for line in lines if line.startswith("postern-appliance: network.")],
        *[line for line in lines if line.startswith("postern-appliance: mta.")],
        f"postern-appliance: {tmp_path / 'seed.yaml'}: {len(lines) - 1} problems; nothing was changed",
    ]
    fields = [line.split(": ")[1] for line in lines[:-1]]
    for field in ("extra", "network.hostname", "network.interfaces.eth0.address", "mta.relay_domains[0]",
                  "mta.internal_relay.port", "mta.colour"):
        assert field in fields, field
    assert "mta.hostname" not in fields  # the hostname's one problem is said once
    assert tree(root) == before and (root / "etc/postern/postern.yaml").read_text() == shipped
    assert not SetupState(root).is_complete()


@pytest.mark.parametrize("change, problem", [
    (lambda s: s["mta"].update(external_relay={"host": "smtp.provider.example"}),
     "mta.external_relay.host: the Direct delivery setup delivers outside mail to each domain's MX hosts"),
    (lambda s: s.update(topology="via-relay"),
     "mta.external_relay.host: the Via relay (smart host) setup sends outside mail through a relay server"),
    (lambda s: s["mta"].update(relay_domains=[]),
     "mta.relay_domains: the Direct delivery setup receives mail for your domains"),
    (lambda s: s["mta"].update(my_networks=["0.0.0.0/0"]),
     "mta.my_networks[0]: 0.0.0.0/0 is the whole Internet"),
    (lambda s: s["mta"]["internal_relay"].update(host="gw.example.com"),
     "mta.internal_relay.host: gw.example.com is this gateway's own name"),
    (lambda s: s.update(tls={"mode": "sometimes"}), "tls.mode: 'sometimes' is not one of"),
    (lambda s: s.update(tls={"mode": "self-signed", "colour": 1}), "tls.colour: unknown key"),
])
def test_what_does_not_fit_the_topology_is_refused(tmp_path, root, capsys, change, problem):
    seed = seed_for("direct")
    change(seed)
    assert provision(write_seed(tmp_path, seed), root) == 1
    assert problem in capsys.readouterr().err
    assert tree(root) == []


@pytest.mark.parametrize("change, problem", [
    (lambda m: m.pop("m365"), "mta.m365.tenant_ids: Exchange Online is shared by every tenant"),
    (lambda m: m.update(my_networks=["40.107.0.0/16"]),
     "mta.my_networks[0]: 40.107.0.0/16 belongs to Exchange Online, whose servers every tenant shares"),
    (lambda m: m.update(marker={"enabled": False}), "mta.marker.enabled: the transport rule's loop-prevention"),
])
def test_microsoft_365_refuses_what_would_make_an_open_relay_or_a_loop(tmp_path, root, capsys, change, problem):
    seed = seed_for("m365")
    change(seed["mta"])
    assert provision(write_seed(tmp_path, seed), root) == 1
    assert problem in capsys.readouterr().err


def test_microsoft_365_needs_a_certificate(tmp_path, root, capsys):
    seed = seed_for("m365")
    seed["tls"] = {"mode": "none"}
    assert provision(write_seed(tmp_path, seed), root) == 1
    assert "tls.mode: Microsoft 365 connectors send only over TLS" in capsys.readouterr().err


def test_an_imported_certificate_is_checked_first_then_installed(tmp_path, root, capsys):
    authority = Authority(tmp_path)
    cert, key = authority.issue("gw.example.com")
    (tmp_path / "other").mkdir()
    _, other_key = self_signed(tmp_path / "other")
    seed = seed_for("direct")
    seed["tls"] = {"mode": "import", "cert": str(cert), "key": str(other_key)}
    assert provision(write_seed(tmp_path, seed), root) == 1
    assert "tls.key: does not belong to the certificate for CN=gw.example.com" in capsys.readouterr().err
    assert tree(root) == []

    seed["tls"] = {"mode": "import", "cert": cert.name, "key": key.name, "chain": authority.cert_path.name}
    assert provision(write_seed(cert.parent, seed), root) == 0  # file names relative to the seed
    installed = (root / "etc/postern/tls/postern.pem").read_bytes()
    assert installed.count(b"BEGIN CERTIFICATE") == 2  # the certificate and its chain, in one file
    assert (root / "etc/postern/tls/postern.key").read_bytes() == key.read_bytes()


def test_the_smart_host_password_goes_to_its_own_file_never_into_the_configuration(tmp_path, root):
    seed = seed_for("via-relay")
    seed["mta"]["external_relay"].update(username="gateway", password="s3cret pass")
    assert provision(write_seed(tmp_path, seed), root) == 0
    password_file = root / "etc/postern/smarthost.password"
    assert password_file.read_text() == "s3cret pass\n"
    assert password_file.stat().st_mode & 0o007 == 0
    text = (root / "etc/postern/postern.yaml").read_text()
    assert "s3cret" not in text
    mta = load_file(root / "etc/postern/postern.yaml")  # as the relay reads it: the password from its file
    assert mta.external_relay.password_file == str(password_file) and mta.external_relay.password == "s3cret pass"


def test_a_configuration_exported_from_one_appliance_provisions_the_next(tmp_path, root, capsys):
    first = tmp_path / "first"
    first.mkdir()
    assert provision(write_seed(tmp_path, seed_for("via-relay")), first) == 0
    exported = tmp_path / "exported.yaml"
    assert main(["config", "--file", str(first / "etc/postern/postern.yaml"), "export", str(exported)]) == 0
    capsys.readouterr()
    # No topology and no tls section: the mta section tells the topology, and its certificate is kept.
    assert provision(exported, root) == 0
    assert "setup is complete (topology via-relay)" in capsys.readouterr().out
    assert load_config_file(root / "etc/postern/postern.yaml").document == yaml.safe_load(exported.read_text())


def test_check_only_validates(tmp_path, root, capsys):
    assert provision(write_seed(tmp_path, seed_for("direct")), root, "--check") == 0
    assert "the seed is valid (topology direct)" in capsys.readouterr().out
    assert tree(root) == []


def test_a_seed_that_is_not_yaml_is_one_line(tmp_path, root, capsys):
    path = tmp_path / "seed.yaml"
    path.write_text("topology: direct\nmta: [unclosed\n")
    assert provision(path, root) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "not valid YAML at line" in err[0]


def test_the_running_relay_takes_the_new_configuration(make_relay, sink, tmp_path, root, capsys):
    relay = make_relay(sink.port)
    socket = relay.workdir / "control.sock"
    seed = seed_for("direct")
    seed["mta"].update(listen=[f"127.0.0.1:{relay.port}"], internal_relay={"host": "127.0.0.1", "port": sink.port},
                       my_networks=["127.0.0.1/32"], relay_domains=["example.org"])
    assert provision(write_seed(tmp_path, seed), root, "--socket", str(socket)) == 0
    assert "relay: the new configuration is in force" in capsys.readouterr().out
    with ControlClient(str(socket)) as client:
        assert client.call("io.postern.Config.Get")["mta"]["relay_domains"] == ["example.org"]
    relay.send("alice@example.net", ["bob@example.org"])
    assert sink.wait_for(1)[0].recipients == ["bob@example.org"]


def test_the_example_seed_is_valid(root, capsys):
    assert main(["provision", "--seed", str(EXAMPLE), "--root", str(root), "--check"]) == 0


def test_other_side_steps_name_this_gateway():
    config, problems = parse_mta({"hostname": "gw.example.com", "relay_domains": ["example.com"],
                                  "internal_relay": {"host": "mail.example.com"}})
    assert not problems
    sides = topology.other_side("direct", config, "203.0.113.10")
    text = "\n".join(step for side in sides for step in side.steps)
    assert "smart host 203.0.113.10" in text and "gw.example.com (203.0.113.10)" in text
    assert [side.title for side in sides][0] == "On the internal mail server (mail.example.com)"


def test_progress_is_private_and_the_marker_records_the_topology(root):
    state = SetupState(root)
    from appliance.firstboot import Progress

    state.save_progress(Progress("dns", {"topology": "m365", "mta": {"external_relay": {"password": "x"}}}))
    assert os.stat(root / "var/lib/postern/firstboot.yaml").st_mode & 0o777 == 0o600
    assert state.load_progress() == Progress("dns", {"topology": "m365", "mta": {"external_relay": {"password": "x"}}})
    state.mark_complete("m365", by="a test")
    assert state.is_complete() and state.completed_topology() == "m365" and state.load_progress() is None


def fake_accounts(root: Path) -> None:
    """The /etc files chpasswd --root reads, as the image has them (admin without a password)."""
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000:Admin:/home/admin:/bin/sh\n")
    (etc / "shadow").write_text("root:*:20000:0:99999:7:::\nadmin:*:20000:0:99999:7:::\n")
    (etc / "group").write_text("root:x:0:\nadmin:x:1000:\n")
    (etc / "gshadow").write_text("root:*::\nadmin:!::\n")


def ssh_key(comment: str = "alice@laptop") -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " " + comment


@pytest.mark.skipif(not shutil.which("chpasswd") or os.geteuid() != 0, reason="needs chpasswd, as root")
def test_the_administrator_gets_keys_and_a_password(tmp_path, root):
    from appliance import admin_login

    fake_accounts(root)
    old = ssh_key("old@desk")
    (root / "home/admin/.ssh").mkdir(parents=True)
    (root / "home/admin/.ssh/authorized_keys").write_text(old + "\n")
    seed = seed_for("direct")
    new = ssh_key()
    seed["admin"] = {"ssh_keys": [new, old], "password": "correct horse battery"}
    assert provision(write_seed(tmp_path, seed), root) == 0
    assert (root / "home/admin/.ssh/authorized_keys").read_text() == f"{old}\n{new}\n"  # kept, then added once
    assert (root / "home/admin/.ssh/authorized_keys").stat().st_mode & 0o777 == 0o600
    shadow = {line.split(":")[0]: line.split(":")[1] for line in (root / "etc/shadow").read_text().splitlines()}
    assert shadow["admin"].startswith("$y$") and shadow["root"] == "*"
    assert admin_login.has_login(root)
    assert "correct horse" not in (root / "etc/postern/postern.yaml").read_text()


@pytest.mark.parametrize("admin, problem", [
    ({"ssh_keys": ["ssh-ed25519 AAAA-not-base64 x"]}, "admin.ssh_keys[0]: 'ssh-ed25519 AAAA-not-base64 x' is not an SSH"),
    ({"ssh_keys": ["ssh-foo AAAAB3NzaC1yc2E alice@laptop"]}, "admin.ssh_keys[0]: 'ssh-foo AAAAB3NzaC1yc2E alice@laptop' is not an SSH"),
    ({"password": "short"}, "admin.password: at least 10 characters"),
    ({"password": "a long one:with colon"}, "admin.password: must be one line without a colon"),
    ({"password_hash": "plain"}, "admin.password_hash: must be a crypt hash"),
    ({}, "admin: set ssh_keys or a password, or leave the section out"),
    ({"shell": "/bin/sh"}, "admin.shell: unknown key"),
])
def test_a_wrong_administrator_login_is_refused(tmp_path, root, capsys, admin, problem):
    seed = seed_for("direct")
    seed["admin"] = admin
    assert provision(write_seed(tmp_path, seed), root) == 1
    assert problem in capsys.readouterr().err
    assert tree(root) == []


@pytest.mark.parametrize("change, problem", [
    (lambda s: s["network"].update(hostname="gw.example.com\n"),
     "network.hostname: contains a control character (\\n at position 15): remove it"),
    (lambda s: s["network"]["interfaces"].update({"*": {"dhcp": True}}), "network.interfaces.*: '*' is not an interface name"),
    (lambda s: s["network"]["dns"].update(search=["example.com\n", "nameserver"]),
     "network.dns.search[0]: contains a control character (\\n at position 12)"),
    (lambda s: s["mta"].update(helo_name="gw.example.com\r\n"), "mta.helo_name: contains a control character (\\r at position 15)"),
    (lambda s: s.update(topology="direct\n"), "topology: contains a control character (\\n at position 7)"),
    (lambda s: s.update(tls={"mode": "self-signed\x1b[2J"}), "tls.mode: contains a control character (\\x1b at position 12)"),
    (lambda s: s.update(tls={"mode": "import", "cert": "cert.pem\n", "key": "key.pem"}), "tls.cert: contains a control character"),
    (lambda s: s.update(admin={"ssh_keys": [ssh_key() + "\n"]}), "admin.ssh_keys[0]: contains a control character"),
    (lambda s: s.update(admin={"password": "correct horse\nroot::0:0::/:/bin/sh"}),
     "admin.password: contains a control character (\\n at position 14): remove it"),
    (lambda s: s.update(admin={"password_hash": "$y$j9T$abc\x85def"}), "admin.password_hash: contains a control character"),
    (lambda s: s["mta"].update(external_relay={"host": "smtp.provider.example", "username": "gateway",
                                               "password": "correct horse\x00battery"}),
     "mta.external_relay.password: contains a control character (\\x00 at position 14): remove it"),
    (lambda s: s["mta"].update(banner="ESMTP " + "x" * 100_000), "mta.banner: is 100006 characters long"),
])
def test_a_control_character_in_a_seed_is_refused_by_its_field_and_changes_nothing(tmp_path, root, capsys, change, problem):
    seed = seed_for("direct")
    change(seed)
    assert provision(write_seed(tmp_path, seed), root) == 1
    err = capsys.readouterr().err
    assert f"postern-appliance: {problem}" in err
    assert [line for line in err.splitlines() if not line.startswith("postern-appliance: ")] == []  # no line of its own
    assert "correct horse" not in err  # a secret is never repeated
    assert tree(root) == []


def test_what_handing_the_configuration_to_the_relay_came_to_is_said_once_and_a_stuck_relay_is_not_stopped(tmp_path):
    """`postern-appliance provision` and the wizard's apply step say it in the same words (relay_outcome)."""
    from appliance.provision import relay_outcome
    from relay.control.client import ControlClient
    from relay.control.errors import Unreachable
    from tests.support.control_socket import SilentSocket

    path = str(tmp_path / "control.sock")
    with SilentSocket(path), pytest.raises(Unreachable) as stuck:
        with ControlClient(path, timeout=0.5) as client:
            client.call("io.postern.Config.Apply", mta={})
    said = relay_outcome(stuck.value)
    assert said.startswith("relay: did not answer within 0.5 s: the configuration is saved") and "not running" not in said
    with pytest.raises(Unreachable) as down:
        with ControlClient(str(tmp_path / "nobody.sock"), timeout=0.5) as client:
            client.call("io.postern.Config.Apply", mta={})
    assert relay_outcome(down.value) == "relay: not running; it reads the new configuration when it starts"
    assert relay_outcome(None) == "relay: the new configuration is in force"


def test_the_seed_checks_the_certificate_options_as_the_cert_command_does():
    from appliance.provision import _tls_request

    _, problems = _tls_request({"mode": "self-signed", "days": 0, "key_type": "dsa"})
    assert problems == ["tls.key_type: 'dsa': use ecdsa (P-256) or rsa (2048 bits)",
                        "tls.days: the validity is a number of days from 1 to 3650 (two years: 730)"]
    assert _tls_request({"mode": "self-signed", "days": 365, "key_type": "rsa"})[1] == []


def test_a_seed_asks_for_dkim_keys_and_gets_them_with_the_records_to_publish(tmp_path, root, capsys):
    from appliance import dkim

    seed = seed_for("m365")
    seed["mta"]["relay_domains"] = ["example.com", "example.org"]
    seed["dkim"] = {"domains": ["Example.COM", "example.org"], "selector": "s2026"}
    assert provision(write_seed(tmp_path, seed), root) == 0
    out = capsys.readouterr().out
    keys = load_file(root / "etc/postern/postern.yaml").authentication.dkim_keys
    assert sorted(keys) == ["example.com", "example.org"]
    for domain, key in keys.items():
        path = Path(key.key_file)
        assert (key.selector, path) == ("s2026", root / f"etc/postern/dkim/{domain}.s2026.key")
        assert path.stat().st_mode & 0o077 == 0  # the relay's, nobody else's
        assert dkim.record_value(path).startswith("v=DKIM1; k=rsa; p=")
        assert f"dkim: made an RSA key for {domain} (selector s2026)" in out
    # The other side: the records to publish, and Exchange Online's trusted ARC sealer filled in.
    assert "Publish the TXT record s2026._domainkey.example.com" in out
    assert "Email authentication settings, ARC. Add: example.com" in out


def test_a_domain_with_a_key_keeps_it_and_an_interrupted_run_keeps_the_key_it_made(tmp_path, root, capsys):
    from appliance import dkim

    directory = root / "etc/postern/dkim"
    old, _ = dkim.create_key(directory, "example.com", "s2025", "rsa", root)
    half, _ = dkim.create_key(directory, "example.org", "e2026", "ed25519", root)  # made, then the run stopped
    before = {path: path.read_bytes() for path in (old, half)}
    seed = seed_for("direct")
    seed["mta"]["authentication"] = {"dkim_keys": {"example.com": {"selector": "s2025", "key_file": str(old)}}}
    seed["dkim"] = {"domains": ["example.com", "example.org"], "selector": "e2026", "algorithm": "ed25519"}
    assert provision(write_seed(tmp_path, seed), root) == 0
    out = capsys.readouterr().out
    keys = load_file(root / "etc/postern/postern.yaml").authentication.dkim_keys
    assert (keys["example.com"].selector, keys["example.org"].selector) == ("s2025", "e2026")
    assert {path: path.read_bytes() for path in (old, half)} == before  # a published key is never replaced
    assert "dkim: kept the key in" in out and "made an" not in out
    assert "Microsoft 365" not in out  # no Exchange Online here


@pytest.mark.parametrize("dkim_section, problem", [
    ({"domains": ["exa mple.com"]}, "dkim.domains[0]: 'exa mple.com' is not a domain name"),
    ({"domains": "example.com"}, "dkim.domains: must be a list of domains"),
    ({"domains": ["example.com"], "algorithm": "dsa"}, "dkim.algorithm: 'dsa' is not one of rsa, ed25519"),
    ({"domains": ["example.com"], "selector": "s 1"}, "dkim.selector: 's 1' is not a selector"),
    ({"domain": ["example.com"]}, "dkim.domain: unknown key; known keys are domains, algorithm, selector"),
    ({"domains": ["example.com\x1b[2J"]}, "dkim.domains[0]:"),
    ("example.com", "dkim: must be a mapping"),
])
def test_a_wrong_dkim_section_is_refused_by_its_field_and_makes_no_key(tmp_path, root, capsys, dkim_section, problem):
    seed = seed_for("direct")
    seed["dkim"] = dkim_section
    assert provision(write_seed(tmp_path, seed), root) == 1
    assert problem in capsys.readouterr().err
    assert not (root / "etc/postern/dkim").exists()
