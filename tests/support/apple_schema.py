"""Validate Apple configuration profiles against Apple's device-management schema.

The schema is Apple's own machine-readable description of profile keys
(github.com/apple/device-management, copied unchanged into shared/schemas/apple
and from there into tests/data/apple_schema; see SOURCE.md there). Checking against it rather than against our memory of
Apple's documentation catches misspelled keys and wrong plist types, which a
device rejects or silently ignores without telling the user why.

Only TopLevel, CommonPayloadKeys and com.apple.mail.managed are held. A
PayloadContent item of any other type is checked for the common payload keys
only; its own keys are accepted unchecked.
"""

import os
import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml

Spec = dict[str, Any]
"""One entry of a schema's ``payloadkeys`` or ``subkeys`` list, as read from YAML."""

SCHEMA_DIR_ENV = "AUTOCONFIG_APPLE_SCHEMA_DIR"
_PAYLOAD_SCHEMA_FILES = ("com.apple.mail.managed.yaml",)

# The Python types plistlib reads and writes for each schema type.
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "<string>": (str,),
    "<integer>": (int,),
    "<real>": (float,),
    "<boolean>": (bool,),
    "<date>": (datetime,),
    "<data>": (bytes, bytearray),
    "<array>": (list, tuple),
    "<dictionary>": (dict,),
}
# Key attributes this module enforces on a profile.
_CHECKED_ATTRIBUTES = frozenset({"key", "type", "presence", "rangelist", "format", "subkeys"})
# Key attributes that document a key, or depend on the target OS and enrollment,
# which the profile alone does not determine.
_UNCHECKED_ATTRIBUTES = frozenset(
    {"title", "content", "default", "supportedOS", "combinetype", "subkeytype", "assettypes"}
)
# Stands in for the keys of a payload type we hold no schema for.
_ANY_KEY: Spec = {"key": "ANY", "type": "<any>"}


VENDORED_SCHEMA_DIR = Path(__file__).resolve().parents[1] / "data" / "apple_schema"
# The team's copy beside the repository, when the checkout has one; the vendored copy must equal it.
SHARED_SCHEMA_DIR = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "apple"


def schema_dir() -> Path:
    """Where the schema YAML lives: the copy in tests/data unless overridden."""
    override = os.environ.get(SCHEMA_DIR_ENV)
    if override:
        return Path(override)
    return VENDORED_SCHEMA_DIR


def validate_profile(profile: dict[str, Any]) -> list[str]:
    """Return every way ``profile`` departs from the schema, each prefixed by its key path."""
    directory = schema_dir()
    problems: list[str] = []
    _check_dict(profile, _load(directory / "TopLevel.yaml")["payloadkeys"], "", problems)
    payloads = profile.get("PayloadContent")
    items: list[tuple[str, dict[str, Any]]] = [("", profile)]
    if isinstance(payloads, (list, tuple)):
        for index, payload in enumerate(payloads):
            # A non-dictionary item was already reported against TopLevel's PayloadContentItem.
            if isinstance(payload, dict):
                path = f"PayloadContent[{index}]"
                _check_dict(payload, _payload_keys(payload.get("PayloadType"), directory), path, problems)
                items.append((path, payload))
    _check_unique(items, "PayloadIdentifier", problems)
    _check_unique(items, "PayloadUUID", problems)
    return problems


def assert_valid_profile(profile: dict[str, Any]) -> None:
    """Raise AssertionError listing all problems, so one test run shows every mistake."""
    __tracebackhide__ = True
    problems = validate_profile(profile)
    if problems:
        raise AssertionError(
            "profile does not match Apple's schema:\n" + "\n".join(f"  {problem}" for problem in problems)
        )


@cache
def _load(path: Path) -> dict[str, Any]:
    """Read one schema file, refusing one that uses constraints we would silently skip."""
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    _check_supported(document["payloadkeys"], path.name)
    return document


def _check_supported(specs: list[Spec], source: str) -> None:
    """Fail loudly if a schema update brings attributes (e.g. range, subtype) not enforced here.

    Otherwise a refreshed schema could add a constraint that every profile would
    "pass" without it ever being checked.
    """
    for spec in specs:
        unknown = set(spec) - _CHECKED_ATTRIBUTES - _UNCHECKED_ATTRIBUTES
        if spec["type"] != "<any>" and spec["type"] not in _PYTHON_TYPES:
            unknown.add(f"type {spec['type']}")
        if "subkeys" in spec and spec["type"] not in ("<array>", "<dictionary>"):
            unknown.add(f"subkeys on {spec['type']}")
        if "format" in spec and spec["type"] != "<string>":
            unknown.add(f"format on {spec['type']}")
        if unknown:
            raise ValueError(f"{source}: key {spec['key']} uses {sorted(unknown)}, which apple_schema does not check")
        _check_supported(spec.get("subkeys", []), source)


