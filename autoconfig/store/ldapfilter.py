"""``[store.ldap]`` settings and the filter-template check, without the LDAP driver.

The config reader uses these at start; the driver (python-ldap) is loaded
only when an ``ldap`` source is opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PARAMETERS = ("address", "local_part", "domain")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True)
class LDAPSettings:
    """``[store.ldap]``, checked; the filter already expanded from a preset when one is named."""

    bind_dn: str
    password: str = field(repr=False)
    base: str
    filter: str
    attribute: str
    imap_values: tuple[str, ...]
    pop_values: tuple[str, ...]
    starttls: bool = False
    ca_file: str | None = None
    preset: str | None = None


def check_filter(template: str) -> str:
    """Reject, at config time, a template that cannot be one filter with our parameters."""
    text = template.strip()
    if not (text.startswith("(") and text.endswith(")")):
        raise ValueError("must be one LDAP filter in parentheses, e.g. (&(objectClass=mailUser)(mail=%(address)s))")
    depth = 0
    for char in _PLACEHOLDER.sub("", text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if depth != 0:
        raise ValueError("has unbalanced parentheses")
    names = _PLACEHOLDER.findall(text)
    unknown = sorted(set(names) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"unknown parameter %({unknown[0]})s; use %(address)s, %(local_part)s or %(domain)s")
    if not names:
        raise ValueError("must use the parameter %(address)s (or %(local_part)s and %(domain)s)")
    if "%" in _PLACEHOLDER.sub("", text).replace("%%", ""):
        raise ValueError("a literal % must be written %%")
    return text
