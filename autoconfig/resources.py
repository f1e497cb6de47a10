"""Where the Jinja templates and the static files are.

The design card keeps ``templates/`` and ``static/`` at the repository's
top level, beside the package; a wheel carries them inside the package
(pyproject.toml's force-include), because an installed package has no
"beside".  A clone and an installed wheel must both work, so look inside
the package first.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> str:
    """The directory ``name`` (``templates`` or ``static``) of this installation."""
    inside = PACKAGE / name
    return str(inside if inside.is_dir() else PACKAGE.parent / name)
