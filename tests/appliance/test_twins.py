"""Two gateways from one export: `config export --for-another` on one, `config import` on the other.

Two appliances are provisioned under their own roots, with real relays on loopback and one next
hop (`Sink`): after the import both sign with the one DKIM key, route and apply TLS policy the same
way, and each still greets with its own name. Hostile and foreign bundles are refused by field,
changing nothing."""

from __future__ import annotations

import dataclasses
import os
import smtplib
from pathlib import Path

import dkim
import pytest
import yaml

from appliance import dkim as dkim_keys
from appliance import twin
from appliance.cli.main import main
from appliance.store import ConfigStore
from relay import routing
from relay.config import load_file
from tests.support.relay import base_mta

CONFIG = "etc/postern/postern.yaml"
MESSAGE = ("From: Alice <alice@example.net>\r\nTo: carol@partner.org\r\nSubject: twins\r\n"
           "Date: Sun, 6 Dec 2026 10:00:00 +0000\r\nMessage-ID: <twins@example.net>\r\n\r\nthe same message\r\n")


def seed_for(hostname: str, address: str, port: int, next_hop: int) -> dict:
    mta = base_mta(port, next_hop)
    mta.pop("hostname")  # from network.hostname, as on a provisioned appliance
    return {
        "network": {"hostname": hostname,
                    "interfaces": {"eth0": {"dhcp": False, "address": address}},
                    "dns": {"servers": ["192.0.2.53"]}},
        "mta": mta,
        "tls": {"mode": "self-signed"},
    }


def provision(tmp_path: Path, name: str, seed: dict) -> Path:
    root = tmp_path / name
    root.mkdir()
    path = tmp_path / f"{name}-seed.yaml"
    path.write_text(yaml.safe_dump(seed, sort_keys=False))
    assert main(["provision", "--seed", str(path), "--root", str(root)]) == 0
    return root


def edit(root: Path, change) -> None:
    store = ConfigStore(root / CONFIG)
    document = yaml.safe_load(store.current_text())
    change(document["mta"])
    store.save(document)


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mode & 0o7777)
            for path in sorted(root.rglob("*")) if path.is_file()}


def run_on(relay, root: Path):
    """The relay of `make_relay` (not started) on the appliance's own configuration file."""
    relay.config_path = root / CONFIG
    return relay.start()


@pytest.fixture
def pair(tmp_path, make_relay, sink, authority):
    """Appliance A with a DKIM key and a TLS policy with its own CA file; appliance B provisioned on its own."""
    relay_a, relay_b = make_relay(sink.port, start=False), make_relay(sink.port, start=False)
    root_a = provision(tmp_path, "a", seed_for("gw1.example.com", "192.0.2.11/24", relay_a.port, sink.port))
    seed_b = seed_for("gw2.example.com", "198.51.100.12/24", relay_b.port, sink.port)
    seed_b["mta"]["relay_domains"] = ["old.example"]  # replaced by A's
    root_b = provision(tmp_path, "b", seed_b)
    key, _ = dkim_keys.create_key(root_a / "etc/postern/dkim", "example.net", "s2026", root=root_a)
    ca_file = root_a / "etc/postern/partner-ca.pem"
    ca_file.write_bytes(authority.cert_path.read_bytes())

    def change(mta):
        mta["authentication"]["dkim_keys"] = {"example.net": {"selector": "s2026", "key_file": str(key)}}
        mta["tls_policy"] = {"partner.org": {"level": "verify", "match": ["mx.partner.org"], "ca_file": str(ca_file)},
                             ".bank.example": "secure"}
        mta["paused_domains"] = ["migrating.example"]

    edit(root_a, change)
    return root_a, root_b, relay_a, relay_b, key


def export(root: Path, bundle: Path, *extra: str) -> int:
    return main(["config", "export", "--for-another", str(bundle), "--root", str(root), *extra])


def import_(root: Path, bundle: Path, *extra: str) -> int:
    return main(["config", "import", str(bundle), "--root", str(root), *extra])


