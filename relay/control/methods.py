"""The control API's methods: a thin facade over the daemon's own objects.

Each method is registered under its Varlink name with `@method`; its interface
definition lives beside this file in `<interface>.varlink`, which is what
`org.varlink.service.GetInterfaceDescription` returns.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable

from .. import VERSION, headers, preview
from ..config import check_domain, parse_mta, to_dict
from ..config_file import ConfigFile
from ..names import check_names
from ..queue import query
from ..routing import next_hop
from ..tls_policy import STS_LEVELS
from ..queue.entry import ACTIVE, DEFERRED, HOLD
from . import errors

if TYPE_CHECKING:
    from ..daemon import Relay

API_VERSION = 1
INTERFACES = (
    "org.varlink.service",
    "io.postern.Control",
    "io.postern.Status",
    "io.postern.Config",
    "io.postern.Queue",
    "io.postern.Log",
    "io.postern.Verify",
    "io.postern.Tls",
)
log = logging.getLogger("postern/control")

WATCH_INTERVAL = 0.25  # at most four status updates a second to a watcher
_REQUIRED = object()
_FATAL_ERRORS = {
    errors.PERMISSION_DENIED,
    errors.REQUEST_TOO_LARGE,
    errors.MALFORMED_REQUEST,
}


class VarlinkError(Exception):
    def __init__(self, name: str, **parameters: Any):
        super().__init__(name)
        self.name = name
        self.parameters = parameters

    def reply(self) -> dict:
        return {"error": self.name, "parameters": self.parameters}

    @property
    def fatal(self) -> bool:
        return self.name in _FATAL_ERRORS


@dataclass
class Call:
    relay: Relay
    parameters: dict
    uid: int
    more: bool = False

    def get(self, name: str, kind: type | tuple, default: Any = _REQUIRED) -> Any:
        value = self.parameters.get(name)
        if value is None:
            if default is _REQUIRED:
                raise VarlinkError(errors.INVALID_PARAMETER, parameter=name)
            return default
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise VarlinkError(errors.INVALID_PARAMETER, parameter=name)
        return value


@dataclass(frozen=True)
class Method:
    handler: Callable
    streams: bool


METHODS: dict[str, Method] = {}


def method(name: str, streams: bool = False):
    def register(handler):
        METHODS[name] = Method(handler, streams)
        return handler

    return register


def interface_description(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.varlink").read_text()


# --- org.varlink.service ---------------------------------------------------------------


@method("org.varlink.service.GetInfo")
async def get_info(call: Call) -> dict:
    return {
        "vendor": "Postern",
        "product": "postern-relay",
        "version": VERSION,
        "url": "https://postern.example/docs/control",
        "interfaces": list(INTERFACES),
    }


@method("org.varlink.service.GetInterfaceDescription")
async def get_interface_description(call: Call) -> dict:
    name = call.get("interface", str)
    if name not in INTERFACES:
        raise VarlinkError(errors.INTERFACE_NOT_FOUND, interface=name)
    return {"description": interface_description(name)}


@method("io.postern.Control.GetVersion")
async def get_version(call: Call) -> dict:
    return {"version": VERSION, "api": API_VERSION}


# --- io.postern.Status --------------------------------------------------------------------


def status(relay: Relay) -> dict:
    """What Status.Get and Status.Watch answer. The certificates' expiry and the queue's file system are
    read as the Prometheus endpoint reads them (relay/metrics.py), so the console warns on the same figures."""
    now = time.time()
    entries = relay.scheduler.entries.values()
    sizes = {ACTIVE: 0, DEFERRED: 0, HOLD: 0}
    oldest = None
    for entry in entries:
        sizes[entry.state_at(now)] += 1
        if oldest is None or entry.envelope.arrival < oldest:
            oldest = entry.envelope.arrival
    counters = relay.counters
    return {
        "version": VERSION,
        "hostname": relay.config.hostname,
        "started": counters.started,
        "uptime": round(now - counters.started, 3),
        "loading": dict(relay.loading) if relay.loading else None,
        "listeners": [str(address) for address in relay.listening()[0]],
        "smtps_listeners": [str(address) for address in relay.listening()[1]],
        "receiving_processes": relay.receiving.pids() if relay.receiving is not None else [],
        "tls": relay.tls_context is not None,
        "counters": {
            "received": counters.received,
            "delivered": counters.delivered,
            "deferred": counters.deferred,
            "bounced": counters.bounced,
            "rejected": counters.rejected,
        },
        "queue": {**sizes, "total": sum(sizes.values()), "corrupt": len(relay.store.corrupt_files())},
        "oldest_age": round(now - oldest, 3) if oldest is not None else None,
        "last_errors": [
            {"destination": str(hop), "reply": reply, "time": when}
            for hop, (reply, when) in relay.delivery.last_errors().items()
        ],
        "certificates": [{"certificate": name, "file": path, "expires": expiry}
                         for name, path, expiry in relay.metrics.certificates()],
        "disk": _disk(relay),
        "paused_domains": list(relay.config.paused_domains),
        "paused": [
            {"domain": domain, "since": relay.paused_since.since.get(domain, now),
             "turned_away": counters.turned_away.get(domain, 0)}
            for domain in relay.config.paused_domains
        ],
    }


def _disk(relay: Relay) -> dict | None:
    found = relay.metrics.disk()
    if found is None:
        return None
    free, size, files_free = found
    return {"free": free, "size": size, "files_free": files_free}


@method("io.postern.Status.Get")
async def get_status(call: Call) -> dict:
    return {"status": status(call.relay)}


@method("io.postern.Status.CheckNames")
async def check_status_names(call: Call) -> dict:
    address = call.get("address", str)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise VarlinkError(errors.INVALID_ADDRESS, address=address) from None
    check = await check_names(call.relay.config, call.relay.resolver, address)
    return {"check": check.to_dict()}


@method("io.postern.Status.Watch", streams=True)
async def watch_status(call: Call):
    subscription = call.relay.events.subscribe()
    try:
        changed = ["status"]
        while True:
            yield {"changed": sorted(changed), "status": status(call.relay)}
            await asyncio.sleep(WATCH_INTERVAL)
            changed = sorted(await subscription.next())
    finally:
        subscription.close()


# --- io.postern.Config --------------------------------------------------------------------


@method("io.postern.Config.Get")
async def get_config(call: Call) -> dict:
    return {"mta": to_dict(call.relay.config), "path": call.relay.config_path}


@method("io.postern.Config.Validate")
async def validate_config(call: Call) -> dict:
    _, problems = parse_mta(call.get("mta", dict))
    return {"problems": problems}


async def _put_in_force(call: Call, mta: dict) -> str:
    """Validate, write the file (a new version in its history) and reload; the caller holds config_lock.
    Returns the version's id."""
    _, problems = parse_mta(mta)
    if problems:
        raise VarlinkError(errors.INVALID_CONFIG, problems=problems)
    relay = call.relay
    config_file = ConfigFile(relay.config_path)
    try:
        version, old = await asyncio.to_thread(config_file.replace_mta, mta)
    except OSError as error:
        raise VarlinkError(errors.APPLY_FAILED, reason=f"cannot write {relay.config_path}: {error.strerror}")
    problems = await relay.reload(caller_uid=call.uid)
    if problems:
        await asyncio.to_thread(config_file.take_back, version, old)
        raise VarlinkError(errors.APPLY_FAILED, reason="; ".join(problems))
    return version.id


