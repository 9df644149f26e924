"""posternctl: drive the relay daemon through its control socket.

    posternctl status
    posternctl queue list [--state deferred] [--domain example.org] [--format mailq]
    posternctl queue show ID
    posternctl queue delete|hold|release|requeue ID... | --all | --state/--sender/...
    posternctl queue flush | summary
    posternctl config get | validate FILE | apply FILE
    posternctl domains [pause|resume DOMAIN...]
    posternctl verify status | lookup ADDRESS | flush [ADDRESS]
    posternctl names ADDRESS
    posternctl tls summary | policy DOMAIN | check DOMAIN | report [DATE]
    posternctl log [-f] [-n LINES]

Human output by default, --json for scripts; --socket, --timeout and --json go
anywhere on the line. Exit codes: 0 ok, 1 the daemon reported an error, 2 usage,
3 daemon not reachable, 4 permission denied, 5 the daemon took the connection but
did not answer within the timeout. What each failure means is said once, by
relay.control.errors.explain, in the words the console uses too.
"""

from __future__ import annotations

import argparse
import builtins
import json
import sys
import time
from pathlib import Path

import yaml

from .control import errors
from .control.client import DEFAULT_SOCKET, DEFAULT_TIMEOUT, ControlClient
from .control.errors import ControlError, NoAnswer, PermissionDenied, Unreachable
from .printable import printable
from .queue.query import age_text

EXIT_OK, EXIT_DAEMON_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_DENIED, EXIT_NO_ANSWER = 0, 1, 2, 3, 4, 5


def print(*values, sep: str = " ", end: str = "\n", file=None, flush: bool = False) -> None:
    """Everything posternctl writes: clients chose much of it (addresses, Subject, HELO, a next hop's
    reply), so control bytes and terminal escapes become "?"; only line ends and tabs stay."""
    builtins.print(printable(sep.join(map(str, values)), keep="\n\t"), end=end, file=file, flush=flush)




def _filter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", choices=["active", "deferred", "hold"])
    parser.add_argument("--sender", help="sender contains this text")
    parser.add_argument("--recipient", help="a recipient contains this text")
    parser.add_argument("--domain", help="a recipient is in this domain")
    parser.add_argument("--min-age", type=float, metavar="SECONDS")
    parser.add_argument("--max-age", type=float, metavar="SECONDS")