def test_two_gateways_from_one_export_sign_route_and_greet_as_twins(tmp_path, pair, sink, capsys):
    root_a, root_b, relay_a, relay_b, key = pair
    bundle = tmp_path / "twin.yaml"
    capsys.readouterr()
    assert export(root_a, bundle) == 0
    out = capsys.readouterr().out
    assert "carried: /etc/postern/dkim/example.net.s2026.key (the DKIM key of example.net)" in out
    assert "left out (each gateway keeps its own): mta.hostname (gw1.example.com)" in out
    assert "left out (each gateway keeps its own): network: (the whole section)" in out
    assert os.stat(bundle).st_mode & 0o777 == 0o600
    text = bundle.read_text()
    assert "192.0.2.11" not in text and str(relay_a.port) not in text and str(root_a) not in text
    assert "BEGIN PRIVATE KEY" in text and "BEGIN CERTIFICATE" in text  # the DKIM key, the policy's CA

    network_b = yaml.safe_load((root_b / CONFIG).read_text())["network"]
    tls_b = yaml.safe_load((root_b / CONFIG).read_text())["mta"]["tls"]
    assert import_(root_b, bundle) == 0
    out = capsys.readouterr().out
    assert "kept: mta.hostname (gw2.example.com)" in out
    assert f"kept: mta.listen (127.0.0.1:{relay_b.port})" in out
    assert f"carried: {root_b}/etc/postern/dkim/example.net.s2026.key (the DKIM key of example.net)" in out
    document_b = yaml.safe_load((root_b / CONFIG).read_text())
    assert document_b["network"] == network_b  # its own hostname and addresses
    assert {k: document_b["mta"]["tls"][k] for k in ("cert_file", "key_file")} == {
        k: tls_b[k] for k in ("cert_file", "key_file")}  # its own certificate
    copied = root_b / "etc/postern/dkim/example.net.s2026.key"
    assert copied.read_bytes() == key.read_bytes() and copied.stat().st_mode & 0o007 == 0
    assert (root_b / "etc/postern/partner-ca.pem").stat().st_mode & 0o777 == 0o644

    a, b = load_file(root_a / CONFIG), load_file(root_b / CONFIG)
    assert (a.hostname, b.hostname) == ("gw1.example.com", "gw2.example.com")
    assert b.relay_domains == a.relay_domains == ("example.com",) and b.paused_domains == ("migrating.example",)

    def same(config):  # the CA file by its content: each gateway has it under its own root
        hop = lambda domain: dataclasses.replace(routing.next_hop(config, domain), ca_file="")  # noqa: E731
        policy = {domain: dataclasses.replace(config.tls_policy_for(domain), ca_file="")
                  for domain in ("partner.org", "www.bank.example")}
        ca = Path(config.tls_policy_for("partner.org").ca_file).read_bytes()
        return [hop(d) for d in ("example.com", "partner.org", "x.bank.example")], policy, ca
    assert same(a) == same(b)
    direct_a = routing.next_hop(dataclasses.replace(a, external_relay=dataclasses.replace(a.external_relay, host="")),
                                "partner.org")
    assert (direct_a.tls, direct_a.match) == ("verify", ("mx.partner.org",))

    run_on(relay_a, root_a)
    run_on(relay_b, root_b)
    for relay, name in ((relay_a, "gw1.example.com"), (relay_b, "gw2.example.com")):
        with smtplib.SMTP(timeout=10) as client:
            code, greeting = client.connect("127.0.0.1", relay.port)
            assert (code, greeting.split()[0].decode()) == (220, name)
        relay.send("alice@example.net", ["carol@partner.org"], MESSAGE)
    received = sink.wait_for(2)
    name, value, _ = dkim_keys.dns_record(key, "example.net", "s2026")

    def dnsfunc(query: bytes, timeout: int = 5) -> bytes | None:
        return value.encode() if query.decode().rstrip(".") == name else None

    greeted = set()
    for message in received:
        assert message.recipients == ["carol@partner.org"]
        assert dkim.verify(message.content, dnsfunc=dnsfunc), message.content[:600]
        header = message.content.split(b"\r\n\r\n")[0].decode()
        greeted |= {host for host in ("gw1.example.com", "gw2.example.com") if f"by {host}" in header}
        assert header.count("DKIM-Signature:") == 1 and "d=example.net" in header.replace("\r\n", "")
    assert greeted == {"gw1.example.com", "gw2.example.com"}  # each stamped its own Received:
    assert {m.helo for m in received} == {"gw1.example.com", "gw2.example.com"}  # and said its own EHLO


