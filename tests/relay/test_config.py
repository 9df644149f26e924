"""The mta: section as an admin writes it: every mistake named by its field, all at once."""

import ipaddress
import subprocess
import sys

import pytest
import yaml

from relay.config import ConfigError, ListenAddress, load_file, parse_mta
from tests.support.relay import ROOT

INTERNAL = {"internal_relay": {"host": "mail.example.com"}}

BAD_FIELDS = [
    # (section as written, the start of the one problem it must produce)
    ({"hostname": "localhost"}, "mta.hostname: 'localhost' is not a fully qualified host name"),
    ({"hostname": "gw_1.example.com"}, "mta.hostname: 'gw_1.example.com' is not a fully qualified host name"),
    ({"hostname": "-gw.example.com"}, "mta.hostname: '-gw.example.com' is not a fully qualified host name"),
    ({"hostname": 42}, "mta.hostname: must be a fully qualified host name"),
    ({"helo_name": "my gateway"}, "mta.helo_name: 'my gateway' is not a fully qualified host name"),
    ({"banner": "two\nlines"}, "mta.banner: contains a control character (\\n at position 4): remove it"),
    ({"banner": "ESMTP Pøstern"}, "mta.banner: must be printable ASCII text on one line"),
    ({"listen": ["0.0.0.0"]}, "mta.listen[0]: '0.0.0.0' is not an address and port: write it like 0.0.0.0:25"),
    ({"listen": ["127.0.0.1:25", "0.0.0.0:99999"]}, "mta.listen[1]: 99999 is not a port number: use 1 to 65535"),
    ({"listen": ["0.0.0.0:0"]}, "mta.listen[0]: 0 is not a port number"),
    ({"listen": ["999.0.0.1:25"]}, "mta.listen[0]: '999.0.0.1:25': '999.0.0.1' is not an IP address"),
    ({"listen": ["mail.example.com:25"]}, "mta.listen[0]: 'mail.example.com:25' is not an address and port"),
    ({"listen": []}, "mta.listen: needs at least one address"),
    ({"listen": {"0.0.0.0": 25}}, "mta.listen: must be a list"),
    ({"relay_domains": ["example.com", "*.example.org"], **INTERNAL},
     "mta.relay_domains[1]: '*.example.org' is not a domain name"),
    ({"relay_domains": ["exa mple.com"], **INTERNAL}, "mta.relay_domains[0]: 'exa mple.com' is not a domain name"),
    ({"match_subdomains": "sometimes"}, "mta.match_subdomains: 'sometimes' is not true or false"),
    ({"my_networks": ["192.168.1.10/32", "10.0.0.300/8"]},
     "mta.my_networks[1]: '10.0.0.300/8' is not an IP network: write it like 192.168.1.10/32 or 10.0.0.0/8"),
    ({"my_networks": ["mail.example.com"]}, "mta.my_networks[0]: 'mail.example.com' is not an IP network"),
    ({"internal_relay": {"host": "mail.example.com", "port": 0}},
     "mta.internal_relay.port: 0 is not a port number: use 1 to 65535"),
    ({"internal_relay": {"host": "mail.example.com", "port": "smtp"}},
     "mta.internal_relay.port: 'smtp' is not a port number"),
    ({"internal_relay": {"host": "[10.0.0.1]"}}, "mta.internal_relay.host: write the host without brackets (10.0.0.1)"),
    ({"internal_relay": {"host": "mail server"}}, "mta.internal_relay.host: 'mail server' is not a host name or IP address"),
    ({"internal_relay": {"host": "mail.example.com", "mx": "no way"}}, "mta.internal_relay.mx: 'no way' is not true or false"),
    ({"internal_relay": {"hots": "mail.example.com"}}, "mta.internal_relay.hots: unknown key; known keys are host, port, mx"),
    ({"internal_relay": "mail.example.com"}, "mta.internal_relay: must be a mapping of keys to values"),
    ({"external_relay": {"port": 70000}}, "mta.external_relay.port: 70000 is not a port number"),
    ({"message_size_limit": 100}, "mta.message_size_limit: 100 is not a whole number of at least 1024"),
    ({"message_size_limit": "10MB"}, "mta.message_size_limit: '10MB' is not a whole number"),
    ({"header_size_limit": 1000}, "mta.header_size_limit: 1000 is not a whole number of at least 1024"),
    ({"recipient_limit": 0}, "mta.recipient_limit: 0 is not a whole number of at least 1"),
    ({"hopcount_limit": -1}, "mta.hopcount_limit: -1 is not a whole number"),
    ({"max_connections": True}, "mta.max_connections: True is not a whole number"),
    ({"junk_command_limit": 1.5}, "mta.junk_command_limit: 1.5 is not a whole number"),
    ({"idle_timeout": "5 days"}, "mta.idle_timeout: '5 days' is not a duration: use seconds or a number with s, m, h, d or w"),
    ({"idle_timeout": "5x"}, "mta.idle_timeout: '5x' is not a duration"),
    ({"idle_timeout": 0}, "mta.idle_timeout: 0 is not a duration"),
    ({"idle_timeout": "0s"}, "mta.idle_timeout: '0s' is not a duration"),
    ({"session_timeout": -60}, "mta.session_timeout: -60 is not a duration"),
    ({"session_timeout": True}, "mta.session_timeout: True is not a duration"),
    ({"dns_servers": ["dns.example.com"]}, "mta.dns_servers[0]: 'dns.example.com' is not a DNS server address"),
    ({"dns_servers": ["127.0.0.1:5353", "127.0.0.1:0"]}, "mta.dns_servers[1]: '127.0.0.1:0' is not a DNS server address"),
    ({"tls": {"cert_file": 5, "key_file": "/etc/postern/key.pem"}}, "mta.tls.cert_file: must be text (a file path)"),
    ({"tls": {"cert_file": "/etc/postern/cert.pem"}}, "mta.tls.key_file: required with cert_file"),
    ({"tls": {"key_file": "/etc/postern/key.pem"}}, "mta.tls.cert_file: required with key_file"),
    ({"tls": {"chain_file": "/etc/postern/chain.pem"}}, "mta.tls.chain_file: unknown key; known keys are cert_file, key_file"),
    ({"queue": {"minimal_backoff_time": "soon"}}, "mta.queue.minimal_backoff_time: 'soon' is not a duration"),
    ({"queue": {"minimal_backoff_time": "1h", "maximal_backoff_time": "10m"}},
     "mta.queue.maximal_backoff_time: must not be less than minimal_backoff_time"),
    ({"queue": {"maximal_queue_lifetime": "5 d"}}, None),  # a space before the unit is fine
    ({"queue": {"maximal_queue_lifetime": "1y"}}, "mta.queue.maximal_queue_lifetime: '1y' is not a duration"),
    ({"delivery": {"connect_timeout": "never"}}, "mta.delivery.connect_timeout: 'never' is not a duration"),
    ({"delivery": {"destination_concurrency_limit": 0}}, "mta.delivery.destination_concurrency_limit: 0 is not a whole number"),
    ({"relay_domain": ["example.com"]}, "mta.relay_domain: unknown key; known keys are hostname, helo_name, banner, listen"),
    ({"relay_domains": ["example.com"]}, "mta.internal_relay.host: required when relay_domains is set"),
    ({"relay_domains": ["example.com"], "internal_relay": {"host": "", "port": 25}},
     "mta.internal_relay.host: required when relay_domains is set"),
    # A line end in a name would split the Received: header, the greeting or the EHLO a next hop reads.
    ({"hostname": "gw.example.com\n"}, "mta.hostname: contains a control character (\\n at position 15): remove it"),
    ({"helo_name": "gw.example.com\n"}, "mta.helo_name: contains a control character (\\n at position 15): remove it"),
    ({"hostname": "gw.example.com\r\n"}, "mta.hostname: contains a control character (\\r at position 15)"),
    ({"hostname": "\u2028gw.example.com"}, "mta.hostname: contains a control character (\\u2028 at position 1)"),
    ({"banner": "ESMTP\x85Postern"}, "mta.banner: contains a control character (\\x85 at position 6)"),
    ({"relay_domains": ["example.com\n"], **INTERNAL}, "mta.relay_domains[0]: contains a control character"),
    ({"relay_domains": "example.com\n", **INTERNAL}, "mta.relay_domains: contains a control character"),
    ({"paused_domains": ["example.org\n"]}, "mta.paused_domains[0]: contains a control character"),
    ({"internal_relay": {"host": "mail.example.com\n"}}, "mta.internal_relay.host: contains a control character"),
    ({"internal_relay": {"host": "mail.example.com", "tls": "verify", "tls_name": "mx.example.com\n"}},
     "mta.internal_relay.tls_name: contains a control character"),
    ({"external_relay": {"host": "smtp.example.net", "username": "relay\u2029"}},
     "mta.external_relay.username: contains a control character"),
    ({"listen": ["127.0.0.1:25\n"]}, "mta.listen[0]: contains a control character (\\n at position 13)"),
    ({"dns_servers": ["127.0.0.1:5353\n"]}, "mta.dns_servers[0]: contains a control character"),
    ({"idle_timeout": "5m\n"}, "mta.idle_timeout: contains a control character"),
    ({"tls": {"cert_file": "/etc/postern/cert.pem\n", "key_file": "/etc/postern/key.pem"}},
     "mta.tls.cert_file: contains a control character"),
    ({"hostname\n": "gw.example.com"}, "mta.hostname\\n: the name contains a control character (\\n at position 9)"),
    # Lengths: a name as DNS allows, a banner that keeps the greeting in one 512-octet reply line.
    ({"hostname": "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61}, None),
    ({"hostname": "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62},
     "mta.hostname: is 254 characters long: too long for a host name (at most 253): shorten it"),
    ({"hostname": "a" * 64 + ".example.com"}, "mta.hostname: '" + "a" * 64 + ".example.com' is not a fully qualified host name"),
    ({"banner": "x" * 200}, None),
    ({"marker": {"header": "X-" + "a" * 62, "value": "v" * 200}}, None),
    ({"banner": "x" * 100_000}, "mta.banner: is 100000 characters long: the greeting with the host name must fit in one "
                                "512-octet SMTP reply line (at most 200): shorten it"),
    ({"external_relay": {"host": "smtp.example.net", "username": "u" * 256}},
     "mta.external_relay.username: is 256 characters long: too long for a login name (at most 255)"),
]


@pytest.mark.parametrize("section, expected", BAD_FIELDS, ids=[repr(s)[:60] for s, _ in BAD_FIELDS])
def test_a_bad_value_is_named_by_its_field(section, expected):
    config, problems = parse_mta(section)
    if expected is None:
        assert problems == [] and config is not None
        return
    assert config is None
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]


def test_every_problem_is_reported_at_once():
    config, problems = parse_mta({
        "hostname": "localhost",
        "listen": ["0.0.0.0:25", "0.0.0.0"],
        "my_networks": ["10.0.0.300/8"],
        "relay_domains": ["example.com"],
        "internal_relay": {"port": 0},
        "idle_timeout": "5 days",
        "colour": "blue",
    })
    assert config is None
    assert [problem.split(":")[0] for problem in problems] == [
        "mta.hostname", "mta.listen[1]", "mta.my_networks[0]", "mta.internal_relay.port", "mta.idle_timeout",
        "mta.colour",
    ]


def test_cross_field_problems_are_reported_along_with_field_problems():
    """Fixing one mistake must not reveal another that could have been named the first time."""
    config, problems = parse_mta({
        "my_networks": ["10.0.0.300/8"],
        "relay_domains": ["example.com"],
        "tls": {"cert_file": "/etc/postern/cert.pem"},
        "queue": {"minimal_backoff_time": "1h", "maximal_backoff_time": "10m"},
    })
    assert config is None
    assert sorted(problem.split(":")[0] for problem in problems) == [
        "mta.internal_relay.host", "mta.my_networks[0]", "mta.queue.maximal_backoff_time", "mta.tls.key_file",
    ]


def test_a_section_with_a_bad_field_is_not_also_called_missing():
    config, problems = parse_mta({"relay_domains": ["example.com"], "internal_relay": {"host": "[10.0.0.1]"}})
    assert [problem.split(":")[0] for problem in problems] == ["mta.internal_relay.host"]
    assert "brackets" in problems[0]


@pytest.mark.parametrize("value", ["", "mta", ["hostname"], 5])
def test_mta_must_be_a_mapping(value):
    assert parse_mta(value) == (None, ["mta: must be a mapping of keys to values"])


def test_good_values_are_read_as_written():
    config, problems = parse_mta({
        "hostname": "GW.Example.COM.",
        "listen": ["127.0.0.1:2525", "[::1]:25"],
        "relay_domains": ["Example.COM", "example.org."],
        "my_networks": ["192.168.1.10", "10.0.0.0/8"],
        "internal_relay": {"host": "10.0.0.5", "port": 2525},
        "idle_timeout": "10m",
        "session_timeout": "1h",
        "junk_command_limit": 5,
        "dns_servers": ["192.0.2.53", "127.0.0.1:5353"],
        "queue": {"minimal_backoff_time": "300s", "maximal_backoff_time": 4000, "maximal_queue_lifetime": "5d"},
        "delivery": {"connect_timeout": "1w"},
    })
    assert problems == []
    assert config.hostname == "gw.example.com"
    assert config.listen == (ListenAddress("127.0.0.1", 2525), ListenAddress("::1", 25))
    assert config.relay_domains == ("example.com", "example.org")
    assert config.my_networks == (ipaddress.ip_network("192.168.1.10/32"), ipaddress.ip_network("10.0.0.0/8"))
    assert (config.internal_relay.host, config.internal_relay.port, config.internal_relay.mx) == ("10.0.0.5", 2525, False)
    assert (config.idle_timeout, config.session_timeout) == (600, 3600)
    assert config.queue.minimal_backoff_time == 300
    assert config.queue.maximal_queue_lifetime == 5 * 86400
    assert config.delivery.connect_timeout == 7 * 86400
    assert config.is_trusted("192.168.1.10") and not config.is_trusted("192.168.1.11")
    assert config.is_relay_domain("EXAMPLE.org.") and not config.is_relay_domain("sub.example.org")


def test_an_empty_section_means_the_defaults():
    config, problems = parse_mta(None)
    assert problems == []
    assert config.listen == (ListenAddress("0.0.0.0", 25),)
    assert config.message_size_limit == 10240000
    assert config.header_size_limit == 102400  # Postfix's default



def test_a_list_written_with_no_value_is_empty_as_in_the_network_section():
    # `dns_servers:` with nothing after it is YAML's null. The network section always read it as an
    # empty list; this section called it "must be a list". Both now read lists with one walk.
    config, problems = parse_mta(yaml.safe_load("hostname: gw.example.com\ndns_servers:\nm365: {tenant_ids:}\n"))
    assert problems == []
    assert config.dns_servers == () and config.m365.tenant_ids == ()
    _, problems = parse_mta({"listen": None})
    assert problems == ["mta.listen: needs at least one address, such as 0.0.0.0:25"]


# --- the file ------------------------------------------------------------------------


def write_yaml(path, document) -> str:
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return str(path)


def test_load_file_reads_the_mta_section_and_ignores_the_others(tmp_path):
    path = write_yaml(tmp_path / "postern.yaml", {
        "mta": {"hostname": "gw.example.com", "relay_domains": ["example.com"], **INTERNAL},
        "system": {"timezone": "Europe/Amsterdam"},
    })
    config = load_file(path)
    assert config.hostname == "gw.example.com"
    assert config.internal_relay.host == "mail.example.com"


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "cannot read the configuration file: No such file or directory"),
        ("mta: [unclosed\n", "not valid YAML"),
        ("- mta\n", "must be a mapping with an mta: section"),
    ],
    ids=["missing", "not YAML", "not a mapping"],
)
def test_load_file_names_the_file_when_it_cannot_be_used(tmp_path, content, expected):
    path = tmp_path / "postern.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as raised:
        load_file(path)
    [problem] = raised.value.problems
    assert problem.startswith(f"{path}: {expected}"), problem


