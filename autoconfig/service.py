"""From a raw address to a decision: the path every client format shares.

request -> ``parse_address`` -> domain check -> store -> ``policy.offer``.
Views call ``Service.decide`` and hand the result to a renderer; a renderer
never touches the store and a view never decides what to show.
"""

from __future__ import annotations

import logging

from . import policy
from .address import Address, AddressError, normalise_domain, parse_address
from .config import Config
from .dns.hosted import HostedDomains, LookupFailed, Rejected
from .errors import BadRequest, NotServed, Unavailable
from .policy import Decision
from .store import Store, StoreUnavailable
from .values import OFF, Provider

log = logging.getLogger(__name__)

__all__ = ["Decision", "Service", "declined_message"]


def declined_message(provider: Provider) -> str:
    """What a user with nothing enabled (or a stranger) is told, in every format: the brand's own webmail."""
    return (
        "No mail settings are available for this address yet. "
        "POP and IMAP are turned off for every mailbox until you enable them: "
        f"sign in to webmail at {provider.webmail_url}, enable IMAP (recommended) or POP, "
        "then set up your mail program again."
    )


class Service:
    """The configured service: config plus store, shared by the web app and the CLI."""

    def __init__(self, config: Config, store: Store, hosted: HostedDomains | None = None) -> None:
        self.config = config
        self.store = store
        self.hosted = hosted  # customer domains found by MX; None unless a brand names its MX hosts
        # One table per brand: the switches pick the row, the brand the servers in it.
        self._offers = {provider.id: policy.offer_table(provider.servers) for provider in config.providers}

    def parse(self, raw: str | None) -> Address:
        try:
            return parse_address(raw)
        except AddressError as exc:
            raise BadRequest(f"invalid email address: {exc}") from None

    def provider_for(self, domain: str) -> Provider:
        """The brand of ``domain``: the one listing it, else (if configured) the one whose MX hosts it uses.

        ``NotServed`` for a domain of no brand; ``Unavailable`` when DNS cannot say.
        """
        provider = self.config.provider_for(domain)
        if provider is not None:
            return provider
        if self.hosted is not None:
            try:
                brand = self.hosted.hosted_by(domain)
            except LookupFailed as exc:
                log.warning("cannot tell whether %s is hosted: %s", domain, exc)
                raise Unavailable("cannot check this domain right now; try again shortly") from None
            if brand is not None:
                return self.config.provider_with_id(brand)
        raise NotServed("this service has no mail settings for that domain")

    def provider_named(self, raw: str | None, *, look_up: bool) -> Provider | None:
        """The brand of the domain after the last @ of ``raw`` (one trailing dot aside), or None.

        For input that is no address this service can decide on (``a..b@``,
        ``x@brand.example.``) and for failures after the brand was known: the
        answer still speaks in the brand the domain names.  ``look_up`` also
        asks DNS for hosted domains (``Unavailable`` if it cannot say).
        """
        _, at, domain = (raw or "").rpartition("@")
        if not at:
            return None
        try:
            name = normalise_domain(domain.removesuffix("."))
        except AddressError:
            return None
        if not look_up:
            return self.config.provider_for(name)
        try:
            return self.provider_for(name)
        except NotServed:
            return None

    def check_storable(self, address: Address) -> None:
        """Refuse to store switches for ``address`` when no client request could ever read them.

        A row in a domain the service does not answer for is never read, so a
        typo in the domain would go unnoticed.  With hosted customer domains
        on, a domain is accepted if an MX could make it hosted (no lookup is
        made here: the customer's MX may point at the ISP only later).
        """
        if self.config.serves(address.domain):
            return
        served = f"the served domains are {', '.join(self.config.domains)}"
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

    def nothing_enabled(self, provider: Provider) -> policy.Offer:
        """The offer of a mailbox of ``provider`` with every switch off, which an unknown address gets too."""
        return self._offers[provider.id][OFF]

    def decide(self, raw: str | None) -> Decision:
        """The policy decision for ``raw``; unknown and all-off accounts come out identical."""
        address = self.parse(raw)
        provider = self.provider_for(address.domain)
        try:
            switches = self.store.switches(address.key)
        except StoreUnavailable as exc:
            log.error("store unavailable: %s", exc)
            raise Unavailable("account settings are temporarily unavailable; try again shortly") from None
        return Decision(address, self._offers[provider.id][switches], provider)
