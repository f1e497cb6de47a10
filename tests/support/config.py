"""The test ISP's config and the values tests share with it.

Every test starts from ``BASE_CONFIG`` (the ``config_data`` fixture makes a
copy per test); a module-scoped server writes its own copy with
``config_file``.  The literals here are what a deployment would write in its
TOML, so tests compare with them, never with the code's constants.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import tomli_w

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WEBMAIL_URL = "https://webmail.example.net/settings/mail-access"
# The header Dovecot's auth_policy_server_api_header sends; each test picks its own secret.
POLICY_HEADER = "X-Autoconfig-Policy-Key"

BASE_CONFIG: dict[str, Any] = {
    "service": {"public_url": "https://autoconfig.example.net", "webmail_url": WEBMAIL_URL},
    "provider": {
        "id": "example.net",
        "display_name": "Example Networks Mail",
        "short_name": "Example",
        "domains": ["example.net", "example.org"],
    },
    "servers": {
        "imap": [{"host": "imap.example.net", "port": 993, "socket": "SSL"}],
        "pop3": [{"host": "pop.example.net", "port": 995, "socket": "SSL"}],
        "smtp": [
            {"host": "smtp.example.net", "port": 465, "socket": "SSL"},
            {"host": "smtp.example.net", "port": 587, "socket": "STARTTLS"},
        ],
    },
    "store": {"url": "sqlite:///unused"},
    "admin": {"tokens": [{"name": "webmail", "token": ADMIN_TOKEN}]},
}


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it: tables merge key by key, anything else replaces."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def base_config(directory: Path, **sections: Any) -> dict[str, Any]:
    """A copy of ``BASE_CONFIG`` with its SQLite store in ``directory`` and ``sections`` merged in."""
    data = merged(BASE_CONFIG, {"store": {"url": f"sqlite:///{directory}/accounts.sqlite3"}})
    return merged(data, sections)


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    path.write_bytes(tomli_w.dumps(data).encode())
    return path


def config_file(directory: Path, name: str = "autoconfig.toml", **sections: Any) -> Path:
    """``base_config(directory, **sections)`` written to ``directory / name``."""
    return write_toml(directory / name, base_config(directory, **sections))
