"""Postern under faults and attack: scenarios that run the real daemon and count every message.

Each fault scenario starts `postern-relay` as a process (tests/support/relay.py), sends
mail to it over SMTP, breaks something (kill -9, a next hop that is down, a full file
system, hostile clients, damaged queue files) and counts what comes out at a recording
next hop. It returns an `Outcome`: figures (sent, acknowledged, delivered, lost,
duplicated and what is particular to it) and the problems it saw; none means it held.

    .venv/bin/python -m reliability            # the long run (make reliability)
    .venv/bin/python -m reliability --quick    # the sizes `make test` uses

tests/reliability/ runs the same scenarios with small sizes, the attack cases and
the property-based fuzzing; docs/reliability.md lists every case and the last figures.
"""