def test_the_smart_host_password_travels_in_its_own_file_and_is_read_as_the_relay_reads_it(tmp_path, capsys):
    seed = seed_for("gw1.example.com", "192.0.2.11/24", 2525, 2526)
    seed["mta"]["external_relay"] = {"host": "smtp.provider.example", "port": 587, "username": "gateway",
                                     "password": "s3cret pass", "tls": "verify"}
    root_a = provision(tmp_path, "a", seed)
    root_b = provision(tmp_path, "b", seed_for("gw2.example.com", "198.51.100.12/24", 2525, 2526))
    bundle = tmp_path / "twin.yaml"
    assert export(root_a, bundle) == 0 and import_(root_b, bundle) == 0
    password = root_b / "etc/postern/smarthost.password"
    assert password.read_text() == "s3cret pass\n" and password.stat().st_mode & 0o077 in (0, 0o040)
    mta = load_file(root_b / CONFIG)
    assert (mta.external_relay.password_file, mta.external_relay.password) == (str(password), "s3cret pass")
    assert "s3cret" not in (root_b / CONFIG).read_text() and "s3cret" not in capsys.readouterr().out


def test_an_encrypted_bundle_needs_its_passphrase(tmp_path, pair, capsys):
    root_a, root_b, *_ = pair
    secret, wrong = tmp_path / "passphrase", tmp_path / "wrong"
    secret.write_text("correct horse battery staple\n")
    wrong.write_text("incorrect\n")
    bundle = tmp_path / "twin.enc"
    assert export(root_a, bundle, "--passphrase-file", str(secret)) == 0
    assert b"PRIVATE KEY" not in bundle.read_bytes()
    before = tree(root_b)
    capsys.readouterr()
    assert import_(root_b, bundle) == 1
    assert "encrypted: no terminal to ask for the passphrase on: give --passphrase-file FILE" in capsys.readouterr().err
    assert import_(root_b, bundle, "--passphrase-file", str(wrong)) == 1
    assert "wrong passphrase" in capsys.readouterr().err
    assert tree(root_b) == before
    archive = tmp_path / "a.tar.gz.enc"  # a backup is sealed the same way, and is not a bundle
    assert main(["backup", "--root", str(root_a), "-o", str(archive), "--passphrase-file", str(secret)]) == 0
    capsys.readouterr()
    assert import_(root_b, archive, "--passphrase-file", str(secret)) == 1
    assert "an encrypted backup archive, not a twin bundle: postern-appliance restore reads it" in capsys.readouterr().err
    assert tree(root_b) == before
    assert import_(root_b, bundle, "--passphrase-file", str(secret)) == 0
    assert load_file(root_b / CONFIG).authentication.dkim_keys["example.net"].selector == "s2026"


def test_the_certificate_travels_only_when_asked_and_its_names_are_checked(tmp_path, pair, capsys):
    root_a, root_b, *_ = pair
    own = (root_b / "etc/postern/tls/postern.pem").read_bytes()
    bundle = tmp_path / "twin.yaml"
    assert export(root_a, bundle) == 0
    assert "left out (each gateway keeps its own): mta.tls.cert_file" in capsys.readouterr().out
    assert "BEGIN EC PRIVATE KEY" not in bundle.read_text() and "postern.key" not in bundle.read_text()
    assert export(root_a, bundle, "--with-certificate") == 0
    assert import_(root_b, bundle) == 0
    out = capsys.readouterr().out
    shared = root_b / "etc/postern/tls/postern.pem"
    assert shared.read_bytes() == (root_a / "etc/postern/tls/postern.pem").read_bytes() != own
    assert (root_b / "etc/postern/tls/postern.key").stat().st_mode & 0o077 in (0, 0o040)
    assert "note: certificate:" in out and "gw2.example.com" in out  # A's self-signed name does not cover B


