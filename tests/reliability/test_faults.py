"""The fault scenarios of `python -m reliability`, at the sizes `make test` can afford.

Each prints its figures (pytest -s shows them; a failure shows them in its report).
The long run, with 10,000 messages and 20 kills, is `make reliability`.
"""

import pytest

from reliability import crash, damaged, disk_full, hostile, outage, two_hops


def held(outcome) -> None:
    print("\n" + outcome.text())
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert outcome.ok, outcome.text()


@pytest.mark.timeout(150)
def test_kill_9_under_load_loses_nothing_acknowledged():
    """300 messages from 10 clients, killed mid-DATA, just after a 250 and mid-delivery."""
    held(crash.run(crash.CrashLoad(messages=300, clients=10, kills=3, seed=8)))


@pytest.mark.timeout(150)
def test_kill_9_under_load_with_receiving_processes_loses_nothing_acknowledged():
    """The same with two receiving processes: they die with the daemon, and what they took is on disk."""
    held(crash.run(crash.CrashLoad(messages=300, clients=10, kills=3, seed=9, receivers=2)))


@pytest.mark.timeout(150)
def test_kill_9_of_receiving_processes_under_load_loses_nothing_acknowledged():
    """A receiving process killed mid-DATA, just after a 250 and mid-delivery: the daemon takes over
    what it had queued and starts another; no message is lost, none is sent twice unless cut."""
    held(crash.run(crash.CrashLoad(messages=300, clients=10, kills=3, seed=10, receivers=2, target="receiver")))


def test_a_next_hop_that_comes_back_gets_everything_in_retry_order():
    held(outage.recovery(outage.Recovery(messages=10, refused_for=2.5, tempfail_for=2.5, maximal_backoff=5)))


def test_a_next_hop_that_stays_down_gets_one_bounce_per_message():
    held(outage.expiry(outage.Expiry(messages=8, lifetime=2)))


def test_a_full_queue_file_system_refuses_with_452_and_recovers():
    held(disk_full.run())


def test_slow_and_hostile_clients_are_cut_and_trusted_mail_still_flows():
    held(hostile.run(hostile.Hostile(idle=10, noop_loops=10, drips=3, flood=300, max_connections=50)))


def test_damaged_queue_files_are_set_aside_and_the_rest_delivers():
    held(damaged.run())


def test_a_kill_9_while_one_next_hop_is_busy_sends_nothing_twice_to_the_other():
    held(two_hops.run(two_hops.TwoHops(messages=10)))
