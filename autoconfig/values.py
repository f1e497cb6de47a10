"""The values every part passes around: servers, brands, switches.

Both sides of the service import this module and nothing heavier: the
config reader builds these values, the store returns ``Switches``, the
policy gate turns both into an offer, and the renderers write documents
from it.  Keeping them here means importing a renderer loads no store,
and the store knows nothing of servers or brands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Server:
    """One mail server endpoint as clients must be told about it."""

    protocol: str  # "imap" | "pop3" | "smtp"
    host: str
    port: int
    socket: str  # "SSL" (implicit TLS) | "STARTTLS"
    authentication: str = "password-cleartext"
    username: str = "address"  # "address" | "local-part"

    @property
    def implicit_tls(self) -> bool:
        return self.socket == "SSL"


@dataclass(frozen=True)
class Servers:
    imap: tuple[Server, ...]
    pop3: tuple[Server, ...]
    smtp: tuple[Server, ...]

    @property
    def every(self) -> tuple[Server, ...]:
        """IMAP, then POP3, then SMTP: the order listings and DNS records print them in."""
        return (*self.imap, *self.pop3, *self.smtp)


@dataclass(frozen=True)
class Apple:
    """A brand's Apple profile identity.  Signing paths are absolute (resolved against the config file's directory).

    ``config_key`` is where these settings were read (``apple`` or
    ``providers[1].apple``), so an unusable certificate is reported there.
    """

    profile_identifier_prefix: str = ""
    signing_certificate: Path | None = None
    signing_key: Path | None = None
    signing_chain: Path | None = None
    config_key: str = field(default="apple", compare=False)

    @property
    def signs(self) -> bool:
        return self.signing_certificate is not None and self.signing_key is not None


@dataclass(frozen=True)
class Provider:
    """A brand: the names clients show, the domains it serves, and the servers of its mailboxes.

    Every answer about a mailbox is written from the mailbox's own brand;
    the switches and the login gate know no brands.
    """

    id: str
    display_name: str
    short_name: str
    domains: tuple[str, ...]
    servers: Servers
    webmail_url: str  # where this brand's users turn POP and IMAP on
    apple: Apple = Apple()
    # MX hosts of this brand: a customer domain whose most-preferred MX are all
    # among them is this brand's hosted domain (autoconfig/dns/hosted.py).
    mx_hosts: tuple[str, ...] = ()
    # The renderers' caches are keyed by the brand: its hash (every server in
    # it) is worked out once, not on each request's lookup.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.id, self.domains, self.servers, self.webmail_url, self.apple)))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True)
class Switches:
    """What the user has enabled.  Both off unless the user turned them on."""

    imap: bool = False
    pop: bool = False


OFF = Switches()
SWITCHES = ("imap", "pop")
