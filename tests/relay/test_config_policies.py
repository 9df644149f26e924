"""The gateway-policy keys of the mta: section: each mistake named by its field with the fix."""

import pytest

from relay.config import EXCHANGE_ONLINE_NETWORKS, ConfigError, load_file, parse_mta, to_dict

INTERNAL = {"relay_domains": ["example.com"], "internal_relay": {"host": "mail.example.com"}}
CERT = {"tls": {"cert_file": "/etc/postern/cert.pem", "key_file": "/etc/postern/key.pem"}}
SMART = {"host": "smtp.example.net", "tls": "verify"}

BAD_FIELDS = [
    ({"tls": {"inbound": "always"}}, "mta.tls.inbound: 'always' is not one of may, require"),
    ({"tls": {"inbound": "require"}}, "mta.tls.inbound: require needs a certificate: set tls.cert_file and tls.key_file"),
    ({"tls": {"ca_file": 7}}, "mta.tls.ca_file: must be text (a file path)"),
    ({"tls": {"client_cert_file": "/etc/postern/client.pem"}}, "mta.tls.client_key_file: required with client_cert_file"),
    ({"tls": {"client_key_file": "/etc/postern/client.key"}}, "mta.tls.client_cert_file: required with client_key_file"),
    ({"smtps_listen": ["127.0.0.1:465"]}, "mta.smtps_listen: needs a certificate: set tls.cert_file and tls.key_file"),
    ({"smtps_listen": ["0.0.0.0:25"], **CERT}, "mta.smtps_listen[0]: 0.0.0.0:25 is also in listen: use another port"),
    ({"smtps_listen": ["465"], **CERT}, "mta.smtps_listen[0]: '465' is not an address and port"),
    ({"internal_relay": {"host": "mail.example.com", "tls": "required"}},
     "mta.internal_relay.tls: 'required' is not one of none, may, encrypt, dane, dane-only, verify, secure"),
    ({"internal_relay": {"host": "mail.example.com", "tls": True}}, "mta.internal_relay.tls: True is not one of"),
    ({"internal_relay": {"host": "mail.example.com", "tls_name": "mail.example.com"}},
     "mta.internal_relay.tls_name: only checked with tls: verify or secure: set one, or remove tls_name"),
    ({"internal_relay": {"host": "10.0.0.5", "tls": "verify"}},
     "mta.internal_relay.tls_name: required with tls: verify when host is an IP address"),
    ({"external_relay": {**SMART, "tls": "verify", "tls_name": "*.*.example.com"}},
     "mta.external_relay.tls_name: '*.*.example.com' is not a certificate name"),
    ({"internal_relay": {"host": "mail.example.com", "username": "gw"}},
     "mta.internal_relay.username: unknown key; known keys are host, port, mx, tls, tls_name"),
    ({"external_relay": {**SMART, "username": "gw"}},
     "mta.external_relay.password_file: required with username: name the file that holds the password"),
    ({"external_relay": {**SMART, "username": " gw"}}, "mta.external_relay.username: must be the login name on one line"),
    ({"external_relay": {**SMART, "username": "gw", "password_file": "smarthost.password"}},
     "mta.external_relay.password_file: 'smarthost.password' is not an absolute file path"),
    ({"external_relay": {**SMART, "username": "gw", "password_file": "/nonexistent/smarthost.password"}},
     "mta.external_relay.password_file: cannot use /nonexistent/smarthost.password: No such file or directory"),
    ({"m365": {"tenant_ids": ["contoso.onmicrosoft.com"]}},
     "mta.m365.tenant_ids[0]: 'contoso.onmicrosoft.com' is not a tenant ID: copy the GUID from the overview page"),
    ({"m365": {"networks": ["40.92.0.0/33"]}}, "mta.m365.networks[0]: '40.92.0.0/33' is not an IP network"),
    ({"m365": {"tenant": "x"}}, "mta.m365.tenant: unknown key; known keys are tenant_ids, networks"),
    ({"reject_unverified_recipient": {"enabled": True, "code": 554}, **INTERNAL},
     "mta.reject_unverified_recipient.code: 554 is not one of 450, 550"),
    ({"reject_unverified_recipient": {"enabled": True, "code": "550"}, **INTERNAL},
     "mta.reject_unverified_recipient.code: '550' is not one of 450, 550"),
    ({"reject_unverified_recipient": {"enabled": True}},
     "mta.reject_unverified_recipient.enabled: recipients are verified at internal_relay for the relay_domains"),
    ({"reject_unverified_recipient": {"negative_expire_time": "3 days"}},
     "mta.reject_unverified_recipient.negative_expire_time: '3 days' is not a duration"),
    ({"marker": {"header": "X Postern"}}, "mta.marker.header: 'X Postern' is not a header name"),
    ({"marker": {"header": "X-Postern:"}}, "mta.marker.header: 'X-Postern:' is not a header name"),
    ({"marker": {"header": "Received"}}, "mta.marker.header: 'Received' is a standard header that mail needs"),
    ({"marker": {"value": "two\nlines"}}, "mta.marker.value: contains a control character (\\n at position 4): remove it"),
    ({"marker": {"loop_limit": 0}}, "mta.marker.loop_limit: 0 is not a whole number of at least 1"),
    ({"marker": {"header": "X-Postern-Processed\n"}}, "mta.marker.header: contains a control character (\\n at position 20)"),
    ({"marker": {"header": "X-" + "a" * 100_000}},
     "mta.marker.header: is 100002 characters long: too long for a header name (at most 64): shorten it"),
    ({"marker": {"value": "v" * 100_000}},
     "mta.marker.value: is 100000 characters long: too long for the marker's header value (at most 200): shorten it"),
    ({"m365": {"tenant_ids": ["72f988bf-86f1-41af-91ab-2d7cd011db47\n"]}}, "mta.m365.tenant_ids[0]: contains a control character"),
    ({"marker": {"enabled": "yes"}}, "mta.marker.enabled: 'yes' is not true or false"),
    ({"paused_domains": ["example.org", "exa mple.com"]}, "mta.paused_domains[1]: 'exa mple.com' is not a domain name"),
]


