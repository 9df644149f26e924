"""The security updates' state read from the files unattended-upgrades and apt leave, the switch written,
and `postern-appliance security-updates`.

The logs are in unattended-upgrades' own format (`logging.basicConfig(format='%(asctime)s
%(levelname)s %(message)s')` in its script, with the messages it writes); the hostile files are what a
broken disk, a half-written line or a mischievous package name could leave.
"""

from __future__ import annotations

import datetime
import os
import stat
import threading
from pathlib import Path

import pytest

from appliance import security_updates
from appliance.cli.main import main
from appliance.security_updates import (AUTO_UPGRADES, LOG, LOG_TAIL, PACKAGE_CONFIG, REBOOT_PACKAGES, REBOOT_REQUIRED,
                                        read_state, set_enabled, summary)

NOTHING_RUN = """\
2026-12-05 06:31:07,412 INFO Starting unattended upgrades script
2026-12-05 06:31:07,413 INFO Allowed origins are: origin=Debian,codename=trixie-security,label=Debian-Security
2026-12-05 06:31:07,413 INFO Initial blacklist: 
2026-12-05 06:31:07,413 INFO Initial whitelist (not strict): 
2026-12-05 06:31:09,870 INFO No packages found that can be upgraded unattended and no pending auto-removals
"""

UPGRADE_RUN = """\
2026-12-06 06:12:44,018 INFO Starting unattended upgrades script
2026-12-06 06:12:44,019 INFO Allowed origins are: origin=Debian,codename=trixie-security,label=Debian-Security
2026-12-06 06:12:44,019 INFO Initial blacklist: 
2026-12-06 06:12:44,019 INFO Initial whitelist (not strict): 
2026-12-06 06:12:47,101 INFO Packages that will be upgraded: libssl3t64 linux-image-amd64 openssl
2026-12-06 06:12:47,102 INFO Writing dpkg log to /var/log/unattended-upgrades/unattended-upgrades-dpkg.log
2026-12-06 06:13:32,553 INFO All upgrades installed
"""

FAILED_RUN = """\
2026-12-07 06:05:00,001 INFO Starting unattended upgrades script
2026-12-07 06:05:00,002 INFO Allowed origins are: origin=Debian,codename=trixie-security,label=Debian-Security
2026-12-07 06:05:02,300 INFO Packages that will be upgraded: libc6
2026-12-07 06:05:02,301 INFO Writing dpkg log to /var/log/unattended-upgrades/unattended-upgrades-dpkg.log
2026-12-07 06:05:20,912 ERROR Installing the upgrades failed!
2026-12-07 06:05:20,912 ERROR error message: installArchives() failed
2026-12-07 06:05:20,913 ERROR dpkg returned a error! See /var/log/unattended-upgrades/unattended-upgrades-dpkg.log for details
"""

LOCKED_RUN = """\
2026-12-08 06:40:11,500 INFO Starting unattended upgrades script
2026-12-08 06:40:11,501 ERROR Lock could not be acquired (another package manager running?)
"""