def _filter_of(args) -> dict:
    names = ("state", "sender", "recipient", "domain", "min_age", "max_age")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _global_options(suppress: bool = False) -> argparse.ArgumentParser:
    """--socket, --timeout and --json, taken before the command, after it or between its words, as systemctl and
    kubectl take theirs. A command's copies default to SUPPRESS, so they never undo one given earlier."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("global options")
    group.add_argument("--socket", default=argparse.SUPPRESS if suppress else DEFAULT_SOCKET,
                       help=f"control socket (default {DEFAULT_SOCKET})")
    group.add_argument("--timeout", type=float, metavar="SECONDS",
                       default=argparse.SUPPRESS if suppress else DEFAULT_TIMEOUT,
                       help=f"how long to wait for the daemon's answer (default {DEFAULT_TIMEOUT:g})")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                       help="print the daemon's answer as JSON")
    return options


class _CommandParser(argparse.ArgumentParser):
    """A command's parser; its own commands' parsers are of this class too (argparse's default)."""

    def __init__(self, **kwargs):
        super().__init__(parents=[_global_options(suppress=True)], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posternctl", description="Control the Postern relay daemon.",
                                     parents=[_global_options()])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)

    commands.add_parser("status", help="version, listeners, counters, queue sizes, recent errors")

    queue = commands.add_parser("queue", help="list and act on queued mail").add_subparsers(dest="verb", required=True)
    listing = queue.add_parser("list", help="queued messages (never reads bodies)")
    _filter_args(listing)
    listing.add_argument("--sort", choices=["arrival", "age", "size", "sender", "recipient"], default="arrival")
    listing.add_argument("--reverse", action="store_true")
    listing.add_argument("--limit", type=int, default=100, help="messages per page (default 100)")
    listing.add_argument("--all", action="store_true", help="every page, not just the first")
    listing.add_argument("--format", choices=["table", "mailq"], default="table")
    queue.add_parser("show", help="one message: envelope, headers, recipients").add_argument("id")
    for verb, text in (("delete", "remove messages (postsuper -d)"), ("hold", "keep messages from delivery (postsuper -h)"),
                       ("release", "release held messages (postsuper -H)"), ("requeue", "retry messages afresh (postsuper -r)")):
        acting = queue.add_parser(verb, help=text)
        acting.add_argument("ids", nargs="*", metavar="ID")
        acting.add_argument("--all", action="store_true", help="every queued message")
        _filter_args(acting)
    queue.add_parser("flush", help="attempt deferred mail now (postqueue -f)")
    queue.add_parser("summary", help="recipients by domain and age (qshape)").add_argument(
        "--state", choices=["active", "deferred", "hold"])

    config = commands.add_parser("config", help="the running mta configuration").add_subparsers(dest="verb", required=True)
    config.add_parser("get", help="print the running mta section")
    config.add_parser("validate", help="check a YAML file's mta section").add_argument("file")
    config.add_parser("apply", help="validate, write and reload a YAML file's mta section").add_argument("file")

    domains = commands.add_parser("domains", help="domains on migration hold (answered 451 4.3.2)")
    domains.add_argument("verb", nargs="?", choices=["list", "pause", "resume"], default="list")
    domains.add_argument("domains", nargs="*", metavar="DOMAIN")

    verify = commands.add_parser("verify", help="the recipient verification cache").add_subparsers(
        dest="verb", required=True)
    verify.add_parser("status", help="cache size and lookups")
    verify.add_parser("lookup", help="the remembered answer for an address").add_argument("address")
    verify.add_parser("flush", help="forget one address, or every answer").add_argument("address", nargs="?")

    commands.add_parser("names", help="banner and HELO names against the PTR record of an address").add_argument(
        "address", help="the appliance's public address")

    tls = commands.add_parser("tls", help="outbound TLS: per destination, its policy, a live check, reports")
    tls = tls.add_subparsers(dest="verb", required=True)
    tls.add_parser("summary", help="the last 24 hours per destination: DANE, MTA-STS, verified, ... failures")
    tls.add_parser("policy", help="the TLS policy in force for a domain").add_argument("domain")
    tls.add_parser("check", help="connect to a domain's next hop with its policy, send no mail").add_argument("domain")
    tls.add_parser("report", help="send the TLS reports (RFC 8460) of a day now").add_argument(
        "date", nargs="?", help="YYYY-MM-DD (UTC); default today so far")
    logs = commands.add_parser("log", help="recent log lines")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=50)
    return parser


# --- human output -----------------------------------------------------------------------------


def print_status(status: dict) -> None:
    counters, queue = status["counters"], status["queue"]
    print(f"postern-relay {status['version']} on {status['hostname']}, up {age_text(status['uptime'])}")
    if status.get("loading"):
        print(f"loading the queue: {status['loading']['loaded']} of {status['loading']['total']} messages read; "
              "queue commands wait for the end")
    receiving = status.get("receiving_processes") or []
    by = f"   receiving processes: {len(receiving)} (pid {', '.join(map(str, receiving))})" if receiving else ""
    print(f"listening: {', '.join(status['listeners']) or 'nowhere'}   STARTTLS: {'on' if status['tls'] else 'off'}{by}")
    if status.get("smtps_listeners"):
        print(f"SMTPS: {', '.join(status['smtps_listeners'])}")
    if status.get("paused_domains"):
        print(f"on migration hold (451 4.3.2): {', '.join(status['paused_domains'])}")
    print("messages: " + ", ".join(f"{k} {v}" for k, v in counters.items()))
    print(f"queue: {queue['total']} ({queue['active']} active, {queue['deferred']} deferred, {queue['hold']} hold)"
          f", oldest {age_text(status['oldest_age'])}" + (f", {queue['corrupt']} damaged" if queue["corrupt"] else ""))
    disk = status.get("disk")
    if disk and disk["size"]:
        print(f"disk: {disk['free'] / 2**30:.1f} GiB free of {disk['size'] / 2**30:.1f} GiB "
              f"({100 * disk['free'] / disk['size']:.0f}%), {disk['files_free']:,} files free")
    for certificate in status.get("certificates", []):
        left = certificate["expires"] - time.time()
        when = time.strftime("%Y-%m-%d", time.gmtime(certificate["expires"]))
        print(f"certificate {certificate['certificate']} ({certificate['file']}): "
              + (f"expired {age_text(-left)} ago ({when})" if left < 0 else f"expires in {age_text(left)} ({when})"))
    for error in status["last_errors"]:
        print(f"last error for {error['destination']} ({age_text(time.time() - error['time'])} ago): {error['reply']}")


