"""The certificates screen: show, self-signed, a CSR, an import; every file under tmp_path."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import smtplib
import ssl

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from console.app import make_app

from appliance.certificates import describe, key_pem, pem_of
from tests.appliance.test_certificates import issue
from tests.console.conftest import text_of, until

from .appliance_support import console, write_config

CONFIG = {"network": {"hostname": "gw.example.com"}, "mta": {"hostname": "gw.example.com"}}


def certificate_at(path):
    return x509.load_pem_x509_certificates(path.read_bytes())


async def certificates_screen(pilot):
    await pilot.press("f9")
    await until(pilot, lambda: getattr(pilot.app.screen, "installed", None) is not None, what="the certificate")
    return pilot.app.screen


def notice(app) -> str:
    screen = next(s for s in app.screen_stack if type(s).__name__ == "CertificatesScreen")
    return str(screen.query_one("#area-notice").render())


async def submit(pilot, widget_id: str, text: str | None = None) -> None:
    field = pilot.app.screen.query_one(f"#{widget_id}")
    if text is not None:
        field.value = text
    field.focus()
    await pilot.press("enter")


async def test_self_signed_then_replaced_only_after_a_yes(tmp_path):
    root = tmp_path / "root"
    config = write_config(tmp_path / "postern.yaml", CONFIG)
    cert_path, key_path = root / "etc/postern/tls/postern.pem", root / "etc/postern/tls/postern.key"
    app = console(tmp_path, config, root)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await certificates_screen(pilot)
        assert f"no certificate is installed at {cert_path}" in text_of(app, "#cert-installed")

        await pilot.press("s")
        assert screen.query_one("#cert-self-hostname").value == "gw.example.com"  # the configured hostname
        await submit(pilot, "cert-self-hostname", "not a name")
        await until(pilot, lambda: screen.query_one("#note-cert-self-hostname").display, what="the problem")
        assert "'not a name' is not a fully qualified host name" in text_of(app, "#note-cert-self-hostname")
        screen.query_one("#cert-self-hostname").value = "gw.example.com"
        await submit(pilot, "cert-self-days", "0")
        await until(pilot, lambda: "days from 1 to 3650" in notice(app), what="the problem with the days")
        await submit(pilot, "cert-self-days", "90")
        await until(pilot, lambda: "subject:     CN=gw.example.com" in text_of(app, "#cert-installed"),
                    what="the new certificate")
        shown = text_of(app, "#cert-installed")
        assert "SANs:        gw.example.com" in shown and "(self-signed)" in shown
        assert "mta.tls.cert_file does not name it" in shown
        assert key_path.stat().st_mode & 0o777 == 0o600
        first = describe(certificate_at(cert_path)[0]).sha256
        assert first[:48] in shown and first[48:] in shown  # the fingerprint, on two lines

        # A second one replaces it only after a yes (the form closed once the certificate was made).
        assert not screen.query_one("#cert-forms").display
        await pilot.press("s")
        await submit(pilot, "cert-self-hostname")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        assert "Replace the installed certificate (CN=gw.example.com)" in text_of(app, "#question")
        await pilot.press("n")
        await pilot.pause(0.3)
        assert describe(certificate_at(cert_path)[0]).sha256 == first
        await submit(pilot, "cert-self-hostname")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        await pilot.press("y")
        await until(pilot, lambda: describe(certificate_at(cert_path)[0]).sha256 != first, what="a new certificate")
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "DashboardScreen", what="the dashboard")


async def test_a_csr_is_shown_and_saved_with_the_installed_key(tmp_path):
    root = tmp_path / "root"
    config = write_config(tmp_path / "postern.yaml", CONFIG)
    app = console(tmp_path, config, root)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await certificates_screen(pilot)
        await pilot.press("r")
        out = root / "etc/postern/tls/gw.example.com.csr"
        assert screen.query_one("#cert-csr-out").value == str(out)
        await submit(pilot, "cert-csr-out", str(config / "x.csr"))  # under a file: cannot be written
        await until(pilot, lambda: screen.query_one("#note-cert-csr-out").display, what="the problem at the file")
        await submit(pilot, "cert-csr-out", str(out))
        await until(pilot, lambda: screen.query_one("#cert-pem").display, what="the request")
        pem = str(screen.query_one("#cert-pem-text").render())
        assert pem.startswith("-----BEGIN CERTIFICATE REQUEST-----")
        assert out.read_text().strip() == pem.strip()
        request = x509.load_pem_x509_csr(out.read_bytes())
        assert request.subject.rfc4514_string() == "CN=gw.example.com" and request.is_signature_valid
        key = serialization.load_pem_private_key((root / "etc/postern/tls/postern.key").read_bytes(), None)
        assert request.public_key() == key.public_key()  # the key a CA's answer is then imported with
        assert f"saved the request for gw.example.com to {out}" in notice(app)


async def test_import_checks_the_key_and_the_chain_before_installing(tmp_path):
    root = tmp_path / "root"
    config = write_config(tmp_path / "postern.yaml", {**CONFIG, "mta": {
        "hostname": "gw.example.com", "tls": {"cert_file": "/etc/postern/tls/gateway.pem",
                                              "key_file": "/etc/postern/tls/gateway.key"}}})
    ca, ca_key = issue("Test Root CA", ca=True)
    issuing, issuing_key = issue("Test Issuing CA", ca, ca_key, ca=True)
    leaf, leaf_key = issue("gw.example.com", issuing, issuing_key, sans=["gw.example.com"])
    _, other_key = issue("other.example.com")
    files = {"leaf.pem": pem_of(leaf), "chain.pem": pem_of(issuing, ca), "backwards.pem": pem_of(ca, issuing),
             "leaf.key": key_pem(leaf_key), "other.key": key_pem(other_key)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    app = console(tmp_path, config, root)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await certificates_screen(pilot)
        await pilot.press("i")
        screen.query_one("#cert-import-chain").value = str(tmp_path / "chain.pem")
        screen.query_one("#cert-import-key").value = str(tmp_path / "leaf.key")
        await submit(pilot, "cert-import-cert", str(tmp_path / "missing.pem"))
        await until(pilot, lambda: "cannot read it" in text_of(app, "#note-cert-import-cert"), what="the problem")

        screen.query_one("#cert-import-cert").value = str(tmp_path / "leaf.pem")
        await submit(pilot, "cert-import-key", str(tmp_path / "other.key"))
        await until(pilot, lambda: "does not belong to the certificate" in text_of(app, "#note-cert-import-key"),
                    what="the wrong key refused at the key")

        screen.query_one("#cert-import-key").value = str(tmp_path / "leaf.key")
        await submit(pilot, "cert-import-chain", str(tmp_path / "backwards.pem"))
        await until(pilot, lambda: "put the chain in order" in text_of(app, "#note-cert-import-chain"),
                    what="the chain out of order refused at the chain")
        assert not (root / "etc/postern/tls").exists()

        await submit(pilot, "cert-import-chain", str(tmp_path / "chain.pem"))
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        question = text_of(app, "#question")
        assert "subject:     CN=gw.example.com" in question and "chain 1: CN=Test Issuing CA" in question
        await pilot.press("y")
        installed = root / "etc/postern/tls/gateway.pem"  # where mta.tls.cert_file says
        await until(pilot, lambda: "issuer:      CN=Test Issuing CA" in text_of(app, "#cert-installed"),
                    what="the imported certificate")
        assert [c.subject.rfc4514_string() for c in certificate_at(installed)] == [
            "CN=gw.example.com", "CN=Test Issuing CA", "CN=Test Root CA"]
        assert (root / "etc/postern/tls/gateway.key").read_bytes() == files["leaf.key"]
        assert "chain:       CN=Test Issuing CA, issued by CN=Test Root CA" in text_of(app, "#cert-installed")
        assert "does not name it" not in text_of(app, "#cert-installed")


async def test_a_key_the_relay_cannot_read_is_said_and_one_it_can_is_root_postern_0640(tmp_path):
    import os
    import shutil
    import tempfile
    from pathlib import Path

    if os.geteuid() != 0:
        import pytest
        pytest.skip("owners and the relay's user need root")
    root = Path(tempfile.mkdtemp(prefix="postern-root-"))  # the relay's user can walk in (tmp_path is root-only)
    try:
        root.chmod(0o755)
        (root / "etc").mkdir()
        (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\npostern:x:64123:64123::/var/lib/postern:/bin/false\n")
        (root / "etc/group").write_text("root:x:0:\npostern:x:64123:\n")
        tls = root / "etc/postern/tls"
        tls.mkdir(parents=True, mode=0o700)
        config = write_config(tmp_path / "postern.yaml", CONFIG)
        app = console(tmp_path, config, root)
        async with app.run_test(size=(80, 25)) as pilot:
            screen = await certificates_screen(pilot)
            await pilot.press("s")
            screen.query_one("#cert-self-hostname").value = "gw.example.com"
            await submit(pilot, "cert-self-days", "90")
            await until(pilot, lambda: "the relay cannot load the new certificate and key" in notice(app),
                        what="the relay's refusal")
            assert "as user postern" in notice(app) and "the previous files are kept" in notice(app)
            assert list(tls.iterdir()) == []  # nothing half-installed

            tls.chmod(0o755)
            await submit(pilot, "cert-self-days", "90")
            await until(pilot, lambda: "subject:     CN=gw.example.com" in text_of(app, "#cert-installed"),
                        what="the new certificate")
            assert "the relay loads them" in notice(app)
            info = (tls / "postern.key").stat()
            assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, 64123, 0o640)
    finally:
        shutil.rmtree(root)


def starttls_certificate(port: int) -> bytes | None:
    """The certificate (DER) the relay offers after STARTTLS; None when it offers no STARTTLS."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example.net")
        if not client.has_extn("starttls"):
            return None
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        client.starttls(context=context)
        return client.sock.getpeercert(binary_form=True)


