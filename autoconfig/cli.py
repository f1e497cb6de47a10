"""The admin command line: ``python -m autoconfig ...``.

Same config, same store, same policy gate and renderers as the web app, so
what ``render`` prints is byte for byte what a client would get.
"""

from __future__ import annotations

import csv
import getpass
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from . import create_service
from .address import AddressError, parse_address
from .config import ConfigError, load
from .errors import ClientError
from .formats import thunderbird
from .service import Service
from .store import Account, ReadOnlyStore, StoreError, Switches

ON_OFF = click.Choice(["on", "off"])
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
CSV_HEADER = ["address", "imap", "pop"]


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


pass_context = click.make_pass_decorator(Context)


def _key(address: str) -> str:
    try:
        return parse_address(address).key
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint="ADDRESS") from None


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
    ctx.obj = Context(config_path)


@main.command("check-config")
@pass_context
def check_config(ctx: Context) -> None:
    """Validate the config file and open the store."""
    svc = ctx.service
    try:
        svc.store.ping()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    config = svc.config
    click.echo(f"{config.source}: OK")
    click.echo(f"  provider: {config.provider.id} ({config.provider.display_name})")
    click.echo(f"  domains:  {', '.join(config.provider.domains)}")
    for server in (*config.servers.imap, *config.servers.pop3, *config.servers.smtp):
        click.echo(f"  {server.protocol:5} {server.host}:{server.port} {server.socket}")
    click.echo(f"  store:    {svc.store.kind}")
    click.echo(f"  admin API: {'enabled' if config.admin_tokens else 'disabled (no token)'}")


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
    key = _key(address)
    try:
        account = ctx.service.store.update(key, changes, _actor())
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


def read_switches_csv(name: str, text: io.TextIOBase) -> Iterator[tuple[str, Switches]]:
    """Rows of an ``address,imap,pop`` file; the first bad row stops everything, named."""
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != CSV_HEADER:
        raise click.ClickException(f"{name}: line 1: the header must be {','.join(CSV_HEADER)}")
    seen: dict[str, int] = {}
    for row in reader:
        where = f"{name}: line {reader.line_num}"
        if not row:
            continue
        if len(row) != 3:
            raise click.ClickException(f"{where}: expected 3 columns, found {len(row)}")
        try:
            key = parse_address(row[0].strip()).key
        except AddressError as exc:
            raise click.ClickException(f"{where}: {exc}") from None
        if key in seen:
            raise click.ClickException(f"{where}: {key} already appears on line {seen[key]}")
        seen[key] = reader.line_num
        yield key, Switches(imap=_flag(row[1], where, "imap"), pop=_flag(row[2], where, "pop"))


@accounts.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@pass_context
def accounts_import(ctx: Context, file: io.TextIOWrapper) -> None:
    """Set switches from a CSV file (address,imap,pop): every row, or none."""
    name = Path(file.name).name
    # Validate the whole file before the transaction starts, so a bad row costs no lock time.
    rows = list(read_switches_csv(file.name, file))
    try:
        count = ctx.service.store.import_switches(rows, f"import:{name}")
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"imported {len(rows)} rows ({count} accounts written) from {file.name}")


@main.command("render")
@click.argument("client", type=click.Choice(["thunderbird"]))
@click.argument("address")
@pass_context
def render(ctx: Context, client: str, address: str) -> None:
    """Print the document CLIENT would get for ADDRESS (exit 1 if it gets none)."""
    svc = ctx.service
    try:
        decision = svc.decide(address)
    except ClientError as exc:
        raise click.ClickException(exc.message) from None
    if decision.offer.declined:
        click.echo(svc.declined_message(), err=True)
        sys.exit(1)
    body = thunderbird.render(
        decision.offer, svc.config.provider, svc.domains_for(decision.address), svc.config.webmail_url
    )
    click.echo(body.decode(), nl=False)