@pytest.mark.parametrize("section, expected", BAD_FIELDS, ids=[repr(s)[:70] for s, _ in BAD_FIELDS])
def test_a_bad_policy_value_is_named_by_its_field(section, expected):
    config, problems = parse_mta(section)
    assert config is None
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "smarthost.password"
    path.write_text("s3cret\n")
    path.chmod(0o640)
    return path


@pytest.mark.parametrize("relay, expected", [
    ({"username": "gw"}, "mta.external_relay.host: required with username: name the smart host"),
    *[({**SMART, "tls": level, "username": "gw"},
       f"mta.external_relay.tls: {level} would send the password to a server whose certificate is not checked: "
       "set tls: verify") for level in ("none", "may", "encrypt", "dane")],
    ({**SMART}, "mta.external_relay.username: required with password_file"),
    # The login goes to a verified server only (verify is the default with a username): a smart host given
    # by address needs the name in its certificate.
    ({"host": "192.0.2.25", "username": "gw"},
     "mta.external_relay.tls_name: required with tls: verify when host is an IP address"),
])
def test_smart_host_login_needs_its_parts(password_file, relay, expected):
    _, problems = parse_mta({"external_relay": {**relay, "password_file": str(password_file)}})
    assert [p for p in problems if p.startswith(expected)] == problems != [], problems


@pytest.mark.parametrize("level", ["verify", "secure", "dane-only", None])
def test_a_login_goes_with_a_checked_certificate_only(password_file, level):
    # DANE finds its TLSA records by the host's name; the others need the name its certificate carries
    where = {"host": "smtp.example.net"} if level == "dane-only" else {"host": "192.0.2.25", "tls_name": "smtp.example.net"}
    relay = {**where, "username": "gw", "password_file": str(password_file), **({"tls": level} if level else {})}
    config, problems = parse_mta({"external_relay": relay})
    assert problems == [] and config.external_relay.tls == (level or "verify")
    _, [problem] = parse_mta({"external_relay": {**relay, "tls": "may", "username": "", "password_file": "",
                                                 "tls_name": "smtp.example.net"}})
    assert problem.startswith("mta.external_relay.tls_name: only checked with tls: verify or secure")


