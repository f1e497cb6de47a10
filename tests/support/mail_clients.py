"""IMAP and POP3 logins as a mail program on another host makes them.

On loopback any 127.x address stands for another host, so a login can come
from the webmail's address or from a customer's computer.  Each function
answers "OK" or the server's refusal as the mail program would show it.
"""

from __future__ import annotations

import imaplib
import poplib
import socket

LOOPBACK = "127.0.0.1"


class SourcedIMAP(imaplib.IMAP4):
    """imaplib connecting from a chosen local address."""

    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__(LOOPBACK, port, timeout=10)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


class SourcedPOP3(poplib.POP3):
    """poplib connecting from a chosen local address."""

    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__(LOOPBACK, port, timeout=10)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


def _reason(exc: Exception) -> str:
    reason = exc.args[0]
    return reason.decode() if isinstance(reason, bytes) else str(reason)


def imap_login(port: int, user: str, password: str, source: str = LOOPBACK, forward: str | None = None) -> str:
    """Log in over IMAP from ``source``; ``forward`` sends an address through IMAP ID first,
    as a webmail in Dovecot's login_trusted_networks does for its user."""
    client = SourcedIMAP(port, source)
    try:
        if forward is not None:
            client.xatom("ID", f'("x-originating-ip" "{forward}")')
        client.login(user, password)
        return "OK"
    except imaplib.IMAP4.error as exc:
        return _reason(exc)
    finally:
        client.shutdown()


def pop3_login(port: int, user: str, password: str, source: str = LOOPBACK) -> str:
    client = SourcedPOP3(port, source)
    try:
        client.user(user)
        client.pass_(password)
        return "OK"
    except poplib.error_proto as exc:
        return _reason(exc)
    finally:
        client.close()


def deliver(port: int, user: str, password: str, message: bytes, source: str = LOOPBACK) -> None:
    """Put a message into the user's INBOX (IMAP APPEND), as the mail server's delivery would."""
    client = SourcedIMAP(port, source)
    try:
        client.login(user, password)
        status, detail = client.append("INBOX", "", imaplib.Time2Internaldate(0), message)
        if status != "OK":
            raise RuntimeError(f"APPEND failed: {detail!r}")
    finally:
        client.logout()
