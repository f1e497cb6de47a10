"""One renderer per client family, all with one contract: ``render(decision) -> bytes``.

A ``policy.Decision`` carries the address, the brand it belongs to and the
``Offer`` the policy gate produced; a renderer turns it into a document and
reads nothing else (no store, no config), so a document can show neither a
protocol the gate held back nor another brand's names.  A declined decision
has no document: each family answers it its own way (Thunderbird a 404
text, Outlook its error 501, Apple the setup page), and every one of those
carries ``service.declined_message`` for the mailbox's brand.

The views and ``autoconfig render`` take the renderer from ``DOCUMENTS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..policy import Decision
from . import apple, outlook, thunderbird

DOCUMENTS: Mapping[str, Callable[[Decision], bytes]] = {
    "thunderbird": thunderbird.render,
    "outlook": outlook.render,
    "apple": apple.render,
}