def test_load_file_reports_every_problem(tmp_path):
    path = write_yaml(tmp_path / "postern.yaml", {"mta": {"hostname": "localhost", "my_networks": ["10.0.0.300/8"]}})
    with pytest.raises(ConfigError) as raised:
        load_file(path)
    assert [p.split(":")[0] for p in raised.value.problems] == ["mta.hostname", "mta.my_networks[0]"]


# --- postern-relay --check ------------------------------------------------------------


def run_check(config_path, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "relay.daemon", "--config", str(config_path), "--check",
         "--state-dir", str(tmp_path / "state"), "--socket", str(tmp_path / "control.sock")],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )


def test_check_lists_one_line_per_problem_and_exits_1(tmp_path):
    path = write_yaml(tmp_path / "postern.yaml", {"mta": {
        "my_networks": ["192.168.1.10/32", "10.0.0.300/8"],
        "internal_relay": {"host": "mail.example.com", "port": 0},
        "idle_timeout": "5 days",
    }})
    result = run_check(path, tmp_path)
    assert result.returncode == 1
    assert sorted(result.stderr.splitlines()) == sorted([
        "postern-relay: mta.my_networks[1]: '10.0.0.300/8' is not an IP network: write it like 192.168.1.10/32 or 10.0.0.0/8",
        "postern-relay: mta.internal_relay.port: 0 is not a port number: use 1 to 65535",
        "postern-relay: mta.idle_timeout: '5 days' is not a duration: use seconds or a number with s, m, h, d or w, "
        "such as 5d",
    ])
    assert not (tmp_path / "state").exists()


