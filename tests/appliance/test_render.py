"""Rendering under a root directory: the files match the expected ones byte for byte, stale
files of ours go, other files stay, and a second run changes nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from appliance.network.model import parse_network
from appliance.network.render import plan, write_plan
from appliance.schema import load_config_file

from .conftest import COMMAND, ROOT, files_under

EXPECTED = Path(__file__).parent / "expected"
RESOLVED_LINK = "../run/systemd/resolve/stub-resolv.conf"


def expected_files(case: str) -> dict:
    return files_under(EXPECTED / case)


def render_case(case: str, root: Path):
    config = load_config_file(EXPECTED / f"{case}.yaml")
    file_plan = plan(config.network, root)
    write_plan(file_plan)
    return file_plan


@pytest.mark.parametrize("case", ["issue-example", "ipv6-mtu-hosts"])
def test_rendered_files_match_the_expected_ones(tmp_path, case):
    render_case(case, tmp_path)
    found = files_under(tmp_path)
    assert {path: content for path, (content, _) in found.items()} == {
        path: content for path, (content, _) in expected_files(case).items()
    }
    assert {mode for _, mode in found.values()} == {0o644}


def test_dns_goes_to_a_resolved_drop_in_when_resolv_conf_is_resolveds_link(tmp_path):
    (tmp_path / "etc").mkdir()
    os.symlink(RESOLVED_LINK, tmp_path / "etc/resolv.conf")
    render_case("resolved", tmp_path)
    found = files_under(tmp_path)
    assert found.pop("etc/resolv.conf") == ("-> " + RESOLVED_LINK, 0)  # the link is left alone
    assert {p: c for p, (c, _) in found.items()} == {p: c for p, (c, _) in expected_files("resolved").items()}


def test_a_second_render_changes_nothing_and_stale_files_of_ours_go(tmp_path):
    network_dir = tmp_path / "etc/systemd/network"
    network_dir.mkdir(parents=True)
    (network_dir / "10-postern-eth7.network").write_text("[Match]\nName=eth7\n")
    (network_dir / "50-admin.network").write_text("[Match]\nName=eth9\n")  # not ours: it stays
    first = render_case("issue-example", tmp_path)
    assert first.remove == ["etc/systemd/network/10-postern-eth7.network"]
    assert (network_dir / "50-admin.network").exists()
    second = plan(load_config_file(EXPECTED / "issue-example.yaml").network, tmp_path)
    assert not second.changed and len(second.unchanged) == 5


def test_a_dhcp_only_network_leaves_resolv_conf_to_the_dhcp_client(tmp_path):
    config, _ = parse_network({"interfaces": {"eth0": {"dhcp": True}}})
    file_plan = plan(config, tmp_path)
    assert list(file_plan.write) == ["etc/systemd/network/10-postern-eth0.network"]


def test_the_render_command_writes_the_same_files(tmp_path):
    result = subprocess.run([COMMAND, "render", "--config", str(EXPECTED / "issue-example.yaml"), "--root", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "wrote /etc/systemd/network/10-postern-eth0.network" in result.stdout
    assert files_under(tmp_path) == {p: (c, 0o644) for p, (c, _) in expected_files("issue-example").items()}