def _payload_keys(payload_type: object, directory: Path) -> list[Spec]:
    """The keys a PayloadContent item may hold, chosen by its PayloadType."""
    common: list[Spec] = _load(directory / "CommonPayloadKeys.yaml")["payloadkeys"]
    for name in _PAYLOAD_SCHEMA_FILES:
        document = _load(directory / name)
        if document["payload"]["payloadtype"] == payload_type:
            own: list[Spec] = document["payloadkeys"]
            return common + own
    return [*common, _ANY_KEY]


def _check_dict(value: dict[Any, Any], specs: list[Spec], path: str, problems: list[str]) -> None:
    """Check required keys are present and every key present is declared (``ANY`` admits any name)."""
    by_key = {spec["key"]: spec for spec in specs}
    wildcard = by_key.pop("ANY", None)
    for key, spec in by_key.items():
        if spec.get("presence") == "required" and key not in value:
            problems.append(f"{_join(path, key)}: required key missing")
    for key, item in value.items():
        item_spec = by_key.get(key, wildcard)
        if item_spec is None:
            problems.append(f"{_join(path, key)}: key not in schema")
        else:
            _check_value(item, item_spec, _join(path, key), problems)


def _check_value(value: object, spec: Spec, path: str, problems: list[str]) -> None:
    """Check one value's type, then its rangelist, format and contents."""
    kind = spec["type"]
    if kind == "<any>":
        return
    # bool is a subclass of int, but plistlib writes it as <true/>, not <integer>.
    if not isinstance(value, _PYTHON_TYPES[kind]) or (isinstance(value, bool) and kind != "<boolean>"):
        problems.append(f"{path}: expected {kind.strip('<>')}, got {type(value).__name__}")
        return
    if "rangelist" in spec and value not in spec["rangelist"]:
        problems.append(f"{path}: {value!r} is not one of {spec['rangelist']!r}")
    # Apple's formats are anchored already; fullmatch also stops "$" accepting a trailing newline.
    if "format" in spec and not re.fullmatch(spec["format"], str(value)):
        problems.append(f"{path}: {value!r} does not match format {spec['format']}")
    if "subkeys" not in spec:
        return
    if isinstance(value, dict):
        _check_dict(value, _dictionary_keys(spec), path, problems)
    elif isinstance(value, (list, tuple)):
        # An array's single subkey describes every item; its name is only a placeholder.
        for index, item in enumerate(value):
            _check_value(item, spec["subkeys"][0], f"{path}[{index}]", problems)


def _dictionary_keys(spec: Spec) -> list[Spec]:
    """The keys a dictionary may hold.

    TopLevel's ConsentText nests its language -> text wildcard in a placeholder
    ``ConsentTextItem`` dictionary, the way arrays name their item, although the
    key's own description (and real profiles) put the languages directly in
    ConsentText. So a lone dictionary subkey named ``<key>Item`` is read as such
    a placeholder rather than as a literal key.
    """
    subkeys: list[Spec] = spec["subkeys"]
    if len(subkeys) == 1 and subkeys[0]["key"] == f"{spec['key']}Item" and subkeys[0]["type"] == "<dictionary>":
        inner: list[Spec] = subkeys[0]["subkeys"]
        return inner
    return subkeys


def _check_unique(items: list[tuple[str, dict[str, Any]]], key: str, problems: list[str]) -> None:
    """Report repeats of ``key`` across the profile and its payloads.

    CommonPayloadKeys requires PayloadIdentifier to be unique within the profile
    and PayloadUUID to be globally unique: devices match payloads by them when a
    profile is replaced.
    """
    seen: dict[str, str] = {}
    for path, item in items:
        value = item.get(key)
        if not isinstance(value, str):  # missing or mistyped: reported already
            continue
        where = _join(path, key)
        if value in seen:
            problems.append(f"{where}: {value!r} is also used by {seen[value]}")
        else:
            seen[value] = where


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)
