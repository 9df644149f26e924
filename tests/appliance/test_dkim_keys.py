"""DKIM keys on the appliance: made with the right modes, never replaced, their DNS record, the published check."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import dns.asyncresolver
import pytest

from appliance import dkim
from appliance.certificates import CertificateError, InputError
from relay.dkim_sign import load_key
from tests.support.dns_server import DnsServer


def fake_root(tmp_path, with_group: bool):
    (tmp_path / "etc").mkdir(parents=True, exist_ok=True)
    (tmp_path / "etc/group").write_text("postern:x:998:\n" if with_group else "root:x:0:\n")
    return tmp_path


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_a_new_key_is_readable_by_root_and_the_relay_only_and_loads(tmp_path, algorithm):
    root = fake_root(tmp_path, with_group=True)
    path, notes = dkim.create_key(root / "etc/postern/dkim", "Example.COM", "s1", algorithm, root)
    assert path.name == "example.com.s1.key" and notes == []
    assert oct(path.stat().st_mode & 0o777) == "0o640" and path.stat().st_gid == 998
    key = load_key("example.com", "s1", str(path))
    assert key.algorithm == ("rsa-sha256" if algorithm == "rsa" else "ed25519-sha256")
    name, value, zone = dkim.dns_record(path, "example.com", "s1")
    assert name == "s1._domainkey.example.com" and value.startswith(f"v=DKIM1; k={algorithm}; p=")
    assert all(len(part) <= 257 for part in zone.split(" ") if part.startswith('"'))


def test_an_existing_key_is_never_replaced(tmp_path):
    path, _ = dkim.create_key(tmp_path, "example.com", "s1")
    before = path.read_bytes()
    with pytest.raises(CertificateError, match="exists: choose another selector"):
        dkim.create_key(tmp_path, "example.com", "s1")
    assert path.read_bytes() == before


@pytest.mark.parametrize("domain, selector, field", [("exa mple.com", "s1", "domain"), ("example.com", "s 1", "selector"),
                                                     ("example.com", "../x", "selector")])
def test_bad_names_are_refused_by_their_field(tmp_path, domain, selector, field):
    with pytest.raises(InputError) as raised:
        dkim.create_key(tmp_path, domain, selector)
    assert raised.value.field == field
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def key(tmp_path):
    path, _ = dkim.create_key(tmp_path, "example.com", "s1")
    return path


def check(records: dict, key) -> tuple[bool, str]:
    server = DnsServer(records).start()
    try:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers, resolver.port, resolver.lifetime = [server.host], server.port, 3
        return asyncio.run(dkim.check_published(resolver, key, "example.com", "s1"))
    finally:
        server.stop()


def test_the_published_record_is_checked_against_the_key(key, tmp_path):
    name, value, _ = dkim.dns_record(key, "example.com", "s1")
    split = '"' + value[:200] + '" "' + value[200:] + '"'  # as a zone file splits it
    assert check({(name, "TXT"): [split]}, key) == (True, f"{name}: published and matches the key")
    good, words = check({("example.com", "A"): ["192.0.2.1"]}, key)
    assert not good and "not published" in words
    other, _ = dkim.create_key(tmp_path, "example.com", "s2")
    _, other_value, _ = dkim.dns_record(other, "example.com", "s2")
    good, words = check({(name, "TXT"): [f'"{other_value[:200]}" "{other_value[200:]}"']}, key)
    assert not good and "published, but for another key" in words
    good, words = check({(name, "TXT"): ['"v=DKIM1; k=rsa"']}, key)
    assert not good and "record malformed" in words


def test_the_command_makes_a_key_and_prints_the_record_and_the_setting(tmp_path):
    root = fake_root(tmp_path, with_group=False)
    run = subprocess.run([sys.executable, "-m", "appliance.cli.main", "dkim", "new", "example.com", "--selector", "s1",
                          "--root", str(root)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "name:  s1._domainkey.example.com" in run.stdout
    assert "key_file: /etc/postern/dkim/example.com.s1.key" in run.stdout
    again = subprocess.run([sys.executable, "-m", "appliance.cli.main", "dkim", "new", "example.com", "--selector",
                            "s1", "--root", str(root)], capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "exists: choose another selector" in again.stderr
