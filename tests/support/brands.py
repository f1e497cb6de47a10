"""The two-brand config the brand tests share, and how they ask each format and the login gate.

The test ISP's brand (example.net, example.org) and Brand Telecom
(brand.example, brand-two.example), with servers, webmail and MX hosts of
its own and IMAP but no POP server.
"""

from __future__ import annotations

import copy
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask.testing import FlaskClient

from tests.support.config import BASE_CONFIG, POLICY_HEADER, WEBMAIL_URL
from tests.support.gunicorn import GunicornServer

BRAND_WEBMAIL = "https://mail.brand.example/settings"
POLICY_SECRET = "policy-secret-0123456789"

ISP = {
    "id": "example.net",
    "display_name": "Example Networks Mail",
    "short_name": "Example",
    "domains": ["example.net", "example.org"],
    "mx_hosts": ["mx1.example.net", "mx2.example.net"],
    "servers": copy.deepcopy(BASE_CONFIG["servers"]),
}
BRAND = {
    "id": "brand.example",
    "display_name": "Brand Telecom Mail",
    "short_name": "Brand",
    "domains": ["brand.example", "brand-two.example"],
    "webmail_url": BRAND_WEBMAIL,
    "mx_hosts": ["mx.brand.example"],
    "servers": {
        "imap": [{"host": "imap.brand.example", "port": 143, "socket": "STARTTLS"}],
        "smtp": [{"host": "smtp.brand.example", "port": 587, "socket": "STARTTLS"}],
    },
}

# address -> (provider id, display name, incoming host, webmail the declines point to)
MAILBOXES = {
    "alice@example.net": ("example.net", "Example Networks Mail", "imap.example.net", WEBMAIL_URL),
    "bob@example.org": ("example.net", "Example Networks Mail", "imap.example.net", WEBMAIL_URL),
    "carol@brand.example": ("brand.example", "Brand Telecom Mail", "imap.brand.example", BRAND_WEBMAIL),
    "dave@brand-two.example": ("brand.example", "Brand Telecom Mail", "imap.brand.example", BRAND_WEBMAIL),
}
OTHER_WEBMAIL = {WEBMAIL_URL: BRAND_WEBMAIL, BRAND_WEBMAIL: WEBMAIL_URL}


def brands_config(tmp_path: Path) -> dict[str, Any]:
    data = {key: copy.deepcopy(value) for key, value in BASE_CONFIG.items() if key not in ("provider", "servers")}
    data["store"]["url"] = f"sqlite:///{tmp_path}/accounts.sqlite3"
    data["providers"] = [copy.deepcopy(ISP), copy.deepcopy(BRAND)]
    data["dovecot"] = {"api_header": f"{POLICY_HEADER}: {POLICY_SECRET}"}
    return data


def thunderbird(client: FlaskClient, address: str, **kwargs: Any) -> Any:
    return client.get(f"/mail/config-v1.1.xml?emailaddress={quote(address)}", **kwargs)


def outlook(client: FlaskClient, address: str) -> Any:
    body = (
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
        f"<Request><EMailAddress>{address}</EMailAddress>"
        "<AcceptableResponseSchema>"
        "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
        "</AcceptableResponseSchema></Request></Autodiscover>"
    )
    return client.post("/autodiscover/autodiscover.xml", data=body, content_type="text/xml")


def login(client: FlaskClient, address: str, protocol: str = "imap") -> dict[str, Any]:
    body = {"login": address, "protocol": protocol, "remote": "192.0.2.7", "real_remote": "192.0.2.7", "tls": True}
    response = client.post("/dovecot/auth-policy?command=allow", json=body, headers={POLICY_HEADER: POLICY_SECRET})
    assert response.status_code == 200, response.data
    return dict(response.get_json())


def signing(pki: Any) -> dict[str, str]:
    return {
        "signing_certificate": str(pki.signer_cert),
        "signing_key": str(pki.signer_key),
        "signing_chain": str(pki.chain),
    }


def verified(signed: bytes, root: Path) -> bytes | None:
    """The profile inside ``signed`` if openssl verifies it up to ``root`` (docs/clients.md's command), else None."""
    result = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-CAfile", str(root)],
        input=signed,
        capture_output=True,
        check=False,
        timeout=30,
    )
    return result.stdout if result.returncode == 0 else None


def get(server: GunicornServer, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{server.url}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
