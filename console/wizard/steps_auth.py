"""Step 10: mail authentication: which domains' mail is DKIM-signed, and the checks on mail from outside.

The keys are made when the setup is applied (the seed's `dkim:` section, appliance.provision),
so that going back and forth makes none; a domain that already has a key keeps it. The apply
step then shows each record to publish and whether DNS has it, and the summary lists the DNS
records and, for Microsoft 365, the Exchange Online settings that keep this gateway's results.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Checkbox, RadioButton, RadioSet, Static

from appliance.topology import TOPOLOGIES

from .draft import Draft
from .step import Pick, StepScreen, Tick

ALGORITHMS = (("rsa", "RSA 2048: every receiver checks it"),
              ("ed25519", "Ed25519: shorter, but not every receiver checks it yet"))
POLICIES = (("annotate", "Annotate: add the results; your mail server decides (default)"),
            ("enforce", "Enforce: refuse the failures of p=reject, hold those of p=quarantine"))


def signing_domains(draft: Draft) -> list[str]:
    """The domains the step offers: the relay domains, and any other that has a key already."""
    keys = draft.get("mta.authentication.dkim_keys") or {}
    return list(dict.fromkeys([*(draft.get("mta.relay_domains") or []), *keys]))


class AuthStep(StepScreen):
    NAME = "authentication"
    TITLE = "Mail authentication"
    FIELDS = {"dkim.algorithm": ("algorithm", "Key type"), "dkim": ("sign", "Sign outgoing mail"),
              "mta.authentication.dmarc_policy": ("dmarc", "DMARC policy"),
              "mta.authentication": ("inbound", "Inbound checks")}

    def help_text(self) -> str:
        text = ("Mail from your domains leaves DKIM-signed: publish each domain's TXT record, shown once the setup "
                "is applied. Mail from outside has SPF, DKIM and DMARC checked, the results in a header.")
        if TOPOLOGIES[self.draft.topology].m365:
            text += " The summary lists the Exchange Online settings that keep these results."
        return text

    def compose_fields(self) -> ComposeResult:
        keys = self.draft.get("mta.authentication.dkim_keys") or {}
        signing = Vertical(id="sign", classes="tick-list")
        signing.border_title = "DKIM signing of outgoing mail"
        with signing:
            for index, domain in enumerate(signing_domains(self.draft)):
                key = keys.get(domain)
                note = f" (key {key.get('selector')} in place)" if isinstance(key, dict) else ""
                yield Tick(f"Sign mail from {domain}{note}", name=domain, id=f"sign-{index}", classes="tight")
        algorithm = RadioSet(*[Pick(label, name=name) for name, label in ALGORITHMS], id="algorithm")
        algorithm.border_title = "Key type for new keys"
        yield algorithm
        yield Tick("Check SPF, DKIM, ARC and DMARC on mail from outside", id="inbound")
        dmarc = RadioSet(*[Pick(label, name=name) for name, label in POLICIES], id="dmarc")
        dmarc.border_title = "DMARC policy"
        yield dmarc

    def load(self, draft: Draft) -> None:
        keys = draft.get("mta.authentication.dkim_keys") or {}
        asked = draft.get("dkim.domains")
        for tick in self.query("#sign Checkbox").results(Checkbox):
            # First visit: every domain; afterwards what was ticked (a key in place counts as ticked).
            tick.value = asked is None or tick.name in asked or tick.name in keys
        algorithm = draft.get("dkim.algorithm") or "rsa"
        for button in self.query("#algorithm RadioButton").results(RadioButton):
            button.value = button.name == algorithm
        self.query_one("#inbound", Checkbox).value = bool(draft.get("mta.authentication.check_inbound", True))
        policy = draft.get("mta.authentication.dmarc_policy") or "annotate"
        for button in self.query("#dmarc RadioButton").results(RadioButton):
            button.value = button.name == policy
        self.show_policy()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id == "inbound":
            self.show_policy()

    def show_policy(self) -> None:
        self.query_one("#dmarc", RadioSet).display = self.query_one("#inbound", Checkbox).value

    @staticmethod
    def pressed(radio: RadioSet, default: str) -> str:
        button = radio.pressed_button
        return button.name if button is not None and button.name else default

    def store(self, draft: Draft) -> None:
        ticked = [tick.name for tick in self.query("#sign Checkbox").results(Checkbox) if tick.value and tick.name]
        keys = dict(draft.get("mta.authentication.dkim_keys") or {})
        for domain in list(keys):
            if domain not in ticked:  # unticked: its mail leaves unsigned (the key file stays)
                del keys[domain]
        draft.set("mta.authentication.dkim_keys", keys)
        if not keys:
            draft.remove("mta.authentication.dkim_keys")
        draft.set("dkim", {"domains": [domain for domain in ticked if domain not in keys],
                           "algorithm": self.pressed(self.query_one("#algorithm", RadioSet), "rsa")})
        draft.set("mta.authentication.check_inbound", self.query_one("#inbound", Checkbox).value)
        draft.set("mta.authentication.dmarc_policy", self.pressed(self.query_one("#dmarc", RadioSet), "annotate"))

