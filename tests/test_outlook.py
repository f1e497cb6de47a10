"""Outlook autodiscover, POX and JSON, checked against [MS-OXDSCLI] as
summarised in ../shared/design/protocols.md ("Outlook") and against an
independent reader of the answers, exchangelib's ``Autodiscover.from_bytes``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from click.testing import Result
from flask.testing import FlaskClient
from lxml import etree
from werkzeug.test import TestResponse

from autoconfig.config import ConfigError, load
from autoconfig.store import StoreUnavailable
from tests.support.admin import Admin
from tests.support.config import WEBMAIL_URL
from tests.support.fixture_types import MakeApp
from tests.support.outlook import (
    Protocol,
    activesync_request,
    error_code,
    exchangelib_reader,
    parse_answer,
    pox_request,
    protocols,
    response_namespace,
)
from tests.support.promises import (
    AUTODISCOVER_BASE_NS,
    AUTODISCOVER_V1,
    CACHE_CONTROL,
    MOBILESYNC_REQUEST_NS,
    MOBILESYNC_RESPONSE_NS,
    OUTLOOK_CONTENT_TYPE,
    OUTLOOK_ERROR_ADDRESS_NOT_FOUND,
    OUTLOOK_ERROR_INVALID_REQUEST,
    OUTLOOK_ERROR_NO_CONFIGURATION,
    OUTLOOK_ERROR_SCHEMA_UNAVAILABLE,
    OUTLOOK_JSON_ERROR_PROTOCOL,
    OUTLOOK_POX_PATH,
    OUTLOOK_RESPONSE_NS,
)

POX_PATHS = [
    "/autodiscover/autodiscover.xml",
    "/Autodiscover/Autodiscover.xml",
    "/AutoDiscover/AutoDiscover.xml",
    "/AUTODISCOVER/AUTODISCOVER.XML",
    "/autodiscover/AutoDiscover.XML",
]
SWITCH_CASES = [
    # imap,  pop,   incoming Protocol types in document order
    (True, False, ["IMAP"]),
    (False, True, ["POP3"]),
    (True, True, ["IMAP", "POP3"]),
]
_TIME = re.compile(rb' Time="[0-9:]+"')


def post(client: FlaskClient, address: str, path: str = OUTLOOK_POX_PATH, **kw: Any) -> TestResponse:
    return client.post(path, data=pox_request(address, **kw), content_type="text/xml")


def without_time(body: bytes) -> bytes:
    return _TIME.sub(b"", body)


@pytest.mark.parametrize("path", POX_PATHS)
@pytest.mark.parametrize(("imap", "pop", "types"), SWITCH_CASES)
def test_settings_list_exactly_the_enabled_protocols_plus_smtp(
    client: FlaskClient, admin: Admin, path: str, imap: bool, pop: bool, types: list[str]
) -> None:
    admin.set("alice@example.net", imap=imap, pop=pop)
    response = post(client, "alice@example.net", path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == OUTLOOK_CONTENT_TYPE
    assert response.headers["Cache-Control"] == CACHE_CONTROL
    assert [p.type for p in protocols(response.data)] == [*types, "SMTP", "SMTP"]


def test_every_protocol_is_spelled_out_for_outlook(client: FlaskClient, admin: Admin) -> None:
    admin.set("Alice@example.net", imap=True, pop=True)
    assert protocols(post(client, "Alice@EXAMPLE.net").data) == [
        # SPA off (absent means NTLM), explicit Encryption: SSL = implicit TLS, TLS = STARTTLS.
        Protocol("IMAP", "imap.example.net", 993, "Alice@example.net", "off", "on", "SSL", "off", "on"),
        Protocol("POP3", "pop.example.net", 995, "Alice@example.net", "off", "on", "SSL", "off", "on"),
        Protocol("SMTP", "smtp.example.net", 465, "Alice@example.net", "off", "on", "SSL", "off", "on"),
        Protocol("SMTP", "smtp.example.net", 587, "Alice@example.net", "off", "on", "TLS", "off", "on"),
    ]


def test_login_name_follows_each_servers_username_setting(config_data: dict[str, Any], make_app: MakeApp) -> None:
    config_data["servers"]["imap"][0]["username"] = "local-part"
    client = make_app(config_data).test_client()
    Admin(client).set("alice@example.net", imap=True)
    names = [(p.type, p.login_name) for p in protocols(post(client, "alice@example.net").data)]
    assert names == [("IMAP", "alice"), ("SMTP", "alice@example.net"), ("SMTP", "alice@example.net")]


def test_nothing_enabled_is_error_501_pointing_to_webmail(client: FlaskClient, admin: Admin) -> None:
    admin.set("bob@example.net", imap=False, pop=False)
    response = post(client, "bob@example.net")
    assert response.status_code == 200
    assert error_code(response.data) == OUTLOOK_ERROR_NO_CONFIGURATION
    assert WEBMAIL_URL.encode() in response.data and b"enable IMAP" in response.data
    assert b"bob" not in response.data


def test_unknown_and_disabled_are_identical_but_for_the_time(client: FlaskClient, admin: Admin) -> None:
    admin.set("bob@example.net", imap=True, pop=True)
    admin.set("bob@example.net", imap=False, pop=False)
    disabled, unknown = post(client, "bob@example.net"), post(client, "never-seen@example.net")
    assert disabled.status_code == unknown.status_code == 200
    assert dict(disabled.headers) == dict(unknown.headers)
    assert without_time(disabled.data) == without_time(unknown.data)
    assert _TIME.search(disabled.data), "the Time attribute is the only thing stripped"


@pytest.mark.parametrize(
    ("schema", "response_ns"),
    [
        (MOBILESYNC_RESPONSE_NS, MOBILESYNC_RESPONSE_NS),  # asked for mobilesync: told in mobilesync
        ("http://example.com/other-schema", AUTODISCOVER_BASE_NS),
        ("", AUTODISCOVER_BASE_NS),
    ],
)
@pytest.mark.parametrize("enabled", [True, False])
def test_other_response_schemas_get_601(
    client: FlaskClient, admin: Admin, schema: str, response_ns: str, enabled: bool
) -> None:
    admin.set("alice@example.net", imap=enabled)
    response = post(client, "alice@example.net", schema=schema)
    assert response.status_code == 200
    assert error_code(response.data) == OUTLOOK_ERROR_SCHEMA_UNAVAILABLE
    assert response_namespace(response.data) == response_ns
    assert b"imap.example.net" not in response.data


# --- ActiveSync ([MS-ASCMD]) and the Error element ---------------------------------------------------------------

# Error/@Id for the test config's public URL https://autoconfig.example.net: an unsigned integer
# ([MS-ASCMD] 2.2.3.63), the CRC-32 of the URL in decimal: the server's, whatever the brand (it used to
# be the hex 20A69DA0, which a strict reader refuses, and then the CRC-32 of the one provider's id).
SERVER_ID = "3955158096"
SCHEMA_UNAVAILABLE_MESSAGE = (
    "Only Outlook's response schema 2006a is served here (no Exchange ActiveSync); use IMAP or POP."
)
# [MS-ASCMD] 4.2.x, the Autodiscover response for error 600/601: Autodiscover in the base namespace,
# Response and everything in it in the mobilesync response namespace, Error with Time and Id.
ACTIVESYNC_ERROR = """<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006">
    <Error Time="TIME" Id="3955158096">
      <ErrorCode>CODE</ErrorCode>
      <Message>MESSAGE</Message>
      <DebugData />
    </Error>
  </Response>
