"""The types of tests/conftest.py's factory fixtures, for test functions' annotations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import Result
from flask import Flask

from .gunicorn import GunicornServer

MakeApp = Callable[..., Flask]  # make_app(data, name=...)
MakeServer = Callable[..., GunicornServer]  # make_server(config, env=..., workers=..., ...)
WriteConfig = Callable[..., Path]  # write_config(data, name=...)
Cli = Callable[..., Result]  # cli(*args, input=...)