@method("io.postern.Config.Apply")
async def apply_config(call: Call) -> dict:
    mta = call.get("mta", dict)
    _, problems = parse_mta(mta)
    if problems:
        raise VarlinkError(errors.INVALID_CONFIG, problems=problems)
    relay = call.relay
    async with relay.config_lock:
        version = await _put_in_force(call, mta)
    return {"path": relay.config_path, "version": version}


def _domains(call: Call) -> list[str]:
    domains = call.get("domains", list)
    clean, problems = [], []
    for index, domain in enumerate(domains):
        try:
            clean.append(check_domain(domain))
        except ValueError as error:
            problems.append(f"domains[{index}]: {error}")
    if problems:
        raise VarlinkError(errors.INVALID_CONFIG, problems=problems)
    return clean


async def _change_paused(call: Call, pause: bool) -> dict:
    """Edit mta.paused_domains in the file and put it in force, like Apply."""
    domains = _domains(call)
    relay = call.relay
    async with relay.config_lock:
        try:
            mta = await asyncio.to_thread(ConfigFile(relay.config_path).read_mta)
        except (OSError, ValueError) as error:
            raise VarlinkError(errors.APPLY_FAILED, reason=f"cannot read {relay.config_path}: {error}")
        current = mta.get("paused_domains") or []
        current = [current] if isinstance(current, str) else list(current)
        normal = {str(d).lower().rstrip(".") for d in current}
        if pause:
            changed = current + [d for d in dict.fromkeys(domains) if d not in normal]
        else:
            changed = [d for d in current if str(d).lower().rstrip(".") not in domains]
        if changed != current:
            mta["paused_domains"] = changed
            await _put_in_force(call, mta)
    log.info("migration hold: %s %s (by uid %d); paused now: %s", "paused" if pause else "resumed",
             ", ".join(domains) or "nothing", call.uid, ", ".join(relay.config.paused_domains) or "none")
    return {"paused_domains": list(relay.config.paused_domains)}


