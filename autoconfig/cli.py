"""The admin command line: ``autoconfig ...`` (the package's command; also ``python -m autoconfig``).

Same config, same store, same policy gate and renderers as the web app, so
what ``render`` prints is byte for byte what a client would get.
"""

from __future__ import annotations

import codecs
import csv
import getpass
import io
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import create_service
from . import dovecot_snippet as snippet
from .address import Address, AddressError, normalise_domain, parse_address
from .config import ENV_DOVECOT_HEADER, Config, ConfigError, load
from .dns import make_resolver
from .dns import records as dns_records_mod
from .dns.check import check_domains
from .errors import ClientError, NotServed
from .formats import DOCUMENTS, outlook, thunderbird
from .service import Service, declined_message
from .signing import load_signers
from .spec import OUTLOOK_ERROR_NO_CONFIGURATION
from .store import Account, ReadOnlyStore, StoreError, inspect_store
from .values import Provider, Switches

if TYPE_CHECKING:
    from _csv import Reader

ON_OFF = click.Choice(["on", "off"])
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
CSV_HEADER = ["address", "imap", "pop"]
# Exit statuses of the checks (check-config, dns check): 1 something is wrong, 3 something could not be checked.
EXIT_FINDINGS = 1
EXIT_COULD_NOT_CHECK = 3


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


class Context:
    """Loads the config and opens the store only when a command needs them."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._service: Service | None = None

    @property
    def service(self) -> Service:
        if self._service is None:
            try:
                self._service = create_service(load(self.config_path))
            except (ConfigError, StoreError) as exc:
                raise click.ClickException(str(exc)) from None
        return self._service

    def close(self) -> None:
        """Close the store a command opened: its connections end with the command, not at exit."""
        if self._service is not None:
            self._service.store.close()
            self._service = None


pass_context = click.make_pass_decorator(Context)


def _load_config(ctx: Context) -> Config:
    """The config alone, for the commands that never open the store (check-config, dns)."""
    try:
        return load(ctx.config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _address(address: str) -> Address:
    try:
        return parse_address(address)
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint="ADDRESS") from None


def _key(address: str) -> str:
    return _address(address).key


def _describe(account: Account) -> str:
    def state(on: bool, change: object) -> str:
        word = "on" if on else "off"
        if change is None:
            return word
        return f"{word} (since {change.at.isoformat()} by {change.by})"  # type: ignore[attr-defined]

    return (
        f"{account.address}\n"
        f"  imap: {state(account.switches.imap, account.imap_changed)}\n"
        f"  pop:  {state(account.switches.pop, account.pop_changed)}"
    )


class _EchoHandler(logging.Handler):
    """Log records to whatever click's standard error is at the time, as plain lines.

    A command that opens the store may migrate it; the migration's report
    (store/rekey.py: every merged mailbox) and the store's warnings are
    then part of the command's output, once each.
    """

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def _log_to_stderr() -> None:
    logger = logging.getLogger("autoconfig")
    if not any(isinstance(handler, _EchoHandler) for handler in logger.handlers):
        handler = _EchoHandler(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


@click.group()
@click.option(
    "--config",
    "config_path",
    envvar="AUTOCONFIG_CONFIG",
    type=click.Path(dir_okay=False),
    help="Config file (default: $AUTOCONFIG_CONFIG or config/autoconfig.toml).",
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Mail client auto-configuration service: admin commands."""
    _log_to_stderr()
    ctx.obj = Context(config_path)
    ctx.call_on_close(ctx.obj.close)