def local(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").astimezone()


def system(tmp_path: Path, *, switch: str | None = 'APT::Periodic::Update-Package-Lists "1";\n'
                                                      'APT::Periodic::Unattended-Upgrade "1";\n',
           log: str | bytes | None = None, reboot: str | None = None, installed: bool = True) -> Path:
    """A root with the files of an appliance that has unattended-upgrades (or not)."""
    root = tmp_path / "root"
    for relative, content in ((AUTO_UPGRADES, switch), (LOG, log), (REBOOT_PACKAGES, reboot),
                              (REBOOT_REQUIRED, "*** System restart required ***\n" if reboot is not None else None),
                              (PACKAGE_CONFIG, "// the package's own\n" if installed else None)):
        if content is None:
            continue
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    root.mkdir(exist_ok=True)
    return root


# --- the last run ---


@pytest.mark.parametrize("log, started, outcome", [
    (NOTHING_RUN, "2026-12-05 06:31:07", "nothing to upgrade"),
    (NOTHING_RUN + UPGRADE_RUN, "2026-12-06 06:12:44", "3 packages upgraded"),
    (NOTHING_RUN + UPGRADE_RUN + FAILED_RUN, "2026-12-07 06:05:00", "failed: Installing the upgrades failed!"),
    (UPGRADE_RUN + LOCKED_RUN, "2026-12-08 06:40:11",
     "failed: Lock could not be acquired (another package manager running?)"),
    (UPGRADE_RUN.replace("libssl3t64 linux-image-amd64 openssl", "openssl"), "2026-12-06 06:12:44",
     "1 package upgraded"),
    # Still running (or killed): the packages are named, the result is not there yet.
    (NOTHING_RUN + UPGRADE_RUN.rsplit("\n", 2)[0] + "\n", "2026-12-06 06:12:44", "upgrading 3 packages, no result yet"),
    (NOTHING_RUN + "2026-12-09 06:00:00,000 INFO Starting unattended upgrades script\n", "2026-12-09 06:00:00",
     "started, no result yet"),
])
def test_the_last_run_is_read_from_the_log(tmp_path, log, started, outcome):
    state = read_state(system(tmp_path, log=log))
    assert (state.last_run, state.last_outcome) == (local(started), outcome)


def test_a_run_whose_start_fell_off_the_tail_is_judged_by_what_remains(tmp_path):
    """The log's tail only is read: a run that started before it is still said, from its first line there."""
    filler = "".join(f"2026-12-06 06:12:45,{i % 1000:03d} INFO   libssl3t64 progress line {i}\n" for i in range(4000))
    log = NOTHING_RUN + UPGRADE_RUN.replace("INFO Writing", filler + "2026-12-06 06:12:47,102 INFO Writing")
    root = system(tmp_path, log=log)
    assert (root / LOG).stat().st_size > LOG_TAIL
    state = read_state(root)
    assert (state.last_run, state.last_outcome) == (local("2026-12-06 06:12:45"), "upgrades installed")


def test_a_huge_log_is_read_in_bounded_time(tmp_path):
    """100 MB of log: only the tail is read, so the dashboard never waits on it."""
    root = system(tmp_path, log="")
    with open(root / LOG, "wb") as log:
        log.truncate(100 * 2**20)  # a sparse file: no disk needed
        log.seek(0, os.SEEK_END)
        log.write(NOTHING_RUN.encode())
    assert read_state(root).last_outcome == "nothing to upgrade"


def test_a_multi_line_message_and_garbage_between_the_lines_are_skipped(tmp_path):
    last = "2026-12-06 06:13:32,553 INFO All upgrades installed"
    log = UPGRADE_RUN.encode().replace(last.encode(), b"2026-12-06 06:13:30,000 WARNING dpkg --configure -a output:\n"
                                       b"Setting up libc6 ...\n\x00\xff\xfe garbage\r\n" + last.encode())
    state = read_state(system(tmp_path, log=log))
    assert state.last_outcome == "3 packages upgraded"


def test_never_run(tmp_path):
    state = read_state(system(tmp_path))
    assert (state.enabled, state.installed, state.last_run, state.last_outcome) == (True, True, None, "")
    assert summary(state) == "automatic, not run yet"


# --- hostile files ---


HOSTILE_LOG = ("2026-12-06 06:12:44,018 INFO Starting unattended upgrades script\n"
               "2026-12-06 06:12:45,000 ERROR \x1b]2;owned\x07\x1b[2J error message: \u202edelbat\x9b31m "
               + "x" * 500 + "\n")


def test_control_characters_in_the_log_never_reach_the_screen(tmp_path):
    state = read_state(system(tmp_path, log=HOSTILE_LOG))
    assert state.last_outcome.startswith("failed: ?]2;owned??[2J error message: ?delbat?31m x")
    assert state.last_outcome.isprintable() and len(state.last_outcome) <= len("failed: ") + 100
    assert state.last_outcome.endswith("...")


@pytest.mark.parametrize("log", [
    "",  # empty
    "\x00" * 5000,  # zeros after a crash
    "2026-13-45 99:99:99,000 INFO Starting unattended upgrades script\n",  # no such time
    "99999-12-06 06:12:44,018 INFO Starting unattended upgrades script\n",
    "2026-12-06 06:12:44,018 NOTICE Starting unattended upgrades script\n",  # not a level it writes
    "\ufeff\n\n  \n",
])
def test_garbage_logs_say_nothing_rather_than_fail(tmp_path, log):
    state = read_state(system(tmp_path, log=log))
    assert (state.last_run, state.last_outcome) == (None, "")


def test_reboot_packages_keep_only_package_names(tmp_path):
    reboot = ("linux-image-6.12.9-amd64\nlibc6\nlibc6\n\x1b[31mred\n" + "a" * 300 + "\nlibssl3t64:amd64\n"
              "../../etc/passwd\nUPPER\n")
    state = read_state(system(tmp_path, reboot=reboot))
    assert state.reboot_required
    assert state.reboot_packages == ["linux-image-6.12.9-amd64", "libc6", "libssl3t64:amd64"]
    assert summary(state).endswith("reboot needed (linux-image-6.12.9-amd64, libc6, libssl3t64:amd64)")


def test_many_reboot_packages_are_cut(tmp_path):
    state = read_state(system(tmp_path, reboot="".join(f"pkg{i}\n" for i in range(5000))))
    assert len(state.reboot_packages) == security_updates.MOST_PACKAGES
    assert summary(state).endswith("reboot needed (pkg0, pkg1, pkg2, ...)")


def test_a_reboot_without_the_package_list(tmp_path):
    root = system(tmp_path)
    (root / REBOOT_REQUIRED).parent.mkdir(parents=True)
    (root / REBOOT_REQUIRED).write_text("")
    state = read_state(root)
    assert state.reboot_required and state.reboot_packages == []
    assert summary(state) == "automatic, not run yet; reboot needed"


def test_a_fifo_or_a_directory_in_a_files_place_never_blocks(tmp_path):
    """A FIFO would block a reader forever (and the dashboard with it): not a regular file, not read."""
    root = system(tmp_path, switch=None)
    for relative in (LOG, REBOOT_PACKAGES):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(root / relative)
    (root / AUTO_UPGRADES).parent.mkdir(parents=True, exist_ok=True)
    (root / AUTO_UPGRADES).mkdir()
    (root / REBOOT_REQUIRED).write_text("")
    result = []
    reader = threading.Thread(target=lambda: result.append(read_state(root)), daemon=True)
    reader.start()
    reader.join(5)
    assert result, "read_state blocked on a FIFO"
    state = result[0]
    assert (state.enabled, state.last_outcome, state.reboot_required, state.reboot_packages) == (False, "", True, [])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_log_says_nothing(tmp_path):
    root = system(tmp_path, log=NOTHING_RUN)
    (root / LOG).chmod(0)
    assert read_state(root).last_outcome == ""


# --- the switch ---


@pytest.mark.parametrize("text, enabled", [
    ('APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n', True),
    ('APT::Periodic::Update-Package-Lists "0";\nAPT::Periodic::Unattended-Upgrade "0";\n', False),
    ('APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "0";\n', False),
    ('APT::Periodic::Update-Package-Lists "1";\n', False),  # the upgrade is never asked for
    ('  APT::Periodic::Update-Package-Lists  "7" ;\n\tAPT::Periodic::Unattended-Upgrade "12h";\n', True),
    ('APT::Periodic::Enable "0";\nAPT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n',
     False),
    ('// APT::Periodic::Unattended-Upgrade "1";\nAPT::Periodic::Update-Package-Lists "1";\n', False),  # a comment
    ("\x00\xff" * 100, False),
])
def test_the_switch_is_read_as_apt_reads_it(tmp_path, text, enabled):
    assert read_state(system(tmp_path, switch=text)).enabled is enabled


def test_switching_off_and_on_writes_debians_own_file_atomically(tmp_path):
    root = system(tmp_path, log=NOTHING_RUN)
    path = root / AUTO_UPGRADES
    path.chmod(0o600)
    before = path.stat().st_ino
    assert set_enabled(root, False) == path
    assert path.read_text() == 'APT::Periodic::Update-Package-Lists "0";\nAPT::Periodic::Unattended-Upgrade "0";\n'
    assert path.stat().st_ino != before  # a new file renamed over the old one, never rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    if os.geteuid() == 0:
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0)
    state = read_state(root)
    assert not state.enabled and summary(state).startswith("off, last run ")
    set_enabled(root, True)
    assert path.read_text() == 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'
    assert read_state(root).enabled
    assert sorted(p.name for p in path.parent.iterdir()) == ["20auto-upgrades", "50unattended-upgrades"]  # no leftovers