</Autodiscover>
"""
# [MS-ASCMD] 2.2.3.63: time_val = hours ":" minutes ":" seconds ["." fractional_seconds]
_TIME_VALUE = re.compile(r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?$")


def canonical(body: bytes | str, time: str = "TIME") -> str:
    """``body`` in canonical XML, indentation dropped, with ``Time`` replaced by ``time``."""
    text = body.decode() if isinstance(body, bytes) else body
    text = re.sub(r"<\?xml[^>]*\?>", "", text)  # C14N drops the declaration; compare the rest
    return ElementTree.canonicalize(_TIME_ATTRIBUTE.sub(f' Time="{time}"', text), strip_text=True)


_TIME_ATTRIBUTE = re.compile(r' Time="[^"]*"')


def activesync_error(code: str, message: str) -> str:
    return canonical(ACTIVESYNC_ERROR.replace("CODE", code).replace("MESSAGE", message))


@pytest.mark.parametrize("account", ["enabled", "disabled", "unknown"])
def test_activesync_request_gets_601_in_the_mobilesync_shape(client: FlaskClient, admin: Admin, account: str) -> None:
    if account != "unknown":
        admin.set("phone@example.net", imap=account == "enabled")
    response = client.post(OUTLOOK_POX_PATH, data=activesync_request("phone@example.net"), content_type="text/xml")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == OUTLOOK_CONTENT_TYPE
    assert response.data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert canonical(response.data) == activesync_error("601", SCHEMA_UNAVAILABLE_MESSAGE)


@pytest.mark.parametrize("schema", [MOBILESYNC_RESPONSE_NS, OUTLOOK_RESPONSE_NS, "http://example.com/other-schema"])
def test_the_activesync_namespace_never_gets_outlook_settings(client: FlaskClient, admin: Admin, schema: str) -> None:
    admin.set("phone@example.net", imap=True)
    body = client.post(OUTLOOK_POX_PATH, data=activesync_request("phone@example.net", schema), content_type="text/xml")
    assert canonical(body.data) == activesync_error("601", SCHEMA_UNAVAILABLE_MESSAGE)


@pytest.mark.parametrize(
    ("inside", "message"),
    [
        (
            "<EMailAddress>a@example.net</EMailAddress>",
            "the request has no AcceptableResponseSchema element in its namespace",
        ),
        (
            f"<EMailAddress>a@example.net</EMailAddress><EMailAddress>b@example.net</EMailAddress>"
            f"<AcceptableResponseSchema>{MOBILESYNC_RESPONSE_NS}</AcceptableResponseSchema>",
            "the request has more than one EMailAddress element",
        ),
    ],
)
def test_a_malformed_activesync_request_gets_600_in_the_mobilesync_shape(
    client: FlaskClient, inside: str, message: str
) -> None:
    body = f'<Autodiscover xmlns="{MOBILESYNC_REQUEST_NS}"><Request>{inside}</Request></Autodiscover>'
    response = client.post(OUTLOOK_POX_PATH, data=body.encode(), content_type="text/xml")
    assert response.status_code == 200
    assert canonical(response.data) == activesync_error("600", message)


def test_activesync_for_a_foreign_domain_is_404_with_error_500_in_the_mobilesync_shape(client: FlaskClient) -> None:
    response = client.post(OUTLOOK_POX_PATH, data=activesync_request("a@gmail.com"), content_type="text/xml")
    assert response.status_code == 404
    assert error_code(response.data) == OUTLOOK_ERROR_ADDRESS_NOT_FOUND
    assert response_namespace(response.data) == MOBILESYNC_RESPONSE_NS
    assert b"gmail" not in response.data


def test_mobilesync_for_a_foreign_domain_is_still_404(client: FlaskClient) -> None:
    assert post(client, "a@gmail.com", schema=MOBILESYNC_RESPONSE_NS).status_code == 404


def _error_attributes(body: bytes) -> dict[str, str]:
    errors = [element for element in parse_answer(body).iter() if etree.QName(element).localname == "Error"]
    assert len(errors) == 1
    return dict(errors[0].attrib)


@pytest.mark.parametrize(
    "request_error",
    [
        pytest.param(lambda c: post(c, "alice@example.net"), id="501 disabled"),
        pytest.param(lambda c: post(c, "nobody@example.net"), id="501 unknown"),
        pytest.param(lambda c: post(c, "a@gmail.com"), id="500 foreign"),
        pytest.param(lambda c: post(c, "alice@example.net", schema="urn:x"), id="601"),
        pytest.param(lambda c: c.get(OUTLOOK_POX_PATH), id="600 GET"),
        pytest.param(
            lambda c: c.post(OUTLOOK_POX_PATH, data=activesync_request("alice@example.net"), content_type="text/xml"),
            id="601 ActiveSync",
        ),
    ],
)
def test_error_id_is_an_unsigned_integer_naming_the_server_and_time_follows_the_abnf(
    client: FlaskClient, admin: Admin, request_error: Callable[[FlaskClient], TestResponse]
) -> None:
    admin.set("alice@example.net", imap=False)
    attributes = _error_attributes(request_error(client).data)
    assert set(attributes) == {"Time", "Id"}
    assert attributes["Id"] == SERVER_ID  # the same whatever the account, the error and the request
    assert 0 <= int(attributes["Id"]) < 2**32 and attributes["Id"].isdigit()  # xs:unsignedInt
    assert _TIME_VALUE.match(attributes["Time"])


@pytest.mark.parametrize("path", POX_PATHS)
def test_get_on_the_pox_url_is_error_600(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert error_code(response.data) == OUTLOOK_ERROR_INVALID_REQUEST


def test_store_outage_is_503_with_retry_after(client: FlaskClient, app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(key: str) -> None:
        raise StoreUnavailable("database is gone")

    monkeypatch.setattr(app.extensions["autoconfig"].store, "switches", down)
    response = post(client, "alice@example.net")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert error_code(response.data) == "603"


# --- exchangelib, an independent client library, reads our answers --------------------------------------------


@pytest.mark.parametrize(("imap", "pop", "types"), SWITCH_CASES)
def test_exchangelib_reads_the_settings(
    client: FlaskClient, admin: Admin, imap: bool, pop: bool, types: list[str]
) -> None:
    Autodiscover = exchangelib_reader()
    admin.set("alice@example.net", imap=imap, pop=pop)
    body = client.post(OUTLOOK_POX_PATH, data=Autodiscover.payload("alice@example.net"), content_type="text/xml").data
    answer = Autodiscover.from_bytes(body)
    answer.raise_errors()  # a settings answer raises nothing
    assert (answer.response.account.type, answer.response.account.action) == ("email", "settings")
    seen = [
        (p.type, p.server, p.port, p.login_name, p.spa, p.ssl, p.auth_required, p.domain_required)
        for p in answer.response.account.protocols
    ]
    expected_hosts = {"IMAP": ("imap.example.net", 993), "POP3": ("pop.example.net", 995)}
    assert seen == [
        *((t, *expected_hosts[t], "alice@example.net", False, True, True, False) for t in types),
        ("SMTP", "smtp.example.net", 465, "alice@example.net", False, True, True, False),
        ("SMTP", "smtp.example.net", 587, "alice@example.net", False, True, True, False),
    ]


def test_exchangelib_reads_the_501_as_an_error(client: FlaskClient) -> None:
    Autodiscover = exchangelib_reader()
    from exchangelib.errors import AutoDiscoverFailed

    body = client.post(OUTLOOK_POX_PATH, data=Autodiscover.payload("bob@example.net"), content_type="text/xml").data
    answer = Autodiscover.from_bytes(body)
    assert answer.response is None
    assert answer.error_response.error.code == OUTLOOK_ERROR_NO_CONFIGURATION
    assert WEBMAIL_URL in answer.error_response.error.message
    with pytest.raises(AutoDiscoverFailed, match="501"):
        answer.raise_errors()


# --- JSON pointer -----------------------------------------------------------------------------------------------

JSON_URLS = [
    "/autodiscover/autodiscover.json?Email=alice@example.net&Protocol=AutodiscoverV1",
    "/Autodiscover/Autodiscover.json?Email=alice%40example.net&Protocol=autodiscoverv1&RedirectCount=1",
    "/autodiscover/autodiscover.json/v1.0/alice@example.net?Protocol=AutodiscoverV1",
    "/AutoDiscover/AutoDiscover.JSON/v1.0/Alice%40Example.net?Protocol=AutodiscoverV1",
    # Every segment before the address in any case, like the POX path.
    "/AutoDiscover/AutoDiscover.JSON/V1.0/alice@example.net?Protocol=AutodiscoverV1",
    "/AUTODISCOVER/AUTODISCOVER.JSON/V1.0/Alice@EXAMPLE.NET?Protocol=AutodiscoverV1",
    "/autodiscover/autodiscover.json/V1.0/alice%40example.net?Protocol=AutodiscoverV1",
]


@pytest.mark.parametrize("url", JSON_URLS)
@pytest.mark.parametrize("enabled", [True, False])
def test_json_points_to_the_https_pox_url(client: FlaskClient, admin: Admin, url: str, enabled: bool) -> None:
    admin.set("alice@example.net", imap=enabled)
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.data) == {
        "Protocol": AUTODISCOVER_V1,
        "Url": "https://autoconfig.example.net/autodiscover/autodiscover.xml",
    }


@pytest.mark.parametrize(
    "query", ["Protocol=ActiveSync", "Protocol=Ews", "Protocol=", "", "Protocol=AutodiscoverV1&Protocol=Ews"]
)
def test_json_other_protocols_are_400_invalid_protocol(client: FlaskClient, query: str) -> None:
    response = client.get(f"/autodiscover/autodiscover.json?Email=alice@example.net&{query}")
    assert response.status_code == 400
    body = json.loads(response.data)
    assert body["ErrorCode"] == OUTLOOK_JSON_ERROR_PROTOCOL and body["ErrorMessage"]
    assert "Ews" not in body["ErrorMessage"]


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/autodiscover/autodiscover.json?Email=a@gmail.com&Protocol=AutodiscoverV1", 404),
        ("/autodiscover/autodiscover.json/v1.0/a@gmail.com?Protocol=AutodiscoverV1", 404),
        ("/autodiscover/autodiscover.json?Email=%3Cscript%3E@example.net&Protocol=AutodiscoverV1", 400),
        ("/autodiscover/autodiscover.json?Protocol=AutodiscoverV1", 400),
        ("/autodiscover/autodiscover.json/v1.0/no-at-sign?Protocol=AutodiscoverV1", 400),
    ],
)
def test_json_bad_or_foreign_addresses(client: FlaskClient, url: str, status: int) -> None:
    response = client.get(url)
    assert response.status_code == status
    body = json.loads(response.data)
    assert set(body) == {"ErrorCode", "ErrorMessage"}
    assert "script" not in response.get_data(as_text=True) and "gmail" not in response.get_data(as_text=True)


# --- CLI and config ---------------------------------------------------------------------------------------------


def test_render_outlook_prints_what_outlook_gets(cli: Callable[..., Result], client: FlaskClient) -> None:
    declined = cli("render", "outlook", "alice@example.net")
    assert declined.exit_code == 1
    assert without_time(declined.output.encode()) == without_time(post(client, "alice@example.net").data)
    cli("accounts", "set", "alice@example.net", "--imap", "on")
    result = cli("render", "outlook", "alice@example.net")
    assert result.exit_code == 0
    assert result.output.encode() == post(client, "alice@example.net").data
    assert [p.type for p in protocols(result.output.encode())] == ["IMAP", "SMTP", "SMTP"]


@pytest.mark.parametrize(("size", "status"), [(1024, 200), (1025, 413)])
def test_body_cap_is_configurable_and_exact(
    config_data: dict[str, Any], make_app: MakeApp, size: int, status: int
) -> None:
    config_data["outlook"] = {"max_body_bytes": 1024}
    client = make_app(config_data).test_client()
    body = pox_request("alice@example.net")
    padded = body.replace(b"<Request>", b"<Request>" + b" " * (size - len(body)))
    assert len(padded) == size
    response = client.post(OUTLOOK_POX_PATH, data=padded, content_type="text/xml")
    assert response.status_code == status
    assert error_code(response.data) == (OUTLOOK_ERROR_NO_CONFIGURATION if status == 200 else "600")


@pytest.mark.parametrize(
    ("value", "message"),
    [(100, "between 1024 and 1048576"), (2_000_000, "between 1024 and 1048576"), ("16k", "expected an integer")],
)
def test_bad_body_caps_are_named(
    config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path], value: object, message: str
) -> None:
    config_data["outlook"] = {"max_body_bytes": value}
    with pytest.raises(ConfigError, match=f"outlook.max_body_bytes: .*{message}"):
        load(write_config(config_data), env={})


def test_unknown_outlook_option_is_refused(
    config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]
) -> None:
    config_data["outlook"] = {"max_body": 1}
    with pytest.raises(ConfigError, match=r"outlook\.max_body: unknown option"):
        load(write_config(config_data), env={})


SETTINGS = ["IMAP", "SMTP", "SMTP"]
# What docs/clients.md promises: text/xml or application/xml in UTF-8 is read, and a body
# without any Content-Type is read as XML too; any other type gets Error 600.
REQUEST_CONTENT_TYPES = [
    ("text/xml", SETTINGS),
    ("application/xml", SETTINGS),
    ("text/xml; charset=utf-8", SETTINGS),
    ("Application/XML; charset=UTF-8", SETTINGS),
    (None, SETTINGS),
    ("text/plain", OUTLOOK_ERROR_INVALID_REQUEST),
    ("application/json", OUTLOOK_ERROR_INVALID_REQUEST),
    ("application/x-www-form-urlencoded", OUTLOOK_ERROR_INVALID_REQUEST),
    ("text/xml; charset=iso-8859-1", OUTLOOK_ERROR_INVALID_REQUEST),
]


@pytest.mark.parametrize(("content_type", "answer"), REQUEST_CONTENT_TYPES)
def test_which_request_content_types_are_read(
    client: FlaskClient, admin: Admin, content_type: str | None, answer: list[str] | str
) -> None:
    admin.set("alice@example.net", imap=True)
    body = pox_request("alice@example.net")
    environ = {} if content_type is None else {"CONTENT_TYPE": content_type}
    response = client.post(OUTLOOK_POX_PATH, data=body, environ_overrides=environ)
    assert response.request.headers.get("Content-Type") == content_type
    assert response.status_code == 200
    if isinstance(answer, list):
        assert [p.type for p in protocols(response.data)] == answer
    else:
        assert error_code(response.data) == answer
