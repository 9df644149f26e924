"""The seed's `security_updates:`: true (the default) or false, written to the switch apt reads; anything
else refused by its name, changing nothing."""

import pytest

from appliance.provision import check_seed, field_paths
from appliance.security_updates import AUTO_UPGRADES, read_state
from tests.appliance.test_provision import provision, root, seed_for, tree, write_seed  # noqa: F401


@pytest.mark.parametrize("value, on", [(True, True), (False, False), (None, True)])
def test_the_seed_switches_the_security_updates(tmp_path, root, capsys, value, on):
    seed = seed_for("direct")
    if value is not None:
        seed["security_updates"] = value
    assert provision(write_seed(tmp_path, seed), root) == 0
    out = capsys.readouterr().out
    assert read_state(root).enabled is on
    words = "installed automatically, daily" if on else "off"
    assert f"security updates: {words} (wrote {root / AUTO_UPGRADES})" in out
    assert "security_updates" not in (root / "etc/postern/postern.yaml").read_text()  # setup only


def test_the_yaml_words_for_yes_and_no_are_taken(tmp_path, root):
    seed = write_seed(tmp_path, seed_for("direct"))
    seed.write_text(seed.read_text() + "security_updates: no\n")
    assert provision(seed, root) == 0
    assert read_state(root).enabled is False


@pytest.mark.parametrize("value, shown", [
    ("true", "'true'"), (1, "1"), ("off", "'off'"), ({"enabled": True}, "{'enabled': True}"), ([], "[]"),
    ("x" * 100, "'" + "x" * 36 + "..."),
])
def test_anything_but_true_or_false_is_refused_by_its_name_and_changes_nothing(tmp_path, root, capsys, value, shown):
    seed = seed_for("direct")
    seed["security_updates"] = value
    path = write_seed(tmp_path, seed)
    if value == "off":  # YAML would read a bare off as false: quoted, it is a string
        path.write_text(path.read_text().replace("security_updates: false", "security_updates: 'off'"))
    before = tree(root)
    assert provision(path, root) == 1
    err = capsys.readouterr().err
    assert (f"postern-appliance: security_updates: must be true (Debian's security updates installed "
            f"automatically, the default) or false, not {shown}\n") in err
    assert tree(root) == before


def test_a_control_character_in_it_is_named_too(tmp_path, root):
    seed = seed_for("direct")
    seed["security_updates"] = "yes\x1b[2J"
    _, problems = check_seed(seed, root)
    assert problems and all(problem.startswith("security_updates: ") for problem in problems)
    assert all("\x1b" not in problem for problem in problems)


def test_the_field_is_listed_with_the_seeds_own():
    assert (("security_updates",), False) in field_paths()