def bundle_of(tmp_path: Path, root: Path) -> dict:
    path = tmp_path / "made.yaml"
    assert export(root, path) == 0
    return yaml.safe_load(path.read_text())


KEY = "/etc/postern/dkim/example.net.s2026.key"


def move_key(document: dict, path) -> None:
    document["files"][path] = document["files"].pop(KEY)
    document["mta"]["authentication"]["dkim_keys"]["example.net"]["key_file"] = path


@pytest.mark.parametrize("change, problem", [
    (lambda d: move_key(d, "/etc/cron.d/postern"),
     "files./etc/cron.d/postern: /etc/cron.d/postern is outside /etc/postern: a bundle writes only there"),
    (lambda d: move_key(d, "/etc/postern/../shadow"),
     "files./etc/postern/../shadow: /etc/postern/../shadow is not a plain path"),
    (lambda d: move_key(d, "/etc/postern/postern.yaml"),
     "files./etc/postern/postern.yaml: /etc/postern/postern.yaml is Postern's own file"),
    (lambda d: move_key(d, "/etc/postern/dkim/x\n.key"),
     "files./etc/postern/dkim/x\\n.key: the name contains a control character (\\n at position 20)"),
    (lambda d: d["files"].update({"/etc/postern/extra.pem": "-----BEGIN CERTIFICATE-----\n"}),
     "files./etc/postern/extra.pem: no mta: field names it"),
    (lambda d: d["files"].update({KEY: "not a key"}),
     f"files.{KEY}: not a PEM private key (without a passphrase) (mta.authentication.dkim_keys.example.net.key_file"),
    (lambda d: d["files"].pop("/etc/postern/partner-ca.pem"),
     "mta.tls_policy.partner.org.ca_file: /etc/postern/partner-ca.pem is not in the bundle's files"),
    (lambda d: d["mta"]["authentication"]["dkim_keys"]["example.net"].update(key_file="/root/.ssh/id_ed25519"),
     "mta.authentication.dkim_keys.example.net.key_file: /root/.ssh/id_ed25519 is outside /etc/postern: a key"),
    (lambda d: d["mta"].update(hostname="gw1.example.com"), "mta.hostname: names one gateway: each keeps its own"),
    (lambda d: d["mta"].update(banner="ESMTP\r\nPostern"), "mta.banner: contains a control character (\\r at position 6)"),
    (lambda d: d["twin"].update({"from": "gw1.example.com\x1b[2J"}), "twin.from: contains a control character"),
    (lambda d: d.update(network={"hostname": "gw1.example.com"}), "network: unknown section of a twin bundle"),
    (lambda d: d["mta"].update(relay_domains=["exa mple.com"]), "mta.relay_domains[0]: 'exa mple.com' is not a domain"),
    (lambda d: d["twin"].update(format=2), "twin.format: 2: this Postern"),
    (lambda d: d["twin"].pop("format"), "twin.format: missing: this Postern"),
])
def test_a_hostile_or_foreign_bundle_is_refused_by_field_and_changes_nothing(tmp_path, pair, capsys, change, problem):
    root_a, root_b, *_ = pair
    document = bundle_of(tmp_path, root_a)
    change(document)
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(document))
    before = tree(root_b)
    capsys.readouterr()
    assert import_(root_b, path) == 1
    err = capsys.readouterr().err
    assert f"postern-appliance: {problem}" in err, err
    assert [line for line in err.splitlines() if not line.startswith("postern-appliance: ")] == []
    assert err.splitlines()[-1].endswith("; nothing was changed")
    assert tree(root_b) == before
    assert not (tmp_path / "etc").exists() and not Path("/etc/cron.d/postern").exists()