async def test_an_empty_validity_is_the_default_shown_and_t_has_starttls_use_the_new_certificate(
        tmp_path, make_relay, sink):
    relay = make_relay(sink.port)
    root = tmp_path / "root"
    cert_path, key_path = root / "etc/postern/tls/postern.pem", root / "etc/postern/tls/postern.key"
    app = make_app(str(relay.workdir / "control.sock"), str(relay.config_path), root=str(root))
    assert await asyncio.to_thread(starttls_certificate, relay.port) is None  # no certificate yet
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await certificates_screen(pilot)
        await pilot.press("s")
        days = screen.query_one("#cert-self-days")
        assert days.placeholder == "730" and days.value == ""
        await submit(pilot, "cert-self-days")  # empty: the default shown
        await until(pilot, lambda: "subject:     CN=gw.example.com" in text_of(app, "#cert-installed"),
                    what="the new certificate")
        made = certificate_at(cert_path)[0]
        assert made.not_valid_after_utc - made.not_valid_before_utc == datetime.timedelta(days=730, minutes=5)
        assert "t: use it for STARTTLS now" in notice(app)
        assert "mta.tls.cert_file does not name it: t has STARTTLS use it" in text_of(app, "#cert-installed")

        await pilot.press("t")
        await until(pilot, lambda: "In force: STARTTLS offers the installed certificate" in notice(app),
                    what="the settings applied")
        assert text_of(app, "#cert-pem-text").splitlines() == [
            f"mta.tls.cert_file: (empty) -> {cert_path}", f"mta.tls.key_file: (empty) -> {key_path}"]
        offered = await asyncio.to_thread(starttls_certificate, relay.port)
        assert hashlib.sha256(offered).hexdigest() == hashlib.sha256(
            made.public_bytes(serialization.Encoding.DER)).hexdigest()
        tls = yaml.safe_load(relay.config_path.read_text())["mta"]["tls"]
        assert tls == {"cert_file": str(cert_path), "key_file": str(key_path)}
        await until(pilot, lambda: "does not name it" not in text_of(app, "#cert-installed"),
                    what="the certificate shown in use")

        # A new certificate for the same files: t again reloads the relay, which offers the new one at once.
        await pilot.press("escape", "s")
        await submit(pilot, "cert-self-days", "90")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        await pilot.press("y")
        await until(pilot, lambda: certificate_at(cert_path)[0] != made, what="another certificate")
        await until(pilot, lambda: "t: use it for STARTTLS now" in notice(app), what="the offer")
        await pilot.press("t")
        await until(pilot, lambda: "In force" in notice(app), what="the relay reloaded")
        assert "name these files already" in text_of(app, "#cert-pem-text")
        offered = await asyncio.to_thread(starttls_certificate, relay.port)
        assert offered == certificate_at(cert_path)[0].public_bytes(serialization.Encoding.DER)


async def test_t_without_a_certificate_or_a_relay_says_why(tmp_path):
    root = tmp_path / "root"
    config = write_config(tmp_path / "postern.yaml", CONFIG)
    app = console(tmp_path, config, root)
    async with app.run_test(size=(80, 25)) as pilot:
        await certificates_screen(pilot)
        await pilot.press("t")
        assert "No certificate is installed: s makes a self-signed one, i imports one." in notice(app)
        await pilot.press("s")
        await submit(pilot, "cert-self-days", "")
        await until(pilot, lambda: "subject:     CN=gw.example.com" in text_of(app, "#cert-installed"),
                    what="the new certificate")
        await pilot.press("t")
        await until(pilot, lambda: "Not in use, nothing changed" in notice(app), what="the relay's absence")
        assert "tls" not in yaml.safe_load(config.read_text())["mta"]