def test_check_refuses_line_ends_that_would_split_the_greeting_the_received_header_and_the_ehlo(tmp_path):
    # As the admin's editor writes them: a quoted escape, and a block scalar that keeps its last line end.
    path = tmp_path / "postern.yaml"
    path.write_text('mta:\n  hostname: "gw.example.com\\r\\nX-Injected: yes"\n  helo_name: |\n    out.example.com\n'
                    "  banner: " + "x" * 100_000 + "\n")
    result = run_check(path, tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "postern-relay: mta.hostname: contains a control character (\\r at position 15): remove it",
        "postern-relay: mta.helo_name: contains a control character (\\n at position 16): remove it",
        "postern-relay: mta.banner: is 100000 characters long: the greeting with the host name must fit in one "
        "512-octet SMTP reply line (at most 200): shorten it",
    ]
    assert not (tmp_path / "state").exists()


def test_check_accepts_a_good_file_without_starting_anything(tmp_path):
    path = write_yaml(tmp_path / "postern.yaml", (ROOT / "examples" / "postern.yaml").read_text())
    result = run_check(path, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"postern-relay: {path}: configuration is valid"
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "control.sock").exists()


def test_check_refuses_a_certificate_the_daemon_could_not_load(tmp_path):
    """--check must not call valid a file the daemon then refuses to start with."""
    path = write_yaml(tmp_path / "postern.yaml", {"mta": {
        "tls": {"cert_file": str(tmp_path / "missing-cert.pem"), "key_file": str(tmp_path / "missing-key.pem")},
    }})
    result = run_check(path, tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("postern-relay: mta.tls: cannot load the certificate"), line
