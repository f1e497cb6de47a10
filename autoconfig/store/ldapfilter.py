"""``[store.ldap]`` settings and the filter-template check, without the LDAP driver.

The config reader uses these at start; the driver (python-ldap) is loaded
only when an ``ldap`` source is opened.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .source import PLACEHOLDER, check_parameters


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
    for char in PLACEHOLDER.sub("", text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if depth != 0:
        raise ValueError("has unbalanced parentheses")
    check_parameters(text)
    return text