def print_table(messages: list[dict]) -> None:
    print(f"{'ID':16}  {'STATE':8} {'AGE':>5} {'SIZE':>8}  {'SENDER':28} RECIPIENTS")
    for m in messages:
        rcpts = [r["address"] for r in m["recipients"]]
        shown = rcpts[0] + (f" (+{len(rcpts) - 1})" if len(rcpts) > 1 else "")
        print(f"{m['id']:16}  {m['state']:8} {age_text(m['age']):>5} {m['size']:>8}  {(m['sender'] or '<>')[:28]:28} {shown}")
        if m["last_reply"]:
            print(f"{'':18}({m['last_reply']})")


def print_mailq(messages: list[dict]) -> None:
    """Postfix's mailq layout: * active, ! held, deferred with its reason in parentheses."""
    if not messages:
        print("Mail queue is empty")
        return
    print("-Queue ID-        --Size-- ----Arrival Time---- -Sender/Recipient-------")
    for m in messages:
        mark = {"active": "*", "hold": "!"}.get(m["state"], " ")
        arrival = time.strftime("%a %b %d %H:%M:%S", time.localtime(m["arrival"]))
        print(f"{m['id']}{mark} {m['size']:>8} {arrival}  {m['sender'] or 'MAILER-DAEMON'}")
        open_rcpts = [r for r in m["recipients"] if r["status"] not in ("sent", "bounced")]
        replies = {r["last_reply"] for r in open_rcpts if r["last_reply"]}
        for reply in sorted(replies):
            print(f"{'':47}({reply[:70]})")
        for r in open_rcpts:
            print(f"{'':47}{r['address']}")
        print()
    kbytes = sum(m["size"] for m in messages) // 1024 + 1
    print(f"-- {kbytes} Kbytes in {len(messages)} Request{'s' if len(messages) != 1 else ''}.")


def print_show(answer: dict) -> None:
    m = answer["message"]
    print(f"id: {m['id']}\nstate: {m['state']}\narrival: {time.ctime(m['arrival'])} ({age_text(m['age'])} ago)")
    print(f"size: {m['size']}\nsender: <{m['sender']}>\nclient: {m['client']}\nattempts: {m['attempts']}")
    if m["next_attempt"]:
        print(f"next attempt: {time.ctime(m['next_attempt'])}")
    print("recipients:")
    for r in m["recipients"]:
        print(f"  <{r['address']}> {r['status']} attempts={r['attempts']}" + (f" dsn={r['dsn']}" if r["dsn"] else ""))
        if r["last_reply"]:
            print(f"    {r['last_reply']}")
    print("headers:")
    print(answer["headers"].rstrip("\r\n").replace("\r\n", "\n"))


def print_summary(answer: dict) -> None:
    bounds = answer["bucket_minutes"]
    columns = [str(b) for b in bounds] + [f"{bounds[-1]}+"]
    print(f"{'':30} {'T':>6} " + " ".join(f"{c:>5}" for c in columns))
    total = [0] * (len(columns))
    for row in answer["rows"]:
        total = [a + b for a, b in zip(total, row["buckets"])]
        print(f"{row['destination'][:30]:30} {row['total']:>6} " + " ".join(f"{n:>5}" for n in row["buckets"]))
    print(f"{'TOTAL':30} {sum(total):>6} " + " ".join(f"{n:>5}" for n in total))


# --- commands -------------------------------------------------------------------------------------


def _read_mta(path: str) -> dict:
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SystemExit(f"posternctl: {path}: {error}") from None
    if isinstance(document, dict) and "mta" in document:
        document = document["mta"]
    if not isinstance(document, dict):
        raise SystemExit(f"posternctl: {path}: expected a mapping with an mta: section")
    return document


