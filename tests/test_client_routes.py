"""What every client format does alike, walked over the route table (tests/support/routes.py):
each row is one request a mail program or a person sends, so a format added there is held to it."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.support.outlook import error_code
from tests.support.promises import OUTLOOK_ERROR_ADDRESS_NOT_FOUND
from tests.support.routes import ADDRESSED, Route


@pytest.mark.parametrize("route", ADDRESSED, ids=lambda route: route.id)
def test_a_foreign_domain_is_404_and_never_echoed(client: FlaskClient, route: Route) -> None:
    target, body = route.asking_for("alice@gmail.com")
    response = client.open(target, method=route.method, data=body, headers=route.headers)
    assert response.status_code == 404
    assert b"gmail" not in response.data
    if route.errors == "pox":
        assert error_code(response.data) == OUTLOOK_ERROR_ADDRESS_NOT_FOUND
