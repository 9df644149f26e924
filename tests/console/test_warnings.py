"""console/warnings.py rule by rule, just below and just above each threshold, and the thresholds against
docs/monitoring/alerts.yml."""

import re
from pathlib import Path

import pytest
import yaml

from console import warnings as rules
from console.warnings import CRITICAL, WARNING, History, warnings

ALERTS = Path(__file__).resolve().parents[2] / "docs" / "monitoring" / "alerts.yml"
NOW = 1_800_000_000.0
DAY = 86400


def status(**changes) -> dict:
    """A healthy relay up for a day: nothing queued, a certificate for 90 days, half the disk free."""
    base = {
        "started": NOW - DAY, "uptime": DAY,
        "queue": {"active": 0, "deferred": 0, "hold": 0, "total": 0, "corrupt": 0},
        "counters": {"received": 0, "delivered": 0, "deferred": 0, "bounced": 0, "rejected": 0},
        "oldest_age": None, "last_errors": [],
        "certificates": [{"certificate": "mta.tls.cert_file", "file": "/etc/postern/tls/postern.pem",
                          "expires": NOW + 90 * DAY}],
        "disk": {"free": 50 * 10**9, "size": 100 * 10**9, "files_free": 5_000_000},
    }
    for key, value in changes.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base[key], dict) else value
    return base


def queued(total: int, hold: int = 0) -> dict:
    return {"total": total, "deferred": total - hold, "hold": hold}


def history_of(*readings: tuple[float, dict]) -> History:
    """The dashboard's history after reading these statuses at these times (seconds before NOW)."""
    history = History()
    for ago, reading in readings:
        history.add(reading, NOW - ago)
    return history


def test_a_healthy_relay_has_no_warnings():
    assert warnings(status(), History(), NOW) == []
    assert warnings(None) == []  # down: the Relay panel and the top line say so


# --- PosternQueueGrowing: > 100 messages (hold not counted), rising over 30 minutes ---------------------