def run(args, client: ControlClient) -> int:
    emit = (lambda data: print(json.dumps(data, indent=2))) if args.json else None
    if args.command == "status":
        answer = client.call("io.postern.Status.Get")
        (emit or (lambda a: print_status(a["status"])))(answer)
    elif args.command == "log":
        for answer in (client.stream if args.follow else lambda m, **p: [client.call(m, **p)])(
                "io.postern.Log.Tail", lines=args.lines):
            for line in answer["lines"]:
                print(json.dumps(line) if args.json else line["text"], flush=True)
    elif args.command == "config":
        if args.verb == "get":
            answer = client.call("io.postern.Config.Get")
            (emit or (lambda a: print(yaml.safe_dump({"mta": a["mta"]}, sort_keys=False), end="")))(answer)
        elif args.verb == "validate":
            answer = client.call("io.postern.Config.Validate", mta=_read_mta(args.file))
            if emit:
                emit(answer)
            for problem in answer["problems"]:
                print(problem, file=sys.stderr)
            if not emit and not answer["problems"]:
                print(f"{args.file}: valid")
            return EXIT_DAEMON_ERROR if answer["problems"] else EXIT_OK
        else:
            answer = client.call("io.postern.Config.Apply", mta=_read_mta(args.file))
            (emit or (lambda a: print(f"applied; saved to {a['path']} (version {a['version']})")))(answer)
    elif args.command in ("domains", "verify", "names"):
        return run_policy(args, client, emit)
    elif args.command == "tls":
        return run_tls(args, client, emit)
    else:
        return run_queue(args, client, emit)
    return EXIT_OK


def run_policy(args, client: ControlClient, emit) -> int:
    if args.command == "domains":
        if args.verb == "list":
            answer = {"paused_domains": client.call("io.postern.Status.Get")["status"]["paused_domains"]}
        elif not args.domains:
            print(f"posternctl: domains {args.verb}: name at least one domain", file=sys.stderr)
            return EXIT_USAGE
        else:
            answer = client.call(f"io.postern.Config.{args.verb.capitalize()}", domains=args.domains)
        (emit or (lambda a: print("on migration hold: " + (", ".join(a["paused_domains"]) or "none"))))(answer)
    elif args.command == "names":
        answer = client.call("io.postern.Status.CheckNames", address=args.address)
        if emit:
            emit(answer)
            return EXIT_OK
        check = answer["check"]
        print(f"{check['address']}: PTR {', '.join(check['ptr']) or 'none'}; banner name {check['banner_name']}, "
              f"HELO name {check['helo_name']}")
        for warning in check["warnings"]:
            print(f"warning: {warning}")
        if not check["warnings"]:
            print("ok: the names match the PTR record, which resolves back to the address")
    elif args.verb == "status":
        (emit or (lambda a: print(", ".join(f"{k} {v}" for k, v in a.items()))))(client.call("io.postern.Verify.Status"))
    elif args.verb == "lookup":
        answer = client.call("io.postern.Verify.Lookup", address=args.address)
        entry = answer["entry"]
        if emit:
            emit(answer)
        elif entry is None:
            print(f"<{args.address}>: not in the cache")
        else:
            print(f"<{entry['address']}>: {entry['status']}, checked {age_text(time.time() - entry['checked'])} ago, "
                  f"until {time.ctime(entry['expires'])}\n  {entry['reply']}")
    else:
        answer = client.call("io.postern.Verify.Flush", **({"address": args.address} if args.address else {}))
        (emit or (lambda a: print(f"forgot {a['count']} answer{'s' if a['count'] != 1 else ''}")))(answer)
    return EXIT_OK


def run_tls(args, client: ControlClient, emit) -> int:
    if args.verb == "summary":
        answer = client.call("io.postern.Tls.Summary")
        (emit or print_tls_summary)(answer)
    elif args.verb == "report":
        answer = client.call("io.postern.Tls.SendReports", **({"date": args.date} if args.date else {}))
        (emit or (lambda a: print("\n".join(a["lines"]) or "no domain asked for a report")))(answer)
    else:
        answer = client.call(f"io.postern.Tls.{args.verb.capitalize()}", domain=args.domain)
        if emit:
            emit(answer)
            return EXIT_OK
        print_tls_policy(answer["policy"])
        for host in answer.get("hosts", []):
            says = {"deliver": f"would deliver ({host['security']})", "refuse": "would defer"}.get(
                host["verdict"], host["verdict"])
            print(f"  {host['address'] or host['host']}: {says}" + (f": {host['detail']}" if host["detail"] else ""))
            for record in host.get("tlsa", []):
                print(f"    TLSA {record}")
        if any(host["verdict"] == "refuse" for host in answer.get("hosts", [])):
            return EXIT_DAEMON_ERROR
    return EXIT_OK


