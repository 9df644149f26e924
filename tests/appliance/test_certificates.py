"""Certificates: self-signed and CSR for the hostname, import with key and chain checks, warnings."""

from __future__ import annotations

import datetime
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from appliance import certificates
from appliance.certificates import (CertificateError, InputError, check_bundle, check_days, describe, key_pem, pem_of,
                                    warnings)

from .conftest import COMMAND, ROOT

NOW = datetime.datetime.now(datetime.timezone.utc)


def issue(subject: str, issuer_cert=None, issuer_key=None, ca=False, sans=(), days=365):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder().subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def chain():
    root, root_key = issue("Test Root CA", ca=True)
    intermediate, intermediate_key = issue("Test Issuing CA", root, root_key, ca=True)
    leaf, leaf_key = issue("gw.example.com", intermediate, intermediate_key, sans=["gw.example.com", "mx.example.com"])
    return {"root": root, "intermediate": intermediate, "leaf": leaf, "leaf_key": leaf_key}


@pytest.mark.parametrize("key_type, key_class", [("ecdsa", ec.EllipticCurvePrivateKey), ("rsa", rsa.RSAPrivateKey)])
def test_self_signed_has_the_hostname_as_subject_and_only_san(tmp_path, key_type, key_class):
    certificate, key = certificates.self_signed("gw.example.com", key_type=key_type)
    assert isinstance(key, key_class)
    if key_type == "rsa":
        assert key.key_size == 2048
    else:
        assert key.curve.name == "secp256r1"
    info = describe(certificate)
    assert info.subject == "CN=gw.example.com" and info.sans == ("gw.example.com",) and info.self_signed
    assert warnings(info, "gw.example.com") == []
    bundle = certificates.Bundle(certificate, (), key)
    certificates.install(bundle, tmp_path / "tls/cert.pem", tmp_path / "tls/key.pem")
    assert (tmp_path / "tls/key.pem").stat().st_mode & 0o777 == 0o600
    check_bundle((tmp_path / "tls/cert.pem").read_bytes(), None, (tmp_path / "tls/key.pem").read_bytes())


def test_a_csr_names_the_host_and_is_signed_by_the_key():
    key = certificates.new_key("ecdsa")
    request = certificates.signing_request("gw.example.com", key)
    assert request.is_signature_valid
    assert request.subject.rfc4514_string() == "CN=gw.example.com"
    san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example.com"]


def test_import_accepts_a_chain_in_order(chain):
    bundle = check_bundle(pem_of(chain["leaf"]), pem_of(chain["intermediate"], chain["root"]), key_pem(chain["leaf_key"]))
    assert [c.subject.rfc4514_string() for c in bundle.chain] == ["CN=Test Issuing CA", "CN=Test Root CA"]
    together = check_bundle(pem_of(chain["leaf"], chain["intermediate"]), None, key_pem(chain["leaf_key"]))
    assert len(together.chain) == 1


def test_import_refuses_a_chain_out_of_order(chain):
    with pytest.raises(CertificateError) as caught:
        check_bundle(pem_of(chain["leaf"]), pem_of(chain["root"], chain["intermediate"]), key_pem(chain["leaf_key"]))
    assert str(caught.value) == (
        "chain: certificate 1 (CN=Test Root CA) did not issue CN=gw.example.com, whose issuer is CN=Test Issuing CA: "
        "it is chain certificate 2: put the chain in order, each certificate followed by the one that issued it"
    )


def test_import_refuses_a_key_that_is_not_the_certificates(chain):
    other = certificates.new_key("ecdsa")
    with pytest.raises(CertificateError, match=r"^key: does not belong to the certificate for CN=gw.example.com"):
        check_bundle(pem_of(chain["leaf"]), None, key_pem(other))
    with pytest.raises(CertificateError, match=r"^key: not a PEM private key"):
        check_bundle(pem_of(chain["leaf"]), None, b"junk")
    with pytest.raises(CertificateError, match=r"^certificate: no PEM certificate found"):
        check_bundle(b"junk", None, key_pem(chain["leaf_key"]))


def test_warnings_for_a_missing_hostname_and_a_near_expiry(chain):
    info = describe(chain["leaf"])
    assert info.issuer == "CN=Test Issuing CA" and not info.self_signed
    assert len(info.sha256.split(":")) == 32
    assert warnings(info, "gw.example.com") == []
    assert warnings(info, "relay.example.com")[0].startswith(
        "the hostname relay.example.com is not among the SANs (gw.example.com, mx.example.com)")
    soon, _ = issue("gw.example.com", sans=["*.example.com"], days=10)
    found = warnings(describe(soon), "gw.example.com")  # the wildcard covers the name
    assert len(found) == 1 and found[0].startswith(("expires in 9 days", "expires in 10 days")), found
    assert warnings(describe(soon), "a.b.example.com")[0].startswith("the hostname a.b.example.com is not among")
    assert warnings(describe(soon), "gw.example.com", NOW + datetime.timedelta(days=20)) == [
        f"expired on {describe(soon).not_after:%Y-%m-%d}: replace it"]