def test_the_image_ships_the_switch_on_and_the_security_suite_only():
    rootfs = Path(__file__).parents[2] / "image-build/rootfs"
    assert read_state(rootfs, read_log=False).enabled is True
    limit = (rootfs / "etc/apt/apt.conf.d/52postern-unattended-upgrades").read_text()
    assert "#clear Unattended-Upgrade::Origins-Pattern;" in limit
    patterns = [line.strip() for line in limit.splitlines() if line.strip().startswith('"')]
    assert patterns == ['"origin=Debian,codename=${distro_codename}-security,label=Debian-Security";']
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in limit
    packages = (rootfs.parent / "packages").read_text().split()
    assert "unattended-upgrades" in packages


def test_the_words_for_each_state():
    now = local("2026-12-06 09:30:00")
    state = security_updates.SecurityUpdates(True, True, local("2026-12-06 06:12:44"), "nothing to upgrade", True,
                                             ["linux-image-amd64"])
    assert summary(state, now) == "automatic, last run 3 h ago: nothing to upgrade; reboot needed (linux-image-amd64)"
    state.last_run = local("2026-12-03 06:00:00")
    state.reboot_required, state.enabled = False, False
    assert summary(state, now) == "off, last run 3 days ago: nothing to upgrade"
    state.last_run = local("2026-12-06 09:20:00")
    assert summary(state, now) == "off, last run 10 min ago: nothing to upgrade"
    state.last_run = local("2027-01-01 00:00:00")
    assert "ahead of this clock" in summary(state, now)
    assert summary(security_updates.SecurityUpdates(False, False)) == "unattended-upgrades is not installed (switched off)"