def test_dane_only_needs_a_host_name():
    _, [problem] = parse_mta({"internal_relay": {"host": "10.0.0.5", "tls": "dane-only"}})
    assert problem == ("mta.internal_relay.tls: dane-only finds TLSA records by the host's name: "
                       "give host as a name, or choose another level")


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o666])
def test_a_password_file_others_can_read_is_refused(password_file, mode):
    password_file.chmod(mode)
    _, [problem] = parse_mta({"external_relay": {**SMART, "username": "gw", "password_file": str(password_file)}})
    assert problem == (
        f"mta.external_relay.password_file: {password_file} is readable by every user (mode {mode:04o}): "
        f"let only root and the daemon read it: chown root:postern {password_file} && chmod 640 {password_file}"
    )


def test_the_password_is_read_when_the_file_is_loaded_and_never_written_back(tmp_path, password_file):
    path = tmp_path / "postern.yaml"
    path.write_text(f"mta:\n  external_relay: {{host: smtp.example.net, tls: verify, username: gw, "
                    f"password_file: {password_file}}}\n")
    config = load_file(path)
    assert config.external_relay.password == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in repr(to_dict(config))
    password_file.write_text("\n")
    with pytest.raises(ConfigError) as raised:
        load_file(path)
    assert raised.value.problems == [f"mta.external_relay.password_file: {password_file} must hold the password on one line"]


def test_good_policy_values_are_read_as_written():
    config, problems = parse_mta({
        **INTERNAL,
        **CERT,
        "smtps_listen": ["127.0.0.1:465"],
        "tls": {**CERT["tls"], "inbound": "require", "ca_file": "/etc/ssl/certs/ca-certificates.crt"},
        "internal_relay": {"host": "10.0.0.5", "tls": "verify", "tls_name": "Mail.Example.com"},
        "external_relay": {"host": "contoso-com.mail.protection.outlook.com", "tls": "verify",
                           "tls_name": "*.mail.protection.outlook.com"},
        "m365": {"tenant_ids": ["72F988BF-86F1-41AF-91AB-2D7CD011DB47"]},
        "reject_unverified_recipient": {"enabled": True, "code": 550, "positive_expire_time": "31d"},
        "marker": {"header": "X-EXO2GW", "value": "1"},
        "paused_domains": ["Example.ORG"],
    })
    assert problems == []
    assert config.tls.inbound == "require"
    assert config.internal_relay.tls_name == "mail.example.com"
    assert config.m365.tenant_ids == ("72f988bf-86f1-41af-91ab-2d7cd011db47",)
    assert config.m365.networks == EXCHANGE_ONLINE_NETWORKS
    assert config.m365.covers("40.107.22.1") and config.m365.covers("2a01:111:f403::1")
    assert not config.m365.covers("192.0.2.1")
    assert config.reject_unverified_recipient.positive_expire_time == 31 * 86400
    assert config.marker_value == "1"
    assert config.is_paused("example.org") and not config.is_paused("example.com")


def test_defaults_change_nothing_for_existing_files():
    config, _ = parse_mta({"hostname": "gw.example.com"})
    assert config.tls.inbound == "may" and config.smtps_listen == ()
    # DANE where a destination publishes TLSA records with DNSSEC, else may; the internal server: may
    assert (config.internal_relay.tls, config.external_relay.tls) == ("may", "dane")
    assert config.tls_policy == {} and config.tls_reports
    assert not config.m365.covers("40.92.0.1"), "without tenant IDs the check is off"
    assert not config.reject_unverified_recipient.enabled
    assert (config.marker.header, config.marker_value, config.marker.loop_limit) == ("X-Postern-Processed",
                                                                                     "gw.example.com", 2)
    assert config.paused_domains == ()


def test_the_running_section_can_be_applied_again_as_it_is():
    config, _ = parse_mta({**INTERNAL, "m365": {"tenant_ids": ["72f988bf-86f1-41af-91ab-2d7cd011db47"]},
                           "paused_domains": ["example.org"], "external_relay": {**SMART}})
    again, problems = parse_mta(to_dict(config))
    assert problems == [] and again == config