def test_the_cert_commands(tmp_path, chain):
    def run(*args):
        return subprocess.run([COMMAND, "cert", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)

    made = run("self-signed", "--hostname", "gw.example.com", "--key-type", "rsa",
               "--cert-file", str(tmp_path / "self.pem"), "--key-file", str(tmp_path / "self.key"))
    assert made.returncode == 0, made.stderr
    assert "subject:     CN=gw.example.com" in made.stdout
    assert (tmp_path / "self.key").stat().st_mode & 0o777 == 0o600

    csr = run("csr", "--hostname", "gw.example.com", "--key-file", str(tmp_path / "new.key"), "--out", str(tmp_path / "req.pem"))
    assert csr.returncode == 0, csr.stderr
    assert x509.load_pem_x509_csr((tmp_path / "req.pem").read_bytes()).is_signature_valid
    assert (tmp_path / "new.key").stat().st_mode & 0o777 == 0o600

    (tmp_path / "leaf.pem").write_bytes(pem_of(chain["leaf"]))
    (tmp_path / "chain.pem").write_bytes(pem_of(chain["root"], chain["intermediate"]))
    (tmp_path / "leaf.key").write_bytes(key_pem(chain["leaf_key"]))
    target = ["--cert-file", str(tmp_path / "installed.pem"), "--key-file", str(tmp_path / "installed.key")]
    refused = run("import", "--cert", str(tmp_path / "leaf.pem"), "--chain", str(tmp_path / "chain.pem"),
                  "--key", str(tmp_path / "leaf.key"), *target)
    assert refused.returncode == 1
    assert refused.stderr.startswith("postern-appliance: chain: certificate 1 (CN=Test Root CA) did not issue")
    assert not (tmp_path / "installed.pem").exists()

    (tmp_path / "chain.pem").write_bytes(pem_of(chain["intermediate"], chain["root"]))
    imported = run("import", "--cert", str(tmp_path / "leaf.pem"), "--chain", str(tmp_path / "chain.pem"),
                   "--key", str(tmp_path / "leaf.key"), "--hostname", "relay.example.com", *target)
    assert imported.returncode == 0, imported.stderr
    assert "warning: the hostname relay.example.com is not among the SANs" in imported.stdout
    assert len(x509.load_pem_x509_certificates((tmp_path / "installed.pem").read_bytes())) == 3
    assert (tmp_path / "installed.key").stat().st_mode & 0o777 == 0o600

    shown = run("show", str(tmp_path / "installed.pem"))
    assert "chain 1: CN=Test Issuing CA, issued by CN=Test Root CA" in shown.stdout
    bad = run("self-signed", "--hostname", "gw", "--cert-file", str(tmp_path / "x.pem"), "--key-file", str(tmp_path / "x.key"))
    assert bad.returncode == 1 and bad.stderr.startswith("postern-appliance: --hostname: 'gw' is not a fully qualified")


def test_the_cert_commands_refuse_what_the_console_refuses(tmp_path):
    """One check of the inputs for the command line and the console: a validity out of range is refused at
    --days before anything is made, and a file that cannot be read is named at its option."""
    def run(*args):
        return subprocess.run([COMMAND, "cert", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)

    target = ["--cert-file", str(tmp_path / "x.pem"), "--key-file", str(tmp_path / "x.key")]
    for days in ("0", "3651"):
        refused = run("self-signed", "--hostname", "gw.example.com", "--days", days, *target)
        assert (refused.returncode, refused.stderr) == (1, "postern-appliance: --days: the validity is a number of "
                                                           "days from 1 to 3650 (two years: 730)\n")
    assert not any(tmp_path.iterdir())

    missing = run("import", "--cert", str(tmp_path / "missing.pem"), "--key", str(tmp_path / "x.key"), *target)
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"postern-appliance: --cert: {tmp_path / 'missing.pem'}: cannot read it: ")


def test_a_request_uses_the_key_there_is_and_says_what_to_do_next(tmp_path):
    key_file, out = tmp_path / "tls/postern.key", tmp_path / "request.pem"
    pem, done = certificates.make_request("gw.example.com", "rsa", key_file, out, tmp_path)
    assert done[0] == f"wrote a new rsa key to {key_file}"
    assert done[-1] == (f"saved the request for gw.example.com to {out}: send it to your CA, then import its "
                        f"answer with the key {key_file}")
    assert key_file.stat().st_mode & 0o777 == 0o600 and out.stat().st_mode & 0o777 == 0o644
    key = certificates.load_key(key_file.read_bytes())
    assert x509.load_pem_x509_csr(out.read_bytes()).public_key() == key.public_key() and pem == out.read_text()

    _, again = certificates.make_request("gw.example.com", "ecdsa", key_file, out, tmp_path)
    assert again[0] == f"used the installed key {key_file}"
    assert certificates.load_key(key_file.read_bytes()).public_key() == key.public_key()

    with pytest.raises(certificates.InputError, match="is not a fully qualified") as refused:
        certificates.make_request("gw", "ecdsa", key_file, out, tmp_path)
    assert refused.value.field == "hostname"
    with pytest.raises(certificates.InputError, match="cannot write it") as refused:
        certificates.make_request("gw.example.com", "ecdsa", key_file, out / "under-a-file.pem", tmp_path)
    assert refused.value.field == "out"


@pytest.mark.parametrize("given, days", [("", 730), ("  ", 730), (None, 730), ("90", 90), (" 3650 ", 3650), (1, 1)])
def test_a_validity_left_empty_is_the_default(given, days):
    assert check_days(given) == days


@pytest.mark.parametrize("given", ["0", "3651", "two years", "-5"])
def test_a_validity_out_of_range_is_refused_at_its_field(given):
    with pytest.raises(InputError, match=r"^the validity is a number of days from 1 to 3650") as refused:
        check_days(given)
    assert refused.value.field == "days"