def print_tls_summary(answer: dict) -> None:
    print(f"{'DESTINATION':32} {'DANE':>5} {'STS':>5} {'VERIF':>5} {'UNVER':>5} {'PLAIN':>5} {'FAIL':>5}")
    for row in answer["domains"]:
        print(f"{row['domain'][:32]:32} {row['dane']:5} {row['mta_sts']:5} {row['verified']:5} "
              f"{row['unverified']:5} {row['plain']:5} {row['failed']:5}")
        for failure in row["failures"]:
            print(f"  {failure['count']} x {failure['result_type']} at {failure['mx_host'] or '-'}: {failure['detail']}")
    if not answer["domains"]:
        print("no deliveries in the last 24 hours")


def print_tls_policy(policy: dict) -> None:
    print(f"{policy['domain']}: level {policy['level']} ({policy['source']}), next hop {policy['next_hop']}"
          + (f", match {', '.join(policy['match'])}" if policy["match"] else ""))
    sts = policy["sts"]
    if sts:
        print(f"  MTA-STS {sts['mode']}, mx {', '.join(sts['mx'])}, until {time.ctime(sts['expires'])}")
    elif policy["mta_sts"]:
        print("  MTA-STS: no policy cached")
    if policy["sts_error"]:
        print(f"  MTA-STS: last fetch failed: {policy['sts_error']}")


def run_queue(args, client: ControlClient, emit) -> int:
    if args.verb == "list":
        parameters = {"filter": _filter_of(args), "sort": args.sort, "reverse": args.reverse, "limit": args.limit}
        messages, answer = [], {}
        while True:
            answer = client.call("io.postern.Queue.List", **parameters)
            messages += answer["messages"]
            if not args.all or not answer["cursor"]:
                break
            parameters["cursor"] = answer["cursor"]
        if emit:
            emit({"messages": messages, "total": answer["total"], "cursor": answer["cursor"]})
        elif args.format == "mailq":
            print_mailq(messages)
        else:
            print_table(messages)
            if answer["total"] > len(messages):
                print(f"-- {len(messages)} of {answer['total']} shown; --all for every page")
    elif args.verb == "show":
        answer = client.call("io.postern.Queue.Show", id=args.id)
        (emit or print_show)(answer)
    elif args.verb == "flush":
        answer = client.call("io.postern.Queue.Flush")
        (emit or (lambda a: print(f"flushing {a['count']} messages")))(answer)
    elif args.verb == "summary":
        answer = client.call("io.postern.Queue.Summary", state=args.state)
        (emit or print_summary)(answer)
    else:
        selection = _filter_of(args)
        if args.ids and (selection or args.all):
            print("posternctl: give message IDs or a selection (--all, --state, ...), not both", file=sys.stderr)
            return EXIT_USAGE
        if not args.ids and not selection and not args.all:
            print(f"posternctl: queue {args.verb}: name message IDs, or --all, or a selection", file=sys.stderr)
            return EXIT_USAGE
        parameters = {"ids": args.ids} if args.ids else {"filter": selection}
        answer = client.call(f"io.postern.Queue.{args.verb.capitalize()}", **parameters)
        (emit or (lambda a: print(f"{args.verb}: {len(a['ids'])} message{'s' if len(a['ids']) != 1 else ''}")))(answer)
    return EXIT_OK


def _failed(error: Exception, code: int) -> int:
    """The failure in the words the console uses too; for a socket that did not serve us, what it said."""
    detail = "" if isinstance(error, ControlError) else f": {error}"
    print(f"posternctl: {errors.explain(error)}{detail}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        return EXIT_USAGE if exit.code else EXIT_OK
    try:
        with ControlClient(args.socket, timeout=None if getattr(args, "follow", False) else args.timeout) as client:
            return run(args, client)
    except NoAnswer as error:
        return _failed(error, EXIT_NO_ANSWER)
    except Unreachable as error:
        return _failed(error, EXIT_UNREACHABLE)
    except PermissionDenied as error:
        return _failed(error, EXIT_DENIED)
    except ControlError as error:
        return _failed(error, EXIT_DAEMON_ERROR)
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