@method("io.postern.Config.Pause")
async def pause_domains(call: Call) -> dict:
    return await _change_paused(call, pause=True)


@method("io.postern.Config.Resume")
async def resume_domains(call: Call) -> dict:
    return await _change_paused(call, pause=False)


# --- io.postern.Queue ----------------------------------------------------------------------


def _filter(call: Call, name: str = "filter") -> query.Filter:
    try:
        return query.Filter.from_dict(call.get(name, dict, None))
    except query.QueryError as error:
        raise VarlinkError(errors.INVALID_FILTER, field=error.field, reason=error.reason) from None


@method("io.postern.Queue.List")
async def list_queue(call: Call) -> dict:
    limit = call.get("limit", int, 100)
    if not 1 <= limit <= 10000:
        raise VarlinkError(errors.INVALID_PARAMETER, parameter="limit")
    if call.get("offset", int, 0) < 0:
        raise VarlinkError(errors.INVALID_PARAMETER, parameter="offset")
    try:
        messages, total, cursor = query.page(
            call.relay.scheduler.entries,
            call.relay.scheduler.order,
            _filter(call),
            sort=call.get("sort", str, "arrival"),
            reverse=call.get("reverse", bool, False),
            limit=limit,
            cursor=call.get("cursor", str, None),
            offset=call.get("offset", int, 0),
        )
    except query.QueryError as error:
        raise VarlinkError(errors.INVALID_FILTER, field=error.field, reason=error.reason) from None
    now = time.time()
    return {"messages": [query.message_dict(e, now) for e in messages], "total": total, "cursor": cursor}


@method("io.postern.Queue.Show")
async def show_message(call: Call) -> dict:
    queue_id = call.get("id", str)
    entry = call.relay.scheduler.entries.get(queue_id)
    if entry is None:
        raise VarlinkError(errors.MESSAGE_NOT_FOUND, id=queue_id)
    try:
        start, complete = await call.relay.store.read_start(queue_id, preview.PREVIEW_BYTES)
    except FileNotFoundError:
        raise VarlinkError(errors.MESSAGE_NOT_FOUND, id=queue_id) from None
    answer = {"message": query.message_dict(entry, history=True),
              "headers": headers.section(start).decode("utf-8", "replace")}
    if call.get("body", bool, False):
        answer["body"] = await asyncio.to_thread(preview.preview, start, complete)
    return answer


def _selected(call: Call) -> list[str]:
    """IDs named in `ids`, or matched by `filter`; one of the two is required."""
    ids = call.get("ids", list, None)
    if ids is not None:
        if not all(isinstance(i, str) for i in ids):
            raise VarlinkError(errors.INVALID_PARAMETER, parameter="ids")
        missing = [i for i in ids if i not in call.relay.scheduler.entries]
        if missing:
            raise VarlinkError(errors.MESSAGE_NOT_FOUND, id=missing[0])
        return ids
    if call.parameters.get("filter") is None:
        raise VarlinkError(errors.INVALID_PARAMETER, parameter="ids")
    selection = _filter(call)
    now = time.time()
    return [e.id for e in call.relay.scheduler.entries.values() if selection.matches(e, now)]


@method("io.postern.Queue.Delete")
async def delete_messages(call: Call) -> dict:
    return {"ids": await call.relay.scheduler.delete(_selected(call))}


@method("io.postern.Queue.Hold")
async def hold_messages(call: Call) -> dict:
    return {"ids": await call.relay.scheduler.hold(_selected(call))}


@method("io.postern.Queue.Release")
async def release_messages(call: Call) -> dict:
    return {"ids": await call.relay.scheduler.release(_selected(call))}


@method("io.postern.Queue.Requeue")
async def requeue_messages(call: Call) -> dict:
    return {"ids": await call.relay.scheduler.requeue(_selected(call))}


@method("io.postern.Queue.Flush")
async def flush_queue(call: Call) -> dict:
    return {"count": call.relay.scheduler.flush()}