@main.command("check-config")
@pass_context
def check_config(ctx: Context) -> None:
    """Check the config file, the signing files and the store, changing nothing.

    Says OK on its last line, once everything is checked.  Exit status: 0 OK;
    1 the service would refuse to start; 3 the config is OK but the store
    cannot be reached now (the service starts anyway, answers 503 until the
    store is back, and creates or migrates its tables then).
    """
    config = _load_config(ctx)
    try:
        signers = load_signers(config)
        store = inspect_store(config.store)
    except (ConfigError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    for provider in config.providers:
        click.echo(f"  provider: {provider.id} ({provider.display_name})")
        click.echo(f"  domains:  {', '.join(provider.domains)}")
        for server in provider.servers.every:
            click.echo(f"  {server.protocol:5} {server.host}:{server.port} {server.socket}")
        click.echo(f"  webmail:  {provider.webmail_url}")
        if provider.mx_hosts:
            click.echo(f"  hosted customer domains by MX: {', '.join(provider.mx_hosts)}")
        signer = signers.get(provider.id)
        signed = f"signed by {signer.subject} until {signer.expires:%Y-%m-%d}" if signer else "unsigned"
        click.echo(f"  apple profiles: {signed}")
    if store.unreachable is None:
        click.echo(f"  store:    {store.summary}")
    else:
        click.echo(f"  store:    {store.summary}, cannot be reached now: {store.unreachable}")
    for line in store.details:
        click.echo(f"    {line}")
    click.echo(f"  admin API: {'enabled' if config.admin_tokens else 'disabled (no token)'}")
    if store.unreachable is not None:
        # Not a refusal: a node started during a database outage comes up and answers 503 until it is back.
        click.echo(f"{config.source}: OK, but the store cannot be reached now; the service would start and answer 503")
        sys.exit(EXIT_COULD_NOT_CHECK)
    click.echo(f"{config.source}: OK")


@main.group()
def accounts() -> None:
    """Per-account POP/IMAP switches."""


@accounts.command("set")
@click.argument("address")
@click.option("--imap", type=ON_OFF, help="Turn IMAP on or off.")
@click.option("--pop", type=ON_OFF, help="Turn POP on or off.")
@pass_context
def accounts_set(ctx: Context, address: str, imap: str | None, pop: str | None) -> None:
    """Switch IMAP and/or POP for ADDRESS."""
    changes = {name: value == "on" for name, value in (("imap", imap), ("pop", pop)) if value is not None}
    if not changes:
        raise click.UsageError("give --imap on|off and/or --pop on|off")
    parsed = _address(address)
    try:
        ctx.service.check_storable(parsed)
        account = ctx.service.store.update(parsed.key, changes, _actor())
    except NotServed as exc:
        raise click.ClickException(exc.message) from None
    except (ReadOnlyStore, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_describe(account))


@accounts.command("show")
@click.argument("address")
@pass_context
def accounts_show(ctx: Context, address: str) -> None:
    """Show ADDRESS's switches (an address never seen has both off)."""
    try:
        account = ctx.service.store.get(_key(address))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_describe(account))


