"""The README and the pages in docs/ hold together: every link between them resolves.

A link is ``[text](target)`` (its text may wrap over lines) or a reference
definition ``[name]: target``, outside code.  A relative target must name a
file or directory of the repository, and its ``#anchor`` a heading of that
page (or of the same page, for ``#anchor`` alone), spelt as GitHub spells
heading anchors.  Every page in docs/ is on the README's map.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gunicorn import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
INLINE_LINK = re.compile(r"(?<!\\)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def without_code(text: str) -> str:
    """The text with fenced blocks blanked (their lines kept, so line numbers hold) and inline code removed."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE_CODE.sub(lambda m: "x" * len(m.group(0).split("\n")[0]) + "\n" * m.group(0).count("\n"), text)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lowercased, punctuation but - and _ dropped,
    spaces as -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    text = text.replace("`", "").lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = anchor(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> Iterator[tuple[int, str]]:
    """(line, target) of every link on ``page`` outside code."""
    text = without_code(page.read_text())
    for pattern in (INLINE_LINK, REFERENCE):
        for match in pattern.finditer(text):
            yield text.count("\n", 0, match.start(1)) + 1, match.group(1)


LINKS = [(page, line, target) for page in PAGES for line, target in links(page) if not EXTERNAL.match(target)]


def test_the_docs_have_links_to_check() -> None:
    assert len(PAGES) > 1 and len(LINKS) > len(PAGES)


@pytest.mark.parametrize(("page", "line", "target"), LINKS, ids=[f"{p.relative_to(ROOT)}:{n} {t}" for p, n, t in LINKS])
def test_every_link_in_the_readme_and_docs_resolves(page: Path, line: int, target: str) -> None:
    where = f"{page.relative_to(ROOT)}:{line}: {target}"
    path, _, fragment = target.partition("#")
    goal = (page.parent / path).resolve() if path else page
    assert goal.exists(), f"{where}: no such file"
    assert goal.is_relative_to(ROOT), f"{where}: outside the repository"
    if fragment:
        assert goal.suffix == ".md", f"{where}: an anchor into a file that is not a page"
        assert fragment in anchors(goal), f"{where}: no such heading"


def test_every_docs_page_is_on_the_readme_map() -> None:
    listed = {target.partition("#")[0] for _, target in links(ROOT / "README.md")}
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in listed, f"docs/{page.name} is not linked from README.md"


def test_the_anchor_rule() -> None:
    assert anchor("Enforcing the switch at login (Dovecot)") == "enforcing-the-switch-at-login-dovecot"
    assert anchor("The records to publish: `dns records`") == "the-records-to-publish-dns-records"
    assert anchor("One mailbox, one key") == "one-mailbox-one-key"
    assert anchor("The customer's story, set up end to end") == "the-customers-story-set-up-end-to-end"