@method("io.postern.Queue.Summary")
async def queue_summary(call: Call) -> dict:
    state = call.get("state", str, None)
    if state is not None and state not in query.STATES:
        raise VarlinkError(errors.INVALID_FILTER, field="state", reason=f"must be one of {', '.join(query.STATES)}")
    return {"bucket_minutes": query.BUCKET_MINUTES, "rows": query.summary(call.relay.scheduler.entries.values(), state)}


# --- io.postern.Log ---------------------------------------------------------------------------


@method("io.postern.Log.Tail", streams=True)
async def tail_log(call: Call):
    count = call.get("lines", int, 100)
    if count < 0:
        raise VarlinkError(errors.INVALID_PARAMETER, parameter="lines")
    buffer = call.relay.log_buffer
    lines = buffer.tail(count)
    yield {"lines": [{"number": n, "text": t} for n, t in lines]}
    following = lines[-1][0] + 1 if lines else buffer.next_number
    while True:
        fresh = buffer.since(following)
        if fresh:
            following = fresh[-1][0] + 1
            yield {"lines": [{"number": n, "text": t} for n, t in fresh]}
        else:
            await buffer.wait()


# --- io.postern.Verify ------------------------------------------------------------------------


@method("io.postern.Verify.Status")
async def verify_status(call: Call) -> dict:
    return call.relay.verifier.stats()


@method("io.postern.Verify.Lookup")
async def verify_lookup(call: Call) -> dict:
    verdict = call.relay.verifier.lookup(call.get("address", str))
    return {"entry": verdict.to_dict() if verdict else None}


@method("io.postern.Verify.Flush")
async def verify_flush(call: Call) -> dict:
    return {"count": call.relay.verifier.flush(call.get("address", str, None))}


# --- io.postern.Tls ---------------------------------------------------------------------------


@method("io.postern.Tls.Summary")
async def tls_summary(call: Call) -> dict:
    hours = call.get("hours", int, 24)
    if not 1 <= hours <= 48:
        raise VarlinkError(errors.INVALID_PARAMETER, parameter="hours")
    since = time.time() - hours * 3600
    return {"since": since, "domains": [_tls_domain(row) for row in call.relay.tls_stats.summary(since)]}


def _tls_domain(row: dict) -> dict:
    keys = ("domain", "dane", "mta_sts", "verified", "unverified", "plain", "failed")
    return {**{key: row[key] for key in keys},
            "failures": [{key: failure[key] for key in ("result_type", "detail", "mx_host", "count")}
                         for failure in row["failures"]]}


def _tls_policy(call: Call) -> tuple[dict, Any]:
    text = call.get("domain", str)
    try:
        domain = check_domain(text)
    except ValueError as error:
        raise VarlinkError(errors.INVALID_DOMAIN, domain=text, reason=str(error)) from None
    relay = call.relay
    config = relay.config
    hop = next_hop(config, domain)
    if hop.direct:
        source = f"tls_policy {config.tls_policy_domain(domain)}" if hop.listed else "external_relay.tls"
    elif config.is_relay_domain(domain) and config.internal_relay.host:
        source = "internal_relay.tls"
    else:
        source = "external_relay.tls"
    cached = relay.mta_sts.cached(domain) if hop.direct else None
    error = relay.mta_sts.last_error(domain) if hop.direct else None
    policy = {
        "domain": domain, "next_hop": str(hop), "level": hop.tls_level, "source": source, "match": list(hop.match),
        "mta_sts": hop.direct and not hop.listed and hop.tls_level in STS_LEVELS,
        "sts": None if cached is None else {
            "mode": cached.mode, "mx": list(cached.mx), "max_age": cached.max_age, "id": cached.id,
            "fetched": cached.fetched, "expires": cached.expires},
        "sts_error": None if error is None else error.text,
    }
    return policy, hop


@method("io.postern.Tls.Policy")
async def tls_policy(call: Call) -> dict:
    policy, _ = _tls_policy(call)
    return {"policy": policy}


@method("io.postern.Tls.Check")
async def tls_check(call: Call) -> dict:
    policy, hop = _tls_policy(call)
    return {"policy": policy, "hosts": await call.relay.delivery.check(hop)}


@method("io.postern.Tls.SendReports")
async def tls_send_reports(call: Call) -> dict:
    text = call.get("date", str, None)
    try:
        day = datetime.date.fromisoformat(text) if text else datetime.datetime.now(datetime.timezone.utc).date()
    except ValueError:
        raise VarlinkError(errors.INVALID_PARAMETER, parameter="date") from None
    return {"lines": await call.relay.reporter.send_day(day)}