def growing(now_total: int, start_total: int, minutes: int = 30, hold: int = 0) -> list:
    readings = [(60 * (minutes - i), status(queue=queued(start_total + (now_total - start_total) * i // minutes)))
                for i in range(minutes)]
    return warnings(status(queue=queued(now_total + hold, hold)), history_of(*readings), NOW)


def test_a_queue_over_100_and_growing_for_30_minutes_is_a_warning():
    [warning] = growing(1204, 964)
    assert warning == rules.Warning(WARNING, "Queue grew by 240 in 30 min (now 1,204)", warning.fix)
    assert "Queue (F3)" in warning.fix


@pytest.mark.parametrize("now_total, start_total, minutes, hold, shown", [
    (101, 50, 30, 0, True),  # just over 100
    (100, 50, 30, 0, False),  # 100 is not more than 100
    (100, 50, 30, 500, False),  # held mail does not count
    (500, 500, 30, 0, False),  # large but flat
    (400, 500, 30, 0, False),  # large and shrinking
    (500, 100, 29, 0, False),  # the console has not watched for 30 minutes yet
])
def test_queue_growing_at_its_edges(now_total, start_total, minutes, hold, shown):
    assert bool(growing(now_total, start_total, minutes, hold)) is shown


def test_a_queue_rising_on_the_whole_but_back_where_it_was_says_so():
    """deriv() is a slope over the window: the count can rise on the whole and end where it began."""
    totals = [300] * 10 + [450] * 19 + [300]
    readings = [(60 * (30 - i), status(queue=queued(total))) for i, total in enumerate(totals)]
    [warning] = warnings(status(queue=queued(300)), history_of(*readings), NOW)
    assert warning.text == "Queue rising over 30 min (now 300)"


# --- PosternOldMail: the oldest message has waited over 4 hours -------------------------------------


@pytest.mark.parametrize("age, shown", [(4 * 3600, False), (4 * 3600 + 1, True), (None, False)])
def test_old_mail_at_its_edge(age, shown):
    found = warnings(status(oldest_age=age), History(), NOW)
    assert bool(found) is shown
    if shown:
        assert found[0].severity == WARNING and found[0].text == "The oldest message has waited 4h"


# --- PosternDeferredShare: > 20% of the recipients tried in 15 minutes deferred, and > 10 of them --------


def share(deferred: int, delivered: int, watched: float = 15 * 60) -> list:
    before = status()
    after = status(counters={"deferred": deferred, "delivered": delivered},
                   last_errors=[{"destination": "mx.partner.org:25", "reply": "451 4.7.1 Greylisted", "time": NOW - 9},
                                {"destination": "old.example:25", "reply": "421 busy", "time": NOW - 900}])
    return warnings(after, history_of((watched, before)), NOW)


def test_a_fifth_of_deliveries_deferred_is_a_warning_naming_the_next_hop():
    [warning] = share(40, 60)
    assert warning.severity == WARNING
    assert warning.text == "40% of delivery attempts deferred in 15 min (40 of 100)"
    assert "mx.partner.org:25" in warning.fix  # the latest error, not the older one


@pytest.mark.parametrize("deferred, delivered, shown", [
    (11, 44, False),  # exactly a fifth is not more than a fifth
    (11, 43, True),  # just over a fifth, just over 10
    (10, 0, False),  # all deferred, but only 10
    (11, 0, True),
])
def test_deferred_share_at_its_edges(deferred, delivered, shown):
    assert bool(share(deferred, delivered)) is shown


def test_deferred_share_waits_for_15_minutes_of_readings_unless_the_relay_started_since():
    assert share(50, 0, watched=10 * 60) == []  # the console has watched for 10 minutes only
    fresh = status(started=NOW - 300, uptime=300, counters={"deferred": 11, "delivered": 0})
    [warning] = warnings(fresh, History(), NOW)  # counters began at zero 5 minutes ago
    assert warning.text == "100% of delivery attempts deferred in 5 min (11 of 11)"


def test_a_relay_restart_forgets_the_readings_before_it():
    history = history_of((900, status(counters={"deferred": 100, "delivered": 0})))
    restarted = status(started=NOW - 2 * 900, uptime=2 * 900, counters={"deferred": 20, "delivered": 0})
    history.add(restarted, NOW)
    assert [sample.deferred for sample in history.samples] == [20]
    assert warnings(restarted, history, NOW) == []  # no reading 15 minutes old since the restart


# --- PosternCertificateExpiresSoon: 14 days (warning), 3 days (critical) -------------------------------


@pytest.mark.parametrize("left, severity, words", [
    (14 * DAY, None, None),
    (14 * DAY - 1, WARNING, "expires in 13d 23h"),
    (3 * DAY, WARNING, "expires in 3d"),
    (3 * DAY - 1, CRITICAL, "expires in 2d 23h"),
    (-2 * DAY, CRITICAL, "expired 2d ago"),
])
def test_certificate_expiry_at_its_edges(left, severity, words):
    found = warnings(status(certificates=[{"certificate": "mta.metrics.cert_file", "file": "/etc/postern/m.crt",
                                           "expires": NOW + left}]), History(), NOW)
    if severity is None:
        assert found == []
        return
    [warning] = found
    assert warning.severity == severity
    assert warning.text == f"Certificate mta.metrics.cert_file {words}"
    assert "/etc/postern/m.crt" in warning.fix


def test_a_file_name_with_terminal_escapes_is_shown_harmless():
    found = warnings(status(certificates=[{"certificate": "mta.tls.cert_file", "file": "/tmp/\x1b[2Jx.pem",
                                           "expires": NOW + DAY}]), History(), NOW)
    assert "\x1b" not in found[0].fix


# --- PosternQueueDiskLow: < 10% free (warning); < 5%, < 10,000 files, full within 4 hours (critical) -----


def disk(free: int, size: int = 1000 * 10**6, files_free: int = 10**6) -> dict:
    return {"free": free, "size": size, "files_free": files_free}


@pytest.mark.parametrize("free, files_free, severity", [
    (100 * 10**6, 10**6, None),  # exactly 10% is not under 10%
    (100 * 10**6 - 1, 10**6, WARNING),
    (50 * 10**6, 10**6, WARNING),  # exactly 5%
    (50 * 10**6 - 1, 10**6, CRITICAL),
    (500 * 10**6, 10000, None),
    (500 * 10**6, 9999, CRITICAL),
])
def test_disk_at_its_edges(free, files_free, severity):
    found = warnings(status(disk=disk(free, files_free=files_free)), History(), NOW)
    assert [w.severity for w in found] == ([severity] if severity else [])


def test_a_disk_filling_fast_is_critical_before_it_is_low():
    """Half free, losing 4 MB a minute: empty in about 2 hours, under 4."""
    readings = [(60 * m, status(disk=disk(500 * 10**6 + 4 * 10**6 * m))) for m in range(60, 0, -1)]
    [warning] = warnings(status(disk=disk(500 * 10**6)), history_of(*readings), NOW)
    assert warning.severity == CRITICAL and warning.text.startswith("Queue disk full in about 2h")


def test_a_disk_filling_slowly_or_watched_briefly_is_not_a_warning():
    slow = [(60 * m, status(disk=disk(500 * 10**6 + 1 * 10**6 * m))) for m in range(60, 0, -1)]
    assert warnings(status(disk=disk(500 * 10**6)), history_of(*slow), NOW) == []  # 8 hours left
    brief = [(60 * m, status(disk=disk(500 * 10**6 + 4 * 10**6 * m))) for m in range(29, 0, -1)]
    assert warnings(status(disk=disk(500 * 10**6)), history_of(*brief), NOW) == []  # under half an hour watched


def test_an_unreadable_disk_is_no_warning():
    assert warnings(status(disk=None), History(), NOW) == []


# --- PosternCorruptQueueFiles ----------------------------------------------------------------------


@pytest.mark.parametrize("count, text", [(0, None), (1, "1 damaged queue file set aside"),
                                         (2, "2 damaged queue files set aside")])
def test_corrupt_files(count, text):
    found = warnings(status(queue={"corrupt": count}), History(), NOW)
    assert [w.text for w in found] == ([text] if text else [])


def test_critical_warnings_come_first():
    found = warnings(status(oldest_age=5 * 3600, queue={"corrupt": 1}, disk=disk(1)), History(), NOW)
    assert [w.severity for w in found] == [CRITICAL, WARNING, WARNING]


def test_the_history_keeps_one_reading_a_minute_for_six_hours():
    history = History()
    for second in range(0, 7 * 3600, 10):
        history.add(status(), NOW + second)
    times = [sample.at - NOW for sample in history.samples]
    assert times[-1] - times[0] <= 6 * 3600 and len(times) == 6 * 60 + 1
    assert all(b - a == 60 for a, b in zip(times, times[1:]))


# --- the same thresholds as the alert rules ------------------------------------------------------


def test_the_thresholds_are_those_of_the_alert_rules():
    rules_by_name = {}
    for rule in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]:
        rules_by_name.setdefault(rule["alert"], []).append(rule)

    def numbers(expr: str) -> list[float]:
        return [float(eval(n)) for n in re.findall(r"(?<![\w.])(\d+(?:\.\d+)?(?:\s*\*\s*\d+)?)(?![\w\]])", expr)]

    [growing] = rules_by_name["PosternQueueGrowing"]
    assert f"> {rules.QUEUE_GROWING_MESSAGES}" in growing["expr"] and "[30m:1m]" in growing["expr"]
    assert rules.QUEUE_GROWING_WINDOW == 30 * 60
    [old] = rules_by_name["PosternOldMail"]
    assert numbers(old["expr"]) == [rules.OLD_MAIL_AGE]
    [deferred] = rules_by_name["PosternDeferredShare"]
    assert f"> {rules.DEFERRED_SHARE}" in deferred["expr"] and f"> {rules.DEFERRED_MINIMUM}" in deferred["expr"]
    assert deferred["expr"].count("[15m]") == 4 and rules.DEFERRED_WINDOW == 15 * 60
    certificate = {rule["labels"]["severity"]: numbers(rule["expr"]) for rule in rules_by_name[
        "PosternCertificateExpiresSoon"]}
    assert certificate == {WARNING: [rules.CERTIFICATE_WARNING], CRITICAL: [rules.CERTIFICATE_CRITICAL]}
    disk_rules = {rule["labels"]["severity"]: rule["expr"] for rule in rules_by_name["PosternQueueDiskLow"]}
    assert f"< {rules.DISK_WARNING:.2f}" in disk_rules[WARNING]
    assert f"< {rules.DISK_CRITICAL:.2f}" in disk_rules[CRITICAL]
    assert f"< {rules.FILES_CRITICAL}" in disk_rules[CRITICAL]
    assert "[6h], 4 * 3600)" in disk_rules[CRITICAL]
    assert (rules.DISK_TREND_WINDOW, rules.DISK_FULL_WITHIN) == (6 * 3600, 4 * 3600)
    assert rules_by_name["PosternCorruptQueueFiles"][0]["expr"].endswith("> 0")
    assert "console/warnings.py" in ALERTS.read_text()  # the file says where the console's copy is