def test_a_gateway_with_the_same_name_or_none_yet_is_refused(tmp_path, pair, capsys):
    root_a, root_b, *_ = pair
    bundle = tmp_path / "twin.yaml"
    assert export(root_a, bundle) == 0
    capsys.readouterr()
    assert import_(root_a, bundle) == 1  # importing into the gateway it came from
    assert "mta.hostname: this appliance is gw1.example.com too" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert import_(empty, bundle) == 1
    assert "this appliance has no configuration yet: provision it first" in capsys.readouterr().err
    assert list(empty.rglob("*")) == []


def test_check_says_what_would_happen_and_a_plain_configuration_still_imports(tmp_path, pair, capsys):
    root_a, root_b, *_ = pair
    bundle = tmp_path / "twin.yaml"
    assert export(root_a, bundle) == 0
    before = tree(root_b)
    capsys.readouterr()
    assert import_(root_b, bundle, "--check") == 0
    out = capsys.readouterr().out
    assert "would keep: mta.hostname (gw2.example.com)" in out and "nothing was changed" in out
    assert tree(root_b) == before
    plain = tmp_path / "plain.yaml"
    assert main(["config", "export", str(plain), "--root", str(root_b)]) == 0
    assert import_(root_b, plain) == 0
    assert "imported" in capsys.readouterr().out
    assert twin.check_bundle(yaml.safe_load(plain.read_text()))[1][0].startswith("not a twin bundle")


def test_wildcard_listeners_travel_and_each_keeps_its_resolvers_and_helo_name(tmp_path, capsys):
    seed_a = seed_for("gw1.example.com", "192.0.2.11/24", 2525, 2526)
    seed_a["mta"].update(listen=["0.0.0.0:25", "[::]:25"], dns_servers=["192.0.2.53"], helo_name="out1.example.com")
    root_a = provision(tmp_path, "a", seed_a)
    seed_b = seed_for("gw2.example.com", "198.51.100.12/24", 2527, 2526)
    seed_b["mta"].update(dns_servers=["198.51.100.53"])
    root_b = provision(tmp_path, "b", seed_b)
    bundle = tmp_path / "twin.yaml"
    assert export(root_a, bundle) == 0
    carried = yaml.safe_load(bundle.read_text())["mta"]
    assert carried["listen"] == ["0.0.0.0:25", "[::]:25"] and "dns_servers" not in carried and "helo_name" not in carried
    assert import_(root_b, bundle) == 0
    b = load_file(root_b / CONFIG)
    assert [str(address) for address in b.listen] == ["0.0.0.0:25", "[::]:25"]
    assert (b.dns_servers, b.outgoing_helo) == (("198.51.100.53",), "gw2.example.com")


def test_a_key_outside_etc_postern_stops_the_export_by_its_field(tmp_path, capsys):
    root_a = provision(tmp_path, "a", seed_for("gw1.example.com", "192.0.2.11/24", 2525, 2526))
    key, _ = dkim_keys.create_key(tmp_path / "elsewhere", "example.net", "s2026")
    edit(root_a, lambda m: m["authentication"].update(
        dkim_keys={"example.net": {"selector": "s2026", "key_file": str(key)}}))
    bundle = tmp_path / "twin.yaml"
    capsys.readouterr()
    assert export(root_a, bundle) == 1
    err = capsys.readouterr().err
    assert (f"postern-appliance: mta.authentication.dkim_keys.example.net.key_file: {key} is outside /etc/postern: "
            "a bundle carries keys and passwords only from there") in err
    assert not bundle.exists()


def test_a_bundle_given_to_provision_says_what_to_do_instead(tmp_path):
    from appliance.provision import check_seed

    plan, problems = check_seed({"twin": {"format": 1}, "mta": {}, "files": {}}, tmp_path)
    assert plan is None and len(problems) == 1
    assert "provision this gateway with its own network and hostname first" in problems[0]
    assert "config import" in problems[0]
