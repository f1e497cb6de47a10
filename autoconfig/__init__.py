"""autoconfig: mail-client auto-configuration for an ISP whose users switch
POP and IMAP on themselves.

Importing the package does nothing: ``create_app`` (and ``create_service``,
for the CLI) come from ``autoconfig.app`` when first asked for, so importing
``autoconfig.config`` or a renderer loads neither Flask's app setup nor the
store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app, create_service

__all__ = ["create_app", "create_service"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