@accounts.command("list")
@click.option("--domain", help="Only this domain's accounts.")
@pass_context
def accounts_list(ctx: Context, domain: str | None) -> None:
    """List stored accounts, one per line: address, imap, pop."""
    if domain is not None:
        try:
            domain = parse_address(f"x@{domain}").domain
        except AddressError as exc:
            raise click.BadParameter(str(exc), param_hint="--domain") from None
    try:
        for account in ctx.service.store.accounts(domain):
            click.echo(
                f"{account.address}\timap={'on' if account.switches.imap else 'off'}"
                f"\tpop={'on' if account.switches.pop else 'off'}"
            )
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@accounts.command("export")
@pass_context
def accounts_export(ctx: Context) -> None:
    """Write every stored account as CSV (address,imap,pop) to standard output."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    try:
        # Opened before the header is written, so a source that cannot list prints no partial file.
        accounts = ctx.service.store.accounts()
        writer.writerow(CSV_HEADER)
        for account in accounts:
            writer.writerow([account.address, _word(account.switches.imap), _word(account.switches.pop)])
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


def _word(value: bool) -> str:
    return "on" if value else "off"


def _flag(value: str, where: str, column: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise click.ClickException(f"{where}: column {column}: expected on/off, true/false, yes/no or 1/0")


# What the csv module says, and what the person who made the file can act on.
_CSV_ERRORS = (
    ("field larger than field limit", f"a field is longer than {csv.field_size_limit()} characters"),
    ("unexpected end of data", "a quoted field is never closed"),
    ("new-line character seen in unquoted field", "a carriage return inside a field; end lines with LF or CRLF"),
    ("',' expected after '\"'", 'a quote inside a quoted field must be doubled ("")'),
)


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    return next((said for start, said in _CSV_ERRORS if text.startswith(start)), text)


def _text_lines(name: str, data: Iterable[bytes]) -> Iterator[str]:
    """The file's lines, decoded as UTF-8; a UTF-8 byte-order mark before the header is dropped.

    Spreadsheets save "CSV UTF-8" with that mark, and it carries no data.
    A UTF-16 or UTF-32 mark means another encoding altogether, and any
    byte that is not UTF-8 stops the import with its line and position:
    guessing an encoding could write an address that is not the user's.
    """
    for number, line in enumerate(data, 1):
        if number == 1:
            if line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            elif line.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                raise click.ClickException(
                    f"{name}: line 1: the file starts with a UTF-16 or UTF-32 byte-order mark; save it as UTF-8 CSV"
                )
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise click.ClickException(
                f"{name}: line {number}: byte {exc.start + 1} (0x{line[exc.start]:02x}) is not UTF-8; "
                "save the file as UTF-8"
            ) from None


def _numbered_rows(name: str, reader: Reader) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each row of ``reader``; a malformed row is named by its lines."""
    end = 0  # the last line of the previous row
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            lines = f"line {end + 1}" if reader.line_num <= end + 1 else f"lines {end + 1}-{reader.line_num}"
            raise click.ClickException(f"{name}: {lines}: {_csv_problem(exc)}") from None
        yield end + 1, row
        end = reader.line_num


def read_switches_csv(
    name: str, data: Iterable[bytes], check: Callable[[Address], None] | None = None
) -> Iterator[tuple[str, Switches]]:
    """Rows of an ``address,imap,pop`` file (bytes, line by line); the first problem stops everything, named.

    ``check`` may refuse an address (``Service.check_storable``) with a ``ClientError``.
    """
    rows = _numbered_rows(name, csv.reader(_text_lines(name, data), strict=True))
    header = next(rows, None)
    if header is None:
        raise click.ClickException(f"{name}: line 1: the file is empty; the header must be {','.join(CSV_HEADER)}")
    _check_header(name, header[1])
    seen: dict[str, int] = {}
    for line, row in rows:
        where = f"{name}: line {line}"
        if not row:
            continue
        if len(row) != 3:
            raise click.ClickException(f"{where}: expected 3 columns, found {len(row)}")
        try:
            address = parse_address(row[0].strip())
            if check is not None:
                check(address)
        except AddressError as exc:
            raise click.ClickException(f"{where}: {exc}") from None
        except ClientError as exc:
            raise click.ClickException(f"{where}: {exc.message}") from None
        key = address.key
        if key in seen:
            raise click.ClickException(f"{where}: {key} already appears on line {seen[key]}")
        seen[key] = line
        yield key, Switches(imap=_flag(row[1], where, "imap"), pop=_flag(row[2], where, "pop"))


def _check_header(name: str, header: list[str]) -> None:
    if [h.strip().lower() for h in header] == CSV_HEADER:
        return
    if not header:
        raise click.ClickException(f"{name}: line 1: the line is empty; the header must be {','.join(CSV_HEADER)}")
    found = ",".join(header)
    hint = " (NUL bytes: is the file UTF-16?)" if "\x00" in found else ""
    raise click.ClickException(f"{name}: line 1: the header must be {','.join(CSV_HEADER)}; found {found[:60]!a}{hint}")


