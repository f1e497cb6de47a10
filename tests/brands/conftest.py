"""Fixtures of the brand tests: every test here runs on the two-brand config (tests/support/brands.py).

Only ``config_data`` differs from tests/conftest.py: its ``config_path``, ``app``, ``client``,
``admin`` and ``cli`` are built on whatever ``config_data`` is, so they serve the two brands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.brands import brands_config


@pytest.fixture
def config_data(tmp_path: Path) -> dict[str, Any]:
    return brands_config(tmp_path)
