"""Fixtures of the brand tests: every test here runs on the two-brand config (tests/support/brands.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.admin import Admin
from tests.support.brands import brands_config


@pytest.fixture
def config_data(tmp_path: Path) -> dict[str, Any]:
    return brands_config(tmp_path)


@pytest.fixture
def brands_app(make_app: Callable[..., Flask], config_data: dict[str, Any]) -> Flask:
    return make_app(config_data)


@pytest.fixture
def client(brands_app: Flask) -> FlaskClient:
    return brands_app.test_client()


@pytest.fixture
def admin(client: FlaskClient) -> Admin:
    return Admin(client)
