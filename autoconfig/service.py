"""From a raw address to a decision: the path every client format shares.

request -> ``parse_address`` -> domain check -> store -> ``policy.offer``.
Views call ``Service.decide`` and hand the result to a renderer; a renderer
never touches the store and a view never decides what to show.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import policy
from .address import Address, AddressError, parse_address
from .config import Config
from .dns.hosted import HostedDomains, LookupFailed, Rejected
from .errors import BadRequest, NotServed, Unavailable
from .store import OFF, Store, StoreUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    address: Address
    offer: policy.Offer


class Service:
    """The configured service: config plus store, shared by the web app and the CLI."""

    def __init__(self, config: Config, store: Store, hosted: HostedDomains | None = None) -> None:
        self.config = config
        self.store = store
        self.hosted = hosted  # customer domains found by MX; None unless dns.mx_hosts is set
        self._offers = policy.offer_table(config.servers)

    def parse(self, raw: str | None) -> Address:
        try:
            return parse_address(raw)
        except AddressError as exc:
            raise BadRequest(f"invalid email address: {exc}") from None

    def serves(self, domain: str) -> bool:
        """Configured domains first; then, if configured, a customer domain whose MX is ours."""
        if self.config.serves(domain):
            return True
        if self.hosted is None:
            return False
        try:
            return self.hosted.is_hosted(domain)
        except LookupFailed as exc:
            log.warning("cannot tell whether %s is hosted: %s", domain, exc)
            raise Unavailable("cannot check this domain right now; try again shortly") from None

    def check_storable(self, address: Address) -> None:
        """Refuse to store switches for ``address`` when no client request could ever read them.

        A row in a domain the service does not answer for is never read, so a
        typo in the domain would go unnoticed.  With hosted customer domains
        on, a domain is accepted if an MX could make it hosted (no lookup is
        made here: the customer's MX may point at the ISP only later).
        """
        if self.config.serves(address.domain):
            return
        served = f"the served domains are {', '.join(self.config.provider.domains)}"
        if self.hosted is None:
            raise NotServed(
                f"{address.domain} is not a domain this service answers for ({served}); "
                "switches stored for it would never be read"
            )
        try:
            self.hosted.check_name(address.domain)
        except Rejected as exc:
            raise NotServed(
                f"{address.domain} is not a domain this service answers for ({served}), "
                f"and it can never be a hosted customer domain: {exc}"
            ) from None

    def account_address(self, raw: str | None) -> Address:
        """``raw`` parsed, for a change of its switches: ``check_storable`` must pass."""
        address = self.parse(raw)
        self.check_storable(address)
        return address

    @property
    def nothing_enabled(self) -> policy.Offer:
        """The offer of an account with every switch off, which an unknown address gets too."""
        return self._offers[OFF]

    def decide(self, raw: str | None) -> Decision:
        """The policy decision for ``raw``; unknown and all-off accounts come out identical."""
        address = self.parse(raw)
        if not self.serves(address.domain):
            raise NotServed("this service has no mail settings for that domain")
        try:
            switches = self.store.switches(address.key)
        except StoreUnavailable as exc:
            log.error("store unavailable: %s", exc)
            raise Unavailable("account settings are temporarily unavailable; try again shortly") from None
        return Decision(address, self._offers[switches])

    def domains_for(self, address: Address) -> tuple[str, ...]:
        """The domains a document lists: the address's own first, then the provider's."""
        domains = self.config.provider.domains
        return domains if address.domain in domains else (address.domain, *domains)

    def declined_message(self) -> str:
        """What a user with nothing enabled (or a stranger) is told, in every format."""
        return (
            "No mail settings are available for this address yet. "
            "POP and IMAP are turned off for every mailbox until you enable them: "
            f"sign in to webmail at {self.config.webmail_url}, enable IMAP (recommended) or POP, "
            "then set up your mail program again."
        )
