"""Cases on delivery by MX: when the first MX host fails, is the next one tried?

Each peer has a domain of its own (`peer.mx_domain`) with two MX hosts, 127.x.y.z:25 with
preferences 10 and 20, served by the suite's DNS server. Postfix finds them through its
resolv.conf (it runs in a private mount namespace, see bench/postfix.py), Postern through
`dns_servers`; Postern's external relay is emptied for these cases so that it delivers by MX.
"""

from tests.support.net import spare_loopback_ip, wait_until
from tests.support.scripted_hop import Script, ScriptedHop

from .cases import SENDER, case, first_attempts
from .cases_delivery import send

MX_BY_DNS = {"external_relay": {"host": ""}}


def _two_mx_hosts(peer, first: Script | None) -> dict:
    """Deliver to bob@ the peer's MX domain, whose first MX host answers as `first` says (None: nothing
    listens there) and whose second accepts; which host got the message after the first attempt."""
    domain = peer.mx_domain
    addresses = [spare_loopback_ip(25), spare_loopback_ip(25)]
    hops = [ScriptedHop(first, addresses[0], 25).start() if first else None,
            ScriptedHop(None, addresses[1], 25).start()]
    peer.dns.records.update({
        (domain, "MX"): [f"10 mx1.{domain}.", f"20 mx2.{domain}."],
        (f"mx1.{domain}", "A"): [addresses[0]],
        (f"mx2.{domain}", "A"): [addresses[1]],
    })
    rcpt = f"bob@{domain}"
    try:
        mark = send(peer, rcpts=(rcpt,))
        attempt = first_attempts(peer, mark, (rcpt,))[rcpt]
        if attempt.startswith("sent"):
            wait_until(lambda: any(h and h.messages(SENDER) for h in hops), 10, what="the message at an MX host")
        return {"first attempt": attempt,
                "delivered by": [f"mx{i + 1}" for i, h in enumerate(hops) if h and h.messages(SENDER)]}
    finally:
        for hop in hops:
            if hop:
                hop.stop()


@case("mx", "nothing listens on the first MX host: the second delivers", postern_settings=MX_BY_DNS,
      postfix=lambda seen: seen["delivered by"] == ["mx2"])
def mx_fallback_after_refused_connection(peer):
    return _two_mx_hosts(peer, None)


@case("mx", "the first MX host greets with 421: Postfix tries the second, which delivers",
      postern_settings=MX_BY_DNS, postfix=lambda seen: seen["delivered by"] == ["mx2"])
def mx_fallback_after_421_greeting(peer):
    return _two_mx_hosts(peer, Script(greeting="421 4.3.2 busy"))


@case("mx", "the first MX host answers 451 to MAIL: Postfix tries the second, which delivers",
      postern_settings=MX_BY_DNS, postfix=lambda seen: seen["delivered by"] == ["mx2"])
def mx_fallback_after_451_to_mail(peer):
    return _two_mx_hosts(peer, Script(mail="451 4.3.0 try later"))


@case("mx", "the first MX host answers 451 to RCPT: Postfix tries the second, which delivers",
      postern_settings=MX_BY_DNS, postfix=lambda seen: seen["delivered by"] == ["mx2"])
def mx_fallback_after_451_to_rcpt(peer):
    return _two_mx_hosts(peer, Script(rcpt={f"bob@{peer.mx_domain}": "451 4.3.0 try later"}))


@case("mx", "the first MX host answers 550 to RCPT: bounced, the second is not asked",
      postern_settings=MX_BY_DNS, postfix=lambda seen: seen["first attempt"].startswith("bounced"))
def mx_no_fallback_after_550_to_rcpt(peer):
    return _two_mx_hosts(peer, Script(rcpt={f"bob@{peer.mx_domain}": "550 5.1.1 user unknown"}))
