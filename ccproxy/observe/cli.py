"""``ccproxy usage [prune]`` and ``ccproxy pricing show|update``; heavy imports stay inside the commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

usage_app = typer.Typer(
    help="What did I use? Requests, tokens, cost and latency from the usage ledger.",
    invoke_without_command=True,
)
pricing_app = typer.Typer(help="The price table behind the API-equivalent cost.", no_args_is_help=True)

ConfigOption = Annotated[
    Optional[Path],  # noqa: UP045 (typer needs Optional on 3.11)
    typer.Option("--config", "-c", help="TOML config file (default: $CCPROXY_CONFIG, ./.ccproxy.toml, ...)"),
]


def _fail(message: str) -> NoReturn:
    typer.echo(f"ccproxy: error: {message}", err=True)
    raise typer.Exit(2)


def _config(config_file: Path | None) -> Any:
    from ccproxy.config import ConfigError, load_config

    try:
        return load_config(config_file=config_file)
    except ConfigError as exc:
        _fail(str(exc))


async def _with_store(config: Any, action: Any) -> Any:
    from ccproxy.observe.store import open_store

    store = open_store(config.settings.ledger.resolved_url())
    try:
        await store.open()
        return await action(store)
    finally:
        await store.close()


def _run(config: Any, action: Any) -> Any:
    import asyncio

    from ccproxy.observe.usage import UsageQueryError

    try:
        return asyncio.run(_with_store(config, action))
    except UsageQueryError as exc:
        _fail(str(exc))
    except (OSError, ValueError, RuntimeError) as exc:
        _fail(f"cannot read the usage ledger: {exc}")


@usage_app.callback()
def usage(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="24h, 7d, 30m, or a date like 2026-12-01 (UTC)")] = "24h",
    by: Annotated[
        str, typer.Option(help="Group by model, provider, day, client (key or product name) or key")
    ] = "model",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON ({'rows': [...], 'total': ...})")
    ] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV")] = False,
    config: ConfigOption = None,
) -> None:
    """Requests, tokens, cost and p50/p95 latency over a time window, read from the usage ledger."""
    if ctx.invoked_subcommand is not None:
        return
    from ccproxy.observe.usage import query_usage

    cfg = _config(config)
    result = _run(cfg, lambda store: query_usage(store, since, by))
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif as_csv:
        import csv

        from ccproxy.observe.usage import CSV_FIELDS

        writer = csv.DictWriter(sys.stdout, fieldnames=[by, *CSV_FIELDS[1:]], extrasaction="ignore")
        writer.writeheader()
        for row in result["rows"]:
            writer.writerow({by: row["key"], **row})
    else:
        _print_table(result, cfg.settings.ledger.enabled)


def _print_table(result: dict[str, Any], enabled: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Usage since {result['since']} by {result['by']}")
    for name in (result["by"], "requests", "errors", "input", "output", "cache read", "cache write"):
        table.add_column(name, justify="left" if name == result["by"] else "right")
    for name in ("cost (USD)", "p50 ms", "p95 ms"):
        table.add_column(name, justify="right")
    counts = (
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
    )
    for row in result["rows"]:
        latency = (f"{row['p50_ms']:.1f}", f"{row['p95_ms']:.1f}")
        table.add_row(row["key"], *(f"{row[k]:,}" for k in counts), f"{row['cost_usd']:.4f}", *latency)
    total = result["total"]
    table.add_section()
    table.add_row("total", *(f"{total[k]:,}" for k in counts), f"{total['cost_usd']:.4f}", "", "")
    console = Console()
    console.print(table)
    if not enabled:
        console.print("the ledger is switched off (ledger.enabled = false): no new requests are recorded")


@usage_app.command("prune")
def usage_prune(
    older_than: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--older-than", help="Days to keep [default: ledger.retention_days]"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Delete ledger rows older than N days."""
    import time

    cfg = _config(config)
    days = older_than if older_than is not None else cfg.settings.ledger.retention_days
    if not days or days < 0:
        _fail("nothing to prune: give --older-than DAYS or set ledger.retention_days")
    removed = _run(cfg, lambda store: store.prune(time.time() - days * 86400))
    typer.echo(f"removed {removed} ledger rows older than {days} days")


@pricing_app.command("show")
def pricing_show(
    model: Annotated[Optional[str], typer.Argument(help="Show the price one model name gets")] = None,  # noqa: UP045
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """The active price table (USD per million tokens), with the config's overrides."""
    from ccproxy.observe.pricing import Prices, PricingSettings, active_table, table_rows

    cfg = _config(config)
    settings = PricingSettings.model_validate(cfg.settings.plugins.get("pricing") or {})
    table, where = active_table()
    prices = Prices(table, settings.models)
    rows = table_rows(prices)
    if model is not None:
        price = prices.lookup(model)
        if price is None:
            _fail(f"no price for {model!r}; add one under [plugins.pricing.models] in the config")
        rows = [{"model": model, **price.model_dump()}]
    if as_json:
        import orjson

        data = {"updated": str(table.updated), "source": where, "currency": table.currency, "models": rows}
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    out = Table(title=f"Prices in USD per million tokens, {table.updated} ({where})")
    for name in ("model", "input", "output", "cache read", "cache write"):
        out.add_column(name, justify="left" if name == "model" else "right")
    for row in rows:
        cache_read = row["input"] if row["cache_read"] is None else row["cache_read"]
        cache_write = row["input"] if row["cache_write"] is None else row["cache_write"]
        out.add_row(row["model"], *(f"{v:g}" for v in (row["input"], row["output"], cache_read, cache_write)))
    Console().print(out)


@pricing_app.command("update")
def pricing_update(
    url: Annotated[Optional[str], typer.Argument(help="Where to fetch the table (JSON)")] = None,  # noqa: UP045
) -> None:
    """Fetch a newer price table (documented JSON format) into the user's data directory."""
    from ccproxy.observe.pricing import DEFAULT_URL, update_table, user_table_path

    source = url or DEFAULT_URL
    try:
        table = update_table(source)
    except ValueError as exc:
        _fail(f"refused the price table from {source}: {exc}; the current table stays")
    except OSError as exc:
        _fail(f"cannot fetch {source}: {exc}; the current table stays")
    typer.echo(f"price table of {table.updated} ({len(table.models)} models) saved to {user_table_path()}")
