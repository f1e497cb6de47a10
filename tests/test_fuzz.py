"""Property tests: whatever arrives in the query string, the answer is a
well-formed 2xx/4xx, never a 500 and never an echo of the input."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from urllib.parse import quote_from_bytes

import pytest
import tomli_w
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from autoconfig import create_app
from autoconfig.config import load
from autoconfig.spec import AUTODISCOVER_BASE_NS, OUTLOOK_REQUEST_NS, OUTLOOK_RESPONSE_NS, THUNDERBIRD_PATHS
from tests.conftest import BASE_CONFIG

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ALLOWED = {200, 400, 404, 414}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    directory = tmp_path_factory.mktemp("fuzz")
    data = copy.deepcopy(BASE_CONFIG)
    data["store"]["url"] = f"sqlite:///{directory}/accounts.sqlite3"
    data["limits"] = {"client_rate": 0}
    path = directory / "autoconfig.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    app = create_app(load(path, env={}))
    app.extensions["autoconfig"].store.update("fuzz@example.net", {"imap": True}, "test")
    yield app


@pytest.fixture
def fuzz_client(fuzz_app: Flask) -> FlaskClient:
    return fuzz_app.test_client()


def check(status: int, body: bytes) -> None:
    assert status in ALLOWED
    if status == 200:
        etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    assert b"Traceback" not in body


addresses = st.one_of(
    st.text(max_size=300),
    st.builds(lambda local, domain: f"{local}@{domain}", st.text(max_size=70), st.text(max_size=70)),
    st.sampled_from(["fuzz@example.net", "FUZZ@EXAMPLE.NET"]).map(lambda a: a),
)


@FUZZ
@given(address=addresses, path=st.sampled_from(THUNDERBIRD_PATHS))
def test_any_address(fuzz_client: FlaskClient, address: str, path: str) -> None:
    response = fuzz_client.get(path, query_string={"emailaddress": address})
    check(response.status_code, response.data)
    if "<" in address:
        assert address.encode() not in response.data, "input with markup is never echoed"


@FUZZ
@given(raw=st.binary(max_size=600))
def test_any_raw_query_string(fuzz_client: FlaskClient, raw: bytes) -> None:
    response = fuzz_client.get(THUNDERBIRD_PATHS[0], query_string="emailaddress=" + quote_from_bytes(raw, safe="@&=%"))
    check(response.status_code, response.data)


def pox(address: str) -> bytes:
    """A well-formed Outlook request carrying ``address`` (escaped by lxml, as a client would)."""
    ns = OUTLOOK_REQUEST_NS
    root = etree.Element(f"{{{ns}}}Autodiscover", nsmap={None: ns})
    request = etree.SubElement(root, f"{{{ns}}}Request")
    etree.SubElement(request, f"{{{ns}}}EMailAddress").text = address
    etree.SubElement(request, f"{{{ns}}}AcceptableResponseSchema").text = OUTLOOK_RESPONSE_NS
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def check_pox(status: int, content_type: str, body: bytes) -> None:
    assert status in {200, 404, 413}, status
    assert content_type.startswith("text/xml")
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    assert root.tag == f"{{{AUTODISCOVER_BASE_NS}}}Autodiscover"


xml_safe_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\ufffe\uffff"), max_size=300
).filter(lambda t: all(c in "\t\n\r" or ord(c) >= 0x20 for c in t))


@FUZZ
@given(address=st.one_of(xml_safe_text, st.sampled_from(["fuzz@example.net", "a@other.example"])))
def test_any_address_in_a_pox_body(fuzz_client: FlaskClient, address: str) -> None:
    response = fuzz_client.post("/autodiscover/autodiscover.xml", data=pox(address), content_type="text/xml")
    check_pox(response.status_code, response.content_type, response.data)


@FUZZ
@given(body=st.one_of(st.binary(max_size=2000), st.text(max_size=2000).map(str.encode)))
def test_any_pox_body(fuzz_client: FlaskClient, body: bytes) -> None:
    response = fuzz_client.post("/autodiscover/autodiscover.xml", data=body, content_type="text/xml")
    check_pox(response.status_code, response.content_type, response.data)