@accounts.command("import")
@click.argument("file", type=click.File("rb"))
@pass_context
def accounts_import(ctx: Context, file: io.BufferedReader) -> None:
    """Set switches from a CSV file (address,imap,pop) in UTF-8: every row, or none."""
    name = Path(file.name).name
    # Validate the whole file before the transaction starts, so a bad row costs no lock time.
    rows = list(read_switches_csv(file.name, file, ctx.service.check_storable))
    try:
        count = ctx.service.store.import_switches(rows, f"import:{name}")
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"imported {len(rows)} rows from {file.name}: {count} created or changed, "
        f"{len(rows) - count} already as in the file"
    )


@main.command("render")
@click.argument("client", type=click.Choice(["thunderbird", "outlook", "apple"]))
@click.argument("address")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Write to this file, not stdout.")
@pass_context
def render(ctx: Context, client: str, address: str, out: str | None) -> None:
    """Print the document CLIENT would get for ADDRESS (exit 1 if it is offered nothing).

    For apple: the profile, signed when [apple] names a certificate.  For
    outlook, an address offered nothing gets its error 501 document, printed
    like any other answer.
    """
    svc = ctx.service
    try:
        # Like the server, refuse a broken signing setup whatever the address.
        signers = load_signers(svc.config) if client == "apple" else {}
        decision = svc.decide(address)
    except (ClientError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    declined = decision.offer.declined
    message = declined_message(decision.provider)
    if declined and client == "outlook":
        body = outlook.render_error(OUTLOOK_ERROR_NO_CONFIGURATION, message, svc.config.public_url, datetime.now(UTC))
    elif declined:
        text = thunderbird.declined_text(message, svc.config.public_url) if client == "thunderbird" else message
        click.echo(text, err=True)
        sys.exit(1)
    else:
        body = DOCUMENTS[client](decision)
        signer = signers.get(decision.provider.id)
        body = body if signer is None else signer.sign(body)
    if out is not None:
        Path(out).write_bytes(body)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(body)  # bytes: a signed profile is binary DER
        sys.stdout.buffer.flush()
    if declined:
        sys.exit(1)


# -- dns ------------------------------------------------------------------------


def _domains(config: Config, given: tuple[str, ...]) -> list[str]:
    domains = []
    for value in given:
        try:
            domains.append(normalise_domain(value.rstrip(".")))
        except AddressError as exc:
            raise click.BadParameter(f"{value!r}: {exc}", param_hint="DOMAIN") from None
    return domains or list(config.domains)


@main.group("dns")
def dns_group() -> None:
    """The DNS records to publish, and a live check of what DNS says."""


_BRAND_HELP = "The brand (its [[providers]] id) of a DOMAIN no brand lists, such as a hosted customer domain."


def _brand(config: Config, brand: str | None) -> Provider | None:
    if brand is None:
        return None
    for provider in config.providers:
        if provider.id == brand:
            return provider
    ids = ", ".join(p.id for p in config.providers)
    raise click.BadParameter(f"{brand!r} is no brand of {config.source} ({ids})", param_hint="--brand")


@dns_group.command("records")
@click.argument("domains", nargs=-1, metavar="[DOMAIN]...")
@click.option("--brand", metavar="ID", help=_BRAND_HELP)
@pass_context
def dns_records(ctx: Context, domains: tuple[str, ...], brand: str | None) -> None:
    """Print the zone-file lines each DOMAIN should publish (default: every served domain, of every brand)."""
    config = _load_config(ctx)
    provider = _brand(config, brand)
    try:
        texts = [
            dns_records_mod.to_text(dns_records_mod.expected(config, domain, provider=provider))
            for domain in _domains(config, domains)
        ]
    except dns_records_mod.RecordsError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("\n".join(texts), nl=False)


def _ip(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise click.BadParameter("must be an IPv4 or IPv6 address") from None


@dns_group.command("check")
@click.argument("domains", nargs=-1, metavar="[DOMAIN]...")
@click.option("--nameserver", callback=_ip, help="Ask this server (IP) instead of [dns] nameserver or the system's.")
@click.option("--port", type=click.IntRange(1, 65535), help="Port of the nameserver (default: [dns] port, 53).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--brand", metavar="ID", help=_BRAND_HELP)
@pass_context
def dns_check(
    ctx: Context, domains: tuple[str, ...], nameserver: str | None, port: int | None, as_json: bool, brand: str | None
) -> None:
    """Compare what DNS publishes for each DOMAIN with `dns records`.

    One line per finding.  Exit status: 0 nothing found, 1 something is wrong,
    3 nothing wrong found but some records could not be checked (timeout,
    server failure, refused).
    """
    config = _load_config(ctx)
    names = _domains(config, domains)
    try:
        findings = check_domains(config, make_resolver(config.dns, nameserver, port), names, _brand(config, brand))
    except dns_records_mod.RecordsError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"domains": names, "findings": [f.to_dict() for f in findings]}, indent=2))
    else:
        for name in names:
            lines = [f.to_text() for f in findings if f.domain == name]
            click.echo("\n".join(lines) if lines else f"{name}: ok")
    if any(not f.could_not_check for f in findings):
        sys.exit(EXIT_FINDINGS)
    if findings:
        sys.exit(EXIT_COULD_NOT_CHECK)