# --- postern-appliance security-updates ---


def test_the_command_line(tmp_path, capsys):
    root = system(tmp_path, log=NOTHING_RUN + UPGRADE_RUN, reboot="linux-image-amd64\nlibc6\n")
    assert main(["security-updates", "--root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Security updates: automatic, last run ")
    assert out[0].endswith(": 3 packages upgraded; reboot needed (linux-image-amd64, libc6)")
    assert out[1].startswith("Last run: 2026-12-06 06:12 ") and out[1].endswith(": 3 packages upgraded")
    assert out[2:] == ["Reboot needed: linux-image-amd64, libc6", f"Log: {root / LOG}"]

    assert main(["security-updates", "off", "--root", str(root)]) == 0
    assert capsys.readouterr().out == f"{root / AUTO_UPGRADES}: security updates off\n"
    assert not read_state(root).enabled
    assert main(["security-updates", "status", "--root", str(root)]) == 0
    assert capsys.readouterr().out.startswith("Security updates: off, last run ")
    assert main(["security-updates", "on", "--root", str(root)]) == 0
    assert capsys.readouterr().out == f"{root / AUTO_UPGRADES}: security updates installed automatically, daily\n"
    assert read_state(root).enabled


def test_the_command_line_without_the_package_and_on_a_read_only_place(tmp_path, capsys):
    root = system(tmp_path, switch=None, installed=False)
    assert main(["security-updates", "on", "--root", str(root)]) == 0
    assert "note: unattended-upgrades is not installed on this system" in capsys.readouterr().out
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "etc").write_text("a file where a directory should be")
    assert main(["security-updates", "off", "--root", str(blocked)]) == 3
    assert capsys.readouterr().err.startswith("postern-appliance: ")


def test_the_command_line_refuses_an_unknown_action(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["security-updates", "maybe"])
    assert exit.value.code == 2
    assert "invalid choice: 'maybe'" in capsys.readouterr().err