# -- dovecot --------------------------------------------------------------------


@main.group("dovecot")
def dovecot_group() -> None:
    """Dovecot's side of the login gate."""


@dovecot_group.command("snippet")
@click.option(
    "--dovecot-version",
    "version",
    metavar="VERSION",
    help="Write for this Dovecot (2.3 or 2.4, or a full version) instead of the one installed here.",
)
@click.option(
    "--url",
    help="This service as Dovecot reaches it, e.g. http://10.0.0.11:8080 "
    "(default: the first address of $AUTOCONFIG_BIND, else 127.0.0.1:8080).",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Write to this file (mode 0640), not stdout.")
@pass_context
def dovecot_snippet(ctx: Context, version: str | None, url: str | None, out: str | None) -> None:
    """Print the auth-policy config for Dovecot, filled in with this service's URL and [dovecot] api_header.

    Dovecot 2.3 and 2.4 need different files; without --dovecot-version the
    installed Dovecot's version (`dovecot --version`) chooses.  A version
    without a shipped snippet is refused.
    """
    config = _load_config(ctx)
    try:
        series = snippet.series_of(version if version is not None else snippet.installed_version())
        if config.dovecot is None:
            raise snippet.SnippetError(
                f"{config.source}: [dovecot] api_header is not set (nor ${ENV_DOVECOT_HEADER}); "
                "add it first (config/reference.toml), the snippet carries the same line"
            )
        header = snippet.check_header(config.dovecot.header, config.dovecot.secret)
        target = snippet.policy_url(url) if url is not None else snippet.url_from_bind(_bind())
        made_from = f"${ENV_DOVECOT_HEADER}" if os.environ.get(ENV_DOVECOT_HEADER) else str(config.source)
        written = snippet.render(series, target, header, made_from)
    except snippet.SnippetError as exc:
        raise click.ClickException(str(exc)) from None
    if not config.dovecot.webmail_networks:
        click.echo(
            f"warning: {config.source}: [dovecot] webmail_networks is empty: with this snippet in Dovecot, "
            "customers who have not turned IMAP on cannot sign in to the webmail either",
            err=True,
        )
    if out is None:
        click.echo(written.text, nl=False)
        return
    try:
        snippet.write_private(Path(out), written.text)
    except snippet.SnippetError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{out}: Dovecot {written.series} snippet written; run `doveadm reload`", err=True)


def _bind() -> str:
    return os.environ.get("AUTOCONFIG_BIND", "") or "127.0.0.1:8080"
